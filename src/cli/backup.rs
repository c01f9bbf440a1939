//! `coffer backup`: the paths (given, listed in files, standard input or the profile's), the
//! selection and tags, then the scan started while the passphrase is read and the key derived.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use coffer::archiver::{self, BackupOptions};
use coffer::repo::Located;

use super::backup_input::BackupInputArgs;
use super::select::{self, SelectArgs};
use super::shared_args::GlobalArgs;
use super::{exit, interrupt_flag, locate_repo, open_options, output, profiles, unlock_repo};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// What to back up (default: the profile's `sources`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable; `a,b` gives two tags, as with restic).
    #[arg(long = "tag", value_name = "TAG[,TAG…]")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub input: BackupInputArgs,
    /// Record this host name instead of the machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

pub fn run(global: &GlobalArgs, args: BackupArgs) -> Result<u8> {
    let BackupArgs { mut paths, mut tags, select, input, mut host } = args;
    paths.extend(input.listed_paths()?);
    if input.stdin {
        if !paths.is_empty() {
            bail!("--stdin backs up standard input only: give no paths (the name is --stdin-filename)");
        }
        paths.push(input.stdin_path()?);
    }
    let listed = !input.files_from.is_empty() || !input.files_from_verbatim.is_empty() || input.stdin;
    let mut profile_excludes = Vec::new();
    if let Some(profile) = profiles::active(global)? {
        if paths.is_empty() && !listed {
            paths = profile.sources.clone();
        }
        profile_excludes.extend(profile.excludes.iter().cloned());
        tags.extend(profile.tags.iter().filter(|t| !tags.contains(t)).cloned().collect::<Vec<_>>());
        host = host.or_else(|| profile.host.clone());
    }
    if paths.is_empty() && listed {
        bail!("nothing to back up: the --files-from lists name no path");
    }
    if paths.is_empty() {
        bail!("nothing to back up: give paths, or a profile with `sources`");
    }
    let tags = select::split_tags(&tags);
    let (excludes, selection) = select.resolve(&profile_excludes)?;
    let mut options = BackupOptions {
        paths,
        tags,
        excludes,
        selection,
        hostname: host,
        scan_total: false,
        progress: Default::default(),
        dry_run: input.dry_run,
    };
    options.check_labels()?;
    // The scan needs only the local database, which the config names: it runs while
    // the passphrase is read and the key derived.
    let located = locate_repo(global)?;
    let files_cache = located.files_cache_reader(&open_options(global));
    if input.stdin {
        return backup_stdin(global, options, &input, located);
    }
    let scan = archiver::scan_ahead(&options, files_cache)?;
    let repo = unlock_repo(global, located)?;
    let interrupted = interrupt_flag()?;
    let progress = output::Progress::start(global, "backing up");
    if global.verbose > 0 && !global.json {
        progress.list_changes();
    }
    options.scan_total = progress.is_shown();
    options.progress = Arc::clone(&progress.counters);
    let outcome = archiver::backup_scanned(&repo, &options, scan, &interrupted);
    let took = progress.finish();
    let outcome = outcome?;
    output::backup(global, &outcome, took)?;
    Ok(if outcome.errors.is_empty() { exit::OK } else { exit::INCOMPLETE })
}

/// `backup --stdin`: standard input as one file.
fn backup_stdin(global: &GlobalArgs, options: BackupOptions, input: &BackupInputArgs, located: Located) -> Result<u8> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("--stdin reads the data from a pipe, not a terminal: e.g. `pg_dump db | coffer backup --stdin --stdin-filename db.sql`");
    }
    let name = input.stdin_path()?;
    let repo = unlock_repo(global, located)?;
    let interrupted = interrupt_flag()?;
    let progress = output::Progress::start(global, "backing up");
    let mut options = options;
    options.progress = Arc::clone(&progress.counters);
    let outcome = archiver::backup_stdin(&repo, &options, &name, stdin.lock(), &interrupted);
    let took = progress.finish();
    let outcome = outcome?;
    output::backup(global, &outcome, took)?;
    Ok(exit::OK)
}
