//! Options more than one command takes: the global ones and the snapshot filter. Apart from
//! `args.rs`, so that a command's own option struct (next to its code) and the command enum
//! that lists it do not import each other.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location: a local folder, or s3://bucket/prefix, sftp://user@host:port/path,
    /// webdav://host/path (webdav+http:// for plain http), or SCHEME://… of another OpenDAL service.
    #[arg(short = 'r', long, global = true, env = "COFFER_REPOSITORY", value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// Storage option for a remote repository, e.g. region=eu-west-1 (repeatable). Secret values
    /// must be references: secret_access_key=env:VAR, password=keychain:NAME, file:PATH, command:CMD.
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Read the repository password from this file (first line).
    #[arg(long, global = true, value_name = "FILE", env = "COFFER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this command and read the password from its output.
    #[arg(long, global = true, value_name = "CMD", env = "COFFER_PASSWORD_COMMAND")]
    pub password_command: Option<String>,
    /// Open the repository with the write-only key this reference names: keychain:NAME,
    /// credential:NAME (systemd), file:PATH, command:CMD (never the key itself).
    #[arg(long, global = true, value_name = "REF", env = "COFFER_KEY")]
    pub key: Option<String>,
    /// Open the repository with the write-only key in this file (mode 0600).
    #[arg(long, global = true, value_name = "FILE", env = "COFFER_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Accept a repository password where a write-only key is expected (--key, --key-file,
    /// systemd credential): whoever can read that file can then read and delete every backup.
    #[arg(long, global = true)]
    pub allow_full_key_file: bool,
    /// Take the repository, sources, excludes, tags and secret references from this profile
    /// ($XDG_CONFIG_HOME/coffer/profiles/NAME.toml).
    #[arg(long, global = true, value_name = "NAME", env = "COFFER_PROFILE")]
    pub profile: Option<String>,
    /// Folder for the local database (a cache; safe to delete).
    #[arg(long, global = true, env = "COFFER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Machine-readable output: JSON Lines on stdout (one value a line, UTC RFC 3339 times,
    /// sizes in bytes); messages stay on stderr. See README "JSON output".
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail; repeat for debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SnapshotFilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags: `a,b` needs both; repeated, any one suffices (restic's
    /// rule; `--tag ""` means snapshots without tags).
    #[arg(long = "tag", value_name = "TAG[,TAG…]")]
    pub tags: Vec<String>,
    /// Only snapshots made of this absolute source path (repeatable: of all of them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Parses sizes like `512MiB`, `2GiB`, `1G`, `300k` or plain bytes (binary units either way,
/// as restic reads `--exclude-larger-than 1M`). bytesize does the arithmetic; its own reading
/// of `1M`/`1MB` is decimal, so the unit is first spelled in its binary form.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let binary = match unit.trim().to_ascii_lowercase().trim_end_matches("ib").trim_end_matches('b') {
        "" => "B",
        "k" => "KiB",
        "m" => "MiB",
        "g" => "GiB",
        "t" => "TiB",
        _ => return Err(format!("unknown unit in {text:?}: use KiB, MiB, GiB or TiB")),
    };
    let not_a_size = || format!("{text:?} is not a size like 512MiB or 2GiB");
    if number.parse::<f64>().is_err() {
        return Err(not_a_size());
    }
    format!("{number} {binary}").parse::<bytesize::ByteSize>().map(|size| size.as_u64()).map_err(|_| not_a_size())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("300k"), Ok(300 << 10));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("42"), Ok(42));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("9007199254740993"), Ok(9007199254740993));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
