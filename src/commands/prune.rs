//! `coffer prune`: deletes packs no snapshot needs and repacks partly used ones, by the
//! two-phase protocol of docs/design.md ("Prune protocol"):
//!
//! 1. *Condemn*: repack live blobs of partly used packs, write an index covering every kept
//!    blob, then a signed plan naming the packs to delete and the index files superseded.
//!    Nothing is deleted yet; every old index file still lists every old pack.
//! 2. *Delete*, once every backup whose lock was listed after the plan was stored has finished
//!    (its snapshot names its lock) or died (its lock went unrefreshed for the lock timeout):
//!    re-read every snapshot, rescue condemned packs that a snapshot (or a newer index file)
//!    still needs, then delete the superseded index files, then the condemned packs, then the
//!    plan. A run that must wait leaves the plan for the next run.
//!
//! Each step is idempotent and ordered so that a kill at any point leaves a consistent
//! repository; named crash points ([`crate::crashpoint`]) let the tests kill it at each.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::crashpoint;
use crate::db::BlobLocation;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::plan::{LockSeen, PlanRecord};
use crate::format::tree::{NodeKind, Tree};
use crate::id::Id;
use crate::repo::locks::{list_locks, ENDED_SEQ, LOCK_TIMEOUT};
use crate::repo::packer::Packer;
use crate::repo::{now_unix, RepoError, Repository, SnapshotEntry};
use crate::store::paths;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("this repository is append-only for this profile: {0} would delete data, so it is refused")]
    AppendOnly(&'static str),
    #[error(
        "{count} snapshot(s) are damaged in storage (first: {first}: {reason}); prune deletes nothing while \
         it cannot see what they reference. Run `coffer check`; delete the snapshot file by hand if it is lost"
    )]
    UntrustedSnapshots { count: usize, first: String, reason: String },
    #[error(
        "snapshot {0} was seen before and is missing from the storage listing: the listing is incomplete or \
         someone deleted it; prune deletes nothing. Run `coffer check`"
    )]
    VanishedSnapshot(String),
    #[error(
        "pack {pack} is in the index but {problem} in the storage listing: the listing is incomplete or data is \
         already lost; prune deletes nothing. Run `coffer check`"
    )]
    ListingShort { pack: String, problem: String },
    #[error("snapshot data is not in the index: {0}; prune deletes nothing. Run `coffer check`")]
    Unreachable(String),
    #[error("{0}; prune deletes nothing. Run `coffer check`")]
    Anchors(String),
    #[error("another prune is running on this repository; nothing was deleted. Run prune again when it is done")]
    ConcurrentPrune,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<crate::db::DbError> for PruneError {
    fn from(e: crate::db::DbError) -> PruneError {
        PruneError::Repo(e.into())
    }
}

impl From<crate::store::StoreError> for PruneError {
    fn from(e: crate::store::StoreError) -> PruneError {
        PruneError::Repo(e.into())
    }
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused space tolerated in partly used packs, as a percentage of the packs' total size.
    pub max_unused_percent: f64,
    pub dry_run: bool,
    /// Set for append-only profiles: prune refuses.
    pub append_only: bool,
    pub lock_timeout: Duration,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions { max_unused_percent: 5.0, dry_run: false, append_only: false, lock_timeout: lock_timeout() }
    }
}

/// [`LOCK_TIMEOUT`]; debug builds accept `COFFER_TEST_LOCK_TIMEOUT_SECS` so tests need not wait.
pub fn lock_timeout() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("COFFER_TEST_LOCK_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()) {
        return Duration::from_secs(secs);
    }
    LOCK_TIMEOUT
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub total_pack_bytes: u64,
    pub packs_unused: u64,
    pub packs_to_repack: u64,
    pub orphan_packs: u64,
    /// Live bytes copied into new packs.
    pub bytes_repacked: u64,
    pub packs_written: u64,
    /// Bytes of the packs deleted (or to delete, in a dry run), less the new packs.
    pub bytes_freed: i64,
    pub packs_deleted: u64,
    pub index_files_removed: u64,
    pub packs_rescued: u64,
    pub locks_removed: u64,
    pub spool_files_removed: u64,
    /// Unused bytes left in kept packs (within --max-unused).
    pub unused_bytes_left: u64,
    /// Backups (lock sessions) this prune waits for before deleting; empty when it finished.
    pub waiting_for: Vec<String>,
    /// Set when a plan of an earlier prune was completed first.
    pub finished_earlier_plan: bool,
}

pub fn prune(repo: &Repository, options: &PruneOptions, progress: impl Fn(&str)) -> Result<PruneReport, PruneError> {
    repo.require_full_key("prune")?;
    if options.append_only {
        return Err(PruneError::AppendOnly("prune"));
    }
    let mut report = PruneReport { dry_run: options.dry_run, ..Default::default() };
    // An earlier prune's plan comes first: a new plan would be computed from an index that
    // still lists the packs the old one condemned.
    let records = repo.plan_records()?;
    let pending: Vec<(Id, PlanRecord)> =
        records.iter().filter(|(_, r)| matches!(r, PlanRecord::Condemn { .. })).cloned().collect();
    if !pending.is_empty() {
        if options.dry_run {
            for (id, record) in &pending {
                if let PlanRecord::Condemn { packs, .. } = record {
                    progress(&format!(
                        "an earlier prune's plan {} condemns {} packs; not finished",
                        id.short(),
                        packs.len()
                    ));
                    report.packs_unused += packs.len() as u64;
                }
            }
            return Ok(report);
        }
        for (id, record) in &pending {
            progress(&format!("finishing the plan {} of an earlier prune", id.short()));
            let wait = records.iter().find_map(|(wid, r)| match r {
                PlanRecord::Wait { plan, listed_unix, locks } if plan == id => {
                    Some((*wid, *listed_unix, locks.clone()))
                }
                _ => None,
            });
            delete_phase(repo, options, *id, record, wait, &mut report, &progress)?;
            if !report.waiting_for.is_empty() {
                return Ok(report);
            }
            report.finished_earlier_plan = true;
        }
    }
    remove_stray_wait_records(repo)?;
    condemn_phase(repo, options, &mut report, &progress)?;
    Ok(report)
}

/// Wait records whose plan is gone (a prune killed while removing its plan).
fn remove_stray_wait_records(repo: &Repository) -> Result<(), PruneError> {
    let records = repo.plan_records()?;
    let plans: HashSet<Id> =
        records.iter().filter(|(_, r)| matches!(r, PlanRecord::Condemn { .. })).map(|(id, _)| *id).collect();
    for (id, record) in &records {
        if let PlanRecord::Wait { plan, .. } = record {
            if !plans.contains(plan) {
                repo.store.delete(&paths::in_dir(paths::PLANS, id))?;
            }
        }
    }
    Ok(())
}

/// Every snapshot, trusted and complete, and the lock sessions they name. Aborts when one
/// cannot be read or trusted, or one seen before is missing from the listing.
fn all_snapshots(repo: &Repository) -> Result<(Vec<SnapshotEntry>, HashSet<Id>), PruneError> {
    // What this database saw *before* the listing: a backup sharing it may record a new
    // snapshot after the listing, and that one is not missing.
    let seen_before = repo.db().seen_snapshots()?;
    let (snapshots, rejected) = repo.load_snapshots_from_store()?;
    // A snapshot no trusted key wrote protects nothing (issue 15: a write-only key's holder
    // must not be able to stall prune, nor make it keep or drop anything). One whose bytes no
    // longer match its name may be a real snapshot damaged in storage: deleting its data on
    // the strength of that would be wrong.
    let damaged: Vec<_> = rejected.iter().filter(|r| r.damaged).collect();
    if let Some(first) = damaged.first() {
        return Err(PruneError::UntrustedSnapshots {
            count: damaged.len(),
            first: paths::in_dir(paths::SNAPSHOTS, &first.id),
            reason: first.reason.clone(),
        });
    }
    // A store that withholds a revocation or hides a snapshot must not steer what is deleted.
    let anchors = repo.check_anchors(&snapshots)?;
    if let Some(first) = anchors.describe().into_iter().next() {
        return Err(PruneError::Anchors(first));
    }
    let listed: HashSet<Id> = snapshots.iter().map(|e| e.id).collect();
    let vanished: Vec<Id> = seen_before.into_iter().map(|(id, _)| id).filter(|id| !listed.contains(id)).collect();
    if !vanished.is_empty() {
        // Forgotten elsewhere (a signed record says so), or lost: only the latter stops prune.
        let forgotten: HashSet<Id> = repo
            .plan_records()?
            .into_iter()
            .filter_map(|(_, r)| match r {
                PlanRecord::Forgotten { snapshots, .. } => Some(snapshots),
                _ => None,
            })
            .flatten()
            .collect();
        if let Some(lost) = vanished.iter().find(|id| !forgotten.contains(id)) {
            return Err(PruneError::VanishedSnapshot(paths::in_dir(paths::SNAPSHOTS, lost)));
        }
        repo.db().forget_snapshots(&vanished)?;
    }
    let sessions = snapshots.iter().filter_map(|e| super::forget::lock_session(&e.snapshot)).collect();
    Ok((snapshots, sessions))
}

/// A blob as prune tracks it: (domain, blob id). Every blob under a snapshot's root tree is in
/// the root tree's domain, and only that domain's index files can vouch for where it is: an
/// index file of another key naming the same id is junk (issue 15).
type DomainBlob = (Id, Id);

/// Every blob (trees and data) the snapshots reference, with its domain. Blobs are located
/// through the local index, else through `extra` (tables of condemned packs no index lists
/// any more).
fn referenced_blobs(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    extra: &HashMap<DomainBlob, BlobLocation>,
) -> Result<HashSet<DomainBlob>, PruneError> {
    let locatable = |blob: &DomainBlob| -> Result<bool, PruneError> {
        Ok(extra.contains_key(blob) || !repo.db().blob_packs(&blob.0, &blob.1)?.is_empty())
    };
    let mut seen: HashSet<DomainBlob> = HashSet::new();
    // A root tree's domain is the one whose copy of it verifies; its children share it.
    let mut pending: Vec<(Id, Option<Id>, Id)> = snapshots.iter().map(|e| (e.snapshot.tree, None, e.id)).collect();
    while let Some((tree_id, domain, snapshot)) = pending.pop() {
        if domain.is_some_and(|d| seen.contains(&(d, tree_id))) {
            continue;
        }
        let missing = || PruneError::Unreachable(format!("tree {tree_id} of snapshot {}", snapshot.short()));
        let (domain, tree) = load_tree_in(repo, &tree_id, domain, extra)?.ok_or_else(missing)?;
        if !seen.insert((domain, tree_id)) {
            continue;
        }
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { subtree } => pending.push((subtree, Some(domain), snapshot)),
                NodeKind::File { content, .. } => {
                    for blob in content {
                        if seen.insert((domain, blob)) && !locatable(&(domain, blob))? {
                            return Err(PruneError::Unreachable(format!(
                                "data blob {blob} of snapshot {}",
                                snapshot.short()
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(seen)
}

/// A tree and the domain it verifies in (`domain`, when known): from the local cache, else the
/// first stored copy that verifies. `None` when no index lists it.
fn load_tree_in(
    repo: &Repository,
    id: &Id,
    domain: Option<Id>,
    extra: &HashMap<DomainBlob, BlobLocation>,
) -> Result<Option<(Id, Tree)>, PruneError> {
    let decode = |bytes: &[u8]| Tree::decode(bytes).map_err(RepoError::format(format!("tree {id}")));
    if let Some(bytes) = repo.db().cached_tree(id)? {
        if let Some(found) = repo.domain_naming(&bytes, id).filter(|d| domain.is_none_or(|want| want == *d)) {
            return Ok(Some((found, decode(&bytes)?)));
        }
    }
    let mut copies = repo.db().blob_locations(id)?;
    copies.extend(extra.iter().filter(|((_, blob), _)| blob == id).map(|(_, location)| *location));
    copies.retain(|c| domain.is_none_or(|want| want == c.domain));
    let mut failure = None;
    for copy in &copies {
        match repo.read_blob_exactly(copy) {
            Ok(bytes) => return Ok(Some((copy.domain, decode(&bytes)?))),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(None),
    }
}

/// The storage listing of `data/`, cross-checked against what the index says is stored.
fn listed_packs(repo: &Repository, indexed: &HashMap<Id, u64>) -> Result<HashMap<Id, u64>, PruneError> {
    let listed: HashMap<Id, u64> = repo.store.list_ids(paths::DATA)?.into_iter().collect();
    for (pack, size) in indexed {
        match listed.get(pack) {
            None => {
                return Err(PruneError::ListingShort { pack: paths::pack(pack), problem: "missing".into() });
            }
            Some(listed_size) if listed_size != size => {
                return Err(PruneError::ListingShort {
                    pack: paths::pack(pack),
                    problem: format!("{listed_size} bytes instead of {size}"),
                });
            }
            Some(_) => {}
        }
    }
    Ok(listed)
}

fn condemn_phase(
    repo: &Repository,
    options: &PruneOptions,
    report: &mut PruneReport,
    progress: &impl Fn(&str),
) -> Result<(), PruneError> {
    // Snapshots first, then the index, then the packs: each is stored after what it needs,
    // so whatever a listed snapshot references is in the index read after it.
    progress("reading snapshots");
    let (snapshots, _) = all_snapshots(repo)?;
    repo.sync_index()?;
    // Exactly the index files the local index holds now: the new index replaces these.
    let mut index_files: Vec<Id> = repo.db().index_files()?.into_iter().collect();
    index_files.sort();
    // By (pack, domain): a pack another key's index file also claims appears twice.
    let contents = repo.db().pack_contents()?;
    let indexed_sizes: HashMap<Id, u64> = contents.iter().map(|((id, _), (size, _))| (*id, *size)).collect();
    let listed = listed_packs(repo, &indexed_sizes)?;
    progress(&format!("finding the data {} snapshots use", snapshots.len()));
    let referenced = referenced_blobs(repo, &snapshots, &HashMap::new())?;
    let used_at = choose_copies(repo, &contents, &referenced);
    let is_used = |pack: &Id, domain: &Id, blob: &Id| used_at.get(&(*domain, *blob)).is_some_and(|p| p.contains(pack));

    struct PackUse {
        id: Id,
        size: u64,
        used: u64,
    }
    let mut by_pack: HashMap<Id, PackUse> = HashMap::new();
    for ((pack, domain), (size, entries)) in &contents {
        let used: u64 = entries.iter().filter(|e| is_used(pack, domain, &e.id)).map(|e| u64::from(e.length)).sum();
        by_pack.entry(*pack).or_insert(PackUse { id: *pack, size: *size, used: 0 }).used += used;
    }
    let mut uses: Vec<PackUse> = by_pack.into_values().collect();
    uses.sort_by_key(|u| u.id);
    report.total_pack_bytes = listed.values().sum();
    let unused: Vec<Id> = uses.iter().filter(|u| u.used == 0).map(|u| u.id).collect();
    let orphans: Vec<Id> = listed.keys().filter(|id| !indexed_sizes.contains_key(id)).copied().collect();
    let kept_total: u64 = uses.iter().filter(|u| u.used > 0).map(|u| u.size).sum();
    let mut partly: Vec<&PackUse> = uses.iter().filter(|u| u.used > 0 && u.used < u.size).collect();
    // Most wasteful first, until the waste left is within the limit.
    partly.sort_by(|a, b| (b.size - b.used).saturating_mul(a.size).cmp(&(a.size - a.used).saturating_mul(b.size)));
    let limit = (kept_total as f64 * options.max_unused_percent / 100.0) as u64;
    let mut waste: u64 = partly.iter().map(|u| u.size - u.used).sum();
    let mut repack: Vec<Id> = Vec::new();
    for u in &partly {
        // Pack overhead (header, table) is not waste a repack could recover; ignore small gaps.
        if waste <= limit || u.size - u.used < 4096 {
            break;
        }
        waste -= u.size - u.used;
        repack.push(u.id);
    }
    report.unused_bytes_left = waste;
    report.packs_unused = unused.len() as u64;
    report.packs_to_repack = repack.len() as u64;
    report.orphan_packs = orphans.len() as u64;
    let size_of = |id: &Id| listed.get(id).copied().unwrap_or(0);
    let condemned_bytes: u64 = unused.iter().chain(&repack).chain(&orphans).map(size_of).sum();
    report.bytes_repacked = uses.iter().filter(|u| repack.contains(&u.id)).map(|u| u.used).sum();
    report.bytes_freed = condemned_bytes as i64 - report.bytes_repacked as i64;
    if unused.is_empty() && repack.is_empty() && orphans.is_empty() {
        progress("nothing to prune");
        return Ok(());
    }
    if options.dry_run {
        return Ok(());
    }

    progress(&format!("repacking {} packs", repack.len()));
    let repack_set: HashSet<Id> = repack.iter().copied().collect();
    // Live blobs stay in their own domain: new packs and index files per domain.
    let mut writers: HashMap<Id, Packer> = HashMap::new();
    let mut groups: Vec<&(Id, Id)> = contents.keys().filter(|(pack, _)| repack_set.contains(pack)).collect();
    groups.sort();
    for key @ (pack, domain) in groups {
        let (_, entries) = &contents[key];
        for entry in entries.iter().filter(|e| is_used(pack, domain, &e.id)) {
            let plain = repo.read_blob_exactly(&BlobLocation { pack: *pack, entry: *entry, domain: *domain })?;
            let writer = match writers.entry(*domain) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Packer::new(repo, domain_keys(repo, domain)?, "prune-after-new-pack"))
                }
            };
            writer.add(entry.kind, entry.id, &plain)?;
        }
    }
    let mut indexes: HashMap<Id, IndexFile> = HashMap::new();
    for (domain, writer) in writers {
        let new_packs = writer.finish()?;
        report.packs_written += new_packs.len() as u64;
        report.bytes_freed -= new_packs.iter().map(|p| p.size as i64).sum::<i64>();
        indexes.entry(domain).or_default().packs.extend(new_packs);
    }
    report.bytes_freed += report.bytes_repacked as i64;

    // Every kept pack whole (unused blobs in it included: they stay stored), under each domain
    // that uses it, plus the new ones. A domain's claim on a kept pack that no snapshot uses
    // there (another key's index naming the pack) is dropped.
    let condemned: HashSet<Id> = unused.iter().chain(&repack).chain(&orphans).copied().collect();
    for ((pack, domain), (size, entries)) in &contents {
        if !condemned.contains(pack) && entries.iter().any(|e| is_used(pack, domain, &e.id)) {
            indexes.entry(*domain).or_default().packs.push(IndexPack {
                id: *pack,
                size: *size,
                blobs: entries.clone(),
            });
        }
    }
    let mut domains: Vec<Id> = indexes.keys().copied().collect();
    domains.sort();
    for domain in domains {
        let mut index = indexes.remove(&domain).unwrap_or_default();
        index.packs.sort_by_key(|p| p.id);
        if !index.packs.is_empty() {
            repo.save_index_in(&domain_keys(repo, &domain)?, &index)?;
        }
    }
    crashpoint::hit("prune-after-index");
    debug_assert!(repack_set.iter().all(|p| condemned.contains(p)));

    let mut packs: Vec<Id> = condemned.into_iter().collect();
    packs.sort();
    let record = PlanRecord::Condemn {
        nonce: crate::crypto::random_bytes(),
        created_unix: now_unix(),
        packs,
        superseded_index: index_files,
    };
    let plan_id = write_record(repo, &record)?;
    crashpoint::hit("prune-after-plan");
    // Another prune condemned at the same time: withdraw (our new packs and index only
    // duplicate what is kept). If both withdraw, the next run starts afresh.
    let rivals = repo
        .plan_records()?
        .into_iter()
        .filter(|(id, r)| *id != plan_id && matches!(r, PlanRecord::Condemn { .. }))
        .count();
    if rivals > 0 {
        repo.store.delete(&paths::in_dir(paths::PLANS, &plan_id))?;
        return Err(PruneError::ConcurrentPrune);
    }
    delete_phase(repo, options, plan_id, &record, None, report, progress)
}

/// Where each referenced blob is used: the lowest pack holding it in its domain, as reads
/// pick. When several copies exist, the one kept is the first that reads back and verifies
/// (a holder of a domain's keys, such as a thief of a revoked key, may have stored junk under
/// a real id); if none does, all are kept.
fn choose_copies(
    repo: &Repository,
    contents: &HashMap<(Id, Id), (u64, Vec<crate::format::pack::PackEntry>)>,
    referenced: &HashSet<DomainBlob>,
) -> HashMap<DomainBlob, Vec<Id>> {
    let mut copies: HashMap<DomainBlob, Vec<BlobLocation>> = HashMap::new();
    for ((pack, domain), (_, entries)) in contents {
        for entry in entries {
            if referenced.contains(&(*domain, entry.id)) {
                copies.entry((*domain, entry.id)).or_default().push(BlobLocation {
                    pack: *pack,
                    entry: *entry,
                    domain: *domain,
                });
            }
        }
    }
    copies
        .into_iter()
        .map(|(blob, mut locations)| {
            locations.sort_by_key(|l| l.pack);
            let packs = if locations.len() == 1 {
                vec![locations[0].pack]
            } else {
                match locations.iter().find(|l| repo.read_blob_exactly(l).is_ok()) {
                    Some(good) => vec![good.pack],
                    None => {
                        log::warn!("no copy of blob {} verifies; prune keeps every copy", blob.1);
                        locations.iter().map(|l| l.pack).collect()
                    }
                }
            };
            (blob, packs)
        })
        .collect()
}

fn domain_keys(repo: &Repository, domain: &Id) -> Result<crate::keys::DomainKeys, PruneError> {
    repo.domain(domain)
        .cloned()
        .ok_or_else(|| PruneError::Repo(RepoError::ForeignDomain { object: format!("domain {}", domain.short()) }))
}

fn write_record(repo: &Repository, record: &PlanRecord) -> Result<Id, PruneError> {
    let bytes = record.encode(&repo.id(), &repo.keys.signer);
    let id = Id::of_bytes(&bytes);
    repo.store.write(&paths::in_dir(paths::PLANS, &id), bytes)?;
    Ok(id)
}

fn delete_phase(
    repo: &Repository,
    options: &PruneOptions,
    plan_id: Id,
    record: &PlanRecord,
    wait: Option<(Id, i64, Vec<LockSeen>)>,
    report: &mut PruneReport,
    progress: &impl Fn(&str),
) -> Result<(), PruneError> {
    let PlanRecord::Condemn { packs: condemned, superseded_index, .. } = record else {
        return Ok(());
    };
    // The backups that may have missed the plan: every lock listed after it was stored.
    let (wait_id, listed_unix, locks) = match wait {
        Some(wait) => wait,
        None => {
            crashpoint::hit("prune-before-lock-listing");
            let (newest, _) = list_locks(&repo.store)?;
            let mut locks: Vec<LockSeen> = newest.into_iter().map(|(session, seq)| LockSeen { session, seq }).collect();
            locks.sort();
            let listed_unix = now_unix();
            let id = write_record(repo, &PlanRecord::Wait { plan: plan_id, listed_unix, locks: locks.clone() })?;
            crashpoint::hit("prune-after-wait-record");
            (id, listed_unix, locks)
        }
    };
    // Locks before snapshots: a backup writes its snapshot before its ended marker, so one
    // seen ended here has its snapshot in the listing below.
    let (newest, markers) = list_locks(&repo.store)?;
    let (snapshots, finished) = all_snapshots(repo)?;
    let expired = now_unix().saturating_sub(listed_unix) >= options.lock_timeout.as_secs() as i64;
    let mut stale = HashSet::new();
    let mut waiting = Vec::new();
    for lock in &locks {
        // Markers all gone: only forget and prune delete them, and only for finished or
        // dead backups (a forgotten snapshot no longer vouches for its session).
        if finished.contains(&lock.session) || !newest.contains_key(&lock.session) {
            continue;
        }
        let ended = newest.get(&lock.session) == Some(&ENDED_SEQ);
        let refreshed = newest.get(&lock.session).is_some_and(|seq| *seq > lock.seq);
        if ended || (!refreshed && expired) {
            stale.insert(lock.session);
        } else {
            waiting.push(lock.session.short());
        }
    }
    if !waiting.is_empty() {
        progress(&format!(
            "{} backup(s) that started before this prune are still running; nothing deleted yet, run prune again \
             after they finish",
            waiting.len()
        ));
        report.waiting_for = waiting;
        return Ok(());
    }

    // Safe from here on: every backup that could have used condemned blobs without knowing
    // has written its snapshot (or is dead). Re-read what they reference.
    progress("checking that no snapshot needs what the plan condemned");
    repo.sync_index()?;
    let superseded: HashSet<Id> = superseded_index.iter().copied().collect();
    let mut surviving: HashMap<Id, IndexPack> = HashMap::new();
    let mut surviving_blobs: HashSet<DomainBlob> = HashSet::new();
    for (id, _) in repo.store.list_ids(paths::INDEX)? {
        if !superseded.contains(&id) {
            let (domain, file) = match repo.read_index_file(&id) {
                Ok(read) => read,
                // Junk no key opens vouches for nothing (it is never superseded, so it stays).
                Err(RepoError::ForeignDomain { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            for pack in file.packs {
                surviving_blobs.extend(pack.blobs.iter().map(|e| (domain, e.id)));
                surviving.insert(pack.id, pack);
            }
        }
    }
    let surviving_sizes: HashMap<Id, u64> = surviving.values().map(|p| (p.id, p.size)).collect();
    let listed = listed_packs(repo, &surviving_sizes)?;
    // Tables of condemned packs still stored: a kill may have removed the index files that
    // listed them, and a snapshot may still need them.
    let mut condemned_tables: HashMap<Id, (Id, IndexPack)> = HashMap::new();
    let mut extra: HashMap<DomainBlob, BlobLocation> = HashMap::new();
    for pack in condemned {
        let Some(&size) = listed.get(pack) else { continue };
        match repo.read_pack_table(pack, size) {
            Ok((domain, blobs)) => {
                for entry in &blobs {
                    extra.entry((domain, entry.id)).or_insert(BlobLocation { pack: *pack, entry: *entry, domain });
                }
                condemned_tables.insert(*pack, (domain, IndexPack { id: *pack, size, blobs }));
            }
            Err(e) => log::warn!("condemned pack {pack} is unreadable ({e}); it is deleted as planned"),
        }
    }
    let referenced = referenced_blobs(repo, &snapshots, &extra)?;
    let mut rescue: HashMap<Id, IndexFile> = HashMap::new();
    let mut rescued_blobs: HashSet<DomainBlob> = HashSet::new();
    let mut delete = Vec::new();
    for pack in condemned {
        if surviving.contains_key(pack) {
            continue; // a newer index file lists it: a backup adopted or finished it
        }
        let Some((domain, table)) = condemned_tables.remove(pack) else {
            if listed.contains_key(pack) {
                delete.push(*pack);
            }
            continue;
        };
        let needed = |e: &crate::format::pack::PackEntry| {
            referenced.contains(&(domain, e.id)) && !surviving_blobs.contains(&(domain, e.id))
        };
        if table.blobs.iter().any(needed) {
            rescued_blobs.extend(table.blobs.iter().map(|e| (domain, e.id)));
            rescue.entry(domain).or_default().packs.push(table);
        } else {
            delete.push(*pack);
        }
    }
    if let Some(lost) = referenced.iter().find(|b| !surviving_blobs.contains(b) && !rescued_blobs.contains(b)) {
        return Err(PruneError::Unreachable(format!("blob {} would be in no index file after this prune", lost.1)));
    }
    if !rescue.is_empty() {
        let count: usize = rescue.values().map(|f| f.packs.len()).sum();
        progress(&format!("{count} condemned packs are still needed; keeping them"));
        report.packs_rescued = count as u64;
        for (domain, file) in &rescue {
            repo.save_index_in(&domain_keys(repo, domain)?, file)?;
        }
        crashpoint::hit("prune-after-rescue");
    }

    progress(&format!("deleting {} index files and {} packs", superseded.len(), delete.len()));
    let mut removed_index = Vec::new();
    for id in superseded_index {
        repo.store.delete(&paths::in_dir(paths::INDEX, id))?;
        removed_index.push(*id);
        report.index_files_removed += 1;
        crashpoint::hit("prune-mid-index-delete");
    }
    repo.db().remove_index_files(&removed_index)?;
    crashpoint::hit("prune-after-index-delete");
    for pack in &delete {
        repo.store.delete(&paths::pack(pack))?;
        report.packs_deleted += 1;
        crashpoint::hit("prune-mid-pack-delete");
    }
    crashpoint::hit("prune-after-pack-delete");
    for (session, path) in markers {
        if finished.contains(&session) || stale.contains(&session) {
            repo.store.delete(&path)?;
            report.locks_removed += 1;
        }
    }
    report.spool_files_removed += remove_old_spool_files(repo, options.lock_timeout);
    repo.store.delete(&paths::in_dir(paths::PLANS, &wait_id))?;
    crashpoint::hit("prune-after-wait-delete");
    repo.store.delete(&paths::in_dir(paths::PLANS, &plan_id))?;
    Ok(())
}

/// Spool files in a local repository's `.tmp` untouched for the lock timeout: left by a
/// killed backup (a running one writes its spool files continuously and renames them soon).
fn remove_old_spool_files(repo: &Repository, older_than: Duration) -> u64 {
    if repo.store.spool_dir() == std::env::temp_dir() {
        return 0; // not ours alone to clean
    }
    let Ok(entries) = std::fs::read_dir(repo.store.spool_dir()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= older_than);
        let ours = entry.file_name().to_string_lossy().starts_with("pack-");
        if old && ours && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
