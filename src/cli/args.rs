//! Command-line syntax (clap). Global options may stand before or after the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::shared_args::{parse_size, GlobalArgs, SnapshotFilterArgs};

#[derive(Parser, Debug)]
#[command(name = "coffer", version, about = "Encrypted, deduplicated backups you can mount and browse")]
#[command(after_help = crate::cli::help::ENVIRONMENT)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init,
    /// Back up files and folders into a new snapshot.
    #[command(after_help = crate::cli::help::BACKUP)]
    Backup(crate::cli::backup::BackupArgs),
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        filter: SnapshotFilterArgs,
        /// Only the N newest snapshots of each host and set of paths (restic's --latest).
        #[arg(long, value_name = "N")]
        latest: Option<usize>,
        /// List in groups of snapshots with the same host, paths, tags and/or signer, e.g.
        /// `host,paths` (restic's --group-by).
        #[arg(long, short = 'g', value_name = "FIELDS", value_parser = coffer::retention::GroupBy::parse)]
        group_by: Option<coffer::retention::GroupBy>,
    },
    /// List files in a snapshot.
    Ls {
        /// Snapshot: `latest`, `latest~N` (N before the newest) or an id prefix.
        snapshot: String,
        /// Only this path (and below).
        path: Option<PathBuf>,
        /// Long listing: mode, owner, group, size, mtime and path (restic's `ls -l`).
        #[arg(short = 'l', long)]
        long: bool,
        #[command(flatten)]
        filter: SnapshotFilterArgs,
    },
    /// Restore a snapshot, or a path in it (`SNAP:/path`), into a folder.
    #[command(after_help = crate::cli::help::RESTORE)]
    Restore(crate::cli::restore::RestoreArgs),
    /// Verify the repository: structure always; with --read-data, every byte.
    Check {
        /// Read and verify all data.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read and verify a subset of the data: `10%` or `n/m`.
        #[arg(long, value_name = "SUBSET", value_parser = parse_subset)]
        read_data_subset: Option<String>,
    },
    /// Show what changed between two snapshots (`latest`, `latest~N` or id prefixes), and a
    /// summary line.
    Diff {
        first: String,
        second: String,
        #[command(flatten)]
        filter: SnapshotFilterArgs,
    },
    /// Repository size, deduplication and compression; with a snapshot, what it restores.
    Stats {
        /// Only this snapshot: its files, folders and restore size (`latest`, `latest~N`, id).
        #[arg(value_name = "SNAP")]
        snapshot: Option<String>,
        #[command(flatten)]
        filter: SnapshotFilterArgs,
    },
    /// Show every snapshot as a read-only folder (runs until Ctrl-C or `fusermount3 -u`).
    #[command(after_help = crate::cli::help::MOUNT)]
    Mount {
        mountpoint: PathBuf,
        /// Memory for decrypted blocks, cached and in flight, e.g. 512MiB or 2GiB.
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        cache_size: u64,
        /// Let other users see the mount (their access is checked against the backed-up modes).
        #[arg(long)]
        allow_other: bool,
    },
    /// Copy snapshots from another repository into this one (--repo, or --to); snapshots
    /// copied before are skipped, and content the destination holds is not stored again.
    Copy {
        /// The repository to copy from (any --repo form).
        #[arg(long, value_name = "REPO")]
        from: PathBuf,
        /// The repository to copy into (default: --repo).
        #[arg(long, value_name = "REPO")]
        to: Option<PathBuf>,
        /// Storage option of the source repository (repeatable); --option is the destination's.
        #[arg(long = "from-option", value_name = "KEY=VALUE")]
        from_options: Vec<String>,
        /// Read the source repository's password from this file (first line).
        #[arg(long, value_name = "FILE", env = "COFFER_FROM_PASSWORD_FILE")]
        from_password_file: Option<PathBuf>,
        /// Run this command and read the source repository's password from its output.
        #[arg(long, value_name = "CMD", env = "COFFER_FROM_PASSWORD_COMMAND")]
        from_password_command: Option<String>,
        /// Snapshots to copy (`latest` or id prefixes); all of them when none is given.
        #[arg(value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
        #[command(flatten)]
        filter: SnapshotFilterArgs,
    },
    /// Remove snapshots by a retention policy (per group); `--prune` also frees their data.
    #[command(after_help = crate::cli::help::FORGET)]
    Forget(crate::cli::retention::ForgetArgs),
    /// Delete data no snapshot needs; repack partly used packs. Safe beside running backups.
    Prune(crate::cli::retention::PruneArgs),
    /// Rebuild what a damaged repository lets be rebuilt, and say what is lost.
    Repair {
        #[command(subcommand)]
        what: RepairCommand,
    },
    /// Manage passphrases and write-only keys.
    #[command(after_help = crate::cli::help::KEY)]
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Store or delete secrets in the OS keychain (for `keychain:NAME` references).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Show profiles.
    Profile {
        #[command(subcommand)]
        command: crate::cli::profiles::ProfileCommand,
    },
    /// Find which snapshots hold files or folders matching a pattern.
    Find(crate::cli::find::FindArgs),
    /// Write a file of a snapshot to stdout, or a folder as a tar archive.
    Dump(crate::cli::dump::DumpArgs),
    /// Add, remove or set the tags of snapshots (each changed snapshot is rewritten).
    Tag(crate::cli::tag::TagArgs),
    /// Shell completions and man pages.
    Generate(GenerateArgs),
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs in storage (drops lost packs, adopts orphans).
    Index,
    /// Replace snapshots that reference lost data by snapshots without the lost files.
    Snapshots {
        /// Also remove each broken snapshot once its replacement is stored.
        #[arg(long)]
        forget_broken: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add another passphrase that opens the repository.
    Add {
        /// Read the new passphrase from this file instead of asking twice on the terminal.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List passphrase keys and write-only keys.
    List,
    /// Remove a passphrase key or revoke a write-only key (by id prefix, from `key list`).
    Remove { id: String },
    /// Change the passphrase that opened the repository (rewrites only its key file).
    Passwd {
        /// Read the new passphrase from this file instead of asking twice on the terminal.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Create a write-only key (backups only) and register it in the repository.
    WriteOnly {
        /// Store it in the OS keychain under this name (use it with `--key keychain:NAME`).
        #[arg(long, value_name = "NAME", required_unless_present = "output", conflicts_with = "output")]
        save_to_keychain: Option<String>,
        /// Write it to this new file (mode 0600), or `-` for stdout (to pipe into systemd-creds).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// A name for `key list` (default: the keychain name or file name).
        #[arg(long)]
        label: Option<String>,
        /// A host name this key's snapshots may claim (repeat for several; default: this
        /// machine's). A snapshot of it that names another host is ignored.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret in the OS keychain, read from a prompt (terminal) or the first line of stdin.
    Set { name: String },
    /// Delete a secret from the OS keychain.
    Delete { name: String },
}

/// Treats `COFFER_…=` (set but empty) as unset, as shells and systemd units often leave them:
/// clap would otherwise take the empty text as a value (`--password-file ""`).
pub fn forget_empty_env() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(key, value)| key.to_string_lossy().starts_with("COFFER_") && value.is_empty())
        .map(|(key, _)| key)
        .collect();
    for key in empty {
        // Single-threaded still: nothing else reads the environment yet.
        std::env::remove_var(key);
    }
}

fn parse_subset(text: &str) -> Result<String, String> {
    coffer::commands::check::ReadData::parse_subset(text).map(|_| text.to_string()).map_err(|e| e.0)
}

/// `coffer generate`: here rather than beside its code, which needs the whole [`Cli`].
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  coffer generate --completions bash > /etc/bash_completion.d/coffer\n  \
                        coffer generate --completions zsh > \"${fpath[1]}/_coffer\"\n  \
                        coffer generate --man /usr/local/share/man/man1")]
#[group(required = true, multiple = true)]
pub struct GenerateArgs {
    /// Print the completion script for this shell to stdout.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Write man pages (coffer.1 and one per subcommand, coffer-backup.1 …) into this folder.
    #[arg(long, value_name = "DIR")]
    pub man: Option<PathBuf>,
}
