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

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use crate::format::plan::PlanRecord;
use crate::id::Id;
use crate::repo::locks::LOCK_TIMEOUT;
use crate::repo::{RepoError, Repository};

mod condemn;
mod delete;
mod live;

use condemn::condemn_phase;
use delete::delete_phase;

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

impl From<crate::repo::DbError> for PruneError {
    fn from(e: crate::repo::DbError) -> PruneError {
        PruneError::Repo(e.into())
    }
}

impl From<crate::repo::StoreError> for PruneError {
    fn from(e: crate::repo::StoreError) -> PruneError {
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
                repo.delete_plan_record(id)?;
            }
        }
    }
    Ok(())
}

fn domain_keys(repo: &Repository, domain: &Id) -> Result<crate::keys::DomainKeys, PruneError> {
    repo.domain(domain)
        .cloned()
        .ok_or_else(|| PruneError::Repo(RepoError::ForeignDomain { object: format!("domain {}", domain.short()) }))
}

fn write_record(repo: &Repository, record: &PlanRecord) -> Result<Id, PruneError> {
    Ok(repo.save_plan_record(record)?)
}

/// Prune on a repository in memory.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::{check, CheckOptions, ReadData};
    use crate::commands::forget::{forget, ForgetOptions};
    use crate::retention::RetentionPolicy;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn data_only_a_forgotten_snapshot_used_is_deleted_and_the_rest_still_checks() {
        let fx = fixture();
        backup(&fx);
        // The second backup shares no file with the first.
        let src = fx.src.path();
        for gone in ["a.txt", "link", "sub/b.txt"] {
            std::fs::remove_file(src.join(gone)).unwrap();
        }
        std::fs::write(src.join("c.txt"), b"only in the second snapshot").unwrap();
        backup(&fx);
        let keep_last = ForgetOptions {
            policy: RetentionPolicy { keep_last: Some(1), ..RetentionPolicy::default() },
            now_unix: crate::repo::now_unix() + 60,
            ..ForgetOptions::default()
        };
        assert_eq!(forget(&fx.repo, &keep_last).unwrap().removed.len(), 1);

        let options = PruneOptions { lock_timeout: Duration::ZERO, ..PruneOptions::default() };
        let planned = prune(&fx.repo, &PruneOptions { dry_run: true, ..options.clone() }, |_| {}).unwrap();
        assert!(planned.packs_unused >= 1, "{planned:?}");
        let report = prune(&fx.repo, &options, |_| {}).unwrap();
        assert!(report.waiting_for.is_empty(), "{report:?}");
        assert!(report.packs_deleted >= 1 && report.bytes_freed > 0, "{report:?}");
        let checked = check(&fx.repo, &CheckOptions { read_data: ReadData::All }, |_| {}).unwrap();
        assert!(
            checked.errors.is_empty() && checked.warnings.is_empty(),
            "{:?} {:?}",
            checked.errors,
            checked.warnings
        );

        let again = prune(&fx.repo, &options, |_| {}).unwrap();
        assert_eq!((again.packs_unused, again.packs_to_repack, again.packs_deleted), (0, 0, 0), "{again:?}");
    }

    #[test]
    fn an_append_only_profile_refuses() {
        let fx = fixture();
        let options = PruneOptions { append_only: true, ..PruneOptions::default() };
        assert!(matches!(prune(&fx.repo, &options, |_| {}), Err(PruneError::AppendOnly("prune"))));
    }
}
