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
    /// lines starting with `#` are skipped, surrounding spaces trimmed (repeatable). A line with
    /// `*`, `?` or `[…]` is a glob expanded as the shell would (`*` stays within one folder
    /// name); one that matches nothing is skipped with a warning.
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
            for line in parse_list(&read_list(file)?, false) {
                let expanded = expand(&line)?;
                if expanded.is_empty() {
                    eprintln!("warning: pattern {:?} in --files-from matches no file, skipped", line.display());
                }
                paths.extend(expanded);
            }
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

/// Whether a list line is a pattern: Go's `filepath.Glob` meta characters, as restic reads them.
fn is_pattern(line: &[u8]) -> bool {
    line.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// A `--files-from` line: itself when it holds no pattern (a missing path then fails as any
/// missing source does), else the existing paths it matches, component by component, each
/// folder's matches in name order (Go's `filepath.Glob`, which restic uses). `*`, `?` and
/// `[…]` never cross `/`; there is no `**`. A line that is not UTF-8 is a path.
fn expand(line: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = line.as_os_str().as_bytes();
    let Some(text) = line.to_str().filter(|_| is_pattern(bytes)) else { return Ok(vec![line.to_path_buf()]) };
    let absolute = text.starts_with('/');
    let mut found = vec![if absolute { PathBuf::from("/") } else { PathBuf::new() }];
    for component in text.split('/').filter(|c| !c.is_empty()) {
        if !is_pattern(component.as_bytes()) {
            found = found.into_iter().map(|dir| dir.join(component)).collect();
            continue;
        }
        let matcher = globset::GlobBuilder::new(component)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .with_context(|| format!("--files-from pattern {text:?}"))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in found {
            let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
            // A folder that cannot be listed (missing, not a folder, no permission) matches
            // nothing, as in Go.
            let Ok(entries) = std::fs::read_dir(listing) else { continue };
            let mut names: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
            names.sort();
            next.extend(names.into_iter().filter(|n| matcher.is_match(Path::new(n))).map(|n| dir.join(n)));
        }
        found = next;
    }
    // Literal components after the last pattern may name nothing.
    found.retain(|p| std::fs::symlink_metadata(p).is_ok());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{expand, parse_list};
    use std::path::{Path, PathBuf};

    #[test]
    fn patterns_expand_within_one_folder_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for path in ["a/x.txt", "a/y.log", "a/sub/z.txt", "b/x.txt", "c/.hidden.txt"] {
            std::fs::create_dir_all(root.join(path).parent().expect("parent")).expect("mkdir");
            std::fs::write(root.join(path), b"").expect("write");
        }
        let r = root.display();
        let got = |pattern: String| expand(Path::new(&pattern)).expect("expand");
        assert_eq!(got(format!("{r}/a/*.txt")), vec![root.join("a/x.txt")]);
        assert_eq!(got(format!("{r}/*/x.txt")), vec![root.join("a/x.txt"), root.join("b/x.txt")]);
        assert_eq!(got(format!("{r}/[ab]/x.t?t")), vec![root.join("a/x.txt"), root.join("b/x.txt")]);
        assert_eq!(got(format!("{r}/c/*")), vec![root.join("c/.hidden.txt")]);
        assert!(got(format!("{r}/*/nothing*")).is_empty());
        // No pattern: the line itself, existing or not.
        assert_eq!(got(format!("{r}/missing")), vec![root.join("missing")]);
        std::fs::write(root.join("a/lit*"), b"").expect("write");
        assert_eq!(got(format!("{r}/a/lit\\*")), vec![root.join("a/lit*")]);
    }

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
