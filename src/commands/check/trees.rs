//! The walk of every snapshot's trees (with the full key): each distinct tree read from
//! storage, not the local cache, and verified; every file's data blobs looked up in the check's
//! index and its size added up. Over a network the trees are read ahead by pack region first.
//! What cannot be read is a finding, not the end of the check.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::index::CheckIndex;
use super::{describe, CheckReport, READ_WORKERS};
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::layout;
use crate::repo::walk::{self, Visitor};
use crate::repo::{plan_regions, BlobLocation, RepoError, Repository, SnapshotEntry, REGION_GAP, REGION_MAX};

/// Trees read ahead of the walk, at most this much plaintext (beyond it, the walk reads the
/// rest one at a time).
const PREFETCH_TREE_BYTES: u64 = 256 << 20;

/// Over a network: reads every indexed tree by pack region, [`READ_WORKERS`] regions in
/// flight, so the walk costs a request per region rather than a round trip per folder. Each
/// tree is verified as any read is; a failure is kept for the walk to report where it meets it.
fn prefetch_trees(repo: &Repository, index: &CheckIndex) -> HashMap<Id, Result<Vec<u8>, RepoError>> {
    let mut trees: Vec<(BlobLocation, ())> = Vec::new();
    let mut bytes = 0u64;
    for blob in index.blobs.keys() {
        match index.locate(blob) {
            Some(location) if location.entry.kind == BlobKind::Tree => {
                bytes += u64::from(location.entry.raw_len);
                if bytes > PREFETCH_TREE_BYTES {
                    break;
                }
                trees.push((location, ()));
            }
            _ => {}
        }
    }
    let regions: Vec<Vec<BlobLocation>> = plan_regions(trees, REGION_GAP, REGION_MAX)
        .into_iter()
        .map(|region| region.into_iter().map(|(l, ())| l).collect())
        .collect();
    let next = AtomicUsize::new(0);
    let found = std::sync::Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..READ_WORKERS.min(regions.len()) {
            let (next, regions, found) = (&next, &regions, &found);
            scope.spawn(move || {
                let (mut sealed, mut out) = (Vec::new(), Vec::new());
                while let Some(region) = regions.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut got = Vec::with_capacity(region.len());
                    repo.read_region(region, &mut sealed, &mut out, |i, result| {
                        got.push((region[i].entry.id, result.map(<[u8]>::to_vec)));
                    });
                    found.lock().unwrap_or_else(|p| p.into_inner()).extend(got);
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Walks every snapshot's trees, each distinct tree once, reading them from storage. A blob
/// shared by several snapshots is reported under the first snapshot (and path) that reaches it.
pub(super) fn check_trees(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[SnapshotEntry],
    report: &mut CheckReport,
    progress: &dyn Fn(&str),
) {
    let prefetched = if repo.is_local() || snapshots.is_empty() {
        HashMap::new()
    } else {
        progress("reading trees");
        prefetch_trees(repo, index)
    };
    let mut checker = TreeChecker { index, prefetched, seen: HashSet::new(), report, object: String::new() };
    for (i, entry) in snapshots.iter().enumerate() {
        progress(&format!("checking trees of snapshot {} ({}/{})", entry.id.short(), i + 1, snapshots.len()));
        checker.object = layout::in_dir(layout::SNAPSHOTS, &entry.id);
        let label = format!("snapshot {}", entry.id.short());
        // Nothing in the walk fails but nesting beyond the walker's bound, which is a finding.
        if let Err(e) = walk::walk(repo, &label, &entry.snapshot.tree, b"/", (), &mut checker) {
            checker.report.error(&checker.object, describe(&e));
        }
    }
}

/// The walk of `check_trees`: trees come from storage (read ahead, or one at a time) through
/// the check's own index, and what cannot be read is a finding, not the end of the walk.
struct TreeChecker<'a> {
    index: &'a CheckIndex,
    prefetched: HashMap<Id, Result<Vec<u8>, RepoError>>,
    seen: HashSet<Id>,
    report: &'a mut CheckReport,
    /// The snapshot being walked, as a storage path.
    object: String,
}

impl Visitor for TreeChecker<'_> {
    type Error = RepoError;
    type Dir = ();

    fn tree(&mut self, repo: &Repository, _: &mut (), tree_id: &Id, dir: &[u8]) -> Result<Option<Tree>, RepoError> {
        if !self.seen.insert(*tree_id) {
            return Ok(None);
        }
        let (report, object) = (&mut *self.report, &self.object);
        report.trees_checked += 1;
        let shown = || String::from_utf8_lossy(dir).into_owned();
        let Some(location) = self.index.locate(tree_id) else {
            report.error(object, format!("{}: folder's tree {tree_id} is not in the index", shown()));
            return Ok(None);
        };
        let pack_path = layout::pack(&location.pack);
        if location.entry.kind != BlobKind::Tree {
            report.error(pack_path, format!("{}: tree {tree_id} is indexed as a data blob", shown()));
            return Ok(None);
        }
        report.bytes_read += u64::from(location.entry.length);
        let read =
            self.prefetched.remove(tree_id).unwrap_or_else(|| repo.read_blob(&location, crate::repo::Copies::Listed));
        match read.and_then(|bytes| Tree::decode(&bytes).map_err(RepoError::format(format!("tree {tree_id}")))) {
            Ok(tree) => {
                report.blobs_checked += 1;
                Ok(Some(tree))
            }
            Err(e) => {
                let message = format!("tree {tree_id} ({} in {object}) is damaged: {}", shown(), describe(&e));
                report.error(pack_path, message);
                Ok(None)
            }
        }
    }

    fn entry(&mut self, _: &mut (), path: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
        match &node.kind {
            NodeKind::Dir { .. } => return Ok(Some(())),
            NodeKind::File { size, content } => check_file(self.index, &self.object, path, *size, content, self.report),
            _ => {}
        }
        Ok(None)
    }
}

fn check_file(index: &CheckIndex, object: &str, path: &[u8], size: u64, content: &[Id], report: &mut CheckReport) {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let mut total = 0u64;
    let mut complete = true;
    for blob in content {
        match index.locate(blob) {
            None => {
                complete = false;
                report.error(object, format!("{}: data blob {blob} is not in the index", shown()));
            }
            Some(location) if location.entry.kind != BlobKind::Data => {
                complete = false;
                report.error(object, format!("{}: blob {blob} is indexed as a tree, not data", shown()));
            }
            Some(location) => total = total.saturating_add(u64::from(location.entry.raw_len)),
        }
    }
    if complete && total != size {
        report.error(object, format!("{}: size is {size} bytes but its blobs hold {total}", shown()));
    }
}
