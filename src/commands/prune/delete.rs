//! Phase 2, *delete*: once the backups that could still need condemned packs have finished or
//! died, rescue what a snapshot still needs and delete the rest, index files before packs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::crashpoint;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::plan::{LockSeen, PlanRecord};
use crate::id::Id;
use crate::layout;
use crate::repo::locks::{list_locks, ENDED_SEQ};
use crate::repo::{now_unix, BlobLocation, RepoError, Repository, SnapshotEntry};

use super::live::{all_snapshots, listed_packs, referenced_blobs, DomainBlob};
use super::{domain_keys, write_record, PruneError, PruneOptions, PruneReport};

pub(super) fn delete_phase(
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
    let Some(Settled { wait_id, markers, snapshots, finished, stale }) =
        wait_for_backups(repo, options, plan_id, wait, report, progress)?
    else {
        return Ok(());
    };

    // Safe from here on: every backup that could have used condemned blobs without knowing
    // has written its snapshot (or is dead). Re-read what they reference.
    progress("checking that no snapshot needs what the plan condemned");
    repo.sync_index()?;
    let superseded: HashSet<Id> = superseded_index.iter().copied().collect();
    let delete = rescue_needed(repo, &snapshots, condemned, &superseded, report, progress)?;

    progress(&format!("deleting {} index files and {} packs", superseded.len(), delete.len()));
    let mut removed_index = Vec::new();
    for id in superseded_index {
        repo.delete_index_file(id)?;
        removed_index.push(*id);
        report.index_files_removed += 1;
        crashpoint::hit("prune-mid-index-delete");
    }
    repo.forget_local_index_files(&removed_index)?;
    crashpoint::hit("prune-after-index-delete");
    for pack in &delete {
        repo.delete_pack(pack)?;
        report.packs_deleted += 1;
        crashpoint::hit("prune-mid-pack-delete");
    }
    crashpoint::hit("prune-after-pack-delete");
    for (session, path) in markers {
        if finished.contains(&session) || stale.contains(&session) {
            repo.delete_object(&path)?;
            report.locks_removed += 1;
        }
    }
    report.spool_files_removed += remove_old_spool_files(repo, options.lock_timeout);
    repo.delete_plan_record(&wait_id)?;
    crashpoint::hit("prune-after-wait-delete");
    repo.delete_plan_record(&plan_id)?;
    Ok(())
}

/// What phase 2 knows once no backup it waits for still runs.
struct Settled {
    /// The wait record, deleted last but one.
    wait_id: Id,
    /// Every lock marker, as (session, path).
    markers: Vec<(Id, String)>,
    /// Every snapshot, listed after the locks.
    snapshots: Vec<SnapshotEntry>,
    /// Sessions whose snapshot is stored.
    finished: HashSet<Id>,
    /// Sessions that ended or died without a snapshot.
    stale: HashSet<Id>,
}

/// Whether phase 2 may go on: `None` (with `report.waiting_for` set) while a backup whose lock
/// was listed after the plan was stored still runs; else what the deletes need.
fn wait_for_backups(
    repo: &Repository,
    options: &PruneOptions,
    plan_id: Id,
    wait: Option<(Id, i64, Vec<LockSeen>)>,
    report: &mut PruneReport,
    progress: &impl Fn(&str),
) -> Result<Option<Settled>, PruneError> {
    // The backups that may have missed the plan: every lock listed after it was stored.
    let (wait_id, listed_unix, locks) = match wait {
        Some(wait) => wait,
        None => {
            crashpoint::hit("prune-before-lock-listing");
            let (newest, _) = list_locks(repo)?;
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
    let (newest, markers) = list_locks(repo)?;
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
        return Ok(None);
    }
    Ok(Some(Settled { wait_id, markers, snapshots, finished, stale }))
}

/// The condemned packs to delete. Those a snapshot still needs (and no surviving index file
/// lists) are rescued instead: indexed again, and kept.
fn rescue_needed(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    condemned: &[Id],
    superseded: &HashSet<Id>,
    report: &mut PruneReport,
    progress: &impl Fn(&str),
) -> Result<Vec<Id>, PruneError> {
    let (surviving, surviving_blobs) = surviving_index(repo, superseded)?;
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
    let referenced = referenced_blobs(repo, snapshots, &extra)?;
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
    Ok(delete)
}

/// The packs the index files that stay (not superseded) list, and their blobs.
fn surviving_index(
    repo: &Repository,
    superseded: &HashSet<Id>,
) -> Result<(HashMap<Id, IndexPack>, HashSet<DomainBlob>), PruneError> {
    let mut surviving: HashMap<Id, IndexPack> = HashMap::new();
    let mut surviving_blobs: HashSet<DomainBlob> = HashSet::new();
    for (id, _) in repo.list_object_ids(layout::INDEX)? {
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
    Ok((surviving, surviving_blobs))
}

/// Spool files in a local repository's `.tmp` untouched for the lock timeout: left by a
/// killed backup (a running one writes its spool files continuously and renames them soon).
fn remove_old_spool_files(repo: &Repository, older_than: Duration) -> u64 {
    if repo.spool_dir() == std::env::temp_dir() {
        return 0; // not ours alone to clean
    }
    let Ok(entries) = std::fs::read_dir(repo.spool_dir()) else { return 0 };
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
