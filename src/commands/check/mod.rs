//! `coffer check`: verifies that the repository holds everything its snapshots need, and names
//! every damaged or missing object by its storage path.
//!
//! Always (any key, index files read fresh from storage, not from the local cache):
//! - every index file decrypts, parses, and its content hash equals its name;
//! - every pack an index file lists exists in storage with the size the index records, and
//!   every blob entry lies inside it; packs in no index file are reported as orphans (a
//!   warning: an interrupted backup leaves them, prune removes them);
//! - every snapshot's content hash equals its name and it is signed by a trusted key.
//!
//! With the full key, additionally: every tree reachable from every snapshot is read from
//! storage (not the local tree cache) and verified, and every data blob a file references is
//! in the index with the file's size adding up. With `read_data`, whole packs are downloaded
//! one per worker at a time (memory stays bounded by a few packs): BLAKE3 of the bytes equals
//! the pack's name, the pack key opens, the blob table matches the index, and every blob
//! decrypts and matches its id.
//!
//! The index of the check is held in memory (about 100 bytes per blob), as in restic's check.
//!
//! Here: the report, the order of the steps, and the checks of snapshots and signers. The
//! steps with more to them have a file each: `index` (the check's own index, and packs against
//! storage), `trees` (the walk of every snapshot's trees), `packs` (`--read-data`), `subset`
//! (which packs `--read-data` reads).

mod index;
mod packs;
mod subset;
#[cfg(test)]
mod tests;
mod trees;

use serde::Serialize;

pub use subset::{ParseSubsetError, ReadData};

use index::{check_packs, load_index};
use packs::read_packs;
use trees::check_trees;

use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::layout;
use crate::repo::{RepoError, Repository};

/// Packs downloaded at once with `read_data`, and pack regions of trees read ahead at once.
const READ_WORKERS: usize = 4;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// One finding, about one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    /// Storage path of the object: `data/ab/abcd…`, `index/…`, `snapshots/…`.
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Damage: data that a snapshot needs is missing or wrong, or an object is corrupt.
    pub errors: Vec<CheckProblem>,
    /// Worth knowing but harmless: orphan packs, stray files, what was not checked.
    pub warnings: Vec<CheckProblem>,
    pub index_files_checked: u64,
    /// Packs listed in the index whose presence and size were checked.
    pub packs_checked: u64,
    /// Packs downloaded and verified in full (`read_data`).
    pub packs_read: u64,
    /// Blobs decrypted and verified against their id (trees, and with `read_data` all blobs).
    pub blobs_checked: u64,
    pub snapshots_checked: u64,
    pub trees_checked: u64,
    /// Bytes downloaded for the check.
    pub bytes_read: u64,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CheckProblem { object: object.into(), message: message.into() });
    }

    fn warn(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(CheckProblem { object: object.into(), message: message.into() });
    }
}

/// Checks the repository; see the module documentation for what. Findings go into the report;
/// an `Err` means the check itself could not run (storage unreachable, a write-only key asked
/// to read data).
pub fn check(repo: &Repository, opts: &CheckOptions, progress: impl Fn(&str)) -> Result<CheckReport, RepoError> {
    let full_key = repo.keys().secret.is_some();
    if opts.read_data != ReadData::None && !full_key {
        return Err(RepoError::WriteOnly { what: "check --read-data" });
    }
    let mut report = CheckReport::default();

    // Keep the local cache in step for later commands; the check itself reads index files
    // afresh below, so a failure here (a damaged index file) is reported from there.
    progress("refreshing the local index cache");
    let listing = repo.list_objects(layout::INDEX)?;
    let ids = listing
        .iter()
        .filter_map(|(path, size)| Some((path.strip_prefix(layout::INDEX).and_then(Id::from_hex)?, *size)));
    let synced = repo.sync_index_listed(ids.collect());

    progress("reading index files");
    let index = load_index(repo, listing, &mut report)?;
    if let Err(e) = synced {
        if !report.errors.iter().any(|p| p.object.starts_with(layout::INDEX)) {
            report.warn(layout::INDEX, format!("the local index cache could not be refreshed: {e}"));
        }
    }

    progress("checking packs");
    let missing_packs = check_packs(repo, &index, &mut report)?;

    progress("checking snapshots");
    check_signers(repo, &mut report)?;
    check_vanished_snapshots(repo, &mut report)?;
    if full_key {
        let (snapshots, rejected) = repo.load_snapshots_from_store()?;
        report.snapshots_checked = (snapshots.len() + rejected.len()) as u64;
        for r in rejected {
            report.error(layout::in_dir(layout::SNAPSHOTS, &r.id), format!("snapshot ignored: {}", r.reason));
        }
        for problem in repo.check_anchors(&snapshots)?.describe() {
            report.error("trust anchors", problem);
        }
        progress("checking trees");
        check_trees(repo, &index, &snapshots, &mut report, &progress);
    } else {
        check_snapshot_signatures(repo, &mut report)?;
        report.warn(
            layout::SNAPSHOTS,
            "trees and file contents were not checked: this key can only write; check with the full key",
        );
    }

    if opts.read_data != ReadData::None {
        let secret = repo.require_full_key("check --read-data")?;
        read_packs(repo, secret, &index, &missing_packs, opts.read_data, &mut report, &progress);
    }
    Ok(report)
}

/// Snapshots this machine saw before that are gone: a storage owner hiding history, or a
/// `forget` run elsewhere. Reported as errors, since nothing local can tell the two apart
/// (a `forget` here clears them from the list).
fn check_vanished_snapshots(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    let present: std::collections::HashSet<Id> =
        repo.list_object_ids(layout::SNAPSHOTS)?.into_iter().map(|(id, _)| id).collect();
    for (id, time) in repo.seen_snapshots()? {
        if !present.contains(&id) {
            let when = chrono::DateTime::from_timestamp(time, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
            report.error(
                layout::in_dir(layout::SNAPSHOTS, &id),
                format!("snapshot of {when} was seen here before and is now missing from the repository"),
            );
        }
    }
    Ok(())
}

/// The reason inside a repository error, without the object name the report already gives.
fn describe(e: &RepoError) -> String {
    match e {
        RepoError::Corrupt { detail, .. } => detail.clone(),
        RepoError::Format { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// `signers/` objects that do not verify, and revocations this machine saw that are gone.
fn check_signers(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    // As read when the repository was opened, a moment ago: listing `signers/` again would
    // cost a round trip per check for nothing.
    let signers = repo.signers_at_open()?;
    for (id, reason) in &signers.invalid {
        report.error(layout::in_dir(layout::SIGNERS, id), format!("signer record ignored: {reason}"));
    }
    for signer in &signers.vanished_revocations {
        report.error(
            layout::SIGNERS,
            format!(
                "the revocation of write-only key {} is gone from the repository (this machine saw it); \
                 its later snapshots stay untrusted here",
                signer.short()
            ),
        );
    }
    for (id, record) in &signers.registrations {
        let key = crate::crypto::VerifyingKey(record.verify_key).id();
        if record.wrapped_domain.is_none() && !signers.revoked.contains_key(&key) {
            report.warn(
                layout::in_dir(layout::SIGNERS, id),
                format!(
                    "write-only key {} ({}) is a version-1 key: it shares the repository's index and is bound to \
                     no host; replace it (README: \"Moving a repository to format v2\")",
                    key.short(),
                    crate::format::signer::printable(&record.label)
                ),
            );
        }
    }
    Ok(())
}

/// Without the secret key, snapshots cannot be opened, but their names and signatures can be
/// verified.
fn check_snapshot_signatures(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    let signers = repo.signers()?;
    for (id, _) in repo.list_object_ids(layout::SNAPSHOTS)? {
        let path = layout::in_dir(layout::SNAPSHOTS, &id);
        let bytes = match repo.read_object_named(&path, &id) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        report.snapshots_checked += 1;
        report.bytes_read += bytes.len() as u64;
        if Id::of_bytes(&bytes) != id {
            report.error(path, "snapshot ignored: content does not match its name");
            continue;
        }
        let verified = Snapshot::signer_id(&bytes).map_err(|e| e.to_string()).and_then(|signer| {
            let key = signers.key_for(&signer, &id)?;
            Snapshot::verify(&bytes, &repo.id(), key).map_err(|e| e.to_string())
        });
        if let Err(reason) = verified {
            report.error(path, format!("snapshot ignored: {reason}"));
        }
    }
    Ok(())
}
