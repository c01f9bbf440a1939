//! The one tree walker: depth first, in tree order, with an explicit stack so that a snapshot
//! whose folders nest absurdly deep (a hostile or broken writer can chain trees without end)
//! costs heap, not the thread's stack, and stops with an error at [`MAX_DEPTH`] instead of
//! overflowing it.
//!
//! A [`Visitor`] sees each entry with its absolute path and decides whether to enter a folder;
//! it carries its own per-folder state (`Visitor::Dir`) and sees each entered folder again
//! when it has been walked (`leave`), which is where a post-order step (sizes, rewriting tree
//! ids, folder metadata) goes.
//!
//! Where a folder's tree comes from is the visitor's one hook, [`Visitor::tree`]: by default
//! [`Repository::load_tree`] (the local cache, verified, else storage), so the cache-then-verify
//! step lives in `repo/` once. A visitor that must read otherwise overrides it: `check` serves
//! trees it read ahead from storage and records what it cannot read as a finding instead of
//! failing, `prune` loads in the snapshot's domain (with the tables of condemned packs), and
//! either skips a tree it has walked before (`Ok(None)`), so each distinct tree is walked once.
//! The hook is a method of the visitor rather than a second object because what it decides
//! (which trees were seen, what was found) is the visitor's own state.
//!
//! Walks that are not one tree in order use the same pieces: [`enter`] (the depth rule, then
//! the tree) for diff's walk of two trees in step, [`descend`] for going down a path.

use super::{RepoError, Repository};
use serde_bytes::ByteBuf;

use crate::format::tree::{Metadata, Node, NodeKind, Tree};
use crate::id::Id;

/// How deep folders may nest below a snapshot's root. Linux's PATH_MAX (4096 bytes) allows at
/// most 2048 levels of one-letter names, so no folder a real filesystem can hand to `backup`
/// comes near it.
pub const MAX_DEPTH: usize = 4096;

/// Where a walk gets trees by id: [`Repository::load_tree`] for every command; a consumer with
/// a narrow trait of its own (restore's `RestoreSource`) passes that, and its unit tests a map.
pub trait Trees {
    fn load_tree(&self, id: &Id) -> Result<Tree, RepoError>;
}

impl Trees for Repository {
    fn load_tree(&self, id: &Id) -> Result<Tree, RepoError> {
        Repository::load_tree(self, id)
    }
}

pub trait Visitor<R: Trees + ?Sized = Repository> {
    type Error: From<RepoError>;
    /// What the visitor keeps for a folder while its entries are walked.
    type Dir;

    /// One entry of the folder `dir`, at absolute snapshot path `path`. Returning `Some(state)`
    /// for a folder enters it (its tree is loaded and walked with `state`); `None` skips it.
    fn entry(&mut self, dir: &mut Self::Dir, path: &[u8], node: &Node) -> Result<Option<Self::Dir>, Self::Error>;

    /// The tree `id` of the folder at `path` about to be walked with state `dir` (the walk's
    /// root too). `Ok(None)` skips the folder: it is not walked and not left. The default reads
    /// it through [`Repository::load_tree`]; an error ends the walk.
    fn tree(&mut self, repo: &R, _dir: &mut Self::Dir, id: &Id, _path: &[u8]) -> Result<Option<Tree>, Self::Error> {
        Ok(Some(repo.load_tree(id)?))
    }

    /// A folder has been walked: `tree` is its tree (with id `id`), `done` its state, and
    /// `parent` the state of the folder holding it (`None` for the walk's root).
    fn leave(
        &mut self,
        _parent: Option<&mut Self::Dir>,
        _done: Self::Dir,
        _path: &[u8],
        _id: &Id,
        _tree: Tree,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Frame<D> {
    id: Id,
    tree: Tree,
    next: usize,
    state: D,
    /// Length of the walker's path buffer at this folder (its own path).
    path_len: usize,
}

/// Walks the tree `root` (a snapshot's root or a folder in it, at absolute path `base`),
/// calling `visitor` for every entry. `label` names what is walked in the depth error (e.g.
/// "snapshot 1a2b3c4d").
pub fn walk<R: Trees + ?Sized, V: Visitor<R>>(
    repo: &R,
    label: &str,
    root: &Id,
    base: &[u8],
    state: V::Dir,
    visitor: &mut V,
) -> Result<(), V::Error> {
    walk_bounded(repo, label, root, base, MAX_DEPTH, state, visitor)
}

/// [`walk`] for a root that itself sits deep in a snapshot: at most `max_depth` levels below it.
pub fn walk_bounded<R: Trees + ?Sized, V: Visitor<R>>(
    repo: &R,
    label: &str,
    root: &Id,
    base: &[u8],
    max_depth: usize,
    mut state: V::Dir,
    visitor: &mut V,
) -> Result<(), V::Error> {
    let mut path = base.to_vec();
    let root_len = path.len();
    let Some(tree) = visitor.tree(repo, &mut state, root, &path)? else { return Ok(()) };
    let mut stack = vec![Frame { id: *root, tree, next: 0, state, path_len: root_len }];
    while let Some(top) = stack.last_mut() {
        let Some(node) = top.tree.nodes.get(top.next) else {
            let Some(done) = stack.pop() else { break };
            path.truncate(done.path_len);
            let parent = stack.last_mut().map(|f| &mut f.state);
            visitor.leave(parent, done.state, &path, &done.id, done.tree)?;
            continue;
        };
        top.next += 1;
        path.truncate(top.path_len);
        push_name(&mut path, &node.name);
        let enter = visitor.entry(&mut top.state, &path, node)?;
        let (Some(mut state), NodeKind::Dir { subtree }) = (enter, &node.kind) else {
            continue;
        };
        let subtree = *subtree;
        check_depth(stack.len() + MAX_DEPTH - max_depth, label, &path)?;
        let Some(tree) = visitor.tree(repo, &mut state, &subtree, &path)? else { continue };
        stack.push(Frame { id: subtree, tree, next: 0, state, path_len: path.len() });
    }
    Ok(())
}

/// The error for a folder at `depth` levels below the root, if that is too deep; for walks
/// that cannot use [`walk`] (diff walks two trees in step).
pub fn check_depth(depth: usize, label: &str, path: &[u8]) -> Result<(), RepoError> {
    if depth < MAX_DEPTH {
        return Ok(());
    }
    // The path of such a folder is at least 8 KiB: show its start, which says where it is.
    let shown = String::from_utf8_lossy(&path[..path.len().min(200)]).into_owned();
    Err(RepoError::TooDeep { what: label.to_string(), path: shown, max: MAX_DEPTH })
}

/// The tree of the folder `id` at `path`, `depth` levels below a walk's root: the depth rule,
/// then the default tree source. For walks that keep their own stack (diff walks two trees in
/// step).
pub fn enter(repo: &Repository, label: &str, depth: usize, path: &[u8], id: &Id) -> Result<Tree, RepoError> {
    check_depth(depth, label, path)?;
    repo.load_tree(id)
}

/// The entry reached from the folder `root` by following `names` (one folder per name, the
/// last one any kind of entry). `Ok(None)` when a name is missing or one before the last is
/// not a folder. With no names, a folder node with an empty name, default metadata and `root`
/// as its subtree stands for the root itself, which has no entry of its own.
pub fn descend<R: Trees + ?Sized>(repo: &R, root: &Id, names: &[&[u8]]) -> Result<Option<Node>, RepoError> {
    let mut current = Node { name: ByteBuf::new(), kind: NodeKind::Dir { subtree: *root }, meta: Metadata::default() };
    for name in names {
        let NodeKind::Dir { subtree } = current.kind else {
            return Ok(None);
        };
        let tree = repo.load_tree(&subtree)?;
        match tree.find(name) {
            Some(node) => current = node.clone(),
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// `path/name` for an absolute `path` (`/` joins without doubling the slash).
fn push_name(path: &mut Vec<u8>, name: &[u8]) {
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::commands::{check, copy, diff, ls, prune, repair, restore, stats};
    use crate::format::snapshot::Snapshot;
    use crate::format::tree::Metadata;
    use crate::repo::Packer;
    use crate::test_kit::{backup, fixture, Fixture};

    /// A snapshot whose root holds a chain of `depth` folders named `d`, with one file at the
    /// bottom; stored next to the fixture's one backup, whose snapshot it is based on.
    fn deep_snapshot(fx: &Fixture, depth: usize) -> (Snapshot, Snapshot) {
        deep_snapshot_holding(fx, depth, vec![])
    }

    /// Like [`deep_snapshot`], the file at the bottom made of `content`.
    fn deep_snapshot_holding(fx: &Fixture, depth: usize, content: Vec<Id>) -> (Snapshot, Snapshot) {
        let base = backup(fx).snapshot;
        let sink = Packer::new(Arc::clone(&fx.repo), 1, &HashSet::new()).unwrap();
        let meta = Metadata { mode: 0o755, ..Metadata::default() };
        let file = Node {
            name: ByteBuf::from(b"f".to_vec()),
            kind: NodeKind::File { size: content.len() as u64, content },
            meta: meta.clone(),
        };
        let mut id = sink.add_tree(Tree { nodes: vec![file] }.encode()).unwrap();
        for _ in 0..depth {
            let node =
                Node { name: ByteBuf::from(b"d".to_vec()), kind: NodeKind::Dir { subtree: id }, meta: meta.clone() };
            id = sink.add_tree(Tree { nodes: vec![node] }.encode()).unwrap();
        }
        sink.finish().unwrap();
        let deep = Snapshot { tree: id, ..base.clone() };
        fx.repo.save_snapshot(&deep).unwrap();
        (base, deep)
    }

    fn dir(name: &str, subtree: u8) -> Node {
        Node {
            name: ByteBuf::from(name.as_bytes().to_vec()),
            kind: NodeKind::Dir { subtree: Id([subtree; 32]) },
            meta: Metadata::default(),
        }
    }

    fn file(name: &str) -> Node {
        Node {
            name: ByteBuf::from(name.as_bytes().to_vec()),
            kind: NodeKind::File { size: 0, content: vec![] },
            meta: Metadata::default(),
        }
    }

    /// Serves trees from a map (none of them is in the repository), each once, and records
    /// what the walk did.
    #[derive(Default)]
    struct FromMap {
        trees: HashMap<Id, Tree>,
        seen: HashSet<Id>,
        asked: Vec<(String, Id)>,
        entries: Vec<String>,
        left: Vec<String>,
    }

    fn shown(path: &[u8]) -> String {
        String::from_utf8_lossy(path).into_owned()
    }

    impl Visitor for FromMap {
        type Error = RepoError;
        /// The id the hook loaded for this folder.
        type Dir = Option<Id>;

        fn tree(
            &mut self,
            _: &Repository,
            dir: &mut Option<Id>,
            id: &Id,
            path: &[u8],
        ) -> Result<Option<Tree>, RepoError> {
            self.asked.push((shown(path), *id));
            if !self.seen.insert(*id) {
                return Ok(None);
            }
            *dir = Some(*id);
            self.trees.get(id).cloned().map(Some).ok_or(RepoError::MissingBlob(*id))
        }

        fn entry(&mut self, _: &mut Option<Id>, path: &[u8], node: &Node) -> Result<Option<Option<Id>>, RepoError> {
            self.entries.push(shown(path));
            Ok(matches!(node.kind, NodeKind::Dir { .. }).then_some(None))
        }

        fn leave(
            &mut self,
            _: Option<&mut Option<Id>>,
            done: Option<Id>,
            path: &[u8],
            id: &Id,
            _: Tree,
        ) -> Result<(), RepoError> {
            assert_eq!(done, Some(*id), "the hook saw the folder's own state");
            self.left.push(shown(path));
            Ok(())
        }
    }

    /// `/` holds `a/` (tree 2), `b/` (tree 3) and `f`; `a/` holds `x`; `b/` holds `y/`, which is
    /// tree 2 again.
    fn shared_trees() -> HashMap<Id, Tree> {
        HashMap::from([
            (Id([1; 32]), Tree { nodes: vec![dir("a", 2), dir("b", 3), file("f")] }),
            (Id([2; 32]), Tree { nodes: vec![file("x")] }),
            (Id([3; 32]), Tree { nodes: vec![dir("y", 2)] }),
        ])
    }

    #[test]
    fn the_tree_hook_serves_trees_and_skips_what_it_declines() {
        let fx = fixture();
        let mut visitor = FromMap { trees: shared_trees(), ..Default::default() };
        walk(&*fx.repo, "test", &Id([1; 32]), b"/", None, &mut visitor).unwrap();
        assert_eq!(visitor.entries, ["/a", "/a/x", "/b", "/b/y", "/f"]);
        // `/b/y` was asked for and declined (seen before): neither walked nor left.
        assert_eq!(visitor.left, ["/a", "/b", "/"]);
        let asked: Vec<&str> = visitor.asked.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(asked, ["/", "/a", "/b", "/b/y"]);
        assert_eq!(visitor.asked[3].1, Id([2; 32]));

        // A root the hook declines is not walked at all.
        let mut again = FromMap { trees: shared_trees(), seen: HashSet::from([Id([1; 32])]), ..Default::default() };
        walk(&*fx.repo, "test", &Id([1; 32]), b"/", None, &mut again).unwrap();
        assert!(again.entries.is_empty() && again.left.is_empty());
    }

    #[test]
    fn the_hook_can_fail_the_walk_and_the_depth_rule_comes_first() {
        let fx = fixture();
        let mut trees = shared_trees();
        trees.remove(&Id([3; 32]));
        let mut visitor = FromMap { trees, ..Default::default() };
        let e = walk(&*fx.repo, "test", &Id([1; 32]), b"/", None, &mut visitor).unwrap_err();
        assert!(matches!(e, RepoError::MissingBlob(id) if id == Id([3; 32])), "{e}");

        // Two levels allowed below the root: `/b/y` is one too many, refused before the hook.
        let mut visitor = FromMap { trees: shared_trees(), ..Default::default() };
        let e = walk_bounded(&*fx.repo, "test", &Id([1; 32]), b"/", 2, None, &mut visitor).unwrap_err();
        assert!(too_deep(&e) && e.to_string().contains("/b/y"), "{e}");
        let asked: Vec<&str> = visitor.asked.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(asked, ["/", "/a", "/b"]);
    }

    #[test]
    fn the_default_hook_reads_the_repository() {
        let fx = fixture();
        let snapshot = backup(&fx).snapshot;
        struct Count(usize);
        impl Visitor for Count {
            type Error = RepoError;
            type Dir = ();
            fn entry(&mut self, _: &mut (), _: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
                self.0 += 1;
                Ok(matches!(node.kind, NodeKind::Dir { .. }).then_some(()))
            }
        }
        let mut count = Count(0);
        walk(&*fx.repo, "test", &snapshot.tree, b"/", (), &mut count).unwrap();
        let mut listed = 0;
        ls::list(&fx.repo, &snapshot, None, true, |_| listed += 1).unwrap();
        assert_eq!(count.0, listed);
    }

    #[test]
    fn descend_follows_names_to_an_entry() {
        let fx = fixture();
        let root = backup(&fx).snapshot.tree;
        let top = descend(&*fx.repo, &root, &[]).unwrap().expect("the root");
        assert!(top.name.is_empty() && top.kind == NodeKind::Dir { subtree: root });
        let names: Vec<Vec<u8>> = fx
            .src_path()
            .to_str()
            .unwrap()
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let mut path: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        path.push(b"a.txt");
        let found = descend(&*fx.repo, &root, &path).unwrap().expect("a.txt");
        assert_eq!(&found.name[..], b"a.txt");
        assert!(matches!(found.kind, NodeKind::File { .. }));
        // Through a file, or to a name that is not there: nothing.
        path.push(b"below");
        assert!(descend(&*fx.repo, &root, &path).unwrap().is_none());
        path.pop();
        path.pop();
        path.push(b"absent");
        assert!(descend(&*fx.repo, &root, &path).unwrap().is_none());
    }

    fn too_deep(e: &RepoError) -> bool {
        matches!(e, RepoError::TooDeep { max: MAX_DEPTH, .. })
    }

    // Run on the test thread's 2 MiB stack, where the recursive walks overflowed long before.
    #[test]
    fn deep_chains_are_walked_without_recursion() {
        let fx = fixture();
        let (base, deep) = deep_snapshot(&fx, 3000);

        let stats = stats::stats(&fx.repo).unwrap();
        assert_eq!(stats.snapshots, 2);

        let mut listed = 0;
        ls::list(&fx.repo, &deep, None, true, |_| listed += 1).unwrap();
        assert_eq!(listed, 3001, "3000 folders and the file");

        let changes = diff::diff(&fx.repo, &base, &deep).unwrap();
        assert!(changes.iter().any(|c| c.change == diff::Change::Added && c.path.ends_with("/d/f")));
        let changes = diff::diff(&fx.repo, &deep, &base).unwrap();
        assert!(changes.iter().any(|c| c.change == diff::Change::Removed && c.path.ends_with("/d/f")));

        let report = check::check(&fx.repo, &check::CheckOptions { read_data: check::ReadData::All }, |_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);

        let other = fixture();
        let (entries, _) = fx.repo.load_snapshots().unwrap();
        let copied = copy::copy(&fx.repo, &other.repo, &entries, &AtomicBool::new(false)).unwrap();
        assert_eq!(copied.copied.len(), 2);
        let mut again = 0;
        let (copies, _) = other.repo.load_snapshots().unwrap();
        for entry in &copies {
            ls::list(&other.repo, &entry.snapshot, None, true, |_| again += 1).unwrap();
        }
        assert!(again > 3001, "{again}");

        // 3000 levels of `d/` are longer than PATH_MAX: the restore reports what lies beyond
        // the target's limit, and does not crash.
        let target = tempfile::tempdir().unwrap();
        let options = restore::RestoreOptions { target: target.path().to_path_buf(), ..Default::default() };
        match restore::restore(&fx.repo, &deep.tree, None, &options, &AtomicBool::new(false)) {
            Ok(report) => assert!(report.dirs >= 3000 || !report.errors.is_empty(), "{report:?}"),
            Err(restore::RestoreError::Target { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn repair_rewrites_a_deep_chain_without_recursion() {
        let fx = fixture();
        let (_, deep) = deep_snapshot_holding(&fx, 3000, vec![Id([9; 32])]);
        let report = repair::repair_snapshots(&fx.repo, &Default::default(), |_| {}).unwrap();
        assert_eq!(report.repaired.len(), 1, "{report:?}");
        let repaired = &report.repaired[0];
        let (entries, _) = fx.repo.load_snapshots().unwrap();
        let broken = entries.iter().find(|e| e.snapshot.tree == deep.tree).expect("deep snapshot");
        assert_eq!(repaired.broken, broken.id.to_hex());
        assert_eq!(repaired.lost.len(), 1);
        assert!(repaired.lost[0].ends_with("/d/d/f") && repaired.lost[0].len() > 6000, "{}", &repaired.lost[0][..50]);
        let replacement = repaired.replacement.clone().expect("a replacement");
        let (entries, _) = fx.repo.load_snapshots().unwrap();
        let new = entries.iter().find(|e| e.id.to_hex() == replacement).expect("stored");
        let mut listed = 0;
        ls::list(&fx.repo, &new.snapshot, None, true, |_| listed += 1).unwrap();
        assert_eq!(listed, 3000, "the folders, without the lost file");
    }

    #[test]
    fn nesting_beyond_the_bound_is_one_clear_error() {
        let fx = fixture();
        let (base, deep) = deep_snapshot(&fx, MAX_DEPTH + 5);

        let e = stats::stats(&fx.repo).unwrap_err();
        assert!(too_deep(&e), "{e}");
        let text = e.to_string();
        assert!(text.contains("4096") && text.contains("/d/d/d") && !text.contains('\n'), "{text}");

        let e = ls::list(&fx.repo, &deep, None, true, |_| {}).unwrap_err();
        assert!(matches!(&e, ls::LsError::Repo(e) if too_deep(e)), "{e}");
        let e = diff::diff(&fx.repo, &base, &deep).unwrap_err();
        assert!(too_deep(&e), "{e}");
        let e = diff::diff(&fx.repo, &deep, &base).unwrap_err();
        assert!(too_deep(&e), "{e}");

        let target = tempfile::tempdir().unwrap();
        let options = restore::RestoreOptions { target: target.path().to_path_buf(), ..Default::default() };
        match restore::restore(&fx.repo, &deep.tree, None, &options, &AtomicBool::new(false)) {
            Err(restore::RestoreError::Repo(e)) => assert!(too_deep(&e), "{e}"),
            // The target's path limit comes first: the folders below it are reported lost.
            Ok(report) => assert!(!report.errors.is_empty(), "{report:?}"),
            Err(e) => panic!("{e}"),
        }

        let other = fixture();
        let entries: Vec<_> =
            fx.repo.load_snapshots().unwrap().0.into_iter().filter(|e| e.snapshot.tree == deep.tree).collect();
        let e = copy::copy(&fx.repo, &other.repo, &entries, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(&e, copy::CopyError::Repo(e) if too_deep(e)), "{e}");

        let e = repair::repair_snapshots(&fx.repo, &Default::default(), |_| {}).unwrap_err();
        assert!(too_deep(&e), "{e}");

        // Check reports it as a finding about that snapshot; prune stops rather than decide
        // what is unused without having seen all of it.
        let report = check::check(&fx.repo, &check::CheckOptions::default(), |_| {}).unwrap();
        let deep_id = entries[0].id;
        assert!(
            report.errors.iter().any(|p| p.object.ends_with(&deep_id.to_hex()) && p.message.contains("4096")),
            "{:?}",
            report.errors
        );
        let options = prune::PruneOptions { lock_timeout: std::time::Duration::ZERO, ..Default::default() };
        let e = prune::prune(&fx.repo, &options, |_| {}).unwrap_err();
        assert!(matches!(&e, prune::PruneError::Repo(e) if too_deep(e)), "{e}");
    }
}
