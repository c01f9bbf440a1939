//! What the archiver's stages need from the repository, declared here by the consumer (as the
//! mount's `Source` is): somewhere to save blobs, and the files cache. The walker, the readers,
//! the tree builder and the prefix trees see only these two traits, so they run in unit tests
//! against a `HashMap` (see `tests` below) with no repository, store or database behind them.
//!
//! Both are implemented here, for the repository's own types: [`SaveBlobs`] by its streaming
//! pack writer ([`Packer`]: deduplication against the index, packs, uploads, index files),
//! [`FilesCache`] by [`Repository`]. (Here rather than in `repo/`, so that `repo/` does not
//! import the archiver.)

use crate::id::Id;
use crate::repo::{CachedFile, Packer, RepoError, Repository, SinkTotals};

/// Where new blobs go: is this blob known, save this blob, flush.
pub trait SaveBlobs: Sync {
    /// Whether every one of `ids` is already saved (in the repository or earlier in this run),
    /// so a file made of them needs no reading.
    fn contains_all(&self, ids: &[Id]) -> bool;

    /// Saves a data blob under `id` (its keyed hash), unless it is known. May block while
    /// the blobs before it are packed: that bounds the pipeline's memory.
    fn add_data(&self, id: Id, data: Vec<u8>) -> Result<(), RepoError>;

    /// Saves a tree blob (unless known) and returns its id.
    fn add_tree(&self, bytes: Vec<u8>) -> Result<Id, RepoError>;

    /// A buffer for the next chunk of a file of `file_size` bytes (a spare one if the saver
    /// keeps them).
    fn chunk_buffer(&self, file_size: u64) -> Vec<u8> {
        let _ = file_size;
        Vec::new()
    }

    /// Takes back a chunk buffer that was not handed to [`add_data`](Self::add_data).
    fn recycle(&self, buffer: Vec<u8>) {
        drop(buffer);
    }

    /// Flushes everything saved: only after this returns Ok may a snapshot name the blobs.
    fn finish(self) -> Result<SinkTotals, RepoError>
    where
        Self: Sized;
}

/// The files cache, as the walker and the builder use it.
pub trait FilesCache: Sync {
    /// What the last backup recorded of `path`; `None` when nothing was (or it cannot be read:
    /// the file is then simply read again).
    fn cached_file(&self, path: &[u8]) -> Option<CachedFile>;

    /// Records files read by this backup.
    fn cache_files(&self, records: &[(Vec<u8>, CachedFile)]) -> Result<(), RepoError>;
}

impl SaveBlobs for Packer<'static> {
    fn contains_all(&self, ids: &[Id]) -> bool {
        Packer::contains_all(self, ids)
    }

    fn add_data(&self, id: Id, data: Vec<u8>) -> Result<(), RepoError> {
        Packer::add_data(self, id, data)
    }

    fn add_tree(&self, bytes: Vec<u8>) -> Result<Id, RepoError> {
        Packer::add_tree(self, bytes)
    }

    fn chunk_buffer(&self, file_size: u64) -> Vec<u8> {
        Packer::chunk_buffer(self, file_size)
    }

    fn recycle(&self, buffer: Vec<u8>) {
        Packer::recycle(self, buffer);
    }

    fn finish(self) -> Result<SinkTotals, RepoError> {
        Packer::finish(self)
    }
}

impl FilesCache for Repository {
    fn cached_file(&self, path: &[u8]) -> Option<CachedFile> {
        Repository::cached_file(self, path).ok().flatten()
    }

    fn cache_files(&self, records: &[(Vec<u8>, CachedFile)]) -> Result<(), RepoError> {
        Ok(Repository::cache_files(self, records)?)
    }
}

/// In-memory stand-ins for the unit tests of the archiver's stages.
#[cfg(test)]
pub(crate) mod fakes {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::{FilesCache, SaveBlobs};
    use crate::format::pack::BlobKind;
    use crate::id::Id;
    use crate::repo::{CachedFile, RepoError, SinkTotals};

    /// Blobs by id, with their kind; ids of trees are their plain hash.
    #[derive(Default)]
    pub struct MemoryBlobs {
        pub blobs: Mutex<HashMap<Id, (BlobKind, Vec<u8>)>>,
        /// Saves asked for, whether or not the blob was new.
        pub saves: Mutex<u64>,
    }

    impl MemoryBlobs {
        pub fn get(&self, id: &Id) -> Option<(BlobKind, Vec<u8>)> {
            self.blobs.lock().unwrap().get(id).cloned()
        }

        pub fn len(&self) -> usize {
            self.blobs.lock().unwrap().len()
        }

        fn save(&self, kind: BlobKind, id: Id, bytes: Vec<u8>) {
            *self.saves.lock().unwrap() += 1;
            self.blobs.lock().unwrap().entry(id).or_insert((kind, bytes));
        }
    }

    impl SaveBlobs for MemoryBlobs {
        fn contains_all(&self, ids: &[Id]) -> bool {
            let blobs = self.blobs.lock().unwrap();
            ids.iter().all(|id| blobs.contains_key(id))
        }

        fn add_data(&self, id: Id, data: Vec<u8>) -> Result<(), RepoError> {
            self.save(BlobKind::Data, id, data);
            Ok(())
        }

        fn add_tree(&self, bytes: Vec<u8>) -> Result<Id, RepoError> {
            let id = Id::of_bytes(&bytes);
            self.save(BlobKind::Tree, id, bytes);
            Ok(id)
        }

        fn finish(self) -> Result<SinkTotals, RepoError> {
            let blobs = self.blobs.into_inner().unwrap();
            let raw_added = blobs.values().map(|(_, b)| b.len() as u64).sum();
            Ok(SinkTotals { raw_added, bytes_added: raw_added, packs_added: 0 })
        }
    }

    /// A files cache in memory; `stored` is every record handed over, in order.
    #[derive(Default)]
    pub struct MemoryFilesCache {
        pub known: HashMap<Vec<u8>, CachedFile>,
        pub stored: Mutex<Vec<(Vec<u8>, CachedFile)>>,
    }

    impl FilesCache for MemoryFilesCache {
        fn cached_file(&self, path: &[u8]) -> Option<CachedFile> {
            self.known.get(path).cloned()
        }

        fn cache_files(&self, records: &[(Vec<u8>, CachedFile)]) -> Result<(), RepoError> {
            self.stored.lock().unwrap().extend_from_slice(records);
            Ok(())
        }
    }
}
