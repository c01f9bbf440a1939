//! `coffer repair index|snapshots`: runs the repairs and prints what was found, rebuilt and lost.

use std::io::Write;

use anyhow::Result;

use super::args::RepairCommand;
use super::shared_args::GlobalArgs;
use super::{exit, open_repo};
use coffer::commands::repair::{self, IndexRepairReport, SnapshotRepairOptions, SnapshotRepairReport};

pub fn run(global: &GlobalArgs, what: RepairCommand) -> Result<u8> {
    let repo = open_repo(global)?;
    let quiet = global.quiet || global.json;
    let progress = |step: &str| {
        if !quiet {
            eprintln!("{step}");
        }
    };
    match what {
        RepairCommand::Index => {
            let report = repair::repair_index(&repo, progress)?;
            print_index(global, &report)?;
        }
        RepairCommand::Snapshots { forget_broken } => {
            let report = repair::repair_snapshots(&repo, &SnapshotRepairOptions { forget_broken }, progress)?;
            print_snapshots(global, &report)?;
        }
    }
    Ok(exit::OK)
}

fn print_index(global: &GlobalArgs, r: &IndexRepairReport) -> Result<()> {
    let Some(mut out) = super::output::json_or_text(global, r)? else { return Ok(()) };
    for pack in &r.packs_lost {
        writeln!(out, "lost: {} ({} blobs) is listed in the index but missing from storage", pack.pack, pack.blobs)?;
    }
    for problem in r.packs_damaged.iter().chain(&r.index_files_unreadable) {
        writeln!(out, "damaged: {}: {}", problem.object, problem.message)?;
    }
    for pack in &r.packs_adopted {
        writeln!(out, "adopted: {pack} (in no index file)")?;
    }
    if r.unchanged {
        writeln!(
            out,
            "the index matches the {} packs in storage ({} blobs); nothing to repair",
            r.packs_indexed, r.blobs_indexed
        )?;
    } else {
        writeln!(
            out,
            "indexed {} packs ({} blobs) in {} new index files; removed {} old index files",
            r.packs_indexed, r.blobs_indexed, r.index_files_written, r.index_files_removed
        )?;
        if !r.packs_lost.is_empty() {
            writeln!(out, "snapshots may now reference lost data: run `coffer check`, then `coffer repair snapshots`")?;
        }
    }
    Ok(())
}

fn print_snapshots(global: &GlobalArgs, r: &SnapshotRepairReport) -> Result<()> {
    let Some(mut out) = super::output::json_or_text(global, r)? else { return Ok(()) };
    for s in &r.repaired {
        let short = &s.broken[..8];
        match &s.replacement {
            Some(new) => writeln!(out, "snapshot {short} references lost data; replaced by {}", &new[..8])?,
            None => writeln!(out, "snapshot {short} references lost data and nothing of it could be saved")?,
        }
        for path in &s.lost {
            writeln!(out, "  lost: {path}")?;
        }
        if s.removed {
            writeln!(out, "  removed snapshot {short}")?;
        }
    }
    if r.trees_saved > 0 {
        writeln!(
            out,
            "{} folder listings missing from storage were uploaded again from the local cache",
            r.trees_saved
        )?;
    }
    let kept = r.repaired.iter().filter(|s| !s.removed).count();
    writeln!(out, "{} snapshots checked, {} repaired", r.snapshots_checked, r.repaired.len())?;
    if kept > 0 {
        writeln!(out, "the broken snapshots are kept; `coffer repair snapshots --forget-broken` removes them")?;
    }
    Ok(())
}
