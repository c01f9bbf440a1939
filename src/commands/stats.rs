//! `coffer stats`: how much the snapshots hold, how much of it is distinct, and how much the
//! repository stores. Each distinct tree is read once (subtree sizes are memoized by tree id,
//! so a folder shared by many snapshots still counts once per snapshot in `logical_bytes`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::format::tree::NodeKind;
use crate::id::Id;
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
    let mut walk = Walk::default();
    for entry in &snapshots {
        let size = walk.tree_size(repo, &entry.snapshot.tree, &mut stats)?;
        stats.logical_bytes = stats.logical_bytes.saturating_add(size);
    }
    stats.referenced_blobs = walk.blobs.len() as u64;

    let db = repo.db();
    let sizes = db.pack_sizes()?;
    stats.packs = sizes.len() as u64;
    stats.stored_bytes = sizes.values().sum();
    stats.blobs = db.blob_count()?;
    let mut raw = 0u64;
    db.for_each_blob(None, |_, location| raw += u64::from(location.entry.raw_len))?;
    stats.raw_bytes = raw;
    drop(db);

    stats.dedup_ratio = ratio(stats.logical_bytes, stats.unique_bytes);
    stats.compression_ratio = ratio(stats.raw_bytes, stats.stored_bytes);
    Ok(stats)
}

#[derive(Default)]
struct Walk {
    /// Logical size of each tree already walked.
    sizes: HashMap<Id, u64>,
    /// Data blobs already counted in `unique_bytes`.
    blobs: HashSet<Id>,
}

impl Walk {
    fn tree_size(&mut self, repo: &Repository, id: &Id, stats: &mut Stats) -> Result<u64, RepoError> {
        if let Some(&size) = self.sizes.get(id) {
            return Ok(size);
        }
        let tree = repo.load_tree(id)?;
        let mut total = 0u64;
        for node in tree.nodes {
            match node.kind {
                NodeKind::File { size, content } => {
                    total = total.saturating_add(size);
                    for blob in content {
                        if !self.blobs.insert(blob) {
                            continue;
                        }
                        match repo.db().blob_location(&blob)? {
                            Some(location) => {
                                stats.unique_bytes =
                                    stats.unique_bytes.saturating_add(u64::from(location.entry.raw_len))
                            }
                            None => stats.missing_blobs += 1,
                        }
                    }
                }
                NodeKind::Dir { subtree } => total = total.saturating_add(self.tree_size(repo, &subtree, stats)?),
                _ => {}
            }
        }
        self.sizes.insert(*id, total);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::test_support::{backup, fixture};

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
    }
}
