//! Backup options that say where the paths or the data come from, and whether to store
//! anything: `--files-from`, `--files-from-verbatim`, `--stdin`, `--dry-run` (restic's names).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct BackupInputArgs {
    /// Read, chunk and count what would be added, but write nothing to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Back up the paths listed in FILE (`-`: standard input), one a line; blank lines and
    /// lines starting with `#` are skipped, surrounding spaces trimmed (repeatable). Patterns
    /// are not expanded: a line is a path.
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Like --files-from, but every non-empty line is a path exactly as written (no comments,
    /// no trimming), for lists a program wrote (repeatable).
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Back up standard input as one file (a database dump piped in), named by --stdin-filename.
    #[arg(long, conflicts_with_all = ["files_from", "files_from_verbatim"])]
    pub stdin: bool,
    /// The name standard input is stored under with --stdin (a path in the snapshot).
    #[arg(long, value_name = "NAME", default_value = "stdin", requires = "stdin")]
    pub stdin_filename: String,
}

impl BackupInputArgs {
    /// The paths the list files name, in order.
    pub fn listed_paths(&self) -> Result<Vec<PathBuf>> {
        if self.files_from.iter().chain(&self.files_from_verbatim).filter(|f| f.as_os_str() == "-").count() > 1 {
            bail!("standard input can be read once: give `-` to only one --files-from");
        }
        let mut paths = Vec::new();
        for file in &self.files_from {
            paths.extend(parse_list(&read_list(file)?, false));
        }
        for file in &self.files_from_verbatim {
            paths.extend(parse_list(&read_list(file)?, true));
        }
        Ok(paths)
    }

    /// The name --stdin stores under, as a path at the snapshot's root.
    pub fn stdin_path(&self) -> Result<PathBuf> {
        let name = &self.stdin_filename;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            bail!("--stdin-filename {name:?} is not a file name: give a name like db.sql (no folders)");
        }
        Ok(Path::new("/").join(name))
    }
}

fn read_list(file: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes).context("reading the list of paths from standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading the list of paths {}", file.display()))?;
    }
    Ok(bytes)
}

/// One path a line (`\n` or `\r\n`). Paths are bytes: a list may name files that are not UTF-8.
fn parse_list(bytes: &[u8], verbatim: bool) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| {
            let line = if verbatim { line } else { line.trim_ascii() };
            let skip = line.is_empty() || (!verbatim && line.starts_with(b"#"));
            (!skip).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(line)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_list;
    use std::path::PathBuf;

    #[test]
    fn comments_blank_lines_and_spaces() {
        let list = b"# sources\n/etc\n\n  /home/a b  \r\n#not\n/x";
        let want: Vec<PathBuf> = ["/etc", "/home/a b", "/x"].iter().map(PathBuf::from).collect();
        assert_eq!(parse_list(list, false), want);
        let verbatim: Vec<PathBuf> =
            ["# sources", "/etc", "  /home/a b  ", "#not", "/x"].iter().map(PathBuf::from).collect();
        assert_eq!(parse_list(list, true), verbatim);
    }
}
