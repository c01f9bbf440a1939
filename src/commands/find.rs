//! `coffer find PATTERN…`: which snapshots hold an entry whose name (or, for a pattern with a
//! `/`, whose path) matches, with restic's pattern rules (`crate::filter`). A pattern names
//! entries themselves: what lies below a matching folder is not reported with it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::commands::ls::LsEntry;
use crate::filter::Patterns;
use crate::format::tree::{Node, NodeKind};
use crate::repo::walk::{self, Visitor};
use crate::repo::{RepoError, Repository, SnapshotEntry};

/// Calls `found` with each matching entry of `entry`'s snapshot, in tree order.
pub fn find_in(
    repo: &Repository,
    entry: &SnapshotEntry,
    patterns: &Patterns,
    found: &mut dyn FnMut(LsEntry),
) -> Result<(), RepoError> {
    let mut finder = Finder { patterns, found };
    walk::walk(repo, &format!("snapshot {}", entry.id.short()), &entry.snapshot.tree, b"/", (), &mut finder)
}

struct Finder<'a> {
    patterns: &'a Patterns,
    found: &'a mut dyn FnMut(LsEntry),
}

impl Visitor for Finder<'_> {
    type Error = RepoError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), path: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
        if self.patterns.matches_entry(Path::new(OsStr::from_bytes(path))) {
            (self.found)(LsEntry::from_node(path.to_vec(), node));
        }
        Ok(matches!(node.kind, NodeKind::Dir { .. }).then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn finds_by_name_and_by_path() {
        let fx = fixture();
        backup(&fx);
        let (entries, _) = fx.repo.load_snapshots().unwrap();
        let find = |patterns: &[&str]| {
            let patterns = Patterns::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap();
            let mut out = Vec::new();
            find_in(&fx.repo, &entries[0], &patterns, &mut |e| out.push(e.path)).unwrap();
            out
        };
        let s = fx.src_path().to_str().unwrap().to_string();
        assert_eq!(find(&["*.txt"]), vec![format!("{s}/a.txt"), format!("{s}/sub/b.txt")]);
        assert_eq!(find(&["sub"]), vec![format!("{s}/sub")], "not what the folder holds");
        assert_eq!(find(&["sub/*.txt"]), vec![format!("{s}/sub/b.txt")]);
        assert!(find(&["nothing*"]).is_empty());
    }
}
