//! The command-line edge: turns parsed arguments into engine calls, prints results for
//! people or as JSON, and maps failures to exit codes. `anyhow` lives only here.

pub mod alloc;
pub mod args;
mod backup_input;
mod copy;
mod dump;
pub mod env_secrets;
mod everyday;
mod find;
mod generate;
mod help;
mod interrupt;
mod json;
mod keys;
mod output;
mod password;
mod profiles;
mod repair;
mod restore_opts;
mod retention;
mod select;
mod shared_args;
mod tag;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use args::{Cli, Command};
use coffer::archiver::{self, BackupError, BackupOptions};
use coffer::commands::check::{self, CheckOptions, ReadData};
use coffer::commands::copy::CopyError;
use coffer::commands::restore::{self, RestoreOptions};
use coffer::commands::{diff, ls, stats};
use coffer::crypto::KdfParams;
use coffer::repo::{
    self, default_data_dir, Located, Location, OpenOptions, RepoError, Repository, SnapshotEntry, SnapshotFilter, Store,
};
use shared_args::{GlobalArgs, SnapshotFilterArgs};

/// Exit codes, as documented in README.md.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const INCOMPLETE: u8 = 3;
    pub const NOT_A_REPOSITORY: u8 = 10;
    pub const WRONG_PASSWORD: u8 = 12;
    pub const INTERRUPTED: u8 = 130;
}

/// The failure as one line: each cause once. Our error types say their cause in their own
/// message (so a logged `{e}` is complete) and also chain it as `source`, and a context often
/// quotes the error it wraps: `{:#}` would print the OS error two or three times. A cause whose
/// text the line already holds adds nothing, so it is left out.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if said.is_empty() || text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Whether the failure is only that whoever read our output stopped reading.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The exit code for a failure, from the engine error at its root.
/// The store's full error behind `error`, if a store failed (printed with `-v`).
pub fn store_detail(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        let store = cause.downcast_ref::<repo::StoreError>().or_else(|| {
            let repo = cause.downcast_ref::<RepoError>().or_else(|| match cause.downcast_ref::<BackupError>() {
                Some(BackupError::Repo(e)) => Some(e),
                _ => None,
            });
            match repo {
                Some(RepoError::Store(e)) => Some(e),
                _ => None,
            }
        });
        store.and_then(|e| e.full_detail())
    })
}

pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        let repo_error = cause.downcast_ref::<RepoError>().or_else(|| match cause.downcast_ref::<BackupError>() {
            Some(BackupError::Repo(e)) => Some(e),
            _ => None,
        });
        match repo_error {
            Some(RepoError::NotARepository { .. }) => return exit::NOT_A_REPOSITORY,
            Some(RepoError::WrongPassword | RepoError::TooManyKeyFiles { .. }) => return exit::WRONG_PASSWORD,
            _ => {}
        }
        if matches!(cause.downcast_ref::<BackupError>(), Some(BackupError::Interrupted))
            || matches!(cause.downcast_ref::<restore::RestoreError>(), Some(restore::RestoreError::Interrupted))
            || matches!(cause.downcast_ref::<CopyError>(), Some(CopyError::Interrupted))
        {
            return interrupt::exit_code();
        }
    }
    exit::ERROR
}

fn repo_path(global: &GlobalArgs) -> Result<PathBuf> {
    if let Some(path) = &global.repo {
        return Ok(path.clone());
    }
    if let Some(repository) = profiles::active(global)?.and_then(|p| p.repository.as_ref()) {
        return Ok(PathBuf::from(repository));
    }
    bail!("no repository given: use --repo, COFFER_REPOSITORY or a profile's `repository`")
}

fn open_options(global: &GlobalArgs) -> OpenOptions {
    OpenOptions { data_dir: global.cache_dir.clone().unwrap_or_else(default_data_dir), kdf: KdfParams::DEFAULT }
}

/// The repository's location, from `--repo` and `--option`.
fn location(global: &GlobalArgs) -> Result<Location> {
    let path = repo_path(global)?;
    // A URL is ASCII; a local path may be any bytes.
    let mut options = Vec::new();
    if global.repo.is_none() && path.to_str().is_some_and(|p| p.contains("://")) {
        // The profile's store options belong to the profile's (remote) repository; the command
        // line's `--option`s come last and win.
        if let Some(profile) = profiles::active(global)? {
            options.extend(profile.options.iter().map(|(key, value)| format!("{key}={value}")));
        }
    }
    options.extend(global.options.iter().cloned());
    match path.to_str() {
        Some(text) => Ok(Location::parse(text, &options)?),
        None if options.is_empty() => Ok(Location::Local(path)),
        None => bail!("--option applies only to remote repositories (scheme://…)"),
    }
}

/// Opens the repository's storage. Without `create`, a location that cannot be opened is
/// reported as "not a repository".
fn open_store(global: &GlobalArgs, create: bool) -> Result<Store> {
    let location = location(global)?;
    match Store::open(&location, create) {
        Ok(store) => Ok(store),
        Err(e) if create => Err(anyhow::Error::new(e).context(format!("creating {location}"))),
        // A remote store that cannot be set up (a missing region, an unknown option) is
        // misconfigured, not "not a repository": its own message says what is wrong.
        Err(e) if !matches!(location, Location::Local(_)) => Err(e.into()),
        Err(e) => Err(RepoError::NotARepository { location: location.to_string(), detail: e.to_string() }.into()),
    }
}

fn open_repo(global: &GlobalArgs) -> Result<Arc<Repository>> {
    unlock_repo(global, locate_repo(global)?)
}

fn locate_repo(global: &GlobalArgs) -> Result<Located> {
    Ok(Located::read(open_store(global, false)?)?)
}

fn unlock_repo(global: &GlobalArgs, located: Located) -> Result<Arc<Repository>> {
    let repo = match password::for_open(global, profiles::active(global)?)? {
        password::Credential::Password(password) => located.open(password.as_bytes(), &open_options(global))?,
        password::Credential::WriteOnly(key) => located.open_write_only(*key, &open_options(global))?,
    };
    Ok(Arc::new(repo))
}

fn filter(args: &SnapshotFilterArgs) -> SnapshotFilter {
    SnapshotFilter {
        hosts: args.hosts.clone(),
        tags: args.tags.clone(),
        paths: args.paths.iter().map(|p| p.as_os_str().as_encoded_bytes().to_vec()).collect(),
    }
}

/// The snapshots a command names (`latest`, `latest~N`, id prefixes; each once), or every one
/// the filter matches when none is named.
fn select_snapshots(repo: &Repository, specs: &[String], filter: &SnapshotFilter) -> Result<Vec<SnapshotEntry>> {
    let (all, _) = repo.load_snapshots()?;
    if specs.is_empty() {
        return Ok(all.into_iter().filter(|e| filter.matches(&e.snapshot)).collect());
    }
    let mut picked: Vec<SnapshotEntry> = Vec::new();
    for spec in specs {
        let entry = coffer::repo::resolve(all.clone(), spec, filter)?;
        if !picked.iter().any(|e| e.id == entry.id) {
            picked.push(entry);
        }
    }
    Ok(picked)
}

/// Sets a flag on SIGINT/SIGTERM so long operations stop cleanly (no partial snapshot); a
/// second signal exits at once (see `interrupt`).
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    interrupt::flag()
}

pub fn run(cli: Cli) -> Result<u8> {
    let global = &cli.global;
    match cli.command {
        Command::Init => {
            // A folder this init creates goes again if init fails: no half repository stays.
            let created = match location(global)? {
                Location::Local(path) if !path.exists() => Some(path),
                _ => None,
            };
            let result = (|| {
                let store = open_store(global, true)?;
                let password = password::for_init(global, profiles::active(global)?)?;
                let repo = Repository::init(store, password.as_bytes(), &open_options(global))?;
                output::init(global, repo.location(), &repo)
            })();
            if let (Err(_), Some(path)) = (&result, &created) {
                if let Err(e) = std::fs::remove_dir_all(path) {
                    log::warn!("removing {} after the failed init: {e}", path.display());
                }
            }
            result?;
            Ok(exit::OK)
        }
        Command::Backup { mut paths, mut tags, select, input, mut host } => {
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
        Command::Snapshots { filter: f, latest, group_by } => {
            let repo = open_repo(global)?;
            repo.require_full_key("listing snapshots")?;
            let (snapshots, rejected) = repo.load_snapshots()?;
            let mut snapshots: Vec<_> = snapshots.into_iter().filter(|e| filter(&f).matches(&e.snapshot)).collect();
            if let Some(n) = latest {
                snapshots = select::latest_per_group(snapshots, n);
            }
            if let Some(by) = group_by {
                return everyday::snapshots_grouped(global, snapshots, &rejected, by);
            }
            output::snapshots(global, &snapshots, &rejected)?;
            Ok(exit::OK)
        }
        Command::Restore { snapshot, target, includes, excludes, trust_special, extra, filter: f } => {
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
                (n, differ) => bail!(
                    "{n} entries could not be restored and {} not as in the snapshot (listed above)",
                    files_are(differ)
                ),
            }
        }
        Command::Mount { mountpoint, cache_size, allow_other } => {
            let repo = open_repo(global)?;
            let source = coffer::vfs::RepoSource::new(Arc::clone(&repo))?;
            let options = coffer_mount::MountOptions {
                allow_other,
                // The budget covers blocks being fetched and decrypted too, not only cached ones.
                cache_bytes: cache_size - (cache_size / 4).min(64 << 20),
                fs_name: format!("coffer:{}", repo.id().short()),
                on_mounted: (!global.quiet).then_some(announce_mount as fn(&std::path::Path)),
                ..Default::default()
            };
            coffer_mount::mount_foreground(source, &mountpoint, &options)
                .with_context(|| format!("mounting at {}", mountpoint.display()))?;
            Ok(exit::OK)
        }
        Command::Ls { snapshot, path, long, filter: f } => {
            let repo = open_repo(global)?;
            repo.require_full_key("ls")?;
            let entry = repo.find_snapshot(&snapshot, &filter(&f))?;
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
        Command::Check { read_data, read_data_subset } => {
            let repo = open_repo(global)?;
            let read_data = match (read_data, read_data_subset) {
                (true, _) => ReadData::All,
                (false, Some(spec)) => ReadData::parse_subset(&spec).map_err(|e| anyhow::anyhow!(e.0))?,
                (false, None) => ReadData::None,
            };
            let quiet = global.quiet || global.json;
            let terminal = is_terminal();
            let report = check::check(&repo, &CheckOptions { read_data }, |step| {
                // Counters ("read 5/900 packs") overwrite each other on a terminal and are left
                // out of logs: a summary follows.
                let counter = step.starts_with("read ") || step.starts_with("checking trees of snapshot");
                match (quiet, counter, terminal) {
                    (true, _, _) | (false, true, false) => {}
                    (false, true, true) => eprint!("\r{step}\x1b[K"),
                    (false, false, true) => eprintln!("\r{step}\x1b[K"),
                    (false, false, false) => eprintln!("{step}"),
                }
            })?;
            if terminal && !quiet {
                eprint!("\r\x1b[K");
            }
            output::check(global, &report)?;
            if report.is_ok() {
                Ok(exit::OK)
            } else {
                bail!("the repository has {} errors (listed above)", report.errors.len())
            }
        }
        Command::Diff { first, second, filter: f } => {
            let repo = open_repo(global)?;
            repo.require_full_key("diff")?;
            let (snapshots, _) = repo.load_snapshots()?;
            let a = resolve_snapshot(&snapshots, &first, &filter(&f))?;
            let b = resolve_snapshot(&snapshots, &second, &filter(&f))?;
            let entries = diff::diff(&repo, &a.snapshot, &b.snapshot)?;
            output::diff(global, &entries)?;
            everyday::diff_summary(global, &entries)?;
            Ok(exit::OK)
        }
        Command::Forget(args) => {
            if !args.dry_run {
                retention::refuse_if_append_only(global, "forget")?;
            }
            retention::forget(global, &open_repo(global)?, args)
        }
        Command::Prune(args) => {
            if !args.dry_run {
                retention::refuse_if_append_only(global, "prune")?;
            }
            retention::prune(global, &open_repo(global)?, args)
        }
        Command::Repair { what } => repair::run(global, what),
        Command::Stats { snapshot: Some(spec), filter: f } => {
            let repo = open_repo(global)?;
            repo.require_full_key("stats")?;
            let entry = repo.find_snapshot(&spec, &filter(&f))?;
            everyday::snapshot_stats(global, &entry, &stats::snapshot_stats(&repo, &entry.snapshot.tree)?)?;
            Ok(exit::OK)
        }
        Command::Stats { snapshot: None, .. } => {
            let repo = open_repo(global)?;
            repo.require_full_key("stats")?;
            output::stats(global, &stats::stats(&repo)?)?;
            Ok(exit::OK)
        }
        Command::Copy { from, to, from_options, from_password_file, from_password_command, snapshots, filter } => {
            let args =
                copy::CopyArgs { from, to, from_options, from_password_file, from_password_command, snapshots, filter };
            copy::run(global, args)
        }
        Command::Key { command } => keys::run_key(global, command),
        Command::Secret { command } => keys::run_secret(global, command),
        Command::Profile { command } => profiles::run(global, command),
        Command::Find(args) => find::run(global, args),
        Command::Dump(args) => dump::run(global, args),
        Command::Tag(args) => tag::run(global, args),
        Command::Generate(args) => generate::run(global, args),
    }
}

/// `backup --stdin`: standard input as one file.
fn backup_stdin(
    global: &GlobalArgs,
    options: BackupOptions,
    input: &backup_input::BackupInputArgs,
    located: Located,
) -> Result<u8> {
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

/// "1 file is", "2 files are".
fn files_are(n: u64) -> String {
    if n == 1 {
        "1 file is".to_string()
    } else {
        format!("{n} files are")
    }
}

fn announce_mount(mountpoint: &std::path::Path) {
    eprintln!("mounted at {}; Ctrl-C or `fusermount3 -u {0}` unmounts", mountpoint.display());
}

fn resolve_snapshot(snapshots: &[SnapshotEntry], spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry> {
    Ok(coffer::repo::resolve(snapshots.to_vec(), spec, filter)?)
}

pub fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
