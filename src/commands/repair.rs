//! `coffer repair index` and `coffer repair snapshots`: make a damaged repository usable
//! again, rebuilding what can be rebuilt and naming what is lost.
//!
//! - `repair index` rebuilds `index/` from the blob tables of the packs in storage. The tables
//!   are sealed with the index key, so any key can do it. Packs that old index files list but
//!   storage lacks are reported lost; packs in no index file are adopted; a pack whose table
//!   cannot be read keeps the entries an old index file gave it (they are authenticated too).
//!   New index files are written first, then the old ones removed: a crash in between leaves
//!   duplicates, never a gap.
//! - `repair snapshots` walks every snapshot and, for those that reference blobs the
//!   repository no longer holds, writes a new snapshot (same time, host, paths; tagged
//!   `repaired`, marked incomplete) whose trees drop the files whose data is lost and keep
//!   folders whose listing is lost as empty folders. A tree that is lost from storage but still
//!   cached locally is uploaded again, and so saved. The broken snapshot is removed only when
//!   asked (`forget_broken`). Needs the full key.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_bytes::ByteBuf;

use super::ls::join_path;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::layout;
use crate::repo::walk::{self, Visitor};
use crate::repo::Packer;
use crate::repo::{RepoError, Repository};

/// Packs listed per index file written by `repair index`.
const PACKS_PER_INDEX: usize = 256;
/// The tag a repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

#[derive(Clone, Debug, Default, Serialize)]
pub struct LostPack {
    /// Storage path of the pack.
    pub pack: String,
    /// Blobs the old index listed in it.
    pub blobs: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IndexRepairReport {
    /// Packs in storage, each now listed by the new index.
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs that no old index file listed (left by interrupted backups).
    pub packs_adopted: Vec<String>,
    /// Packs old index files listed that storage no longer holds: their blobs are gone.
    pub packs_lost: Vec<LostPack>,
    /// Packs whose blob table could not be read; the old index's entries were kept if it had
    /// any, else the pack is left out (its blobs are unreachable).
    pub packs_damaged: Vec<Problem>,
    /// Old index files that could not be read (their packs were indexed from their tables).
    pub index_files_unreadable: Vec<Problem>,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    /// True when the index already matched storage and nothing was written.
    pub unchanged: bool,
}

/// Rebuilds the index from the packs in storage; see the module documentation.
pub fn repair_index(repo: &Repository, progress: impl Fn(&str)) -> Result<IndexRepairReport, RepoError> {
    let mut report = IndexRepairReport::default();
    // Index files first, then packs: a pack an index file lists was stored before that file,
    // so it is in the later listing of data/ (a concurrent backup cannot slip between).
    progress("reading index files");
    let (old_files, old) = read_old_index(repo, &mut report)?;

    progress("reading the blob tables of the packs in storage");
    let (new_packs, changed) = index_stored_packs(repo, &old, &mut report)?;
    report.packs_indexed = new_packs.len() as u64;
    report.blobs_indexed = new_packs.iter().map(|(_, p)| p.blobs.len() as u64).sum();
    if !changed {
        report.unchanged = true;
        return Ok(report);
    }

    progress("writing the new index");
    let written = write_index(repo, new_packs, &mut report)?;
    crate::crashpoint::hit("repair-index-before-removing-old");
    progress("removing the old index files");
    let mut removed = Vec::new();
    for id in old_files.iter().filter(|id| !written.contains(id)) {
        repo.delete_index_file(id)?;
        removed.push(*id);
    }
    report.index_files_removed = removed.len() as u64;
    repo.forget_local_index_files(&removed)?;
    repo.sync_index()?;
    Ok(report)
}

/// The packs the old index files list: pack id → (domain of the first file listing it, entry).
type OldIndex = HashMap<Id, (Id, IndexPack)>;

/// The index files in storage, and the packs they list with the domain of the (first) file
/// listing each; files that cannot be read are reported.
fn read_old_index(repo: &Repository, report: &mut IndexRepairReport) -> Result<(Vec<Id>, OldIndex), RepoError> {
    let old_files: Vec<Id> = repo.list_object_ids(layout::INDEX)?.into_iter().map(|(id, _)| id).collect();
    let mut old = OldIndex::new();
    for id in &old_files {
        match repo.read_index_file(id) {
            Ok((domain, file)) => {
                for pack in file.packs {
                    old.entry(pack.id).or_insert((domain, pack));
                }
            }
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) => report
                .index_files_unreadable
                .push(Problem { object: layout::in_dir(layout::INDEX, id), message: e.to_string() }),
        }
    }
    Ok((old_files, old))
}

/// Every pack in storage as its blob table lists it (or, when the table cannot be read, as
/// the old index did), with its domain; and whether that differs from the old index.
fn index_stored_packs(
    repo: &Repository,
    old: &OldIndex,
    report: &mut IndexRepairReport,
) -> Result<(Vec<(Id, IndexPack)>, bool), RepoError> {
    let mut stored = repo.list_object_ids(layout::DATA)?;
    stored.sort();
    let stored_ids: HashSet<Id> = stored.iter().map(|(id, _)| *id).collect();
    let mut new_packs = Vec::with_capacity(stored.len());
    let mut changed = !report.index_files_unreadable.is_empty();
    for (id, size) in stored {
        let known = old.get(&id);
        match repo.read_pack_table(&id, size) {
            Ok((domain, blobs)) => {
                if known.is_none_or(|(d, k)| *d != domain || k.size != size || k.blobs != blobs) {
                    changed = true;
                }
                if known.is_none() {
                    report.packs_adopted.push(layout::pack(&id));
                }
                new_packs.push((domain, IndexPack { id, size, blobs }));
            }
            Err(e) => {
                let kept = known.filter(|(_, k)| k.size == size);
                let message = match kept {
                    Some((_, k)) => {
                        format!("blob table unreadable ({e}); kept the {} entries of the old index", k.blobs.len())
                    }
                    None => {
                        changed = true;
                        format!("blob table unreadable ({e}) and no index file lists it: its blobs are unreachable")
                    }
                };
                report.packs_damaged.push(Problem { object: layout::pack(&id), message });
                if let Some(k) = kept {
                    new_packs.push(k.clone());
                }
            }
        }
    }
    let mut lost: Vec<&IndexPack> = old.values().map(|(_, p)| p).filter(|p| !stored_ids.contains(&p.id)).collect();
    lost.sort_by_key(|p| p.id);
    report.packs_lost = lost.iter().map(|p| LostPack { pack: layout::pack(&p.id), blobs: p.blobs.len() }).collect();
    changed |= !lost.is_empty();
    Ok((new_packs, changed))
}

/// Writes the new index files, each pack in the domain whose key sealed its table; returns
/// their ids.
fn write_index(
    repo: &Repository,
    new_packs: Vec<(Id, IndexPack)>,
    report: &mut IndexRepairReport,
) -> Result<HashSet<Id>, RepoError> {
    let mut by_domain: HashMap<Id, Vec<IndexPack>> = HashMap::new();
    for (domain, pack) in new_packs {
        by_domain.entry(domain).or_default().push(pack);
    }
    let mut written = HashSet::new();
    let mut domains: Vec<Id> = by_domain.keys().copied().collect();
    domains.sort();
    for domain in domains {
        let keys = repo
            .domain(&domain)
            .cloned()
            .ok_or_else(|| RepoError::ForeignDomain { object: format!("packs of domain {}", domain.short()) })?;
        for chunk in by_domain[&domain].chunks(PACKS_PER_INDEX) {
            let id = repo.save_index_in(&keys, &IndexFile { packs: chunk.to_vec() })?;
            written.insert(id);
            report.index_files_written += 1;
        }
    }
    Ok(written)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairedSnapshot {
    /// The snapshot that references lost data.
    pub broken: String,
    /// Its replacement, without the lost entries; `None` when nothing in it could be saved.
    pub replacement: Option<String>,
    /// Whether the broken snapshot was removed (`forget_broken`).
    pub removed: bool,
    /// Paths whose content is lost: files dropped, folders left empty (ending in `/`).
    pub lost: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotRepairReport {
    pub snapshots_checked: u64,
    pub repaired: Vec<RepairedSnapshot>,
    /// Trees lost from storage but still cached here, uploaded again.
    pub trees_saved: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotRepairOptions {
    /// Remove each broken snapshot once its replacement is stored.
    pub forget_broken: bool,
}

/// Extension naming the snapshot a repaired one replaces.
const REPAIRED_FROM: &str = "repaired-from";

enum Replacement {
    New(Box<Snapshot>),
    /// Written by an earlier run.
    Existing(Id),
    /// Nothing could be saved.
    Nothing,
}

/// How one tree came out of the repair.
#[derive(Clone)]
struct Rewritten {
    id: Id,
    /// Paths lost below this tree, relative to it.
    lost: Vec<Vec<u8>>,
    /// Whether the id differs from the original (something below was dropped).
    changed: bool,
}

/// A folder being rewritten (the walker's state for it): the entries kept so far.
#[derive(Default)]
struct RewriteDir {
    /// The folder's entry in its parent, whose subtree the rewrite replaces (`None` for the
    /// root).
    entry: Option<Node>,
    out: Vec<Node>,
    lost: Vec<Vec<u8>>,
    changed: bool,
    /// Its tree could not be read: it is walked as an empty folder and comes out as lost.
    unreadable: bool,
}

impl RewriteDir {
    /// Takes in the folder entry `node` whose subtree came out as `sub` (`None`: unreadable;
    /// `node` already points at an empty folder).
    fn adopt(&mut self, mut node: Node, sub: Option<Rewritten>) {
        let path = node.name.to_vec();
        match sub {
            Some(sub) => {
                self.lost.extend(sub.lost.iter().map(|p| [&path[..], b"/", p].concat()));
                self.changed |= sub.changed;
                node.kind = NodeKind::Dir { subtree: sub.id };
            }
            None => {
                let mut shown = path;
                shown.push(b'/');
                self.lost.push(shown);
                self.changed = true;
            }
        }
        self.out.push(node);
    }
}

struct Rewriter<'a> {
    repo: &'a Repository,
    /// The domain of the snapshot being rewritten: its trees and blobs all belong to it, and
    /// trees stored again go there too (so prune finds them where their parents say).
    domain: crate::keys::DomainKeys,
    done: HashMap<(Id, Id), Option<Rewritten>>,
    /// Blobs the repository holds (in an index file, in a pack that storage has), by domain.
    present: HashSet<(Id, Id)>,
    /// New or re-uploaded tree blobs by domain, stored before any snapshot that needs them.
    new_trees: HashMap<Id, Vec<(Id, Vec<u8>)>>,
    trees_saved: u64,
    /// How the walk's root came out, once it has been left.
    root: Option<Rewritten>,
}

impl Rewriter<'_> {
    /// `None` when the tree cannot be read at all. Walks with the one tree walker, bounded like
    /// every other walk: a chain of trees a hostile writer made without end costs heap and ends
    /// in an error, not a stack overflow.
    fn rewrite(&mut self, root: Id) -> Result<Option<Rewritten>, RepoError> {
        if let Some(done) = self.done.get(&(self.domain.id, root)) {
            return Ok(done.clone());
        }
        self.root = None;
        let repo = self.repo;
        walk::walk(repo, "the snapshot being repaired", &root, b"/", RewriteDir::default(), self)?;
        Ok(self.root.take())
    }

    /// Sets the domain of the snapshot whose root tree is `root`: the domain its stored or
    /// cached copy verifies in, else this client's own.
    fn enter_snapshot(&mut self, root: &Id) -> Result<(), RepoError> {
        let cached = self.repo.cached_tree_verified(root, None)?.map(|(domain, _)| domain);
        let domain = match cached {
            Some(domain) => Some(domain),
            None => self.repo.blob_location(root)?.map(|l| l.domain),
        };
        self.domain =
            domain.and_then(|d| self.repo.domain(&d).cloned()).unwrap_or_else(|| self.repo.keys().write_domain());
        Ok(())
    }

    /// The folder's new id (stored if it changed or its blob is gone).
    fn close(&mut self, tree_id: Id, dir: RewriteDir) -> Rewritten {
        let RewriteDir { out: nodes, lost, mut changed, .. } = dir;
        let id = if changed {
            self.store_tree(Tree { nodes }.encode())
        } else if !self.present.contains(&(self.domain.id, tree_id)) {
            // Intact below, but its own blob is gone from storage: store it again.
            let id = self.store_tree(Tree { nodes }.encode());
            self.trees_saved += 1;
            changed = id != tree_id;
            id
        } else {
            tree_id
        };
        Rewritten { id, lost, changed }
    }

    fn store_tree(&mut self, bytes: Vec<u8>) -> Id {
        let id = self.domain.id_key.blob_id(&bytes);
        if self.present.insert((self.domain.id, id)) {
            self.new_trees.entry(self.domain.id).or_default().push((id, bytes));
        }
        id
    }

    /// Stores the new trees of each domain in packs and indexes them there.
    fn flush(&mut self) -> Result<(), RepoError> {
        let repo = self.repo;
        for (domain, trees) in std::mem::take(&mut self.new_trees) {
            let keys = repo
                .domain(&domain)
                .cloned()
                .ok_or_else(|| RepoError::ForeignDomain { object: format!("trees of domain {}", domain.short()) })?;
            let packer = Packer::in_domain(repo, keys, "repair-after-tree-pack");
            for (id, bytes) in trees {
                packer.add(BlobKind::Tree, id, bytes)?;
            }
            packer.finish_and_index()?;
        }
        Ok(())
    }
}

impl Visitor for Rewriter<'_> {
    type Error = RepoError;
    type Dir = RewriteDir;

    /// The local cache may still hold a tree whose blob storage lost: it is verified against
    /// its id on load, so it can be stored again. One that cannot be read at all is walked as
    /// an empty folder, marked so that `leave` reports it lost.
    fn tree(&mut self, repo: &Repository, dir: &mut RewriteDir, id: &Id, _: &[u8]) -> Result<Option<Tree>, RepoError> {
        Ok(Some(repo.load_tree(id).unwrap_or_else(|_| {
            dir.unreadable = true;
            Tree::default()
        })))
    }

    fn entry(&mut self, dir: &mut RewriteDir, _: &[u8], node: &Node) -> Result<Option<RewriteDir>, RepoError> {
        match &node.kind {
            NodeKind::File { content, .. }
                if !content.iter().all(|id| self.present.contains(&(self.domain.id, *id))) =>
            {
                dir.lost.push(node.name.to_vec());
                dir.changed = true;
                Ok(None)
            }
            NodeKind::Dir { subtree } => match self.done.get(&(self.domain.id, *subtree)).cloned() {
                // Rewritten before (shared by another folder or snapshot): not walked again.
                Some(sub) => {
                    let mut node = node.clone();
                    if sub.is_none() {
                        node.kind = NodeKind::Dir { subtree: self.store_tree(Tree::default().encode()) };
                    }
                    dir.adopt(node, sub);
                    Ok(None)
                }
                None => Ok(Some(RewriteDir { entry: Some(node.clone()), ..RewriteDir::default() })),
            },
            _ => {
                dir.out.push(node.clone());
                Ok(None)
            }
        }
    }

    fn leave(
        &mut self,
        parent: Option<&mut RewriteDir>,
        mut done: RewriteDir,
        _: &[u8],
        id: &Id,
        _: Tree,
    ) -> Result<(), RepoError> {
        let entry = done.entry.take();
        let result = if done.unreadable { None } else { Some(self.close(*id, done)) };
        self.done.insert((self.domain.id, *id), result.clone());
        match (parent, entry) {
            (Some(parent), Some(mut node)) => {
                if result.is_none() {
                    node.kind = NodeKind::Dir { subtree: self.store_tree(Tree::default().encode()) };
                }
                parent.adopt(node, result);
            }
            _ => self.root = result,
        }
        Ok(())
    }
}

/// Replaces snapshots that reference lost data; see the module documentation.
pub fn repair_snapshots(
    repo: &Repository,
    options: &SnapshotRepairOptions,
    progress: impl Fn(&str),
) -> Result<SnapshotRepairReport, RepoError> {
    repo.require_full_key("repair snapshots")?;
    progress("comparing the index with the packs in storage");
    repo.sync_index()?;
    repo.reconcile_packs(false, &Default::default())?;
    let mut present = HashSet::new();
    repo.for_each_blob(None, |id, location| {
        present.insert((location.domain, *id));
    })?;
    let (snapshots, rejected) = repo.load_snapshots_from_store()?;
    for r in &rejected {
        log::warn!("snapshot {} was not examined: {}", layout::in_dir(layout::SNAPSHOTS, &r.id), r.reason);
    }
    let mut rewriter = Rewriter {
        repo,
        domain: repo.keys().write_domain(),
        done: HashMap::new(),
        present,
        new_trees: HashMap::new(),
        trees_saved: 0,
        root: None,
    };
    let mut report = SnapshotRepairReport { snapshots_checked: snapshots.len() as u64, ..Default::default() };
    // A snapshot replaced by an earlier run is not replaced again (only removed, if asked).
    let replaced: HashMap<Id, Id> = snapshots
        .iter()
        .filter_map(|e| {
            let (_, from) = e.snapshot.extensions.iter().find(|(name, _)| name == REPAIRED_FROM)?;
            Some((Id(from.as_slice().try_into().ok()?), e.id))
        })
        .collect();
    let mut replacements: Vec<(Id, Replacement, Vec<Vec<u8>>)> = Vec::new();
    for (i, entry) in snapshots.iter().enumerate() {
        progress(&format!("checking snapshot {} ({}/{})", entry.id.short(), i + 1, snapshots.len()));
        rewriter.enter_snapshot(&entry.snapshot.tree)?;
        match rewriter.rewrite(entry.snapshot.tree)? {
            Some(done) if !done.changed => {}
            Some(done) if replaced.contains_key(&entry.id) => {
                replacements.push((entry.id, Replacement::Existing(replaced[&entry.id]), done.lost))
            }
            Some(done) => {
                let mut snapshot = entry.snapshot.clone();
                snapshot.tree = done.id;
                snapshot.incomplete = true;
                if !snapshot.tags.iter().any(|t| t == REPAIRED_TAG) {
                    snapshot.tags.push(REPAIRED_TAG.to_string());
                }
                snapshot.extensions.retain(|(name, _)| name != REPAIRED_FROM);
                snapshot.extensions.push((REPAIRED_FROM.into(), ByteBuf::from(entry.id.0.to_vec())));
                replacements.push((entry.id, Replacement::New(Box::new(snapshot)), done.lost));
            }
            None => replacements.push((entry.id, Replacement::Nothing, vec![Vec::new()])),
        }
    }
    // Trees before the snapshots that reference them (DESIGN §3).
    rewriter.flush()?;
    report.trees_saved = rewriter.trees_saved;
    for (broken, snapshot, lost) in replacements {
        let replacement = match snapshot {
            Replacement::New(s) => Some(repo.save_snapshot(&s)?),
            Replacement::Existing(id) => Some(id),
            Replacement::Nothing => None,
        };
        let removed = options.forget_broken;
        if removed {
            repo.record_forgotten(&[broken])?;
            repo.delete_snapshot_object(&broken)?;
            repo.forget_local_snapshots(&[broken])?;
        }
        report.repaired.push(RepairedSnapshot {
            broken: broken.to_hex(),
            replacement: replacement.map(|id| id.to_hex()),
            removed,
            lost: lost.iter().map(|p| String::from_utf8_lossy(&join_path(b"/", p)).into_owned()).collect(),
        });
    }
    Ok(report)
}
