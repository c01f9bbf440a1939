//! Backup lock markers and prune plans: the two halves of the handshake that keeps prune from
//! deleting what a running backup relies on (docs/design.md, "Prune protocol").
//!
//! A backup writes `locks/<session>-<seq>` when it starts and a new marker (seq + 1) every
//! [`LOCK_REFRESH`]; it never deletes one (append-only stores). Its snapshot names the session
//! (extension [`LOCK_EXTENSION`]), which is how prune tells a finished backup from a running one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, Sender};

use super::{RepoError, Repository};
use crate::format::plan::PlanRecord;
use crate::id::Id;
use crate::layout;
use crate::store::{Store, StoreError};

/// How often a running backup writes a fresh lock marker.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock whose newest marker prune has seen unchanged for this long belongs to a dead
/// backup. A live backup refreshes six times within it; one that could not (suspended
/// machine) refuses to write its snapshot (see [`BackupLock::check_fresh`]).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The snapshot extension holding the backup's lock session id.
pub const LOCK_EXTENSION: &str = "coffer.lock-session";

/// The seq of the marker a backup writes when it ends, however it ends (snapshot written,
/// failed, interrupted): prune then knows at once that this session uses nothing any more,
/// instead of waiting [`LOCK_TIMEOUT`] for it to look dead.
pub const ENDED_SEQ: u32 = 99_999_999;

/// Backups of this process whose lock is held, so that a forced exit can mark them ended.
static RUNNING: Mutex<Vec<(Store, Id)>> = Mutex::new(Vec::new());

/// Writes the ended marker of every backup of this process still holding its lock: for an
/// exit that cannot wait for them to stop (a second Ctrl-C while a read blocks).
pub fn end_running_backups() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|p| p.into_inner()));
    for (store, session) in running {
        write_ended(&store, &session);
    }
}

fn write_ended(store: &Store, session: &Id) {
    if let Err(e) = store.write(&lock_path(session, ENDED_SEQ), b"coffer backup ended v1".to_vec()) {
        log::warn!("marking the backup lock {} ended: {e}; a prune waits for it to time out", session.short());
    }
}

pub fn lock_path(session: &Id, seq: u32) -> String {
    format!("{}{}-{seq:08}", layout::LOCKS, session.to_hex())
}

fn parse_lock_name(path: &str) -> Option<(Id, u32)> {
    let name = path.rsplit('/').next()?;
    let (session, seq) = name.split_once('-')?;
    Some((Id::from_hex(session)?, seq.parse().ok()?))
}

/// Lock sessions with their newest marker's seq, and every marker as (session, path).
pub type LockListing = (HashMap<Id, u32>, Vec<(Id, String)>);

/// Every lock session in the repository with its newest marker, and every marker's path.
pub fn list_locks(repo: &Repository) -> Result<LockListing, RepoError> {
    let mut newest: HashMap<Id, u32> = HashMap::new();
    let mut markers = Vec::new();
    for (path, _) in repo.store.list(layout::LOCKS)? {
        match parse_lock_name(&path) {
            Some((session, seq)) => {
                let slot = newest.entry(session).or_insert(seq);
                *slot = (*slot).max(seq);
                markers.push((session, path));
            }
            None => log::warn!("ignoring {path}: not a lock marker"),
        }
    }
    Ok((newest, markers))
}

/// A running backup's lock: written at start, refreshed by a thread until dropped.
pub struct BackupLock {
    pub session: Id,
    last_written: Arc<Mutex<SystemTime>>,
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackupLock {
    pub fn acquire(repo: &Repository) -> Result<BackupLock, RepoError> {
        let store = &repo.store;
        let session = Id(crate::crypto::random_bytes());
        store.write(&lock_path(&session, 0), b"coffer backup lock v1".to_vec())?;
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push((store.clone(), session));
        let last_written = Arc::new(Mutex::new(SystemTime::now()));
        let (stop, stopped) = bounded::<()>(1);
        let (store, last) = (store.clone(), Arc::clone(&last_written));
        let thread = std::thread::Builder::new()
            .name("coffer-lock".into())
            .spawn(move || {
                let mut seq = 0u32;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(LOCK_REFRESH) {
                    seq += 1;
                    match store.write(&lock_path(&session, seq), b"coffer backup lock v1".to_vec()) {
                        Ok(()) => *last.lock().unwrap_or_else(|p| p.into_inner()) = SystemTime::now(),
                        Err(e) => log::warn!("refreshing the backup lock: {e}"),
                    }
                }
            })
            .map_err(|e| RepoError::Local { what: "starting the lock refresher".into(), source: e })?;
        Ok(BackupLock { session, last_written, stop: Some(stop), thread: Some(thread) })
    }

    /// Fails when the lock may have been taken for dead (not refreshed for half the timeout:
    /// the machine slept, or the store refused writes): a prune may since have removed data
    /// this backup deduplicated against, so its snapshot must not be written.
    pub fn check_fresh(&self) -> Result<(), RepoError> {
        let last = *self.last_written.lock().unwrap_or_else(|p| p.into_inner());
        let age = SystemTime::now().duration_since(last).unwrap_or_default();
        if age > LOCK_TIMEOUT / 2 {
            return Err(RepoError::Corrupt {
                object: format!("lock {}", self.session.short()),
                detail: format!(
                    "not refreshed for {} s (machine suspended?); a prune may have removed data this backup \
                     relies on, so no snapshot is written; run the backup again",
                    age.as_secs()
                ),
            });
        }
        Ok(())
    }
}

impl Drop for BackupLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = running.iter().position(|(_, s)| *s == self.session) {
            let (store, session) = running.swap_remove(at);
            drop(running);
            write_ended(&store, &session);
        }
    }
}

impl Repository {
    /// Signs and stores a prune plan record; its id (the hash of its bytes) names it.
    pub fn save_plan_record(&self, record: &PlanRecord) -> Result<Id, StoreError> {
        let bytes = record.encode(&self.id(), &self.keys.signer);
        let id = Id::of_bytes(&bytes);
        self.store.write(&layout::in_dir(layout::PLANS, &id), bytes)?;
        Ok(id)
    }

    /// Every prune plan record whose signature holds; others are reported and ignored.
    pub fn plan_records(&self) -> Result<Vec<(Id, PlanRecord)>, RepoError> {
        self.plan_records_listed(self.store.list_ids(layout::PLANS)?)
    }

    /// [`plan_records`](Self::plan_records) with `plans/` already listed.
    pub fn plan_records_listed(&self, listing: Vec<(Id, u64)>) -> Result<Vec<(Id, PlanRecord)>, RepoError> {
        let mut records = Vec::new();
        for (id, _) in listing {
            let path = layout::in_dir(layout::PLANS, &id);
            let bytes = match self.store.read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // finished by a concurrent prune
                Err(e) => return Err(e.into()),
            };
            if Id::of_bytes(&bytes) != id {
                log::warn!("ignoring {path}: content does not match its name");
                continue;
            }
            match PlanRecord::decode(&bytes, &self.id(), &self.keys.repo_verify) {
                Ok(record) => records.push((id, record)),
                Err(e) => log::warn!("ignoring {path}: {e}"),
            }
        }
        Ok(records)
    }

    /// Packs some prune plan condemned: a backup must neither deduplicate against them nor
    /// adopt them.
    pub fn condemned_packs(&self) -> Result<HashSet<Id>, RepoError> {
        self.condemned_packs_listed(self.store.list_ids(layout::PLANS)?)
    }

    /// [`condemned_packs`](Self::condemned_packs) with `plans/` already listed.
    pub fn condemned_packs_listed(&self, listing: Vec<(Id, u64)>) -> Result<HashSet<Id>, RepoError> {
        Ok(self
            .plan_records_listed(listing)?
            .into_iter()
            .filter_map(|(_, r)| match r {
                PlanRecord::Condemn { packs, .. } => Some(packs),
                PlanRecord::Wait { .. } | PlanRecord::Forgotten { .. } => None,
            })
            .flatten()
            .collect())
    }
}
/// The lock session a snapshot's backup held (docs/design.md, "Prune protocol"): prune keeps
/// the packs of a session still running, forget counts sessions it ends.
pub fn lock_session(snapshot: &crate::format::snapshot::Snapshot) -> Option<Id> {
    snapshot
        .extensions
        .iter()
        .find(|(name, _)| name == LOCK_EXTENSION)
        .and_then(|(_, value)| <[u8; 32]>::try_from(value.as_slice()).ok().map(Id))
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::format::snapshot::Snapshot;
    use crate::repo::test_kit::memory_repo;

    #[test]
    fn a_backup_lock_is_listed_while_held_and_marked_ended_when_dropped() {
        let (repo, _cache) = memory_repo();
        assert!(list_locks(&repo).unwrap().0.is_empty());
        let lock = BackupLock::acquire(&repo).unwrap();
        let session = lock.session;
        let (newest, markers) = list_locks(&repo).unwrap();
        assert_eq!(newest.get(&session), Some(&0));
        assert_eq!(markers, vec![(session, lock_path(&session, 0))]);
        lock.check_fresh().expect("just written");
        drop(lock);
        let (newest, markers) = list_locks(&repo).unwrap();
        assert_eq!(newest.get(&session), Some(&ENDED_SEQ), "a prune knows at once that it ended");
        assert_eq!(markers.len(), 2, "markers are never deleted by the backup (append-only stores)");
    }

    #[test]
    fn names_under_locks_that_are_not_markers_are_ignored() {
        let (repo, _cache) = memory_repo();
        repo.write_object(&format!("{}not-a-lock", layout::LOCKS), b"x".to_vec()).unwrap();
        repo.write_object(&format!("{}{}-x", layout::LOCKS, Id([1; 32]).to_hex()), b"x".to_vec()).unwrap();
        let (newest, markers) = list_locks(&repo).unwrap();
        assert!(newest.is_empty() && markers.is_empty());
    }

    #[test]
    fn a_snapshot_names_the_session_of_its_backup() {
        let session = Id([7; 32]);
        let with = |value: Vec<u8>| Snapshot {
            extensions: vec![(LOCK_EXTENSION.to_string(), ByteBuf::from(value))],
            ..Snapshot::default()
        };
        assert_eq!(lock_session(&with(session.0.to_vec())), Some(session));
        assert_eq!(lock_session(&with(vec![7; 31])), None, "not an id");
        assert_eq!(lock_session(&Snapshot::default()), None);
    }
}
