//! The repository's door: what code outside `repo/` may ask of an open repository beyond its
//! objects' own operations (snapshots, blobs, trees, index files, signers, locks, which live in
//! the sibling files). `Repository`'s fields are private; commands, the archiver, the CLI and
//! the mount reach storage and the local database only through the named operations here, so
//! a reader can find every way in from one file, and the storage seam and the database schema
//! can change without touching a command. (`tests/door.rs` fails if a file outside names
//! `store::` or `db::`.)
//!
//! Three groups, each a thin, named forward:
//! - **the repository's settings and keys**: `config`, `keys`, `key_file`, where it lives;
//! - **objects by layout name** ([`crate::layout`]): read, write, delete, size, list — what
//!   maintenance commands (check, prune, repair, forget, tag) do to whole objects — and typed
//!   forms where a command handles one kind: deletes by kind, the snapshot listing, key files;
//! - **local database queries**: the cache of index, trees, snapshots seen, files, and notes,
//!   each under a name that says what it answers. Each takes the database lock for one query.
//!
//! Errors stay the store's and the database's own ([`StoreError`], [`DbError`], re-exported by
//! `repo`), so callers report exactly what they did before the door existed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{RepoError, Repository};
use crate::db::{BlobLocation, CachedFile, DbError, FilesCacheReader};
use crate::format::config::Config;
use crate::format::index::IndexFile;
use crate::format::pack::PackEntry;
use crate::id::Id;
use crate::keys::RepoKeys;
use crate::layout;
use crate::store::StoreError;

impl Repository {
    // --- Settings, keys, whereabouts ---

    /// The repository's verified config (chunker, pack sizes, compression).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The keys this client opened the repository with.
    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// The `keys/` file the passphrase opened; `None` for a write-only key.
    pub fn key_file(&self) -> Option<Id> {
        self.key_file
    }

    /// Where the repository lives, as the user would write it.
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// Whether the repository is a local folder (reads are cheap; no round trips to batch).
    pub fn is_local(&self) -> bool {
        self.store.is_local()
    }

    /// Where objects are spooled before they are stored (inside a local repository, else the
    /// system's temporary folder).
    pub fn spool_dir(&self) -> PathBuf {
        self.store.spool_dir()
    }

    // --- Whole objects, by their layout name ---

    pub fn read_object(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        self.store.read(path)
    }

    /// Reads a content-named object, retried while its bytes do not hash to `id`.
    pub fn read_object_named(&self, path: &str, id: &Id) -> Result<Vec<u8>, StoreError> {
        self.store.read_named(path, id)
    }

    pub fn write_object(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store.write(path, bytes)
    }

    pub fn delete_object(&self, path: &str) -> Result<(), StoreError> {
        self.store.delete(path)
    }

    /// Size of an object, or `None` when it does not exist.
    pub fn object_size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        self.store.size(path)
    }

    /// The objects under `dir` (recursively), as (path, size).
    pub fn list_objects(&self, dir: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.store.list(dir)
    }

    /// The ids (and sizes) of the objects under `dir`; names that are not ids are skipped.
    pub fn list_object_ids(&self, dir: &str) -> Result<Vec<(Id, u64)>, StoreError> {
        self.store.list_ids(dir)
    }

    /// [`list_object_ids`](Self::list_object_ids) of several folders at once, in that order.
    pub fn list_object_ids_together<const N: usize>(&self, dirs: [&str; N]) -> Result<[Vec<(Id, u64)>; N], StoreError> {
        self.store.list_ids_together(dirs)
    }

    /// Deletes a snapshot object only: the caller records why and updates the local database
    /// (`forget`, `tag`, `repair snapshots` each do it in their own order).
    pub fn delete_snapshot_object(&self, id: &Id) -> Result<(), StoreError> {
        self.store.delete(&layout::in_dir(layout::SNAPSHOTS, id))
    }

    pub fn delete_pack(&self, id: &Id) -> Result<(), StoreError> {
        self.store.delete(&layout::pack(id))
    }

    /// Deletes an index file from storage (the local database forgets it separately:
    /// [`forget_local_index_files`](Self::forget_local_index_files)).
    pub fn delete_index_file(&self, id: &Id) -> Result<(), StoreError> {
        self.store.delete(&layout::in_dir(layout::INDEX, id))
    }

    pub fn delete_plan_record(&self, id: &Id) -> Result<(), StoreError> {
        self.store.delete(&layout::in_dir(layout::PLANS, id))
    }

    /// The snapshot objects in storage (id, size): one listing of `snapshots/`.
    pub fn list_snapshot_ids(&self) -> Result<Vec<(Id, u64)>, StoreError> {
        self.store.list_ids(layout::SNAPSHOTS)
    }

    // --- Key files (`keys/`: one per passphrase, each wrapping the full key) ---

    /// The key files in storage.
    pub fn key_file_ids(&self) -> Result<Vec<Id>, StoreError> {
        Ok(self.store.list_ids(layout::KEYS)?.into_iter().map(|(id, _)| id).collect())
    }

    /// A key file's bytes (the caller decodes them and says which it skips).
    pub fn read_key_file(&self, id: &Id) -> Result<Vec<u8>, StoreError> {
        self.store.read(&layout::in_dir(layout::KEYS, id))
    }

    /// Stores a new key file under the id of its bytes, and returns that id.
    pub fn write_key_file(&self, bytes: Vec<u8>) -> Result<Id, StoreError> {
        let id = Id::of_bytes(&bytes);
        self.store.write(&layout::in_dir(layout::KEYS, &id), bytes)?;
        Ok(id)
    }

    pub fn delete_key_file(&self, id: &Id) -> Result<(), StoreError> {
        self.store.delete(&layout::in_dir(layout::KEYS, id))
    }

    /// Reads the index files `files` (id, size) several at a time (a round trip each on a
    /// remote store); results in the order given.
    pub fn read_index_files(&self, files: &[(Id, u64)]) -> Vec<Result<(Id, IndexFile), RepoError>> {
        crate::store::map_in_flight(files, crate::store::SMALL_READS_IN_FLIGHT, |(id, _)| self.read_index_file(id))
    }

    /// Another handle on the same storage, to open the repository again with another key.
    #[cfg(test)]
    pub(crate) fn store_for_tests(&self) -> crate::store::Store {
        self.store.clone()
    }

    // --- The local database ---

    /// Snapshots this machine has seen, with their times (what `check` and prune compare the
    /// listing with, to notice snapshots deleted behind their back).
    pub fn seen_snapshots(&self) -> Result<Vec<(Id, i64)>, DbError> {
        self.db().seen_snapshots()
    }

    /// Forgets deleted snapshots in the local database (seen list and cache).
    pub fn forget_local_snapshots(&self, ids: &[Id]) -> Result<(), DbError> {
        self.db().forget_snapshots(ids)
    }

    /// The index files the local database has imported.
    pub fn local_index_files(&self) -> Result<HashSet<Id>, DbError> {
        self.db().index_files()
    }

    /// Forgets deleted index files (and the blob locations they gave) in the local database.
    pub fn forget_local_index_files(&self, ids: &[Id]) -> Result<(), DbError> {
        self.db().remove_index_files(ids)
    }

    /// Every indexed pack, by (pack, domain): its size and its blobs.
    pub fn pack_contents(&self) -> Result<HashMap<(Id, Id), (u64, Vec<PackEntry>)>, DbError> {
        self.db().pack_contents()
    }

    /// Every indexed pack's size.
    pub fn pack_sizes(&self) -> Result<HashMap<Id, u64>, DbError> {
        self.db().pack_sizes()
    }

    /// How many blobs the index holds.
    pub fn blob_count(&self) -> Result<u64, DbError> {
        self.db().blob_count()
    }

    /// One place the index has the blob, if any (no preference among copies).
    pub fn blob_location(&self, blob: &Id) -> Result<Option<BlobLocation>, DbError> {
        self.db().blob_location(blob)
    }

    /// Every place the index has the blob.
    pub fn blob_locations(&self, blob: &Id) -> Result<Vec<BlobLocation>, DbError> {
        self.db().blob_locations(blob)
    }

    /// The packs of `domain` that hold `blob`.
    pub fn blob_packs(&self, domain: &Id, blob: &Id) -> Result<Vec<Id>, DbError> {
        self.db().blob_packs(domain, blob)
    }

    /// Calls `f` for every indexed blob (of `domain`, or of every domain). The database is
    /// locked meanwhile: `f` must not call back into the repository's database.
    pub fn for_each_blob(&self, domain: Option<&Id>, f: impl FnMut(&Id, &BlobLocation)) -> Result<(), DbError> {
        self.db().for_each_blob(domain, f)
    }

    /// A tree's plaintext from the local cache (unverified: callers check it against its id).
    pub fn cached_tree(&self, id: &Id) -> Result<Option<Vec<u8>>, DbError> {
        self.db().cached_tree(id)
    }

    /// Adds trees (id, plaintext) to the local cache.
    pub fn cache_trees(&self, trees: &[(Id, Vec<u8>)]) -> Result<(), DbError> {
        self.db().store_trees(trees)
    }

    /// The files cache's record of a path backed up before.
    pub fn cached_file(&self, path: &[u8]) -> Result<Option<CachedFile>, DbError> {
        self.db().cached_file(path)
    }

    /// Records files backed up, for the next backup to skip unchanged ones.
    pub fn cache_files(&self, files: &[(Vec<u8>, CachedFile)]) -> Result<(), DbError> {
        self.db().store_files(files)
    }

    /// Claims the files cache for `machine`; the machine that used it before, if another.
    pub fn claim_files_cache(&self, machine: &str) -> Result<Option<String>, DbError> {
        self.db().claim_files_cache(machine)
    }

    /// A reader of this machine's files cache on its own connection, for scanner threads.
    pub fn files_cache_reader(&self) -> Option<FilesCacheReader> {
        FilesCacheReader::open(self.db().path(), &self.config.repo_id, &super::machine_identity())
    }

    /// A note kept in the local database (such as "a backup is running").
    pub fn local_note(&self, key: &str) -> Result<Option<String>, DbError> {
        self.db().note(key)
    }

    pub fn set_local_note(&self, key: &str, value: Option<&str>) -> Result<(), DbError> {
        self.db().set_note(key, value)
    }
}
