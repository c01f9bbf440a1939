//! `coffer diff A B`: what changed from snapshot A to snapshot B. Both trees are walked
//! together in name order; a folder whose tree id is the same in both is skipped without being
//! read (trees are a Merkle tree, so equal ids mean equal contents all the way down).

use serde::Serialize;

use super::ls::join_path;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Metadata, Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
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
    /// [`NodeKind::type_name`] of the entry (in B, or in A when removed); `type` in JSON, as
    /// in `ls`'s entries.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A file's size (in B, or in A when removed); 0 for anything else.
    #[serde(skip)]
    pub size: u64,
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
    let label = format!("diff of snapshot trees {} and {}", a.tree.short(), b.tree.short());
    Differ { repo, label, stack: Vec::new() }.run(&a.tree, &b.tree, &mut f)
}

fn emit(f: &mut dyn FnMut(DiffEntry), change: Change, path: &[u8], node: &Node) {
    f(DiffEntry {
        change,
        path: String::from_utf8_lossy(path).into_owned(),
        path_bytes: path.to_vec(),
        kind: node.kind.type_name(),
        size: match node.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        },
    });
}

/// A pair of folders being compared: entries before `i` (old) and `j` (new) are done.
struct Pair {
    old: Tree,
    new: Tree,
    i: usize,
    j: usize,
    dir: Vec<u8>,
}

/// Walks both trees in step with an explicit stack (see [`walk`]): a deep snapshot costs heap,
/// and nesting beyond [`walk::MAX_DEPTH`] is an error rather than a stack overflow.
struct Differ<'a> {
    repo: &'a Repository,
    label: String,
    stack: Vec<Pair>,
}

impl Differ<'_> {
    fn run(&mut self, a: &Id, b: &Id, f: &mut dyn FnMut(DiffEntry)) -> Result<(), RepoError> {
        self.push(a, b, b"/".to_vec())?;
        while let Some(top) = self.stack.last_mut() {
            let order = match (top.old.nodes.get(top.i), top.new.nodes.get(top.j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => {
                    self.stack.pop();
                    continue;
                }
            };
            match order {
                std::cmp::Ordering::Less => {
                    let node = top.old.nodes[top.i].clone();
                    top.i += 1;
                    let path = join_path(&top.dir, &node.name);
                    self.emit_all(Change::Removed, &path, &node, f)?;
                }
                std::cmp::Ordering::Greater => {
                    let node = top.new.nodes[top.j].clone();
                    top.j += 1;
                    let path = join_path(&top.dir, &node.name);
                    self.emit_all(Change::Added, &path, &node, f)?;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (top.old.nodes[top.i].clone(), top.new.nodes[top.j].clone());
                    top.i += 1;
                    top.j += 1;
                    let path = join_path(&top.dir, &x.name);
                    self.diff_nodes(path, &x, &y, f)?;
                }
            }
        }
        Ok(())
    }

    /// Starts comparing two folders (nothing to do when their trees are the same).
    fn push(&mut self, a: &Id, b: &Id, dir: Vec<u8>) -> Result<(), RepoError> {
        if a == b {
            return Ok(());
        }
        let depth = self.stack.len();
        let old = walk::enter(self.repo, &self.label, depth, &dir, a)?;
        let new = walk::enter(self.repo, &self.label, depth, &dir, b)?;
        self.stack.push(Pair { old, new, i: 0, j: 0, dir });
        Ok(())
    }

    fn diff_nodes(&mut self, path: Vec<u8>, x: &Node, y: &Node, f: &mut dyn FnMut(DiffEntry)) -> Result<(), RepoError> {
        let meta_changed = metadata_differs(&x.meta, &y.meta);
        match (&x.kind, &y.kind) {
            (NodeKind::Dir { subtree: a }, NodeKind::Dir { subtree: b }) => {
                if meta_changed {
                    emit(f, Change::MetadataChanged, &path, y);
                }
                self.push(a, b, path)
            }
            (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
                self.emit_all(Change::Removed, &path, x, f)?;
                self.emit_all(Change::Added, &path, y, f)
            }
            // Same type: size and content ids for files, target for symlinks, rdev for devices.
            (a, b) if a != b => {
                emit(f, Change::Modified, &path, y);
                Ok(())
            }
            _ => {
                if meta_changed {
                    emit(f, Change::MetadataChanged, &path, y);
                }
                Ok(())
            }
        }
    }

    /// Lists `node` and, for a folder, everything under it.
    fn emit_all(
        &self,
        change: Change,
        path: &[u8],
        node: &Node,
        f: &mut dyn FnMut(DiffEntry),
    ) -> Result<(), RepoError> {
        emit(f, change, path, node);
        let NodeKind::Dir { subtree } = &node.kind else {
            return Ok(());
        };
        // The folder sits `stack.len()` levels deep; what is under it counts from there.
        let mut all = EmitAll { change, f };
        let depth_left = walk::MAX_DEPTH.saturating_sub(self.stack.len());
        walk::walk_bounded(self.repo, &self.label, subtree, path, depth_left, (), &mut all)
    }
}

struct EmitAll<'f> {
    change: Change,
    f: &'f mut dyn FnMut(DiffEntry),
}

impl Visitor for EmitAll<'_> {
    type Error = RepoError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), path: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
        emit(self.f, self.change, path, node);
        Ok(matches!(node.kind, NodeKind::Dir { .. }).then_some(()))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::test_kit::{backup, fixture};

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
