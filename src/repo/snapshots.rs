//! Snapshots: loading and authenticating them (only snapshots signed by the repository key or
//! a registered write-only key count), saving new ones, and resolving what a user typed
//! (`latest`, an id prefix) to one snapshot.
//!
//! Trust: the repository key always; a write-only key while `signers/` holds its registration
//! (signed by the repository key) and no revocation. A revoked key's snapshots stay trusted
//! only if its revocation lists them (those present when the key was removed): "later" means
//! "not in the repository at removal", never a time the snapshot claims, since a thief with the
//! key could backdate. Revocations this machine has seen are remembered in the local database,
//! so a storage owner who deletes one cannot quietly restore the key's trust here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{RepoError, Repository};
use crate::crypto::VerifyingKey;
use crate::format::signer::{Revocation, SignerObject, SignerRecord};
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::layout;
use crate::store::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
    /// The key that signed it (the repository key's id, or a write-only key's).
    pub signer: Id,
    /// How listings name that key: "repository key", or the write-only key's label and id.
    pub signed_by: String,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    /// Absolute source paths the snapshot must have been made of, all of them (restic's
    /// `--path`); it may have more.
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// restic's rule for tags: each `tags` entry is a comma-separated list the snapshot must
    /// carry all of, and any one entry suffices (`--tag a,b --tag c`: a and b, or c). An empty
    /// entry matches snapshots without tags.
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&snapshot.hostname))
            && (self.tags.is_empty() || self.tags.iter().any(|entry| has_tags(snapshot, entry)))
            && self.paths.iter().all(|wanted| snapshot.paths.iter().any(|p| same_path(p, wanted)))
    }
}

/// Source paths compare without a trailing `/` (`--path /home/` names `/home`).
fn same_path(a: &[u8], b: &[u8]) -> bool {
    fn trim(p: &[u8]) -> &[u8] {
        match p.strip_suffix(b"/") {
            Some(rest) if !rest.is_empty() => trim(rest),
            _ => p,
        }
    }
    trim(a) == trim(b)
}

fn has_tags(snapshot: &Snapshot, entry: &str) -> bool {
    let wanted: Vec<&str> = entry.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    if wanted.is_empty() {
        return snapshot.tags.is_empty();
    }
    wanted.iter().all(|w| snapshot.tags.iter().any(|t| t == w))
}

/// A snapshot that is not trusted, and why; `check` reports them.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub id: Id,
    pub reason: String,
    /// Its bytes do not hash to its name: storage damaged a snapshot that may be real. Any
    /// other rejection (unknown or revoked signer, a forged signature, a host its key may not
    /// claim) is a snapshot nobody trusted wrote, whose data nothing must keep.
    pub damaged: bool,
}

/// Snapshots that could not be trusted or read.
pub type Rejected = Vec<Rejection>;

/// The local note remembering revocations: one line per key, `signer-hex kept-hex,kept-hex…`.
const REVOCATIONS_NOTE: &str = "revoked-signers";

/// Who may sign snapshots, from the repository's signed `signers/` objects.
#[derive(Default)]
pub struct Signers {
    /// The repository key and registered write-only keys that are not revoked, by key id.
    pub active: HashMap<Id, VerifyingKey>,
    /// Revoked keys, with the snapshots of theirs that stay trusted.
    pub revoked: HashMap<Id, (VerifyingKey, HashSet<Id>)>,
    /// Registrations (object id, record), for `key list`.
    pub registrations: Vec<(Id, SignerRecord)>,
    /// The registration of each write-only key, by key id.
    pub records: HashMap<Id, SignerRecord>,
    /// The repository key's id.
    pub repository: Id,
    /// Revoked keys this machine saw revoked whose revocation is gone from the store.
    pub vanished_revocations: Vec<Id>,
    /// `signers/` objects that failed verification, with the reason.
    pub invalid: Vec<(Id, String)>,
    /// `signers/` objects that verified (registrations and revocations): what a new snapshot
    /// records as seen (see [`super::anchors`]).
    pub valid_objects: HashSet<Id>,
}

impl Signers {
    /// Why a snapshot's signer may not claim `host`, if it may not: a write-only key is bound to
    /// the host names in its registration (version-1 registrations bind none).
    pub fn host_refused(&self, signer: &Id, host: &str) -> Option<String> {
        let record = self.records.get(signer)?;
        (!record.may_claim(host)).then(|| {
            format!(
                "claims host {:?}, but write-only key {} ({}) may only claim {}",
                crate::format::signer::printable(host),
                signer.short(),
                crate::format::signer::printable(&record.label),
                record.hosts.iter().map(|h| crate::format::signer::printable(h)).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// How listings name a signer: "repository key", or a write-only key's label and short id.
    pub fn describe(&self, signer: &Id) -> String {
        if *signer == self.repository {
            return "repository key".to_string();
        }
        match self.records.get(signer) {
            Some(record) => format!("{} ({})", crate::format::signer::printable(&record.label), signer.short()),
            None => format!("unknown key {}", signer.short()),
        }
    }

    /// [`Signers::describe`], plus who signed the original when the snapshot is a copy.
    pub fn describe_snapshot(&self, signer: &Id, snapshot: &Snapshot) -> String {
        let signed = self.describe(signer);
        match snapshot.copied_signer() {
            Some((original, label)) => {
                // `tag` rewrites a snapshot in place; `copy` brings one from elsewhere.
                let what = if snapshot.extensions.iter().any(|(k, _)| k == crate::format::snapshot::RETAGGED_FROM) {
                    "retagged, written"
                } else {
                    "copy of one"
                };
                format!("{signed}, {what} by {} ({})", crate::format::signer::printable(&label), original.short())
            }
            None => signed,
        }
    }

    /// The key a snapshot must verify with, or why it is not trusted.
    pub fn key_for(&self, signer: &Id, snapshot: &Id) -> Result<&VerifyingKey, String> {
        if let Some(key) = self.active.get(signer) {
            return Ok(key);
        }
        match self.revoked.get(signer) {
            Some((key, kept)) if kept.contains(snapshot) => Ok(key),
            Some(_) => Err(format!("signed by write-only key {} after it was removed", signer.short())),
            None => Err("signed by an unknown key".to_string()),
        }
    }
}

fn parse_revocations_note(note: &str) -> HashMap<Id, HashSet<Id>> {
    let mut out = HashMap::new();
    for line in note.lines() {
        let mut parts = line.splitn(2, ' ');
        let Some(signer) = parts.next().and_then(Id::from_hex) else { continue };
        let kept = parts.next().unwrap_or("").split(',').filter_map(Id::from_hex).collect();
        out.insert(signer, kept);
    }
    out
}

fn format_revocations_note(revoked: &HashMap<Id, HashSet<Id>>) -> String {
    let mut lines: Vec<String> = revoked
        .iter()
        .map(|(signer, kept)| {
            let mut kept: Vec<String> = kept.iter().map(Id::to_hex).collect();
            kept.sort();
            format!("{} {}", signer.to_hex(), kept.join(","))
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

impl Repository {
    /// Reads `signers/`: registrations and revocations, each verified with the repository key.
    pub fn signers(&self) -> Result<Signers, RepoError> {
        self.signers_from(fetch_signer_objects(&self.store)?)
    }

    /// Verifies `signers/`'s objects as [`fetch_signer_objects`] read them.
    pub(super) fn signers_from(&self, objects: Vec<(Id, Vec<u8>)>) -> Result<Signers, RepoError> {
        let mut signers = Signers { repository: self.keys.repo_verify.id(), ..Signers::default() };
        signers.active.insert(self.keys.repo_verify.id(), self.keys.repo_verify);
        let mut revocations: Vec<Revocation> = Vec::new();
        for (id, bytes) in objects {
            let path = layout::in_dir(layout::SIGNERS, &id);
            match SignerObject::decode(&bytes, &self.id(), &self.keys.repo_verify) {
                Ok(SignerObject::Registration(record)) => {
                    signers.valid_objects.insert(id);
                    let key = VerifyingKey(record.verify_key);
                    signers.active.insert(key.id(), key);
                    signers.records.insert(key.id(), record.clone());
                    signers.registrations.push((id, record));
                }
                Ok(SignerObject::Revocation(revocation)) => {
                    signers.valid_objects.insert(id);
                    revocations.push(revocation);
                }
                Err(e) => {
                    log::warn!("ignoring signer record {path}: {e}");
                    signers.invalid.push((id, e.to_string()));
                }
            }
        }
        let note = self.db().note(REVOCATIONS_NOTE)?;
        let mut remembered = note.as_deref().map(parse_revocations_note).unwrap_or_default();
        let before = remembered.clone();
        let mut in_store = HashSet::new();
        for revocation in revocations {
            let key = VerifyingKey(revocation.verify_key);
            in_store.insert(key.id());
            let kept: HashSet<Id> = revocation.kept_snapshots.into_iter().collect();
            // Two revocations of one key: trust only what both keep.
            let entry = signers.revoked.entry(key.id()).or_insert_with(|| (key, kept.clone()));
            entry.1.retain(|id| kept.contains(id));
        }
        for (signer, kept) in &remembered {
            if !in_store.contains(signer) {
                log::warn!("write-only key {} was revoked, but its revocation is gone from signers/", signer.short());
                signers.vanished_revocations.push(*signer);
                // The verifying key itself is only needed to check kept snapshots.
                let key = signers.active.get(signer).copied();
                if let Some(key) = key {
                    signers.revoked.insert(*signer, (key, kept.clone()));
                }
            }
        }
        for (signer, (_, kept)) in &signers.revoked {
            signers.active.remove(signer);
            remembered.entry(*signer).or_insert_with(|| kept.clone());
        }
        if remembered != before {
            self.db().set_note(REVOCATIONS_NOTE, Some(&format_revocations_note(&remembered)))?;
        }
        Ok(signers)
    }

    /// The keys whose snapshots are trusted without condition: the repository key and
    /// registered, unrevoked write-only keys. Snapshot checks should use [`Repository::signers`],
    /// which also knows the kept snapshots of revoked keys.
    pub fn trusted_signers(&self) -> Result<HashMap<Id, VerifyingKey>, RepoError> {
        Ok(self.signers()?.active)
    }

    /// Refuses a host name this client's snapshots may not claim: one that is not a valid
    /// name, or, for a write-only key, one its registration does not bind it to (such a
    /// snapshot would be ignored by every reader).
    pub fn check_may_claim(&self, host: &str) -> Result<(), RepoError> {
        if !crate::format::signer::valid_host(host) {
            return Err(RepoError::BadHost {
                host: crate::format::signer::printable(host),
                detail: "a host name is 1 to 253 characters, without '/' or control characters".into(),
            });
        }
        if self.keys.secret.is_some() {
            return Ok(());
        }
        let signer = self.keys.signer.verifying_key().id();
        match self.signers_at_open()?.host_refused(&signer, host) {
            None => Ok(()),
            Some(reason) => Err(RepoError::BadHost {
                host: crate::format::signer::printable(host),
                detail: format!("this snapshot {reason}; make a key bound to it with `coffer key write-only --host`"),
            }),
        }
    }

    /// Registers a new write-only key: its verifying key, the host names it may claim, and its
    /// domain secret wrapped to the repository (needs the full key, which signs it).
    pub fn register_signer(
        &self,
        key: &crate::keys::WriteOnlyKey,
        label: &str,
        hosts: Vec<String>,
    ) -> Result<Id, RepoError> {
        let full = self.keys.full_key().ok_or(RepoError::WriteOnly { what: "registering a write-only key" })?;
        let crate::keys::WriteDomain::Own(domain_secret) = &key.domain else {
            return Err(RepoError::KeyNotTrusted {
                detail: "is a version-1 key: new keys get a domain of their own".into(),
            });
        };
        let record = SignerRecord::new(
            &key.signing.verifying_key(),
            label,
            super::now_unix(),
            hosts,
            domain_secret,
            &self.id(),
            &self.keys.public,
        );
        let bytes = record.encode(&self.id(), &full.signing);
        let id = Id::of_bytes(&bytes);
        self.store.write(&layout::in_dir(layout::SIGNERS, &id), bytes)?;
        Ok(id)
    }

    /// Revokes a write-only key: its snapshots now in the repository (with a valid signature)
    /// stay trusted, any other is ignored. Returns how many were kept.
    pub fn revoke_signer(&self, signer: &Id) -> Result<usize, RepoError> {
        let full = self.keys.full_key().ok_or(RepoError::WriteOnly { what: "removing a write-only key" })?;
        let signers = self.signers()?;
        let key = *signers
            .active
            .get(signer)
            .filter(|k| **k != self.keys.repo_verify)
            .ok_or_else(|| RepoError::NoKey(signer.to_hex()))?;
        let mut kept = Vec::new();
        for (id, _) in self.store.list_ids(layout::SNAPSHOTS)? {
            let bytes = match self.store.read(&layout::in_dir(layout::SNAPSHOTS, &id)) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if Id::of_bytes(&bytes) == id && Snapshot::verify(&bytes, &self.id(), &key).is_ok() {
                kept.push(id);
            }
        }
        kept.sort();
        let revocation = Revocation { verify_key: key.0, revoked_unix: super::now_unix(), kept_snapshots: kept };
        let bytes = revocation.encode(&self.id(), &full.signing);
        self.store.write(&layout::in_dir(layout::SIGNERS, &Id::of_bytes(&bytes)), bytes)?;
        // Remember it at once, so this machine keeps it even if the store loses it.
        self.signers()?;
        Ok(revocation.kept_snapshots.len())
    }

    /// Loads every snapshot, oldest first. Untrusted or unreadable ones are returned apart.
    /// Snapshots verified before come from the local cache (if their signer is still
    /// trusted), so this costs one listing plus the new snapshots, however many there are.
    pub fn load_snapshots(&self) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        self.read_snapshots(true, None)
    }

    /// [`load_snapshots`](Self::load_snapshots) with `snapshots/` already listed (by a caller
    /// that compares the listing with what it saw last before loading: the mount).
    pub fn load_snapshots_listed(&self, listed: Vec<(Id, u64)>) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        self.read_snapshots(true, Some(listed))
    }

    /// Like [`Repository::load_snapshots`], but reads and verifies every snapshot in the
    /// store, for `check`: the cache cannot tell that a stored snapshot was damaged since.
    pub fn load_snapshots_from_store(&self) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        self.read_snapshots(false, None)
    }

    fn read_snapshots(
        &self,
        trust_cache: bool,
        listed: Option<Vec<(Id, u64)>>,
    ) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        let secret = self.require_full_key("listing snapshots")?;
        // `snapshots/` is listed while `signers/` is read: a round trip each on a remote store.
        let (signers, listed) = match listed {
            Some(listed) => (self.signers(), Ok(listed)),
            None => std::thread::scope(|scope| {
                let listed = scope.spawn(|| self.store.list_ids(layout::SNAPSHOTS));
                let signers = self.signers();
                let listed = listed.join().unwrap_or_else(|_| Err(StoreError::thread_panicked(layout::SNAPSHOTS)));
                (signers, listed)
            }),
        };
        let signers = signers?;
        let listed = listed?;
        let cached = if trust_cache { self.db().cached_snapshots()? } else { Default::default() };
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        let mut verified = Vec::new();
        self.warn_vanished(&listed)?;
        // Snapshots the cache does not hold are read several at a time (a round trip each on a
        // remote store), a batch at a time so at most a batch of them is in memory.
        let mut fetched: HashMap<Id, Result<Vec<u8>, crate::store::StoreError>> = HashMap::new();
        let uncached: Vec<Id> = listed.iter().map(|(id, _)| *id).filter(|id| !cached.contains_key(id)).collect();
        let mut batches = uncached.chunks(4 * crate::store::SMALL_READS_IN_FLIGHT);
        for (id, _) in listed {
            if !cached.contains_key(&id) && !fetched.contains_key(&id) {
                if let Some(batch) = batches.next() {
                    let read = crate::store::map_in_flight(batch, crate::store::SMALL_READS_IN_FLIGHT, |id| {
                        self.store.read_named(&layout::in_dir(layout::SNAPSHOTS, id), id)
                    });
                    fetched = batch.iter().copied().zip(read).collect();
                }
            }
            if let Some((signer, body)) = cached.get(&id) {
                if signers.key_for(signer, &id).is_ok() {
                    if let Ok(snapshot) = crate::format::from_postcard::<Snapshot>(body, "cached snapshot") {
                        match signers.host_refused(signer, &snapshot.hostname) {
                            None => good.push(SnapshotEntry {
                                id,
                                signed_by: signers.describe_snapshot(signer, &snapshot),
                                snapshot,
                                signer: *signer,
                            }),
                            Some(reason) => {
                                log::warn!("ignoring snapshot {}: {reason}", id.short());
                                rejected.push(Rejection { id, reason, damaged: false });
                            }
                        }
                        continue;
                    }
                }
            }
            let path = layout::in_dir(layout::SNAPSHOTS, &id);
            let read = fetched.remove(&id).unwrap_or_else(|| self.store.read_named(&path, &id));
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // removed by a concurrent forget
                Err(e) => return Err(e.into()),
            };
            let damaged = Id::of_bytes(&bytes) != id;
            let opened = if damaged {
                Err("content does not match its name".to_string())
            } else {
                Snapshot::signer_id(&bytes).map_err(|e| e.to_string()).and_then(|signer| {
                    let key = signers.key_for(&signer, &id)?;
                    let snapshot = Snapshot::open(&bytes, &self.id(), key, secret).map_err(|e| e.to_string())?;
                    Ok((signer, snapshot))
                })
            };
            match opened {
                Ok((signer, snapshot)) => match signers.host_refused(&signer, &snapshot.hostname) {
                    None => {
                        verified.push((id, signer, crate::format::to_postcard(&snapshot)));
                        let signed_by = signers.describe_snapshot(&signer, &snapshot);
                        good.push(SnapshotEntry { id, snapshot, signer, signed_by });
                    }
                    Some(reason) => {
                        log::warn!("ignoring snapshot {path}: {reason}");
                        rejected.push(Rejection { id, reason, damaged: false });
                    }
                },
                Err(reason) => {
                    log::warn!("ignoring snapshot {path}: {reason}");
                    rejected.push(Rejection { id, reason, damaged });
                }
            }
        }
        good.sort_by_key(|e| (e.snapshot.time_unix, e.snapshot.time_nsec, e.id));
        let seen: Vec<(Id, i64)> = good.iter().map(|e| (e.id, e.snapshot.time_unix)).collect();
        let mut db = self.db();
        db.record_snapshots(&seen)?;
        if !verified.is_empty() {
            db.cache_snapshots(&verified)?;
        }
        Ok((good, rejected))
    }

    /// Warns (once per process: a mount lists snapshots every few seconds) about snapshots this
    /// machine saw that the listing lacks: deleted elsewhere, or hidden by the storage.
    fn warn_vanished(&self, listed: &[(Id, u64)]) -> Result<(), RepoError> {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if WARNED.load(Ordering::Relaxed) {
            return Ok(());
        }
        let listed: HashSet<Id> = listed.iter().map(|(id, _)| *id).collect();
        let vanished: Vec<(Id, i64)> =
            self.db().seen_snapshots()?.into_iter().filter(|(id, _)| !listed.contains(id)).collect();
        for (id, time) in &vanished {
            let when = chrono::DateTime::from_timestamp(*time, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
            log::warn!(
                "snapshot {} of {when}, seen here before, is missing from the repository (deleted elsewhere, or \
                 hidden by the storage); `coffer check` reports it",
                id.short()
            );
        }
        if !vanished.is_empty() {
            WARNED.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes a snapshot. Call only once everything it references is stored and indexed.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id, RepoError> {
        let bytes = snapshot.encode(&self.id(), &self.keys.public, &self.keys.signer);
        let id = Id::of_bytes(&bytes);
        self.store.write(&layout::in_dir(layout::SNAPSHOTS, &id), bytes)?;
        // Remembered so that `check` notices if it later vanishes from the store, and kept
        // so that listing and mounting need not read it back.
        let mut db = self.db();
        db.record_snapshots(&[(id, snapshot.time_unix)])?;
        db.cache_snapshots(&[(id, self.keys.signer.verifying_key().id(), crate::format::to_postcard(snapshot))])?;
        drop(db);
        self.remember_written(&id)?;
        Ok(id)
    }

    /// Resolves `latest`, `latest~N` or an id prefix among the snapshots that pass `filter`.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry, RepoError> {
        let (snapshots, _) = self.load_snapshots()?;
        resolve(snapshots, spec, filter)
    }
}

/// How many snapshots back `latest~N` goes (`latest` is `latest~0`); `None` for anything else.
fn latest_offset(spec: &str) -> Option<Result<usize, RepoError>> {
    if spec == "latest" {
        return Some(Ok(0));
    }
    let n = spec.strip_prefix("latest~")?;
    Some(n.parse().map_err(|_| RepoError::NoSnapshot(spec.into())))
}

/// Resolves `latest`, `latest~N` (the Nth before the newest) or an id prefix among the
/// snapshots that pass `filter`; `snapshots` come oldest first.
pub fn resolve(snapshots: Vec<SnapshotEntry>, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry, RepoError> {
    if let Some(back) = latest_offset(spec) {
        let back = back?;
        return snapshots
            .into_iter()
            .rev()
            .filter(|e| filter.matches(&e.snapshot))
            .nth(back)
            .ok_or_else(|| RepoError::NoSnapshot(spec.into()));
    }
    let candidates = snapshots.into_iter().filter(|e| filter.matches(&e.snapshot));
    let prefix = spec.to_ascii_lowercase();
    let mut matching: Vec<SnapshotEntry> = candidates.filter(|e| e.id.to_hex().starts_with(&prefix)).collect();
    match matching.len() {
        0 => Err(RepoError::NoSnapshot(spec.into())),
        1 if !prefix.is_empty() => Ok(matching.remove(0)),
        _ => Err(RepoError::AmbiguousSnapshot(spec.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn entry(n: u8, host: &str, path: &str) -> SnapshotEntry {
        let snapshot = Snapshot {
            time_unix: i64::from(n),
            hostname: host.into(),
            paths: vec![ByteBuf::from(path.as_bytes().to_vec())],
            ..Snapshot::default()
        };
        SnapshotEntry { id: Id([n; 32]), snapshot, signer: Id([0; 32]), signed_by: String::new() }
    }

    #[test]
    fn latest_tilde_counts_back_among_the_filtered() {
        let all = vec![entry(1, "a", "/x"), entry(2, "b", "/x"), entry(3, "a", "/y/"), entry(4, "a", "/x")];
        let pick = |spec: &str, filter: &SnapshotFilter| resolve(all.clone(), spec, filter).map(|e| e.id.0[0]);
        let any = SnapshotFilter::default();
        assert_eq!(pick("latest", &any).unwrap(), 4);
        assert_eq!(pick("latest~0", &any).unwrap(), 4);
        assert_eq!(pick("latest~2", &any).unwrap(), 2);
        assert!(matches!(pick("latest~4", &any), Err(RepoError::NoSnapshot(_))));
        assert!(matches!(pick("latest~x", &any), Err(RepoError::NoSnapshot(_))));
        let host_a = SnapshotFilter { hosts: vec!["a".into()], ..Default::default() };
        assert_eq!(pick("latest~1", &host_a).unwrap(), 3);
        let path_x = SnapshotFilter { paths: vec![b"/x/".to_vec()], ..Default::default() };
        assert_eq!(pick("latest~1", &path_x).unwrap(), 2);
        let path_y = SnapshotFilter { paths: vec![b"/y".to_vec()], ..Default::default() };
        assert_eq!(pick("latest", &path_y).unwrap(), 3);
        let both = SnapshotFilter { paths: vec![b"/x".to_vec(), b"/y".to_vec()], ..Default::default() };
        assert!(pick("latest", &both).is_err());
    }
}

/// `signers/` as stored, each object read (8 at a time) but not yet verified: needs no key, so
/// opening with a passphrase reads it while Argon2 runs. An object gone between the listing
/// and its read is left out, as if listed a moment later.
pub(super) fn fetch_signer_objects(store: &Store) -> Result<Vec<(Id, Vec<u8>)>, RepoError> {
    let listed: Vec<Id> = store.list_ids(layout::SIGNERS)?.into_iter().map(|(id, _)| id).collect();
    let read = crate::store::map_in_flight(&listed, crate::store::SMALL_READS_IN_FLIGHT, |id| {
        store.read(&layout::in_dir(layout::SIGNERS, id))
    });
    let mut objects = Vec::with_capacity(listed.len());
    for (id, bytes) in listed.into_iter().zip(read) {
        match bytes {
            Ok(bytes) => objects.push((id, bytes)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(objects)
}
