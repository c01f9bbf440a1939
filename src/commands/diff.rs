//! `coffer diff A B`: what changed from snapshot A to snapshot B. Both trees are walked
//! together in name order; a folder whose tree id is the same in both is skipped without being
//! read (trees are a Merkle tree, so equal ids mean equal contents all the way down).

use serde::Serialize;

use super::ls::join_path;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Metadata, Node, NodeKind};
use crate::id::Id;
use crate::repo::{RepoError, Repository};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Change {
    #[serde(rename = "+")]
    Added,
    #[serde(rename = "-")]
    Removed,
    /// Content changed: file data, symlink target or device number.
    #[serde(rename = "M")]
    Modified,
    /// Only metadata changed: mode, owner, mtime or xattrs.
    #[serde(rename = "U")]
    MetadataChanged,
}

impl Change {
    pub fn symbol(self) -> &'static str {
        match self {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::MetadataChanged => "U",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    /// Absolute path in the snapshot, lossily converted to UTF-8 for display.
    pub path: String,
    #[serde(skip)]
    pub path_bytes: Vec<u8>,
    /// [`NodeKind::type_name`] of the entry (in B, or in A when removed).
    pub kind: &'static str,
}

/// All changes from `a` to `b`, in tree order (parents before their contents). A folder that
/// appears or disappears is listed with everything in it; an entry whose type changed (a
/// file became a folder) is listed as removed and added.
pub fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<DiffEntry>, RepoError> {
    let mut out = Vec::new();
    diff_with(repo, a, b, |entry| out.push(entry))?;
    Ok(out)
}

/// Like [`diff`], handing each change to `f` as it is found.
pub fn diff_with(repo: &Repository, a: &Snapshot, b: &Snapshot, mut f: impl FnMut(DiffEntry)) -> Result<(), RepoError> {
    diff_trees(repo, &a.tree, &b.tree, b"/", &mut f)
}

fn emit(f: &mut dyn FnMut(DiffEntry), change: Change, path: &[u8], node: &Node) {
    f(DiffEntry {
        change,
        path: String::from_utf8_lossy(path).into_owned(),
        path_bytes: path.to_vec(),
        kind: node.kind.type_name(),
    });
}

fn diff_trees(repo: &Repository, a: &Id, b: &Id, dir: &[u8], f: &mut dyn FnMut(DiffEntry)) -> Result<(), RepoError> {
    if a == b {
        return Ok(());
    }
    let old = repo.load_tree(a)?;
    let new = repo.load_tree(b)?;
    let (mut i, mut j) = (0, 0);
    while i < old.nodes.len() || j < new.nodes.len() {
        let order = match (old.nodes.get(i), new.nodes.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let node = &old.nodes[i];
                emit_all(repo, Change::Removed, &join_path(dir, &node.name), node, f)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let node = &new.nodes[j];
                emit_all(repo, Change::Added, &join_path(dir, &node.name), node, f)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&old.nodes[i], &new.nodes[j]);
                diff_nodes(repo, &join_path(dir, &x.name), x, y, f)?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn diff_nodes(
    repo: &Repository,
    path: &[u8],
    x: &Node,
    y: &Node,
    f: &mut dyn FnMut(DiffEntry),
) -> Result<(), RepoError> {
    let meta_changed = metadata_differs(&x.meta, &y.meta);
    match (&x.kind, &y.kind) {
        (NodeKind::Dir { subtree: a }, NodeKind::Dir { subtree: b }) => {
            if meta_changed {
                emit(f, Change::MetadataChanged, path, y);
            }
            diff_trees(repo, a, b, path, f)
        }
        (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
            emit_all(repo, Change::Removed, path, x, f)?;
            emit_all(repo, Change::Added, path, y, f)
        }
        // Same type: size and content ids for files, target for symlinks, rdev for devices.
        (a, b) if a != b => {
            emit(f, Change::Modified, path, y);
            Ok(())
        }
        _ => {
            if meta_changed {
                emit(f, Change::MetadataChanged, path, y);
            }
            Ok(())
        }
    }
}

fn metadata_differs(a: &Metadata, b: &Metadata) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime != b.mtime
        || a.mtime_nsec != b.mtime_nsec
        || a.xattrs != b.xattrs
}

/// Lists `node` and, for a folder, everything under it.
fn emit_all(
    repo: &Repository,
    change: Change,
    path: &[u8],
    node: &Node,
    f: &mut dyn FnMut(DiffEntry),
) -> Result<(), RepoError> {
    emit(f, change, path, node);
    if let NodeKind::Dir { subtree } = &node.kind {
        let tree = repo.load_tree(subtree)?;
        for child in &tree.nodes {
            emit_all(repo, change, &join_path(path, &child.name), child, f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::commands::check::test_support::{backup, fixture};

    #[test]
    fn reports_added_removed_modified_and_metadata() {
        let fx = fixture();
        let first = backup(&fx);
        assert!(diff(&fx.repo, &first.snapshot, &first.snapshot).unwrap().is_empty());

        let src = fx.src.path();
        std::fs::write(src.join("a.txt"), b"hello, changed").unwrap();
        std::fs::remove_file(src.join("sub/b.txt")).unwrap();
        std::fs::create_dir(src.join("new")).unwrap();
        std::fs::write(src.join("new/c.txt"), b"c").unwrap();
        std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_file(src.join("link")).unwrap();
        std::fs::write(src.join("link"), b"now a file").unwrap();
        let second = backup(&fx);

        let changes = diff(&fx.repo, &first.snapshot, &second.snapshot).unwrap();
        let s = fx.src_path().to_str().unwrap().to_string();
        let has = |change: Change, rel: &str, kind: &str| {
            changes.iter().any(|e| e.change == change && e.path == format!("{s}{rel}") && e.kind == kind)
        };
        assert!(has(Change::Modified, "/a.txt", "file"), "{changes:#?}");
        assert!(has(Change::Removed, "/sub/b.txt", "file"), "{changes:#?}");
        assert!(has(Change::Added, "/new", "dir"), "{changes:#?}");
        assert!(has(Change::Added, "/new/c.txt", "file"), "{changes:#?}");
        assert!(has(Change::MetadataChanged, "/sub", "dir"), "{changes:#?}");
        assert!(has(Change::Removed, "/link", "symlink"), "{changes:#?}");
        assert!(has(Change::Added, "/link", "file"), "{changes:#?}");
        // Outside the source, at most the folders above it changed (their mtime: other
        // tests create temporary folders next to it).
        assert!(
            changes.iter().all(|e| e.path.starts_with(&format!("{s}/")) || e.change == Change::MetadataChanged),
            "{changes:#?}"
        );

        // And the other way round.
        let back = diff(&fx.repo, &second.snapshot, &first.snapshot).unwrap();
        assert!(back.iter().any(|e| e.change == Change::Added && e.path == format!("{s}/sub/b.txt")));
        assert!(back.iter().any(|e| e.change == Change::Removed && e.path == format!("{s}/new/c.txt")));

        let json = serde_json::to_value(&changes[0]).unwrap();
        assert!(["+", "-", "M", "U"].contains(&json["change"].as_str().unwrap()));
        assert!(json.get("path_bytes").is_none());
    }
}
