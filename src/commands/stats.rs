//! `coffer stats`: how much the snapshots hold, how much of it is distinct, and how much the
//! repository stores. Each distinct tree is read once (subtree sizes are memoized by tree id,
//! so a folder shared by many snapshots still counts once per snapshot in `logical_bytes`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
use crate::repo::{RepoError, Repository};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub snapshots: u64,
    /// Sum of the sizes of all files in all snapshots (a file in ten snapshots counts ten times).
    pub logical_bytes: u64,
    /// Plaintext size of the distinct data blobs the snapshots reference.
    pub unique_bytes: u64,
    /// Distinct data blobs the snapshots reference.
    pub referenced_blobs: u64,
    /// Referenced data blobs missing from the index (damage; `coffer check` says more).
    pub missing_blobs: u64,
    /// Sum of the sizes of the packs in the index.
    pub stored_bytes: u64,
    /// Plaintext size of every blob in the index (data and trees, referenced or not): what
    /// `stored_bytes` holds before compression and encryption.
    pub raw_bytes: u64,
    /// Distinct blobs in the index (data and trees).
    pub blobs: u64,
    pub packs: u64,
    /// `logical_bytes / unique_bytes`: what deduplication saves (0 when empty).
    pub dedup_ratio: f64,
    /// `raw_bytes / stored_bytes`: what compression saves, net of encryption and pack overhead.
    /// Both sides cover the same blobs, so unreferenced data awaiting prune does not skew it.
    pub compression_ratio: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Counts over every trusted snapshot. Needs the full key (snapshots and trees are encrypted).
pub fn stats(repo: &Repository) -> Result<Stats, RepoError> {
    let (snapshots, _) = repo.load_snapshots()?;
    let mut stats = Stats { snapshots: snapshots.len() as u64, ..Stats::default() };
    let mut walk = Walk { repo, stats: &mut stats, sizes: HashMap::new(), blobs: HashSet::new() };
    for entry in &snapshots {
        let size = walk.tree_size(&format!("snapshot {}", entry.id.short()), &entry.snapshot.tree)?;
        walk.stats.logical_bytes = walk.stats.logical_bytes.saturating_add(size);
    }
    stats.referenced_blobs = walk.blobs.len() as u64;

    let sizes = repo.pack_sizes()?;
    stats.packs = sizes.len() as u64;
    stats.stored_bytes = sizes.values().sum();
    stats.blobs = repo.blob_count()?;
    let mut raw = 0u64;
    repo.for_each_blob(None, |_, location| raw += u64::from(location.entry.raw_len))?;
    stats.raw_bytes = raw;

    stats.dedup_ratio = ratio(stats.logical_bytes, stats.unique_bytes);
    stats.compression_ratio = ratio(stats.raw_bytes, stats.stored_bytes);
    Ok(stats)
}

struct Walk<'a> {
    repo: &'a Repository,
    stats: &'a mut Stats,
    /// Logical size of each tree already walked.
    sizes: HashMap<Id, u64>,
    /// Data blobs already counted in `unique_bytes`.
    blobs: HashSet<Id>,
}

impl Walk<'_> {
    fn tree_size(&mut self, label: &str, id: &Id) -> Result<u64, RepoError> {
        if let Some(&size) = self.sizes.get(id) {
            return Ok(size);
        }
        let repo = self.repo;
        walk::walk(repo, label, id, b"/", 0, self)?;
        Ok(self.sizes.get(id).copied().unwrap_or_default())
    }
}

/// Each folder's state is the logical size of what it holds so far.
impl Visitor for Walk<'_> {
    type Error = RepoError;
    type Dir = u64;

    fn entry(&mut self, total: &mut u64, _path: &[u8], node: &Node) -> Result<Option<u64>, RepoError> {
        match &node.kind {
            NodeKind::File { size, content } => {
                *total = total.saturating_add(*size);
                for blob in content {
                    if !self.blobs.insert(*blob) {
                        continue;
                    }
                    match self.repo.blob_location(blob)? {
                        Some(location) => {
                            self.stats.unique_bytes =
                                self.stats.unique_bytes.saturating_add(u64::from(location.entry.raw_len))
                        }
                        None => self.stats.missing_blobs += 1,
                    }
                }
                Ok(None)
            }
            NodeKind::Dir { subtree } => match self.sizes.get(subtree) {
                Some(&size) => {
                    *total = total.saturating_add(size);
                    Ok(None)
                }
                None => Ok(Some(0)),
            },
            _ => Ok(None),
        }
    }

    fn leave(
        &mut self,
        parent: Option<&mut u64>,
        done: u64,
        _path: &[u8],
        id: &Id,
        _tree: Tree,
    ) -> Result<(), RepoError> {
        self.sizes.insert(*id, done);
        if let Some(parent) = parent {
            *parent = parent.saturating_add(done);
        }
        Ok(())
    }
}

/// What one snapshot holds: what restoring it writes (restic's `stats --mode restore-size`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, devices, fifos and sockets.
    pub other: u64,
    /// Sum of the file sizes (a hardlinked file counts each time, as it is restored).
    pub restore_bytes: u64,
}

/// Counts the entries below a snapshot's root tree.
pub fn snapshot_stats(repo: &Repository, tree: &Id) -> Result<SnapshotStats, RepoError> {
    let mut counter = Counter(SnapshotStats::default());
    walk::walk(repo, &format!("snapshot tree {}", tree.short()), tree, b"/", (), &mut counter)?;
    Ok(counter.0)
}

struct Counter(SnapshotStats);

impl Visitor for Counter {
    type Error = RepoError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), _path: &[u8], node: &Node) -> Result<Option<()>, RepoError> {
        match &node.kind {
            NodeKind::File { size, .. } => {
                self.0.files += 1;
                self.0.restore_bytes = self.0.restore_bytes.saturating_add(*size);
            }
            NodeKind::Dir { .. } => {
                self.0.dirs += 1;
                return Ok(Some(()));
            }
            _ => self.0.other += 1,
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn counts_are_sane() {
        let fx = fixture();
        assert_eq!(stats(&fx.repo).unwrap(), Stats::default());

        // a.txt (5) + sub/b.txt (11); a copy of a.txt dedups away.
        std::fs::write(fx.src.path().join("copy.txt"), b"hello").unwrap();
        backup(&fx);
        let one = stats(&fx.repo).unwrap();
        assert_eq!(one.snapshots, 1);
        assert_eq!(one.logical_bytes, 21);
        assert_eq!(one.unique_bytes, 16);
        assert_eq!(one.referenced_blobs, 2);
        assert_eq!(one.missing_blobs, 0);
        assert!(one.packs >= 2 && one.stored_bytes > 0);
        assert!(one.blobs >= 2 + 4, "data blobs and at least four trees: {one:?}");
        assert!(one.raw_bytes > one.unique_bytes);
        assert!((one.dedup_ratio - 21.0 / 16.0).abs() < 1e-9);
        assert!(one.compression_ratio > 0.0);

        // The same data again: logical doubles, nothing new is stored.
        backup(&fx);
        let two = stats(&fx.repo).unwrap();
        assert_eq!(two.snapshots, 2);
        assert_eq!(two.logical_bytes, 42);
        assert_eq!(two.unique_bytes, 16);
        assert!((two.dedup_ratio - 42.0 / 16.0).abs() < 1e-9);
        serde_json::to_string(&two).unwrap();

        // One snapshot: the fixture's source folder's path down from /, a.txt, sub, b.txt,
        // link, copy.txt.
        let (entries, _) = fx.repo.load_snapshots().unwrap();
        let one = snapshot_stats(&fx.repo, &entries[0].snapshot.tree).unwrap();
        assert_eq!((one.files, one.other, one.restore_bytes), (3, 1, 21));
        let depth = fx.src_path().components().count() as u64 - 1;
        assert_eq!(one.dirs, depth + 1, "the source's ancestors, the source and sub");
    }
}
