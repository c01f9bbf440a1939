//! `coffer forget`: applies a retention policy per group of snapshots and deletes the
//! snapshot objects it does not keep. Data goes only with `prune`.
//!
//! Only authenticated snapshots take part: one that fails its signature or cannot be read is
//! never counted by a rule and never deleted here (it is reported; `check` names it). A
//! snapshot dated in the future is kept with a warning and takes no rule's slot.

use serde::Serialize;

use super::prune::PruneError;
use crate::id::Id;
use crate::repo::{RepoError, Repository, SnapshotFilter};
use crate::retention::{apply_grouped, GroupBy, GroupKey, PolicyError, RetentionPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<crate::repo::DbError> for ForgetError {
    fn from(e: crate::repo::DbError) -> ForgetError {
        ForgetError::Repo(e.into())
    }
}

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: RetentionPolicy,
    pub group_by: GroupBy,
    /// Only snapshots passing this filter are considered; others are left alone.
    pub filter: SnapshotFilter,
    pub dry_run: bool,
    /// Set for append-only profiles: forget refuses.
    pub append_only: bool,
    pub now_unix: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDecision {
    pub id: Id,
    /// The snapshot's time for people: local, to the second.
    pub time: String,
    /// The snapshot's time as stored (for machine output).
    pub time_unix: i64,
    pub time_nsec: u32,
    pub host: String,
    pub tags: Vec<String>,
    /// The key that signed it, as listings name it.
    pub signed_by: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupDecisions {
    pub group: GroupKey,
    pub snapshots: Vec<SnapshotDecision>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub groups: Vec<GroupDecisions>,
    pub removed: Vec<Id>,
    /// Kept because they are dated in the future (a clock error, or a forgery).
    pub future: Vec<Id>,
    /// Not considered: failed authentication or could not be read.
    pub untrusted: Vec<(Id, String)>,
}

pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetReport, ForgetError> {
    repo.require_full_key("forget")?;
    if options.append_only {
        return Err(PruneError::AppendOnly("forget").into());
    }
    options.policy.validate()?;
    let (snapshots, rejected) = repo.load_snapshots()?;
    let considered: Vec<(Id, crate::format::snapshot::Snapshot, Id)> = snapshots
        .iter()
        .filter(|e| options.filter.matches(&e.snapshot))
        .map(|e| (e.id, e.snapshot.clone(), e.signer))
        .collect();
    let signed_by: std::collections::HashMap<Id, String> =
        snapshots.iter().map(|e| (e.id, e.signed_by.clone())).collect();
    let groups = apply_grouped(&options.policy, options.group_by, &considered, options.now_unix, &chrono::Local)?;
    let mut report = ForgetReport {
        dry_run: options.dry_run,
        untrusted: rejected.into_iter().map(|r| (r.id, r.reason)).collect(),
        ..Default::default()
    };
    for (key, decisions) in groups {
        let mut rows = Vec::new();
        for d in decisions {
            let Some((_, s, _)) = considered.iter().find(|(id, _, _)| *id == d.id) else { continue };
            if d.reasons.iter().any(|r| r == "future") {
                report.future.push(d.id);
            }
            if !d.keep {
                report.removed.push(d.id);
            }
            let time = chrono::DateTime::from_timestamp(s.time_unix, s.time_nsec)
                .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            rows.push(SnapshotDecision {
                id: d.id,
                time,
                time_unix: s.time_unix,
                time_nsec: s.time_nsec,
                host: s.hostname.clone(),
                tags: s.tags.clone(),
                signed_by: signed_by.get(&d.id).cloned().unwrap_or_default(),
                keep: d.keep,
                reasons: d.reasons,
            });
        }
        report.groups.push(GroupDecisions { group: key, snapshots: rows });
    }
    if options.dry_run || report.removed.is_empty() {
        return Ok(report);
    }
    // The local record first: killed before the deletes, the snapshots are simply still
    // there; killed after, none is taken for a snapshot someone else removed.
    repo.record_forgotten(&report.removed)?;
    repo.forget_local_snapshots(&report.removed)?;
    // Their backups are finished; once the snapshots are gone nothing else would say so, and
    // a prune would wait for them. Markers go before the snapshots, so a kill in between
    // leaves the snapshot to vouch for its session.
    let sessions: std::collections::HashSet<Id> = considered
        .iter()
        .filter(|(id, _, _)| report.removed.contains(id))
        .filter_map(|(_, s, _)| crate::repo::locks::lock_session(s))
        .collect();
    let (_, markers) = crate::repo::locks::list_locks(repo)?;
    for (session, path) in markers {
        if sessions.contains(&session) {
            repo.delete_object(&path).map_err(RepoError::from)?;
        }
    }
    for id in &report.removed {
        repo.delete_snapshot_object(id).map_err(RepoError::from)?;
    }
    Ok(report)
}

/// Forget on a repository in memory.
#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::format::plan::PlanRecord;
    use crate::layout;
    use crate::repo::locks::{list_locks, lock_session};
    use crate::test_kit::{backup, fixture};

    fn keep_last(n: u32, dry_run: bool) -> ForgetOptions {
        ForgetOptions {
            policy: RetentionPolicy { keep_last: Some(n), ..RetentionPolicy::default() },
            dry_run,
            now_unix: crate::repo::now_unix() + 60,
            ..ForgetOptions::default()
        }
    }

    fn stored(repo: &Repository) -> Vec<Id> {
        repo.list_object_ids(layout::SNAPSHOTS).unwrap().into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn what_the_policy_drops_goes_with_its_lock_markers_and_is_recorded() {
        let fx = fixture();
        let first = backup(&fx).id;
        let second = backup(&fx).id;

        let planned = forget(&fx.repo, &keep_last(1, true)).unwrap();
        assert_eq!(planned.removed, vec![first]);
        assert_eq!(stored(&fx.repo).len(), 2, "a dry run deletes nothing");

        let report = forget(&fx.repo, &keep_last(1, false)).unwrap();
        assert_eq!(report.removed, vec![first]);
        assert_eq!(stored(&fx.repo), vec![second]);
        assert!(!fx.repo.seen_snapshots().unwrap().iter().any(|(id, _)| *id == first), "forgotten locally too");
        // The forgotten backup's lock markers go; the kept one's stay.
        let sessions: HashSet<Id> = list_locks(&fx.repo).unwrap().0.into_keys().collect();
        let (kept, _) = fx.repo.load_snapshots().unwrap();
        assert_eq!(sessions, kept.iter().filter_map(|e| lock_session(&e.snapshot)).collect());
        // A signed record says it was forgotten, so `check` elsewhere does not call it hidden.
        let records = fx.repo.plan_records().unwrap();
        assert!(records
            .iter()
            .any(|(_, r)| matches!(r, PlanRecord::Forgotten { snapshots, .. } if snapshots == &[first])));
    }

    #[test]
    fn an_append_only_profile_refuses() {
        let fx = fixture();
        backup(&fx);
        let options = ForgetOptions { append_only: true, ..keep_last(0, false) };
        assert!(matches!(forget(&fx.repo, &options), Err(ForgetError::Prune(PruneError::AppendOnly(_)))));
        assert_eq!(stored(&fx.repo).len(), 1);
    }
}
