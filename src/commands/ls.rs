//! `coffer ls`: the entries of a snapshot, or of one folder or file in it, with their metadata.
//! Paths are absolute inside the snapshot: its root tree is `/`, and each source sits at the
//! absolute path it was backed up from. Also home of [`find_node`], the path lookup that
//! `restore` and friends share.

use serde::Serialize;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
use crate::repo::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum LsError {
    #[error("{path:?} is not in this snapshot")]
    NoSuchPath { path: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// One listed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LsEntry {
    /// Absolute path in the snapshot, lossily converted to UTF-8 for display.
    pub path: String,
    /// The exact path bytes (names need not be UTF-8).
    #[serde(skip)]
    pub path_bytes: Vec<u8>,
    /// [`NodeKind::type_name`]: `file`, `dir`, `symlink`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// File size in bytes; 0 for everything else.
    pub size: u64,
    /// Permission and special bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, RFC 3339 in UTC.
    pub mtime: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    /// Symlink target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl LsEntry {
    pub fn from_node(path: Vec<u8>, node: &Node) -> LsEntry {
        let (size, target) = match &node.kind {
            NodeKind::File { size, .. } => (*size, None),
            NodeKind::Symlink { target } => (0, Some(String::from_utf8_lossy(target).into_owned())),
            _ => (0, None),
        };
        LsEntry {
            path: String::from_utf8_lossy(&path).into_owned(),
            path_bytes: path,
            kind: node.kind.type_name(),
            size,
            mode: node.meta.mode,
            mtime: rfc3339(node.meta.mtime, node.meta.mtime_nsec),
            uid: node.meta.uid,
            gid: node.meta.gid,
            user: node.meta.user.clone(),
            group: node.meta.group.clone(),
            target,
        }
    }
}

/// A Unix time as RFC 3339 in UTC (`2026-11-27T08:15:02Z`, with fractional seconds when set);
/// empty for a time chrono cannot represent.
pub fn rfc3339(secs: i64, nsec: u32) -> String {
    chrono::DateTime::from_timestamp(secs, nsec)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// `dir/name` for an absolute `dir` (`/` joins without doubling the slash).
pub fn join_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// The components of a snapshot path; empty components and `.` are skipped. `None` when the
/// path contains `..`, which never names an entry of a snapshot.
fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            name => out.push(name),
        }
    }
    Some(out)
}

/// `/a/b` for `a//b/./` and friends.
fn normalize(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().fold(b"/".to_vec(), |dir, name| join_path(&dir, name))
}

/// Finds the entry at absolute `path` under `root_tree` (the snapshot's root, which is `/`).
/// `Ok(None)` when no such entry exists. For `/` itself (or an empty path), which has no entry
/// of its own, returns a synthetic folder node with an empty name, default metadata and
/// `root_tree` as its subtree.
pub fn find_node(repo: &Repository, root_tree: &Id, path: &[u8]) -> Result<Option<Node>, RepoError> {
    let Some(parts) = components(path) else {
        return Ok(None);
    };
    walk::descend(repo, root_tree, &parts)
}

/// Lists `path` in `snapshot` (default `/`): a folder's entries (all levels below it when
/// `recursive`), or the single entry when `path` is not a folder. Entries come in tree order
/// (sorted by name bytes, parents before their contents).
pub fn list(
    repo: &Repository,
    snapshot: &Snapshot,
    path: Option<&[u8]>,
    recursive: bool,
    mut f: impl FnMut(LsEntry),
) -> Result<(), LsError> {
    let path = path.unwrap_or(b"/");
    let missing = || LsError::NoSuchPath { path: String::from_utf8_lossy(path).into_owned() };
    let parts = components(path).ok_or_else(missing)?;
    let node = find_node(repo, &snapshot.tree, path)?.ok_or_else(missing)?;
    let normalized = normalize(&parts);
    match node.kind {
        NodeKind::Dir { subtree } => list_dir(repo, &subtree, &normalized, recursive, &mut f)?,
        _ => f(LsEntry::from_node(normalized, &node)),
    }
    Ok(())
}

fn list_dir(
    repo: &Repository,
    tree: &Id,
    dir: &[u8],
    recursive: bool,
    f: &mut dyn FnMut(LsEntry),
) -> Result<(), RepoError> {
    let mut lister = Lister { recursive, f };
    walk::walk(repo, &format!("snapshot tree {}", tree.short()), tree, dir, (), &mut lister)
}

struct Lister<'f> {
    recursive: bool,
    f: &'f mut dyn FnMut(LsEntry),
}

impl Visitor for Lister<'_> {
    type Error = RepoError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), path: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
        (self.f)(LsEntry::from_node(path.to_vec(), node));
        Ok((self.recursive && matches!(node.kind, NodeKind::Dir { .. })).then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn lists_paths_and_finds_nodes() {
        let fx = fixture();
        let out = backup(&fx);
        let src = fx.src_path();
        let src_bytes = src.as_os_str().as_encoded_bytes().to_vec();

        let mut all = Vec::new();
        list(&fx.repo, &out.snapshot, None, true, |e| all.push(e)).unwrap();
        let paths: Vec<&str> = all.iter().map(|e| e.path.as_str()).collect();
        let s = src.to_str().unwrap();
        for expected in
            [s.to_string(), format!("{s}/a.txt"), format!("{s}/sub"), format!("{s}/sub/b.txt"), format!("{s}/link")]
        {
            assert!(paths.contains(&expected.as_str()), "{expected} missing from {paths:?}");
        }
        // Parents come before their contents.
        let pos = |p: &str| paths.iter().position(|x| *x == p).unwrap();
        assert!(pos(&format!("{s}/sub")) < pos(&format!("{s}/sub/b.txt")));
        let a = all.iter().find(|e| e.path == format!("{s}/a.txt")).unwrap();
        assert_eq!((a.kind, a.size), ("file", 5));
        assert!(a.mtime.ends_with('Z'), "{}", a.mtime);
        let link = all.iter().find(|e| e.path == format!("{s}/link")).unwrap();
        assert_eq!((link.kind, link.target.as_deref()), ("symlink", Some("a.txt")));
        let json = serde_json::to_value(a).unwrap();
        assert!(json.get("path_bytes").is_none() && json.get("target").is_none());

        // Not recursive: only the direct entries of the folder.
        let mut top = Vec::new();
        list(&fx.repo, &out.snapshot, Some(&src_bytes), false, |e| top.push(e.path)).unwrap();
        assert_eq!(top, vec![format!("{s}/a.txt"), format!("{s}/link"), format!("{s}/sub")]);

        // A file lists as itself; odd spellings of the path are normalised.
        let mut one = Vec::new();
        let odd = format!("{s}//sub/./b.txt/");
        list(&fx.repo, &out.snapshot, Some(odd.as_bytes()), false, |e| one.push(e)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].path, format!("{s}/sub/b.txt"));
        assert_eq!(one[0].size, 11);

        let missing = format!("{s}/nope");
        assert!(matches!(
            list(&fx.repo, &out.snapshot, Some(missing.as_bytes()), false, |_| {}),
            Err(LsError::NoSuchPath { .. })
        ));
        assert!(find_node(&fx.repo, &out.snapshot.tree, missing.as_bytes()).unwrap().is_none());
        assert!(find_node(&fx.repo, &out.snapshot.tree, format!("{s}/a.txt/x").as_bytes()).unwrap().is_none());
        assert!(find_node(&fx.repo, &out.snapshot.tree, format!("{s}/sub/../a.txt").as_bytes()).unwrap().is_none());
        let node = find_node(&fx.repo, &out.snapshot.tree, format!("{s}/sub/b.txt").as_bytes()).unwrap().unwrap();
        assert_eq!(node.name.as_slice(), b"b.txt");
        assert!(matches!(node.kind, NodeKind::File { size: 11, .. }));
        let root = find_node(&fx.repo, &out.snapshot.tree, b"/").unwrap().unwrap();
        assert_eq!(root.kind, NodeKind::Dir { subtree: out.snapshot.tree });
    }

    #[test]
    fn path_helpers() {
        assert_eq!(join_path(b"/", b"a"), b"/a");
        assert_eq!(join_path(b"/a", b"b"), b"/a/b");
        assert_eq!(normalize(&components(b"//a/./b/").unwrap()), b"/a/b");
        assert_eq!(normalize(&components(b"").unwrap()), b"/");
        assert!(components(b"/a/../b").is_none());
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1, 500_000_000), "1970-01-01T00:00:01.500Z");
    }
}
