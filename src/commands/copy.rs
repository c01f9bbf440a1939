//! `coffer copy`: copies snapshots from one repository into another.
//!
//! The two repositories have different `id_key`s, so the same content has different blob ids
//! in each, and packs cannot be copied as they are. Copy walks each source snapshot's trees,
//! reads every data blob (plaintext), hashes it with the destination's key, and stores only
//! blobs the destination does not hold; trees are rewritten with the new ids (and stored only
//! when new, which makes unchanged folders cost nothing). Within one run, source ids already
//! mapped are not read again, so content shared by the snapshots copied is read once.
//!
//! A copied snapshot keeps its time, host, paths, tags and summary, is signed by the
//! destination's key, and records the source snapshot's id in its `extensions`
//! (`copied-from`), so copying again skips it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_bytes::ByteBuf;

use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
use crate::repo::{Packer, RepoError, Repository, SnapshotEntry};

/// The `extensions` key a copied snapshot carries: the source snapshot's id (32 bytes).
pub const COPIED_FROM: &str = "copied-from";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("interrupted; the snapshots copied so far are complete, the rest was not copied")]
    Interrupted,
    #[error("copy needs the full key of the source repository (it reads the data)")]
    SourceWriteOnly,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CopyReport {
    /// (source snapshot, new snapshot in the destination)
    pub copied: Vec<(Id, Id)>,
    /// For each copied snapshot, the key that signed the original (as the source names it).
    pub signed_by: Vec<String>,
    /// Source snapshots the destination already has a copy of.
    pub skipped: Vec<Id>,
    pub blobs_read: u64,
    pub bytes_added: u64,
}

/// The source snapshot ids the destination already holds copies of.
pub fn copied_sources(snapshots: &[SnapshotEntry]) -> HashSet<Id> {
    snapshots
        .iter()
        .flat_map(|e| e.snapshot.extensions.iter())
        .filter(|(key, _)| key == COPIED_FROM)
        .filter_map(|(_, value)| <[u8; 32]>::try_from(value.as_slice()).ok().map(Id))
        .collect()
}

struct Copier<'a> {
    source: &'a Repository,
    dest: &'a Repository,
    sink: &'a Packer<'static>,
    /// Source blob id → destination blob id, for data and trees seen in this run.
    mapped: HashMap<Id, Id>,
    blobs_read: u64,
    interrupted: &'a AtomicBool,
}

impl Copier<'_> {
    fn copy_tree(&mut self, source_id: &Id) -> Result<Id, CopyError> {
        if let Some(id) = self.mapped.get(source_id) {
            return Ok(*id);
        }
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(CopyError::Interrupted);
        }
        let source = self.source;
        walk::walk(source, &format!("snapshot tree {}", source_id.short()), source_id, b"/", (), self)?;
        self.mapped_tree(source_id)
    }

    /// The destination id of a tree this run has copied.
    fn mapped_tree(&self, source_id: &Id) -> Result<Id, CopyError> {
        self.mapped.get(source_id).copied().ok_or_else(|| {
            CopyError::Repo(RepoError::Corrupt {
                object: format!("tree {source_id}"),
                detail: "it was walked but not copied".into(),
            })
        })
    }

    fn copy_data(&mut self, source_id: &Id) -> Result<Id, CopyError> {
        if let Some(id) = self.mapped.get(source_id) {
            return Ok(*id);
        }
        let plain = self.source.load_blob(source_id)?;
        self.blobs_read += 1;
        let id = self.dest.keys().id_key.blob_id(&plain);
        self.sink.add_data(id, plain)?;
        self.mapped.insert(*source_id, id);
        Ok(id)
    }
}

/// Data blobs are copied as the walk meets them; a folder's tree is rewritten with the new ids
/// and stored once everything under it has been.
impl Visitor for Copier<'_> {
    type Error = CopyError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), _path: &[u8], node: &Node) -> Result<Option<()>, CopyError> {
        match &node.kind {
            NodeKind::Dir { subtree } if !self.mapped.contains_key(subtree) => {
                if self.interrupted.load(Ordering::Relaxed) {
                    return Err(CopyError::Interrupted);
                }
                Ok(Some(()))
            }
            NodeKind::File { content, .. } => {
                for blob in content {
                    self.copy_data(blob)?;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn leave(
        &mut self,
        _: Option<&mut ()>,
        _: (),
        _path: &[u8],
        source_id: &Id,
        mut tree: Tree,
    ) -> Result<(), CopyError> {
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::Dir { subtree } => *subtree = self.mapped_tree(subtree)?,
                NodeKind::File { content, .. } => {
                    for blob in content.iter_mut() {
                        *blob = self.copy_data(blob)?;
                    }
                }
                _ => {}
            }
        }
        let id = self.sink.add_tree(tree.encode())?;
        self.mapped.insert(*source_id, id);
        Ok(())
    }
}

/// Copies `snapshots` (of `source`) into `dest`, skipping those already copied.
pub fn copy(
    source: &Repository,
    dest: &Arc<Repository>,
    snapshots: &[SnapshotEntry],
    interrupted: &AtomicBool,
) -> Result<CopyReport, CopyError> {
    source.require_full_key("copy").map_err(|_| CopyError::SourceWriteOnly)?;
    let (existing, _) = dest.load_snapshots()?;
    let already = copied_sources(&existing);
    let mut report = CopyReport::default();
    let todo: Vec<&SnapshotEntry> = snapshots
        .iter()
        .filter(|e| {
            let done = already.contains(&e.id);
            if done {
                report.skipped.push(e.id);
            }
            !done
        })
        .collect();
    if todo.is_empty() {
        return Ok(report);
    }
    // Copying into `dest` is a backup as far as a concurrent prune is concerned: the same lock
    // handshake keeps prune from deleting what this copy deduplicates against.
    let lock = crate::repo::locks::BackupLock::acquire(dest)?;
    dest.sync_index()?;
    let condemned = dest.condemned_packs()?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sink = Packer::new(Arc::clone(dest), workers, &condemned)?;
    let mut copier = Copier { source, dest, sink: &sink, mapped: HashMap::new(), blobs_read: 0, interrupted };
    let mut roots = Vec::new();
    for entry in &todo {
        match copier.copy_tree(&entry.snapshot.tree) {
            Ok(root) => roots.push((*entry, root)),
            Err(e) => {
                // Store what was packed (it is reused next time), then report.
                let blobs_read = copier.blobs_read;
                drop(copier);
                sink.finish()?;
                log::info!("copy stopped after reading {blobs_read} blobs");
                return Err(e);
            }
        }
    }
    report.blobs_read = copier.blobs_read;
    drop(copier);
    // Every blob and tree is stored and indexed before any snapshot refers to them.
    let totals = sink.finish()?;
    report.bytes_added = totals.bytes_added;
    for (entry, root) in roots {
        let mut snapshot = entry.snapshot.clone();
        snapshot.tree = root;
        let lock_key = crate::repo::locks::LOCK_EXTENSION;
        // The source's anchors name objects of the source repository; the copy gets its own.
        snapshot.extensions.retain(|(key, _)| {
            key != COPIED_FROM
                && key != crate::format::snapshot::COPIED_SIGNER
                && key != lock_key
                && key != crate::repo::anchors::SIGNERS_SEEN
                && key != crate::repo::anchors::PREVIOUS
        });
        snapshot.extensions.extend(dest.anchor_extensions()?);
        snapshot.extensions.push((COPIED_FROM.to_string(), ByteBuf::from(entry.id.0.to_vec())));
        // The destination's key signs the copy; who wrote the original stays on it (issue 15:
        // a copy must not launder a write-only key's snapshot into a repository-key one).
        snapshot.extensions.push((
            crate::format::snapshot::COPIED_SIGNER.to_string(),
            ByteBuf::from(crate::format::to_postcard(&(entry.signer, entry.signed_by.clone()))),
        ));
        snapshot.extensions.push((lock_key.to_string(), ByteBuf::from(lock.session.as_bytes().to_vec())));
        lock.check_fresh()?;
        let id = dest.save_snapshot(&snapshot)?;
        report.copied.push((entry.id, id));
        report.signed_by.push(entry.signed_by.clone());
    }
    Ok(report)
}

/// Copy between two repositories in memory.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::{check, CheckOptions, ReadData};
    use crate::test_kit::{backup, fixture, memory_repo};

    #[test]
    fn a_snapshot_is_copied_once_and_reads_back_whole() {
        let fx = fixture();
        backup(&fx);
        let (dest, _cache) = memory_repo();
        let (snapshots, _) = fx.repo.load_snapshots().unwrap();
        let running = AtomicBool::new(false);
        let report = copy(&fx.repo, &dest, &snapshots, &running).unwrap();
        assert_eq!(report.copied.len(), 1);
        assert!(report.bytes_added > 0 && report.blobs_read > 0);

        let (copied, _) = dest.load_snapshots().unwrap();
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[0].id, report.copied[0].1);
        assert_eq!(copied[0].snapshot.paths, snapshots[0].snapshot.paths);
        assert_eq!(copied_sources(&copied), HashSet::from([snapshots[0].id]));
        // Every tree and blob the copy names is in the destination, and reads back.
        let checked = check(&dest, &CheckOptions { read_data: ReadData::All }, |_| {}).unwrap();
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);

        let again = copy(&fx.repo, &dest, &snapshots, &running).unwrap();
        assert!(again.copied.is_empty());
        assert_eq!(again.skipped, vec![snapshots[0].id]);
        assert_eq!(dest.load_snapshots().unwrap().0.len(), 1);
    }
}
