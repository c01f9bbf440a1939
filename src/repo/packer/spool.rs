//! The packer's plumbing: a pack being written to its spool file, storing it (publish, then
//! wait, a bounded number in flight), the index files written as it goes, and the worker
//! threads that pack data blobs. What a pack holds and when it closes is decided in
//! `packer/mod.rs`; this file only moves bytes to the store in the order DESIGN §3 requires
//! (packs before the index that names them).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tempfile::TempPath;

use super::{pack_target, Indexing, Shared, Uploads, INDEX_INTERVAL, PACKS_PER_INDEX, PACK_WRITE_BUFFER};
use super::{SPARE_MAX_CAPACITY, SPARE_MIN_CAPACITY, UPLOADS_IN_FLIGHT};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobKind, PackWriter};
use crate::id::Id;
use crate::layout;
use crate::repo::RepoError;

/// A pack being written to its spool file; the file is removed if the pack is dropped unfinished.
pub(super) struct SpooledPack {
    pub(super) writer: PackWriter<BufWriter<File>>,
    pub(super) path: TempPath,
}

trait KeepPath {
    fn keep_path(self) -> PathBuf;
}

impl KeepPath for TempPath {
    /// Hands the file over to the store, which moves or removes it.
    fn keep_path(self) -> PathBuf {
        let path = self.to_path_buf();
        // `keep` only fails on Windows-specific conditions; either way the store owns it now.
        let _ = self.keep();
        path
    }
}

impl Shared<'_> {
    pub(super) fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() >= SPARE_MIN_CAPACITY {
            // A spare sized for the rare largest chunk would keep that much resident; the
            // pages kept are already faulted in.
            buffer.truncate(SPARE_MAX_CAPACITY);
            buffer.shrink_to(SPARE_MAX_CAPACITY);
            let _ = self.spare.0.try_send(buffer);
        }
    }

    pub(super) fn lock_uploads(&self) -> std::sync::MutexGuard<'_, Uploads> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn fail(&self, error: RepoError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(error);
    }

    /// Starts a pack in a spool file: packs never sit whole in memory.
    pub(super) fn open_pack(&self, kind: BlobKind) -> Result<SpooledPack, RepoError> {
        let dir = self.repo.spool_dir();
        let local = |what: String| move |source| RepoError::Local { what, source };
        std::fs::create_dir_all(&dir).map_err(local(format!("creating spool folder {}", dir.display())))?;
        let (file, path) = tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(&dir)
            .map_err(local(format!("creating a pack in {}", dir.display())))?
            .into_parts();
        let public = &self.repo.keys().public;
        let writer =
            PackWriter::new(public, &self.domain.index_key, kind, BufWriter::with_capacity(PACK_WRITE_BUFFER, file))
                .map_err(local(format!("writing a pack in {}", dir.display())))?;
        Ok(SpooledPack { writer, path })
    }

    /// Compresses, seals and adds a blob to `pack`, counting the bytes it takes there.
    pub(super) fn add_to(&self, pack: &mut SpooledPack, id: Id, plaintext: &[u8]) -> Result<(), RepoError> {
        let stored = pack.writer.add_blob(id, plaintext, self.repo.config().compression_level).map_err(|source| {
            RepoError::Local { what: format!("writing a pack in {}", pack.path.display()), source }
        })?;
        self.stats.bytes_added.fetch_add(stored.into(), Ordering::Relaxed);
        Ok(())
    }

    /// Closes a pack and starts storing it; waits for the oldest while too many are in flight.
    pub(super) fn upload(&self, pack: SpooledPack) {
        let SpooledPack { writer, path } = pack;
        let local = |source| RepoError::Local { what: format!("finishing pack {}", path.display()), source };
        let finished = match writer.finish().map_err(local) {
            Ok(finished) => finished,
            Err(e) => return self.fail(e),
        };
        let file = match finished.out.into_inner().map_err(|e| local(e.into_error())) {
            Ok(file) => file,
            Err(e) => return self.fail(e),
        };
        if self.dry_run {
            self.stats.packs_added.fetch_add(1, Ordering::Relaxed);
            // Dropping the TempPath removes the spool file.
            drop((file, path));
            return;
        }
        let entry = IndexPack { id: finished.id, size: finished.size, blobs: finished.entries };
        let handle = self.repo.store.spawn_publish(file, path.keep_path(), layout::pack(&finished.id));
        self.stats.packs_added.fetch_add(1, Ordering::Relaxed);
        let mut uploads = self.lock_uploads();
        uploads.in_flight.push_back((entry, handle));
        while uploads.in_flight.len() > UPLOADS_IN_FLIGHT {
            self.complete_oldest(&mut uploads);
        }
        let due = uploads.done.len() >= PACKS_PER_INDEX
            || (!uploads.done.is_empty() && uploads.last_index.elapsed() >= INDEX_INTERVAL);
        if due && self.indexing == Indexing::AsItGoes {
            self.write_index(&mut uploads);
        }
    }

    pub(super) fn complete_oldest(&self, uploads: &mut Uploads) {
        if let Some((entry, handle)) = uploads.in_flight.pop_front() {
            match self.repo.store.wait(handle) {
                Ok(()) => {
                    crate::crashpoint::hit(self.after_pack);
                    uploads.done.push(entry);
                }
                Err(e) => self.fail(e.into()),
            }
        }
    }

    pub(super) fn write_index(&self, uploads: &mut Uploads) {
        if uploads.done.is_empty() {
            return;
        }
        uploads.last_index = std::time::Instant::now();
        let file = IndexFile { packs: std::mem::take(&mut uploads.done) };
        crate::crashpoint::hit("backup-before-index-write");
        if let Err(e) = self.repo.save_index_in(&self.domain, &file) {
            self.fail(e);
        }
        crate::crashpoint::hit("backup-after-index-write");
    }
}

pub(super) fn pack_worker(shared: &Shared<'_>, rx: crossbeam_channel::Receiver<(Id, Vec<u8>)>) {
    let repo = &shared.repo;
    let target = pack_target(repo.config(), BlobKind::Data);
    let mut pack: Option<SpooledPack> = None;
    for (id, data) in rx {
        if pack.is_none() {
            match shared.open_pack(BlobKind::Data) {
                Ok(opened) => pack = Some(opened),
                // Dropping the receiver makes senders fail; they then report this error.
                Err(e) => return shared.fail(e),
            }
        }
        let current = pack.as_mut().expect("just filled");
        if let Err(e) = shared.add_to(current, id, &data) {
            return shared.fail(e);
        }
        shared.recycle(data);
        if current.writer.len() >= target {
            if let Some(full) = pack.take() {
                shared.upload(full);
            }
        }
    }
    if let Some(last) = pack.take() {
        if !last.writer.is_empty() {
            shared.upload(last);
        }
    }
}
