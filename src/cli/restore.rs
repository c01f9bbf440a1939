//! `coffer restore`: the snapshot (and the path in it) the command line names, the options the
//! engine takes, and what the outcome means for the exit code.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use coffer::commands::restore::{self, RestoreOptions};

use super::restore_opts::RestoreExtraArgs;
use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use super::{exit, filter, interrupt_flag, open_repo, output};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// `latest`, `latest~N` or an id prefix, with `:/path` for a part of it.
    #[arg(value_name = "SNAP[:PATH]")]
    pub snapshot: String,
    #[arg(short, long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only paths matching this pattern (repeatable; restic's rules, see backup
    /// --exclude). A folder that matches is restored whole.
    #[arg(short = 'i', long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Skip paths matching this pattern (repeatable; restic's rules, see backup --exclude).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// As root, also restore set-id bits, device nodes and security xattrs of a snapshot
    /// that a write-only key wrote (left out by default: that key's holder chose them).
    #[arg(long)]
    pub trust_special: bool,
    #[command(flatten)]
    pub extra: RestoreExtraArgs,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> Result<u8> {
    let RestoreArgs { snapshot, target, includes, excludes, trust_special, extra, filter: f } = args;
    let repo = open_repo(global)?;
    repo.require_full_key("restore")?;
    let interrupted = interrupt_flag()?;
    let (spec, subpath) = match snapshot.split_once(':') {
        Some((spec, path)) => (spec.to_string(), Some(path.as_bytes().to_vec())),
        None => (snapshot.clone(), None),
    };
    let entry = repo.find_snapshot(&spec, &filter(&f))?;
    let progress = output::Progress::start(global, "restoring");
    if subpath.is_none() {
        progress.counters.total_bytes.store(entry.snapshot.summary.total_bytes, Ordering::Relaxed);
    }
    let selecting = !includes.is_empty() || !extra.iincludes.is_empty();
    // A copy keeps how its source named the original's signer ("repository key" for
    // that repository's own).
    let written_by_write_only_key = entry.signer != repo.keys().repo_verify.id()
        || entry.snapshot.copied_signer().is_some_and(|(_, by)| by != "repository key");
    let options = RestoreOptions {
        target,
        includes,
        excludes,
        progress: Arc::clone(&progress.counters),
        confine_special: written_by_write_only_key && !trust_special,
        iincludes: extra.iincludes,
        iexcludes: extra.iexcludes,
        dry_run: extra.dry_run,
        overwrite: extra.overwrite,
        verify: extra.verify,
    };
    let report = restore::restore(&repo, &entry.snapshot.tree, subpath.as_deref(), &options, &interrupted);
    let (files_done, bytes_done) =
        (progress.counters.files.load(Ordering::Relaxed), progress.counters.bytes.load(Ordering::Relaxed));
    let took = progress.finish();
    let report = report.map_err(|e| {
        let stopped = matches!(e, restore::RestoreError::Interrupted);
        let e = anyhow::Error::new(e);
        if !stopped {
            return e;
        }
        e.context(format!(
            "restore into {} stopped after {files_done} files ({}); the files being written are left \
             incomplete and folders without their times and modes: run the same restore again",
            options.target.display(),
            output::bytes(bytes_done)
        ))
    })?;
    output::restore(global, &entry.id, &report, took)?;
    if selecting && report.files + report.dirs + report.other + report.skipped == 0 {
        let patterns: Vec<String> = (options.includes.iter().map(|p| format!("--include {p}")))
            .chain(options.iincludes.iter().map(|p| format!("--iinclude {p}")))
            .collect();
        bail!(
            "no entry of snapshot {} matches {}: nothing was restored; \
             patterns follow restic's rules (`coffer ls` shows the paths to match)",
            entry.id.short(),
            patterns.join(" ")
        );
    }
    let unrestored = report.errors.len() as u64 - report.verify_failed;
    match (unrestored, report.verify_failed) {
        (0, 0) => Ok(exit::OK),
        (0, differ) => bail!(
            "--verify: {} not as in the snapshot (listed above): restore again with --overwrite always",
            files_are(differ)
        ),
        (n, 0) => bail!("{n} entries could not be restored (listed above)"),
        (n, differ) => {
            bail!("{n} entries could not be restored and {} not as in the snapshot (listed above)", files_are(differ))
        }
    }
}

/// "1 file is", "2 files are".
fn files_are(n: u64) -> String {
    if n == 1 {
        "1 file is".to_string()
    } else {
        format!("{n} files are")
    }
}
