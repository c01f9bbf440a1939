//! What the commands print: a line or a table for people, JSON with `--json`, and a
//! progress display on stderr only when it is a terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::shared_args::GlobalArgs;
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
    if global.json {
        super::json::line(report)?;
        return Ok(None);
    }
    Ok((!global.quiet).then(|| std::io::stdout().lock()))
}

/// "1 snapshot", "2 snapshots" (every noun we count takes an s).
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// "512 B", "1.5 MiB": binary units, one decimal (bytesize's IEC form, which ours was).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string()
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
        super::json::line(&json!({ "repository": location, "id": repo.id().to_hex() }))?;
    } else if !global.quiet {
        outln!("created repository {} at {location}", repo.id().short());
        outln!("keep the password safe: without it the backups cannot be read");
    }
    Ok(())
}

pub fn backup(global: &GlobalArgs, outcome: &BackupOutcome, took: Duration) -> Result<()> {
    for (path, message) in &outcome.warnings {
        eprintln!("warning: {}: {}", terminal(&path.display().to_string()), terminal(message));
    }
    for (path, message) in &outcome.errors {
        eprintln!("error: {}: {}", terminal(&path.display().to_string()), terminal(message));
    }
    let s = &outcome.snapshot.summary;
    if global.json {
        let errors: Vec<_> =
            outcome.errors.iter().map(|(p, m)| super::json::problem(&p.display().to_string(), m)).collect();
        let summary = super::json::summary(&outcome.snapshot);
        let snapshot = &outcome.snapshot;
        super::json::line(&json!({
            // A dry run stores no snapshot, so it has no id to give.
            "snapshot_id": (!outcome.dry_run).then(|| outcome.id.to_hex()),
            "short_id": (!outcome.dry_run).then(|| outcome.id.short()),
            "dry_run": outcome.dry_run,
            "time": super::json::time(snapshot.time_unix, snapshot.time_nsec),
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
            "backup_start": summary["backup_start"],
            "backup_end": summary["backup_end"],
            "elapsed_seconds": took.as_secs_f64(),
        }))?;
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
            outln!("dry run: nothing was written to the repository ({})", elapsed(took));
            return Ok(());
        }
        let state = if outcome.snapshot.incomplete { " (incomplete: some files could not be read)" } else { "" };
        outln!("snapshot {} saved in {}{state}", outcome.id.short(), elapsed(took));
    }
    Ok(())
}

pub fn snapshots(global: &GlobalArgs, snapshots: &[SnapshotEntry], rejected: &[Rejection]) -> Result<()> {
    for r in rejected {
        eprintln!("warning: ignoring snapshot {}: {}", r.id.short(), terminal(&r.reason));
    }
    if global.json {
        let list: Vec<_> = snapshots.iter().map(super::json::snapshot).collect();
        super::json::line(&list)?;
        return Ok(());
    }
    // Columns sized by display width, so wide characters and long host names stay aligned.
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header(["ID", "Time", "Host", "Tags", "Signed by", "Paths"]);
    for e in snapshots {
        let s = &e.snapshot;
        let paths: Vec<String> = s.paths.iter().map(|p| terminal(&lossy(p)).into_owned()).collect();
        let tags: Vec<String> = s.tags.iter().map(|t| terminal(t).into_owned()).collect();
        let mark = if s.incomplete { " (incomplete)" } else { "" };
        table.add_row([
            e.id.short(),
            time(s.time_unix, s.time_nsec),
            terminal(&s.hostname).into_owned(),
            tags.join(","),
            terminal(&e.signed_by).into_owned(),
            format!("{}{mark}", paths.join(" ")),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        outln!("{}", line.trim_end());
    }
    if !global.quiet {
        outln!("{}", plural(snapshots.len() as u64, "snapshot"));
    }
    Ok(())
}

pub fn restore(global: &GlobalArgs, id: &Id, report: &RestoreReport, took: Duration) -> Result<()> {
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
        let mut value = serde_json::to_value(report)?;
        value["errors"] = report.errors.iter().map(|(path, message)| super::json::problem(path, message)).collect();
        value["snapshot_id"] = json!(id.to_hex());
        value["short_id"] = json!(id.short());
        value["elapsed_seconds"] = json!(took.as_secs_f64());
        super::json::line(&value)?;
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
            "restored snapshot {}: {}, {}, {} other, {}{kept}{verified} in {}",
            id.short(),
            plural(report.files, "file"),
            plural(report.dirs, "folder"),
            report.other,
            bytes(report.bytes),
            elapsed(took)
        );
    }
    Ok(())
}

/// A progress bar on stderr while an operation runs on a terminal (not with --quiet or
/// --json): percentage and ETA once a total is known, rate, files, the current file.
pub struct Progress {
    pub counters: Arc<Counters>,
    bar: Option<indicatif::ProgressBar>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    started: std::time::Instant,
}

/// The bar's refresh interval: often enough to look live, rarely enough to cost nothing.
const TICK: Duration = Duration::from_millis(150);

impl Progress {
    pub fn start(global: &GlobalArgs, verb: &'static str) -> Progress {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let shown = !global.quiet && !global.json && super::is_terminal();
        let bar = shown.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
                .with_style(indicatif::ProgressStyle::default_spinner());
            bar.set_prefix(verb);
            bar
        });
        let ticker = bar.clone().map(|bar| {
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || tick(&bar, &counters, &stop))
        });
        Progress { counters, bar, stop, ticker, started: std::time::Instant::now() }
    }

    /// Whether a live display is on screen (only on a terminal, without --json/--quiet).
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// `backup -v`: lists each new and changed file on stdout as it is read (above the bar).
    pub fn list_changes(&self) {
        let bar = self.bar.clone();
        self.counters.listen_for_changes(move |change, path| {
            let word = match change {
                coffer::progress::FileChange::New => "new",
                coffer::progress::FileChange::Changed => "changed",
            };
            let line = format!("{word:<8}{}", terminal(&path.display().to_string()));
            let print = || {
                // A closed stdout (`| head`) ends the listing, not the backup.
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            };
            match &bar {
                Some(bar) => bar.suspend(print),
                None => print(),
            }
        });
    }

    /// Stops the display; returns how long the operation took, for its summary line.
    pub fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}

fn tick(bar: &indicatif::ProgressBar, counters: &Counters, stop: &AtomicBool) {
    let with_total = indicatif::ProgressStyle::with_template(
        "{prefix} {percent:>3}% [{bar:20}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}",
    );
    let without_total =
        indicatif::ProgressStyle::with_template("{prefix} {spinner} {binary_bytes} {binary_bytes_per_sec} {wide_msg}");
    let (Ok(with_total), Ok(without_total)) = (with_total, without_total) else { return };
    let with_total = with_total.progress_chars("=> ");
    let mut had_total = None;
    loop {
        let done = counters.bytes.load(Ordering::Relaxed);
        let total = counters.total_bytes.load(Ordering::Relaxed);
        // A pre-scan still counting can be behind what is done: never over 100 %.
        let has_total = total > 0;
        if had_total != Some(has_total) {
            bar.set_style(if has_total { with_total.clone() } else { without_total.clone() });
            had_total = Some(has_total);
        }
        if has_total {
            bar.set_length(total.max(done));
        }
        bar.set_position(done);
        let files = counters.files.load(Ordering::Relaxed);
        let current = counters.current().map(|p| terminal(&p.display().to_string()).into_owned()).unwrap_or_default();
        bar.set_message(format!("{}  {current}", plural(files, "file")));
        bar.tick();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(TICK);
    }
}

/// "0.4 s", "12.0 s", "3m 5s", "1h 2m 3s": the elapsed time of a summary line (to the
/// second past a minute, jiff's friendly format).
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        let seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        format!("{:#}", jiff::SignedDuration::from_secs(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_for_people() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(elapsed(Duration::from_millis(400)), "0.4 s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3m 5s");
        assert_eq!(elapsed(Duration::from_secs(3723)), "1h 2m 3s");
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
        super::json::line(report)?;
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
        super::json::line(stats)?;
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
