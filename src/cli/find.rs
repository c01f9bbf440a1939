//! `coffer find`: which snapshots hold entries matching restic-style patterns.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::exit;
use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use coffer::commands::find;
use coffer::filter::Patterns;
use coffer::safetext::terminal;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  coffer find '*.jpg'                  entries named *.jpg, in every snapshot\n  \
                        coffer find 'projects/*/Cargo.toml'  a `/` matches on the path (at any depth)\n  \
                        coffer find -s latest --host web '/etc/nginx/**'")]
pub struct FindArgs {
    /// Match entries by name (`*.txt`), or with a `/` by path (`src/*.rs`, `/etc/**`): restic's
    /// pattern rules, see backup --exclude (repeatable: any of them).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Only in this snapshot (`latest`, `latest~N` or an id prefix; repeatable).
    #[arg(short = 's', long = "snapshot", value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// Match ignoring case.
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

pub fn run(global: &GlobalArgs, args: FindArgs) -> Result<u8> {
    let mut patterns = Patterns::default();
    patterns.add(&args.patterns, args.ignore_case)?;
    let repo = super::open_repo(global)?;
    repo.require_full_key("find")?;
    let filter = super::filter(&args.filter);
    let selected = super::select_snapshots(&repo, &args.snapshots, &filter)?;
    let mut out = std::io::stdout().lock();
    let mut results = Vec::new();
    let (mut matches, mut snapshots) = (0u64, 0u64);
    for entry in &selected {
        let mut found = Vec::new();
        find::find_in(&repo, entry, &patterns, &mut |e| found.push(e))?;
        if found.is_empty() {
            continue;
        }
        snapshots += 1;
        matches += found.len() as u64;
        if global.json {
            results.push(json!({
                "snapshot_id": entry.id.to_hex(),
                "short_id": entry.id.short(),
                "time": super::json::time(entry.snapshot.time_unix, entry.snapshot.time_nsec),
                "hostname": entry.snapshot.hostname,
                "hits": found.len(),
                "matches": found,
            }));
            continue;
        }
        let time = super::output::time(entry.snapshot.time_unix, entry.snapshot.time_nsec);
        for e in &found {
            let name = match &e.target {
                Some(target) => format!("{} -> {}", terminal(&e.path), terminal(target)),
                None => terminal(&e.path).into_owned(),
            };
            writeln!(out, "{} {time} {:>12} {} {name}", entry.id.short(), e.size, e.mtime)?;
        }
    }
    if global.json {
        super::json::line(&results)?;
    } else if !global.quiet {
        // On stderr: stdout stays one match per line for scripts.
        eprintln!(
            "{matches} {} in {} (of {} searched)",
            if matches == 1 { "match" } else { "matches" },
            super::output::plural(snapshots, "snapshot"),
            selected.len()
        );
    }
    Ok(exit::OK)
}
