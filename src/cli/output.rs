//! What the commands print: a line or a table for people, JSON with `--json`, and a
//! progress display on stderr only when it is a terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::args::GlobalArgs;
use coffer::archiver::BackupOutcome;
use coffer::commands::check::CheckReport;
use coffer::commands::diff::DiffEntry;
use coffer::commands::ls::LsEntry;
use coffer::commands::restore::RestoreReport;
use coffer::commands::stats::Stats;
use coffer::id::Id;
use coffer::progress::Counters;
use coffer::repo::{Rejection, Repository, SnapshotEntry};
use coffer::safetext::terminal;
use std::io::Write;

/// `println!` that returns write errors (a closed pipe: `coffer snapshots | head`) instead
/// of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Prints `report` as one line of JSON with `--json`, nothing with `--quiet`; otherwise returns
/// standard output for the caller's text.
pub fn json_or_text(
    global: &GlobalArgs,
    report: &impl serde::Serialize,
) -> Result<Option<std::io::StdoutLock<'static>>> {
    let mut out = std::io::stdout().lock();
    if global.json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
        return Ok(None);
    }
    Ok((!global.quiet).then_some(out))
}

/// "1 snapshot", "2 snapshots" (every noun we count takes an s).
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn time(unix: i64, nsec: u32) -> String {
    chrono::DateTime::from_timestamp(unix, nsec)
        .map(|t| t.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_else(|| unix.to_string())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn init(global: &GlobalArgs, location: &str, repo: &Repository) -> Result<()> {
    if global.json {
        outln!("{}", json!({ "repository": location, "id": repo.id().to_hex() }));
    } else if !global.quiet {
        outln!("created repository {} at {location}", repo.id().short());
        outln!("keep the password safe: without it the backups cannot be read");
    }
    Ok(())
}

pub fn backup(global: &GlobalArgs, outcome: &BackupOutcome) -> Result<()> {
    for (path, message) in &outcome.warnings {
        eprintln!("warning: {}: {}", terminal(&path.display().to_string()), terminal(message));
    }
    for (path, message) in &outcome.errors {
        eprintln!("error: {}: {}", terminal(&path.display().to_string()), terminal(message));
    }
    let s = &outcome.snapshot.summary;
    if global.json {
        let errors: Vec<_> =
            outcome.errors.iter().map(|(p, m)| json!({ "path": p.display().to_string(), "message": m })).collect();
        outln!(
            "{}",
            json!({
                // A dry run stores no snapshot, so it has no id to give.
                "snapshot_id": (!outcome.dry_run).then(|| outcome.id.to_hex()),
                "short_id": (!outcome.dry_run).then(|| outcome.id.short()),
                "dry_run": outcome.dry_run,
                "files_new": s.files_new,
                "files_changed": s.files_changed,
                "files_unmodified": s.files_unmodified,
                "dirs": s.dirs,
                "bytes_read": s.bytes_read,
                "bytes_added": s.bytes_added,
                "raw_added": s.raw_added,
                "total_bytes": s.total_bytes,
                "packs_added": s.packs_added,
                "errors": errors,
                "incomplete": outcome.snapshot.incomplete,
            })
        );
    } else if !global.quiet {
        outln!(
            "files: {} new, {} changed, {} unmodified; {}",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            plural(s.dirs, "folder")
        );
        let added = if outcome.dry_run { "would add" } else { "added" };
        outln!(
            "read {}; {added} {} to the repository ({} before compression)",
            bytes(s.bytes_read),
            bytes(s.bytes_added),
            bytes(s.raw_added)
        );
        if outcome.dry_run {
            outln!("dry run: nothing was written to the repository");
            return Ok(());
        }
        let state = if outcome.snapshot.incomplete { " (incomplete: some files could not be read)" } else { "" };
        outln!("snapshot {} saved{state}", outcome.id.short());
    }
    Ok(())
}

pub fn snapshots(global: &GlobalArgs, snapshots: &[SnapshotEntry], rejected: &[Rejection]) -> Result<()> {
    for r in rejected {
        eprintln!("warning: ignoring snapshot {}: {}", r.id.short(), terminal(&r.reason));
    }
    if global.json {
        let list: Vec<_> = snapshots
            .iter()
            .map(|e| {
                let s = &e.snapshot;
                json!({
                    "id": e.id.to_hex(),
                    "short_id": e.id.short(),
                    "time": time(s.time_unix, s.time_nsec),
                    "hostname": s.hostname,
                    "username": s.username,
                    "paths": s.paths.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
                    "tags": s.tags,
                    "tree": s.tree.to_hex(),
                    "incomplete": s.incomplete,
                    "signer": e.signer.to_hex(),
                    "signed_by": e.signed_by,
                    "summary": s.summary_json(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    outln!("{:<10} {:<26} {:<16} {:<16} {:<24} Paths", "ID", "Time", "Host", "Tags", "Signed by");
    for e in snapshots {
        let s = &e.snapshot;
        let paths: Vec<String> = s.paths.iter().map(|p| terminal(&lossy(p)).into_owned()).collect();
        let tags: Vec<String> = s.tags.iter().map(|t| terminal(t).into_owned()).collect();
        let mark = if s.incomplete { " (incomplete)" } else { "" };
        outln!(
            "{:<10} {:<26} {:<16} {:<16} {:<24} {}{mark}",
            e.id.short(),
            time(s.time_unix, s.time_nsec),
            terminal(&s.hostname),
            tags.join(","),
            terminal(&e.signed_by),
            paths.join(" ")
        );
    }
    if !global.quiet {
        outln!("{}", plural(snapshots.len() as u64, "snapshot"));
    }
    Ok(())
}

trait SummaryJson {
    fn summary_json(&self) -> serde_json::Value;
}

impl SummaryJson for coffer::format::snapshot::Snapshot {
    fn summary_json(&self) -> serde_json::Value {
        let s = &self.summary;
        json!({
            "files_new": s.files_new, "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified, "dirs": s.dirs,
            "bytes_read": s.bytes_read, "bytes_added": s.bytes_added, "errors": s.errors,
        })
    }
}

pub fn restore(global: &GlobalArgs, id: &Id, report: &RestoreReport) -> Result<()> {
    if report.special_left_out > 0 {
        eprintln!(
            "note: {} entries restored without set-id bits, device nodes or security xattrs: a write-only key wrote \
             this snapshot (--trust-special restores them)",
            report.special_left_out
        );
    }
    for (path, message) in &report.errors {
        eprintln!("error: {}: {}", terminal(path), terminal(message));
    }
    if global.json {
        outln!("{}", serde_json::to_string(report)?);
    } else if report.dry_run {
        // The list is the point of a dry run: printed even with --quiet.
        for path in &report.planned {
            outln!("would write {}", terminal(path));
        }
        if !global.quiet {
            outln!(
                "dry run of snapshot {}: would write {}, {}, {} other, {}; {} kept; nothing was written",
                id.short(),
                plural(report.files, "file"),
                plural(report.dirs, "folder"),
                report.other,
                bytes(report.bytes),
                report.skipped
            );
        }
    } else if !global.quiet {
        let kept = if report.skipped > 0 { format!("; {} already there kept", report.skipped) } else { String::new() };
        let verified = if report.verified > 0 {
            format!("; {} read back and verified", plural(report.verified, "file"))
        } else {
            String::new()
        };
        outln!(
            "restored snapshot {}: {}, {}, {} other, {}{kept}{verified}",
            id.short(),
            plural(report.files, "file"),
            plural(report.dirs, "folder"),
            report.other,
            bytes(report.bytes)
        );
    }
    Ok(())
}

/// A live line on stderr (files, bytes, rate) while an operation runs on a terminal.
pub struct Progress {
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(global: &GlobalArgs, verb: &'static str) -> Progress {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (!global.quiet && !global.json && super::is_terminal()).then(|| {
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new_spinner();
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let done = counters.bytes.load(Ordering::Relaxed);
                    let total = counters.total_bytes.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let rate = done as f64 / secs;
                    let eta = if total > done && rate > 0.0 {
                        format!(", ETA {:.0} s", (total - done) as f64 / rate)
                    } else {
                        String::new()
                    };
                    bar.set_message(format!(
                        "{verb}: {} files, {} ({}/s){eta}",
                        counters.files.load(Ordering::Relaxed),
                        bytes(done),
                        bytes(rate as u64)
                    ));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(200));
                }
                bar.finish_and_clear();
            })
        });
        Progress { counters, stop, ticker }
    }

    /// Whether a live display is on screen (only on a terminal, without --json/--quiet).
    pub fn is_shown(&self) -> bool {
        self.ticker.is_some()
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

pub fn ls_entry(global: &GlobalArgs, out: &mut impl Write, entry: &LsEntry) -> std::io::Result<()> {
    if global.json {
        serde_json::to_writer(&mut *out, entry)?;
        return writeln!(out);
    }
    match &entry.target {
        Some(target) => writeln!(out, "{} -> {}", terminal(&entry.path), terminal(target)),
        None => writeln!(out, "{}", terminal(&entry.path)),
    }
}

pub fn check(global: &GlobalArgs, report: &CheckReport) -> Result<()> {
    if global.json {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for w in &report.warnings {
        eprintln!("warning: {}: {}", terminal(&w.object), terminal(&w.message));
    }
    for e in &report.errors {
        eprintln!("error: {}: {}", terminal(&e.object), terminal(&e.message));
    }
    if !global.quiet {
        outln!(
            "checked {}, {}, {} ({} read, {}), {}: {}",
            plural(report.snapshots_checked, "snapshot"),
            plural(report.trees_checked, "tree"),
            plural(report.packs_checked, "pack"),
            report.packs_read,
            bytes(report.bytes_read),
            plural(report.blobs_checked, "blob"),
            if report.is_ok() { "no errors" } else { "ERRORS FOUND" }
        );
    }
    Ok(())
}

pub fn diff(global: &GlobalArgs, entries: &[DiffEntry]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for entry in entries {
        let written = if global.json {
            serde_json::to_writer(&mut out, entry).map_err(std::io::Error::from).and_then(|()| writeln!(out))
        } else {
            writeln!(out, "{} {}", entry.change.symbol(), terminal(&entry.path))
        };
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

pub fn stats(global: &GlobalArgs, stats: &Stats) -> Result<()> {
    if global.json {
        outln!("{}", serde_json::to_string_pretty(stats)?);
        return Ok(());
    }
    outln!("snapshots:          {}", stats.snapshots);
    outln!("logical size:       {}", bytes(stats.logical_bytes));
    outln!("unique data:        {}", bytes(stats.unique_bytes));
    outln!("stored size:        {} in {} packs, {} blobs", bytes(stats.stored_bytes), stats.packs, stats.blobs);
    outln!("deduplication:      {:.2}x", stats.dedup_ratio);
    outln!("compression:        {:.2}x", stats.compression_ratio);
    Ok(())
}
