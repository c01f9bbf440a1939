//! Backup options that leave things out, as restic spells them.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coffer::filter::{read_pattern_file, Selection};
use coffer::repo::SnapshotEntry;

#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Skip paths matching this pattern (repeatable), with restic's rules: `*` stays within one
    /// name, `**` spans folders, a leading `/` anchors at the root, anything else matches at any
    /// depth (`*.tmp`, `git/contrib`), `!PATTERN` takes back an earlier match.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Like --exclude, ignoring case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Read --exclude patterns from this file, one a line; `#` starts a comment (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Read --iexclude patterns from this file (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Skip the contents of folders holding a file NAME, keeping only that file; with
    /// NAME:HEADER only when the file starts with HEADER (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Skip the contents of folders holding a valid CACHEDIR.TAG (https://bford.info/cachedir/).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Skip files larger than this size, e.g. 2GiB or 500M.
    #[arg(long, value_name = "SIZE", value_parser = crate::cli::shared_args::parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Stay on the filesystems of the sources: folders where another one is mounted are kept
    /// empty.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
}

impl SelectArgs {
    /// The exclude patterns (command line, then files, then `extra` from a profile) and the rest.
    pub fn resolve(self, extra: &[String]) -> Result<(Vec<String>, Selection)> {
        let mut excludes = self.excludes;
        for file in &self.exclude_files {
            excludes.extend(read_pattern_file(file)?);
        }
        excludes.extend(extra.iter().cloned());
        let mut iexcludes = self.iexcludes;
        for file in &self.iexclude_files {
            iexcludes.extend(read_pattern_file(file)?);
        }
        let selection = Selection {
            iexcludes,
            exclude_if_present: self.exclude_if_present,
            exclude_caches: self.exclude_caches,
            exclude_larger_than: self.exclude_larger_than,
            one_file_system: self.one_file_system,
        };
        Ok((excludes, selection))
    }
}

/// The `n` newest snapshots of each host and set of paths (restic's `snapshots --latest`),
/// in the order they came.
pub fn latest_per_group(snapshots: Vec<SnapshotEntry>, n: usize) -> Vec<SnapshotEntry> {
    let mut by_age: Vec<usize> = (0..snapshots.len()).collect();
    by_age.sort_by_key(|&i| std::cmp::Reverse((snapshots[i].snapshot.time_unix, snapshots[i].snapshot.time_nsec)));
    let mut seen: HashMap<(String, Vec<Vec<u8>>), usize> = HashMap::new();
    let mut keep = vec![false; snapshots.len()];
    for i in by_age {
        let s = &snapshots[i].snapshot;
        let group = (s.hostname.clone(), s.paths.iter().map(|p| p.to_vec()).collect());
        let count = seen.entry(group).or_default();
        if *count < n {
            *count += 1;
            keep[i] = true;
        }
    }
    snapshots.into_iter().zip(keep).filter_map(|(s, k)| k.then_some(s)).collect()
}

/// Tags as given on the command line, where `a,b` means two tags (restic's rule): split,
/// trimmed, without empty ones or repeats, in first-seen order.
pub fn split_tags(given: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in given.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::split_tags;

    #[test]
    fn commas_separate_tags() {
        let given = ["daily,keep".to_string(), "keep".to_string(), " x , ,y".to_string()];
        assert_eq!(split_tags(&given), ["daily", "keep", "x", "y"]);
        assert!(split_tags(&[",".to_string()]).is_empty());
    }
}
