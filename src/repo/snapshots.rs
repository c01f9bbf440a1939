//! Snapshots: loading and authenticating them (only snapshots signed by the repository key or
//! a registered write-only key count), saving new ones, and resolving what a user typed
//! (`latest`, an id prefix) to one snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{RepoError, Repository};
use crate::crypto::VerifyingKey;
use crate::format::signer::SignerRecord;
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::store::paths;

#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&snapshot.hostname))
            && self.tags.iter().all(|t| snapshot.tags.contains(t))
    }
}

/// Snapshots that could not be trusted or read, with the reason; `check` reports them.
pub type Rejected = Vec<(Id, String)>;

impl Repository {
    /// The keys whose snapshots are trusted: the repository key and registered signers.
    pub fn trusted_signers(&self) -> Result<HashMap<Id, VerifyingKey>, RepoError> {
        let mut signers = HashMap::from([(self.keys.repo_verify.id(), self.keys.repo_verify)]);
        for (id, _) in self.store.list_ids(paths::SIGNERS)? {
            let path = paths::in_dir(paths::SIGNERS, &id);
            match SignerRecord::decode(&self.store.read(&path)?, &self.id(), &self.keys.repo_verify) {
                Ok(record) => {
                    let key = VerifyingKey(record.verify_key);
                    signers.insert(key.id(), key);
                }
                Err(e) => log::warn!("ignoring signer record {path}: {e}"),
            }
        }
        Ok(signers)
    }

    /// Loads every snapshot, oldest first. Untrusted or unreadable ones are returned apart.
    /// Snapshots verified before come from the local cache (if their signer is still
    /// trusted), so this costs one listing plus the new snapshots, however many there are.
    pub fn load_snapshots(&self) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        self.read_snapshots(true)
    }

    /// Like [`Repository::load_snapshots`], but reads and verifies every snapshot in the
    /// store, for `check`: the cache cannot tell that a stored snapshot was damaged since.
    pub fn load_snapshots_from_store(&self) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        self.read_snapshots(false)
    }

    fn read_snapshots(&self, trust_cache: bool) -> Result<(Vec<SnapshotEntry>, Rejected), RepoError> {
        let secret = self.require_full_key("listing snapshots")?;
        let signers = self.trusted_signers()?;
        let cached = if trust_cache { self.db().cached_snapshots()? } else { Default::default() };
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        let mut verified = Vec::new();
        let listed = self.store.list_ids(paths::SNAPSHOTS)?;
        self.warn_vanished(&listed)?;
        for (id, _) in listed {
            if let Some((signer, body)) = cached.get(&id) {
                if signers.contains_key(signer) {
                    if let Ok(snapshot) = crate::format::from_postcard::<Snapshot>(body, "cached snapshot") {
                        good.push(SnapshotEntry { id, snapshot });
                        continue;
                    }
                }
            }
            let path = paths::in_dir(paths::SNAPSHOTS, &id);
            let bytes = match self.store.read_named(&path, &id) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // removed by a concurrent forget
                Err(e) => return Err(e.into()),
            };
            let opened = if Id::of_bytes(&bytes) != id {
                Err("content does not match its name".to_string())
            } else {
                Snapshot::signer_id(&bytes).map_err(|e| e.to_string()).and_then(|signer| {
                    let key = signers.get(&signer).ok_or_else(|| "signed by an unknown key".to_string())?;
                    let snapshot = Snapshot::open(&bytes, &self.id(), key, secret).map_err(|e| e.to_string())?;
                    Ok((signer, snapshot))
                })
            };
            match opened {
                Ok((signer, snapshot)) => {
                    verified.push((id, signer, crate::format::to_postcard(&snapshot)));
                    good.push(SnapshotEntry { id, snapshot });
                }
                Err(reason) => {
                    log::warn!("ignoring snapshot {path}: {reason}");
                    rejected.push((id, reason));
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
        self.store.write(&paths::in_dir(paths::SNAPSHOTS, &id), bytes)?;
        // Remembered so that `check` notices if it later vanishes from the store, and kept
        // so that listing and mounting need not read it back.
        let mut db = self.db();
        db.record_snapshots(&[(id, snapshot.time_unix)])?;
        db.cache_snapshots(&[(id, self.keys.signer.verifying_key().id(), crate::format::to_postcard(snapshot))])?;
        Ok(id)
    }

    /// Resolves `latest` or an id prefix among the snapshots that pass `filter`.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry, RepoError> {
        let (snapshots, _) = self.load_snapshots()?;
        resolve(snapshots, spec, filter)
    }
}

pub fn resolve(snapshots: Vec<SnapshotEntry>, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry, RepoError> {
    if spec == "latest" {
        return snapshots
            .into_iter()
            .rev()
            .find(|e| filter.matches(&e.snapshot))
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
