//! Output of the smaller everyday additions (issue 17): `ls -l`, the diff summary line and
//! `stats SNAP`. Kept apart from `output.rs` so each can change without the other.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use super::output::{bytes, plural};
use super::shared_args::GlobalArgs;
use coffer::commands::diff::{Change, DiffEntry};
use coffer::commands::ls::LsEntry;
use coffer::commands::stats::SnapshotStats;
use coffer::repo::SnapshotEntry;
use coffer::retention::{GroupBy, GroupKey};
use coffer::safetext::terminal;

/// `drwxr-xr-x` for a kind and permission bits (set-id and sticky bits as `ls` shows them).
pub fn mode_string(kind: &str, mode: u32) -> String {
    let first = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "chardev" => 'c',
        "blockdev" => 'b',
        "socket" => 's',
        _ => '-',
    };
    let mut out = String::with_capacity(10);
    out.push(first);
    // (read, write, execute bit, special bit, special letter) for user, group, other.
    let triads =
        [(0o400, 0o200, 0o100, 0o4000, 's'), (0o040, 0o020, 0o010, 0o2000, 's'), (0o004, 0o002, 0o001, 0o1000, 't')];
    for (r, w, x, special, letter) in triads {
        out.push(if mode & r != 0 { 'r' } else { '-' });
        out.push(if mode & w != 0 { 'w' } else { '-' });
        out.push(match (mode & x != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// One `ls -l` line: mode, owner, group, size, mtime (local time), path (restic's layout).
pub fn ls_long(out: &mut impl Write, entry: &LsEntry) -> std::io::Result<()> {
    let user = if entry.user.is_empty() { entry.uid.to_string() } else { terminal(&entry.user).into_owned() };
    let group = if entry.group.is_empty() { entry.gid.to_string() } else { terminal(&entry.group).into_owned() };
    let mtime = chrono::DateTime::parse_from_rfc3339(&entry.mtime)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| entry.mtime.clone());
    let name = match &entry.target {
        Some(target) => format!("{} -> {}", terminal(&entry.path), terminal(target)),
        None => terminal(&entry.path).into_owned(),
    };
    writeln!(out, "{} {user:>8} {group:>8} {:>12} {mtime} {name}", mode_string(entry.kind, entry.mode), entry.size)
}

/// Counts of a diff: files added, removed and changed, with their bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiffSummary {
    pub added: (u64, u64),
    pub removed: (u64, u64),
    pub changed: (u64, u64),
    /// Entries that are not files (folders, symlinks, …) added or removed, and metadata-only
    /// changes of anything.
    pub other: u64,
}

pub fn summarize(entries: &[DiffEntry]) -> DiffSummary {
    let mut s = DiffSummary::default();
    for e in entries {
        let slot = match (e.change, e.kind) {
            (Change::Added, "file") => &mut s.added,
            (Change::Removed, "file") => &mut s.removed,
            (Change::Modified, "file") => &mut s.changed,
            _ => {
                s.other += 1;
                continue;
            }
        };
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(e.size);
    }
    s
}

/// The line after a diff's entries (not with `--json`, whose lines are the entries).
pub fn diff_summary(global: &GlobalArgs, entries: &[DiffEntry]) -> Result<()> {
    if global.json || global.quiet {
        return Ok(());
    }
    let s = summarize(entries);
    let mut out = std::io::stdout().lock();
    let written = writeln!(
        out,
        "{} added ({}), {} removed ({}), {} changed ({} now); {} other changes",
        plural(s.added.0, "file"),
        bytes(s.added.1),
        s.removed.0,
        bytes(s.removed.1),
        s.changed.0,
        bytes(s.changed.1),
        s.other
    );
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn snapshot_stats(global: &GlobalArgs, entry: &SnapshotEntry, stats: &SnapshotStats) -> Result<()> {
    if global.json {
        return super::json::line(&json!({
            "snapshot_id": entry.id.to_hex(),
            "short_id": entry.id.short(),
            "time": super::json::time(entry.snapshot.time_unix, entry.snapshot.time_nsec),
            "files": stats.files,
            "dirs": stats.dirs,
            "other": stats.other,
            "restore_bytes": stats.restore_bytes,
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "snapshot:       {}", entry.id.short())?;
    writeln!(out, "files:          {}", stats.files)?;
    writeln!(out, "folders:        {}", stats.dirs)?;
    writeln!(out, "other entries:  {}", stats.other)?;
    writeln!(out, "restore size:   {} ({} bytes)", bytes(stats.restore_bytes), stats.restore_bytes)?;
    Ok(())
}

/// `snapshots --group-by`: a header line per group (in the order groups first appear, oldest
/// first), then that group's table.
pub fn snapshots_grouped(
    global: &GlobalArgs,
    snapshots: Vec<SnapshotEntry>,
    rejected: &[coffer::repo::Rejection],
    by: GroupBy,
) -> Result<u8> {
    let mut groups: Vec<(GroupKey, Vec<SnapshotEntry>)> = Vec::new();
    for entry in snapshots {
        let key = by.key(&entry.snapshot, &entry.signer);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(entry),
            None => groups.push((key, vec![entry])),
        }
    }
    if global.json {
        for r in rejected {
            eprintln!("warning: ignoring snapshot {}: {}", r.id.short(), terminal(&r.reason));
        }
        // restic's shape: [{group_key, snapshots}], each snapshot the usual object.
        let groups: Vec<_> = groups
            .iter()
            .map(|(key, members)| {
                json!({
                    "group_key": super::json::group_key(key),
                    "snapshots": members.iter().map(super::json::snapshot).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::json::line(&groups)?;
        return Ok(super::exit::OK);
    }
    let mut rejected = Some(rejected);
    for (i, (key, members)) in groups.iter().enumerate() {
        let mut label = Vec::new();
        if let Some(host) = &key.host {
            label.push(format!("host [{}]", terminal(host)));
        }
        if by.paths {
            label.push(format!("paths [{}]", terminal(&key.paths.join(", "))));
        }
        if by.tags {
            label.push(format!("tags [{}]", terminal(&key.tags.join(", "))));
        }
        if let Some(signer) = &key.signer {
            label.push(format!("signer {}", &signer[..8.min(signer.len())]));
        }
        let mut out = std::io::stdout().lock();
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "snapshots for {}:", if label.is_empty() { "all".to_string() } else { label.join(", ") })?;
        drop(out);
        super::output::snapshots(global, members, rejected.take().unwrap_or_default())?;
    }
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("file", 0o640), "-rw-r-----");
        assert_eq!(mode_string("file", 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("file", 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn summary_counts_files_and_bytes() {
        let e = |change, kind, size| DiffEntry { change, path: String::new(), path_bytes: vec![], kind, size };
        let s = summarize(&[
            e(Change::Added, "file", 10),
            e(Change::Added, "file", 5),
            e(Change::Added, "dir", 0),
            e(Change::Removed, "file", 7),
            e(Change::Modified, "file", 3),
            e(Change::MetadataChanged, "file", 3),
        ]);
        assert_eq!(s, DiffSummary { added: (2, 15), removed: (1, 7), changed: (1, 3), other: 2 });
    }
}
