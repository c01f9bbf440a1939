//! The one shape of `--json` output (README "JSON output"), in one place so that every command
//! writes it the same way.
//!
//! Standard output is JSON Lines: each line one complete, compact JSON value, and nothing else
//! (messages, warnings and errors go to stderr). A command that reports a result writes one
//! line; `ls` and `diff` stream one object a line per entry. Keys are snake_case; sizes are
//! integers in bytes; durations are `*_seconds` numbers; every time is RFC 3339 in UTC with a
//! `Z` and fractional seconds only when they are not zero (`json::time`); ids are lower-case
//! hex, full length, with an 8-character `short_id` beside a snapshot's. A snapshot is always
//! the same object (`json::snapshot`), wherever it appears (snapshots, group-by, forget).

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};

use coffer::format::snapshot::Snapshot;
use coffer::repo::SnapshotEntry;
use coffer::retention::GroupKey;

/// Writes `value` as one compact line on stdout. Serialized first, so that a closed pipe is
/// an `io::Error` the caller recognises (serde_json's writer error hides it).
pub fn line(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string(value)?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// A Unix time as the one time format of the JSON output: RFC 3339, UTC, `Z`.
pub fn time(unix: i64, nsec: u32) -> String {
    coffer::commands::ls::rfc3339(unix, nsec)
}

/// A snapshot as every command's JSON shows it (restic's field names where restic has them).
pub fn snapshot(entry: &SnapshotEntry) -> Value {
    let s = &entry.snapshot;
    json!({
        "id": entry.id.to_hex(),
        "short_id": entry.id.short(),
        "time": time(s.time_unix, s.time_nsec),
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "incomplete": s.incomplete,
        "signer": entry.signer.to_hex(),
        "signed_by": entry.signed_by,
        "summary": summary(s),
    })
}

/// A snapshot's backup summary; the start and end times are absent (null) in snapshots written
/// before they were recorded.
pub fn summary(snapshot: &Snapshot) -> Value {
    let s = &snapshot.summary;
    let when = |unix: i64| (unix != 0).then(|| time(unix, 0));
    json!({
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unmodified": s.files_unmodified,
        "dirs": s.dirs,
        "other_nodes": s.other_nodes,
        "bytes_read": s.bytes_read,
        "bytes_added": s.bytes_added,
        "raw_added": s.raw_added,
        "total_bytes": s.total_bytes,
        "packs_added": s.packs_added,
        "errors": s.errors,
        "backup_start": when(s.start_unix),
        "backup_end": when(s.end_unix),
    })
}

/// The key of a group of snapshots (`snapshots --group-by`, `forget`): the grouped fields,
/// null or empty for those not grouped by.
pub fn group_key(key: &GroupKey) -> Value {
    json!({ "hostname": key.host, "paths": key.paths, "tags": key.tags, "signer": key.signer })
}

/// A failure inside a report (a file that could not be read or restored).
pub fn problem(path: &str, message: &str) -> Value {
    json!({ "path": path, "message": message })
}
