//! Index files and blobs: keeping the local index cache in step with the repository's
//! `index/` folder, writing new index files, and reading single blobs (and trees) by id with
//! one ranged read each, verified against their id.
//!
//! The index can list a blob several times (in different packs, and in different domains:
//! issue 15). Which copy a read tries first is [`Repository::locate`]'s choice (this client's
//! own domain first); which other copies it may fall back to is the [`Copies`] the caller
//! names. Every read of backed-up data goes through one of these names:
//!
//! | name | what | used by |
//! |---|---|---|
//! | [`Repository::locate`] | the copy to read first | restore, the mount, `load_blob`, `load_tree` |
//! | [`Repository::read_blob`] / [`read_blob_into`](Repository::read_blob_into) | one blob at a location, with the fallbacks [`Copies`] allows (`_into`: reused buffers) | prune (`Exactly`), check (`Listed`), restore and region fallbacks (`Current`) |
//! | [`Repository::load_blob`] | a blob by id (`locate`, then `Current`) | copy, dump, the mount |
//! | [`Repository::load_tree`] | a tree by id: the local cache, verified against its id, else storage (with its neighbours, on a remote store) | every tree walk |
//! | [`Repository::read_region`] (`ranges.rs`) | many blobs of one pack in one request, each blob that fails there read again with `Current` | restore, the mount, check |
//!
//! Under them, `read_one_copy` is the single ranged read, [`Repository::open_sealed_blob`]
//! the single place a blob's bytes are decrypted and checked against its id, and
//! `fetch_tree_region` (`ranges.rs`) `load_tree`'s remote step, not an entry point.

use std::collections::{HashMap, HashSet};

use super::{RepoError, Repository};
use crate::crypto::SymKey;
use crate::db::BlobLocation;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{self, BlobKind, PackEntry, HEADER_LEN, TRAILER_FIXED_LEN};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::keys::DomainKeys;
use crate::layout;

/// What [`Repository::reconcile_packs`] found and did.
#[derive(Debug, Default)]
pub struct PackReconciliation {
    /// Packs the index lists that storage lacks (or holds with another size).
    pub missing_packs: Vec<Id>,
    /// Blob locations forgotten with them.
    pub blobs_dropped: u64,
    /// Orphan packs indexed.
    pub adopted: usize,
}

/// Which copies of a blob a read may use (the index can list several, in different packs
/// and domains). Which copy to try *first* is [`Repository::locate`]'s choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copies {
    /// The copy named, and no other: for callers that must know whether *that* copy is good
    /// (prune choosing which copy to keep).
    Exactly,
    /// The copy named, else another copy the index lists (`check`, which synced the index
    /// just before and reports what it lists).
    Listed,
    /// As `Listed`; and when the pack is gone (a prune repacked it since the index was read),
    /// the index re-read once and the blob read where it is now. What every reader of
    /// backed-up data uses: restore, the mount, copy, dump, tree loads.
    Current,
}

/// Index files read at once when syncing: a remote read is a round trip (two before the stat
/// went out with it), and a machine with an empty local database reads every index file.
const INDEX_READS_IN_FLIGHT: usize = 8;

/// Pack keys kept for ranged reads; each costs an X25519 operation and a small read to get.
pub(super) const PACK_KEY_CACHE: usize = 4096;

impl Repository {
    /// Imports index files added since the last run and forgets those that vanished (pruned).
    pub fn sync_index(&self) -> Result<(), RepoError> {
        self.sync_index_listed(self.store.list_ids(layout::INDEX)?)
    }

    /// [`sync_index`](Self::sync_index) with `index/` already listed (by a caller that lists
    /// several folders at once).
    pub fn sync_index_listed(&self, listing: Vec<(Id, u64)>) -> Result<(), RepoError> {
        self.forget_foreign_files_if_domains_changed()?;
        let listed: HashSet<Id> = listing.into_iter().map(|(id, _)| id).collect();
        let known = self.db().index_files()?;
        let vanished: Vec<Id> = known.difference(&listed).copied().collect();
        if !vanished.is_empty() {
            self.db().remove_index_files(&vanished)?;
        }
        let new: Vec<Id> = listed.difference(&known).copied().collect();
        self.each_index_file(&new, |id, read| self.import_index_file(id, read))
    }

    /// Reads the index files `ids` several at a time (a remote read is a round trip each) and
    /// hands each result to `import` on the calling thread, in the order they arrive. Stops at
    /// the first error `import` returns.
    fn each_index_file(
        &self,
        ids: &[Id],
        mut import: impl FnMut(&Id, Result<(Id, IndexFile), RepoError>) -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let workers = INDEX_READS_IN_FLIGHT.min(ids.len());
        if workers <= 1 {
            return ids.iter().try_for_each(|id| import(id, self.read_index_file(id)));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Bounded: each waiting result holds a decoded index file.
            let (tx, rx) = crossbeam_channel::bounded(workers);
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    while !stop.load(Relaxed) {
                        let Some(id) = ids.get(next.fetch_add(1, Relaxed)) else { break };
                        if tx.send((id, self.read_index_file(id))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let outcome = rx.iter().try_for_each(|(id, read)| import(id, read));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(rx);
            outcome
        })
    }

    fn import_index_file(&self, id: &Id, read: Result<(Id, IndexFile), RepoError>) -> Result<(), RepoError> {
        match read {
            Ok((domain, file)) => {
                let packs: Vec<_> = file.packs.into_iter().map(|p| (p.id, p.size, p.blobs)).collect();
                self.db().add_index_file(id, Some(&domain), &packs)?;
            }
            // Deleted by a prune since the listing: what it listed is indexed anew elsewhere.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            // Another key's domain (or junk): a write-only key cannot tell them apart and
            // needs neither. The full key opens every registered domain: for it such a
            // file is junk (`check` reports it). Either way it is recorded as opened by no
            // key, so it is not read again until the registered domains change.
            Err(RepoError::ForeignDomain { object }) => {
                if self.keys.secret.is_some() {
                    log::info!("skipping {object}: no key of this repository opens it; `coffer check` reports it");
                }
                self.db().add_index_file(id, None, &[])?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Index files no domain opened are re-read when the set of domains this client holds has
    /// changed since they were recorded (a key registered since can open them now).
    fn forget_foreign_files_if_domains_changed(&self) -> Result<(), RepoError> {
        const NOTE: &str = "index-domains";
        let mut ids: Vec<String> = self.domains().map(|d| d.id.to_hex()).collect();
        ids.sort();
        let held = ids.join(",");
        let mut db = self.db();
        if db.note(NOTE)?.as_deref() != Some(held.as_str()) {
            db.forget_unopened_index_files()?;
            db.set_note(NOTE, Some(&held))?;
        }
        Ok(())
    }

    /// Reads every registered write-only key's domain from `signers/` (full key only).
    pub(super) fn load_domains(&mut self) -> Result<(), RepoError> {
        let Some(secret) = self.keys.secret.clone() else { return Ok(()) };
        for (object, record) in &self.signers_at_open()?.registrations {
            match record.domain_secret(&secret, &self.id()) {
                Ok(Some(domain_secret)) => {
                    let id = crate::crypto::VerifyingKey(record.verify_key).id();
                    self.domains.insert(id, DomainKeys::from_secret(id, &domain_secret));
                }
                Ok(None) => {}
                Err(e) => log::warn!("signer record {}: its domain key does not open: {e}", object.short()),
            }
        }
        Ok(())
    }

    /// Compares the local index with the packs in storage (one listing of `data/`) before a
    /// backup deduplicates against it. Packs the index lists that are gone, or whose size
    /// changed, are forgotten locally, so their blobs are uploaded again rather than
    /// referenced: a snapshot never points at data the repository does not hold. With
    /// `adopt_orphans`, packs in no index file are indexed (see [`Repository::adopt_orphan_packs`]),
    /// except those a prune plan condemned.
    pub fn reconcile_packs(
        &self,
        adopt_orphans: bool,
        condemned: &HashSet<Id>,
    ) -> Result<PackReconciliation, RepoError> {
        self.reconcile_packs_listed(self.store.list_ids(layout::DATA)?, adopt_orphans, condemned)
    }

    /// [`reconcile_packs`](Self::reconcile_packs) with `data/` already listed.
    pub fn reconcile_packs_listed(
        &self,
        listing: Vec<(Id, u64)>,
        adopt_orphans: bool,
        condemned: &HashSet<Id>,
    ) -> Result<PackReconciliation, RepoError> {
        let stored: HashMap<Id, u64> = listing.into_iter().collect();
        let indexed = self.db().pack_sizes()?;
        let mut gone = Vec::new();
        for (id, size) in &indexed {
            if stored.get(id) == Some(size) {
                continue;
            }
            // Some stores list without sizes, or lag behind: ask the object before blaming it.
            let actual = self.store.size(&layout::pack(id))?;
            if actual != Some(*size) {
                match actual {
                    None => log::warn!(
                        "pack {} is missing from the repository: its blobs will be uploaded again where the                          source still has them; run `coffer repair index`, then `coffer check`",
                        layout::pack(id)
                    ),
                    Some(actual) => log::warn!(
                        "pack {} is {actual} bytes but the index says {size}: it is not used; its blobs will be                          uploaded again where the source still has them; run `coffer check`",
                        layout::pack(id)
                    ),
                }
                gone.push(*id);
            }
        }
        let blobs_dropped = if gone.is_empty() { 0 } else { self.db().forget_packs(&gone)? };
        let adopted = if adopt_orphans { self.adopt_packs(&stored, &indexed, condemned)? } else { 0 };
        Ok(PackReconciliation { missing_packs: gone, blobs_dropped, adopted })
    }

    /// Indexes packs that are stored but listed in no index file: what a backup killed
    /// between uploading a pack and writing its index leaves. Their blob tables are sealed
    /// with the index key, so a write-only key can do this too. Returns how many it adopted.
    /// Packs a prune plan condemned are left alone: prune is about to delete them.
    pub fn adopt_orphan_packs(&self, condemned: &HashSet<Id>) -> Result<usize, RepoError> {
        let stored: HashMap<Id, u64> = self.store.list_ids(layout::DATA)?.into_iter().collect();
        self.adopt_packs(&stored, &self.db().pack_sizes()?, condemned)
    }

    fn adopt_packs(
        &self,
        stored: &HashMap<Id, u64>,
        indexed: &HashMap<Id, u64>,
        condemned: &HashSet<Id>,
    ) -> Result<usize, RepoError> {
        let mut file = IndexFile::default();
        for (&id, &size) in stored {
            if indexed.contains_key(&id) || condemned.contains(&id) {
                continue;
            }
            match self.read_pack_table(&id, size) {
                // Only packs of the domain this client writes in: its index key seals them.
                Ok((domain, blobs)) if domain == self.keys.domain => file.packs.push(IndexPack { id, size, blobs }),
                Ok(_) => log::debug!("not adopting pack {id}: another key's domain"),
                // A pack still being written by another client, or a damaged one: leave it.
                Err(e) => log::info!("not adopting pack {id}: {e}"),
            }
        }
        if !file.packs.is_empty() {
            self.save_index(&file)?;
        }
        Ok(file.packs.len())
    }

    /// Reads a pack's blob table with three small ranged reads; returns the domain whose
    /// index key sealed it, with its entries.
    pub fn read_pack_table(&self, id: &Id, size: u64) -> Result<(Id, Vec<PackEntry>), RepoError> {
        let path = layout::pack(id);
        let fixed = (HEADER_LEN + TRAILER_FIXED_LEN) as u64;
        if size < fixed {
            return Err(RepoError::Corrupt { object: path, detail: "too short to be a pack".into() });
        }
        let tail = self.store.read_range(&path, size - TRAILER_FIXED_LEN as u64, TRAILER_FIXED_LEN as u64)?;
        let table_len = pack::table_len(&tail).map_err(RepoError::format(path.clone()))? as u64;
        if table_len > size - fixed {
            return Err(RepoError::Corrupt { object: path, detail: "blob table longer than the pack".into() });
        }
        let table_start = size - TRAILER_FIXED_LEN as u64 - table_len;
        let header = self.store.read_range(&path, 0, HEADER_LEN as u64)?;
        let table = self.store.read_range(&path, table_start, table_len)?;
        self.open_in_some_domain(&path, |domain| pack::decode_table(&domain.index_key, &header, &table, table_start))
    }

    /// Tries each domain this client holds: the one whose index key opens an object (an index
    /// file, a pack table) is the domain that wrote it; the AEAD tag is what proves it.
    fn open_in_some_domain<T>(
        &self,
        object: &str,
        open: impl Fn(&DomainKeys) -> Result<T, crate::format::FormatError>,
    ) -> Result<(Id, T), RepoError> {
        let mut first_error = None;
        for domain in self.domains() {
            match open(domain) {
                Ok(value) => return Ok((domain.id, value)),
                Err(crate::format::FormatError::Crypto { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(RepoError::Format { object: object.to_string(), source: e }),
            None => Err(RepoError::ForeignDomain { object: object.to_string() }),
        }
    }

    /// Reads an index file and the domain it belongs to.
    pub fn read_index_file(&self, id: &Id) -> Result<(Id, IndexFile), RepoError> {
        let path = layout::in_dir(layout::INDEX, id);
        let bytes = self.store.read_named(&path, id)?;
        if Id::of_bytes(&bytes) != *id {
            return Err(RepoError::Corrupt { object: path, detail: "content does not match its name".into() });
        }
        self.open_in_some_domain(&path, |domain| IndexFile::decode(&bytes, &domain.index_key, &self.id()))
    }

    /// Stores an index file of this client's own domain (after every pack it lists is
    /// stored) and records it locally.
    pub fn save_index(&self, file: &IndexFile) -> Result<Id, RepoError> {
        self.save_index_in(&self.keys.write_domain(), file)
    }

    /// Stores an index file of `domain` (the full key re-indexes other keys' packs in their
    /// own domain: prune, repair).
    pub fn save_index_in(&self, domain: &DomainKeys, file: &IndexFile) -> Result<Id, RepoError> {
        let bytes = file.encode(&domain.index_key, &self.id());
        let id = Id::of_bytes(&bytes);
        self.store.write(&layout::in_dir(layout::INDEX, &id), bytes)?;
        let packs: Vec<_> = file.packs.iter().map(|p| (p.id, p.size, p.blobs.clone())).collect();
        self.db().add_index_file(&id, Some(&domain.id), &packs)?;
        Ok(id)
    }

    pub fn pack_key(&self, pack_id: &Id) -> Result<SymKey, RepoError> {
        if let Some(key) = self.pack_keys.lock().unwrap_or_else(|p| p.into_inner()).get(pack_id) {
            return Ok(key.clone());
        }
        let secret = self.require_full_key("reading backed-up data")?;
        let path = layout::pack(pack_id);
        let header = self.store.read_range(&path, 0, HEADER_LEN as u64)?;
        let key = pack::open_pack_key(secret, &header).map_err(RepoError::format(path))?;
        let mut cache = self.pack_keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PACK_KEY_CACHE {
            cache.clear();
        }
        cache.insert(*pack_id, key.clone());
        Ok(key)
    }

    /// Reads and verifies the blob at `location`, falling back to other copies as `copies`
    /// allows: the one place that decides which copy of a blob a read may use.
    pub fn read_blob(&self, location: &BlobLocation, copies: Copies) -> Result<Vec<u8>, RepoError> {
        let mut out = Vec::new();
        self.read_blob_into(location, copies, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// [`read_blob`](Self::read_blob) into `out`, with `sealed` as the buffer for the
    /// encrypted blob: a reader of many blobs reuses both.
    pub fn read_blob_into(
        &self,
        location: &BlobLocation,
        copies: Copies,
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RepoError> {
        match copies {
            Copies::Exactly => self.read_one_copy(location, sealed, out),
            Copies::Listed => self.read_listed_copies(location, sealed, out),
            Copies::Current => match self.read_listed_copies(location, sealed, out) {
                Err(RepoError::Store(e)) if e.is_not_found() => {
                    self.sync_index()?;
                    self.read_listed_copies(&self.locate(&location.entry.id)?, sealed, out)
                }
                other => other,
            },
        }
    }

    /// The copy at `location`; when it cannot be read (its pack is missing or damaged) and the
    /// index knows another copy, that one: a blob uploaded again after its pack was lost is
    /// found however the index orders the two.
    fn read_listed_copies(
        &self,
        location: &BlobLocation,
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RepoError> {
        let first = match self.read_one_copy(location, sealed, out) {
            Err(RepoError::WriteOnly { what }) => return Err(RepoError::WriteOnly { what }),
            Err(e) => e,
            ok => return ok,
        };
        for other in self.db().blob_locations(&location.entry.id)? {
            if other.pack != location.pack && self.read_one_copy(&other, sealed, out).is_ok() {
                log::warn!("blob {} read from its copy in {}: {first}", location.entry.id, layout::pack(&other.pack));
                return Ok(());
            }
        }
        Err(first)
    }

    fn read_one_copy(&self, location: &BlobLocation, sealed: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), RepoError> {
        let key = self.pack_key(&location.pack)?;
        let path = layout::pack(&location.pack);
        let entry = &location.entry;
        // Checked again where the blob is opened; here it saves a read that could not verify.
        self.domain(&location.domain).ok_or_else(|| RepoError::ForeignDomain {
            object: format!("the index entry of blob {} in {path}", entry.id),
        })?;
        self.store.read_range_into(&path, entry.offset as u64, entry.length as u64, sealed)?;
        self.open_sealed_blob(&key, location, sealed, out)
    }

    /// Decrypts, decompresses and verifies one blob's sealed bytes (read however the caller
    /// read them) with the id key of the domain its index entry came from: the one place reads
    /// of backed-up data are checked.
    pub(super) fn open_sealed_blob(
        &self,
        key: &SymKey,
        location: &BlobLocation,
        sealed: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RepoError> {
        let entry = &location.entry;
        let path = layout::pack(&location.pack);
        let domain = self.domain(&location.domain).ok_or_else(|| RepoError::ForeignDomain {
            object: format!("the index entry of blob {} in {path}", entry.id),
        })?;
        pack::open_blob_into(key, &domain.id_key, entry, sealed, out)
            .map_err(RepoError::format(format!("blob {} in {path}", entry.id)))
    }

    /// Where a blob is, preferring this client's own domain: restore and the mount place a
    /// file's chunks by the lengths an entry gives, so a junk entry of another domain (lowest
    /// pack id, planted under a real id) must not be the one they get (issue 15).
    pub fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError> {
        self.db().blob_location_preferring(id, &self.keys.domain)?.ok_or(RepoError::MissingBlob(*id))
    }

    /// A blob by id: [`locate`](Self::locate)d and read with [`Copies::Current`].
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>, RepoError> {
        self.read_blob(&self.locate(id)?, Copies::Current)
    }

    /// The domain this client holds in which `plaintext` is the blob `id`, if any (cached
    /// trees are checked this way: the cache does not record their domain).
    pub fn domain_naming(&self, plaintext: &[u8], id: &Id) -> Option<Id> {
        self.domains().find(|d| d.id_key.blob_id(plaintext) == *id).map(|d| d.id)
    }

    /// Loads a tree, from the local cache when it was seen before.
    pub fn load_tree(&self, id: &Id) -> Result<Tree, RepoError> {
        let object = || format!("tree {id}");
        if let Some((_, bytes)) = self.cached_tree_verified(id, None)? {
            return Tree::decode(&bytes).map_err(RepoError::format(object()));
        }
        let location = self.locate(id)?;
        if location.entry.kind != BlobKind::Tree {
            return Err(RepoError::Corrupt { object: object(), detail: "the index lists it as data".into() });
        }
        // Over a network, a folder's neighbours in the pack are fetched (and cached) with it.
        let bytes = if self.store.is_local() {
            self.read_blob(&location, Copies::Current)?
        } else {
            self.fetch_tree_region(&location)?
        };
        let tree = Tree::decode(&bytes).map_err(RepoError::format(object()))?;
        self.db().store_tree(id, &bytes)?;
        Ok(tree)
    }
}

/// Which copies a read may use, on a repository in memory.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_kit::{memory_repo, noise};
    use crate::repo::Packer;

    #[test]
    fn copies_decides_which_other_copies_a_read_may_use() {
        let (repo, _cache) = memory_repo();
        let plain = noise(10_000, 7);
        let id = repo.keys.id_key.blob_id(&plain);
        // The same blob in two packs, each named by its own index file (as a re-upload after a
        // lost pack leaves it).
        let mut index_files = Vec::new();
        for _ in 0..2 {
            let before = repo.local_index_files().unwrap();
            let packer = Packer::in_domain(&repo, repo.keys.write_domain(), "test");
            packer.add(BlobKind::Data, id, plain.clone()).unwrap();
            packer.finish_and_index().unwrap();
            let after = repo.local_index_files().unwrap();
            index_files.push(*after.difference(&before).next().expect("a new index file"));
        }
        let copies = repo.blob_locations(&id).unwrap();
        assert_eq!(copies.len(), 2);
        let first = copies[0];
        let second = copies.iter().find(|c| c.pack != first.pack).copied().expect("two packs");
        let second_file = index_files
            .iter()
            .find(|f| repo.read_index_file(f).unwrap().1.packs.iter().any(|p| p.id == second.pack))
            .copied()
            .expect("the index file of the second copy");

        repo.delete_pack(&first.pack).unwrap();
        assert!(repo.read_blob(&first, Copies::Exactly).is_err(), "that copy only");
        assert_eq!(repo.read_blob(&second, Copies::Exactly).unwrap(), plain);
        assert_eq!(repo.read_blob(&first, Copies::Listed).unwrap(), plain, "another copy the index lists");

        // The local index forgets the second copy (as if a prune wrote it since it was read):
        // only `Current`, which re-reads the index when the pack is gone, finds it.
        repo.forget_local_index_files(&[second_file]).unwrap();
        assert!(repo.read_blob(&first, Copies::Listed).is_err(), "no other copy listed locally");
        assert_eq!(repo.read_blob(&first, Copies::Current).unwrap(), plain, "found after the index is re-read");
        assert_eq!(repo.load_blob(&id).unwrap(), plain);
    }
}
