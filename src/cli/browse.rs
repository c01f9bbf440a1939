//! Reading what a repository holds: `coffer snapshots`, `ls`, `diff` and `stats` (their
//! smaller output helpers are in `everyday.rs`, the rest in `output.rs`).

use std::path::PathBuf;

use anyhow::Result;
use coffer::commands::{diff, ls, stats};
use coffer::repo::{SnapshotEntry, SnapshotFilter};
use coffer::retention::GroupBy;

use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use super::{everyday, exit, filter, open_repo, output, select};

pub fn snapshots(
    global: &GlobalArgs,
    f: &SnapshotFilterArgs,
    latest: Option<usize>,
    group_by: Option<GroupBy>,
) -> Result<u8> {
    let repo = open_repo(global)?;
    repo.require_full_key("listing snapshots")?;
    let (snapshots, rejected) = repo.load_snapshots()?;
    let mut snapshots: Vec<_> = snapshots.into_iter().filter(|e| filter(f).matches(&e.snapshot)).collect();
    if let Some(n) = latest {
        snapshots = select::latest_per_group(snapshots, n);
    }
    if let Some(by) = group_by {
        return everyday::snapshots_grouped(global, snapshots, &rejected, by);
    }
    output::snapshots(global, &snapshots, &rejected)?;
    Ok(exit::OK)
}

pub fn ls(
    global: &GlobalArgs,
    snapshot: &str,
    path: Option<PathBuf>,
    long: bool,
    f: &SnapshotFilterArgs,
) -> Result<u8> {
    let repo = open_repo(global)?;
    repo.require_full_key("ls")?;
    let entry = repo.find_snapshot(snapshot, &filter(f))?;
    if !global.quiet && !global.json {
        // On stderr, so the listing itself stays one path per line for scripts.
        eprintln!(
            "snapshot {} of {}, host {}, signed by {}",
            entry.id.short(),
            output::time(entry.snapshot.time_unix, entry.snapshot.time_nsec),
            coffer::format::signer::printable(&entry.snapshot.hostname),
            entry.signed_by
        );
    }
    let path = path.map(|p| p.as_os_str().as_encoded_bytes().to_vec());
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    ls::list(&repo, &entry.snapshot, path.as_deref(), true, |e| {
        if write_error.is_none() {
            write_error = if long && !global.json {
                everyday::ls_long(&mut out, &e).err()
            } else {
                output::ls_entry(global, &mut out, &e).err()
            };
        }
    })?;
    match write_error {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Some(e) => Err(e.into()),
        None => Ok(exit::OK),
    }
}

pub fn diff(global: &GlobalArgs, first: &str, second: &str, f: &SnapshotFilterArgs) -> Result<u8> {
    let repo = open_repo(global)?;
    repo.require_full_key("diff")?;
    let (snapshots, _) = repo.load_snapshots()?;
    let a = resolve_snapshot(&snapshots, first, &filter(f))?;
    let b = resolve_snapshot(&snapshots, second, &filter(f))?;
    let entries = diff::diff(&repo, &a.snapshot, &b.snapshot)?;
    output::diff(global, &entries)?;
    everyday::diff_summary(global, &entries)?;
    Ok(exit::OK)
}

/// `stats SNAP`: what one snapshot restores; `stats`: the repository's size and savings.
pub fn stats(global: &GlobalArgs, snapshot: Option<String>, f: &SnapshotFilterArgs) -> Result<u8> {
    let repo = open_repo(global)?;
    repo.require_full_key("stats")?;
    match snapshot {
        Some(spec) => {
            let entry = repo.find_snapshot(&spec, &filter(f))?;
            everyday::snapshot_stats(global, &entry, &stats::snapshot_stats(&repo, &entry.snapshot.tree)?)?;
        }
        None => output::stats(global, &stats::stats(&repo)?)?,
    }
    Ok(exit::OK)
}

fn resolve_snapshot(snapshots: &[SnapshotEntry], spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry> {
    Ok(coffer::repo::resolve(snapshots.to_vec(), spec, filter)?)
}
