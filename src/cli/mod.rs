//! The command-line edge: turns parsed arguments into engine calls, prints results for
//! people or as JSON, and maps failures to exit codes. `anyhow` lives only here.

pub mod alloc;
pub mod args;
mod backup;
mod backup_input;
mod browse;
mod check;
mod copy;
mod dump;
pub mod env_secrets;
mod everyday;
mod find;
mod generate;
mod help;
mod init;
mod interrupt;
mod json;
mod keys;
mod mount;
mod output;
mod password;
mod profiles;
mod repair;
mod restore;
mod restore_opts;
mod retention;
mod select;
mod shared_args;
mod tag;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};

use args::{Cli, Command};
use coffer::archiver::BackupError;
use coffer::commands::copy::CopyError;
use coffer::commands::restore::RestoreError;
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
            || matches!(cause.downcast_ref::<RestoreError>(), Some(RestoreError::Interrupted))
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

/// Runs the command the line names: only the dispatch, each command family has its own file
/// (or function) beside this one.
pub fn run(cli: Cli) -> Result<u8> {
    let global = &cli.global;
    match cli.command {
        Command::Init => init::run(global),
        Command::Backup(args) => backup::run(global, args),
        Command::Snapshots { filter, latest, group_by } => browse::snapshots(global, &filter, latest, group_by),
        Command::Restore(args) => restore::run(global, args),
        Command::Mount { mountpoint, cache_size, allow_other } => {
            mount::run(global, &mountpoint, cache_size, allow_other)
        }
        Command::Ls { snapshot, path, long, filter } => browse::ls(global, &snapshot, path, long, &filter),
        Command::Check { read_data, read_data_subset } => check::run(global, read_data, read_data_subset),
        Command::Diff { first, second, filter } => browse::diff(global, &first, &second, &filter),
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
        Command::Stats { snapshot, filter } => browse::stats(global, snapshot, &filter),
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

pub fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
