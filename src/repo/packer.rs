//! Packs written in one go outside a backup: prune's repack and `repair snapshots`' new trees.
//! A [`Packer`] keeps one open pack per blob kind in memory for one deduplication domain,
//! uploads each as it fills, and indexes what it wrote in that domain — packs first, index
//! after, the order every writer keeps so that an index never names a pack storage lacks.
//! (The backup sink next door, [`super::sink::BlobSink`], which copy also uses, streams
//! through spooled packs on worker threads, but closes packs by the same [`pack_target`].)

use std::collections::HashMap;

use super::{RepoError, Repository};
use crate::crashpoint;
use crate::format::config::Config;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobKind, PackWriter};
use crate::id::Id;
use crate::keys::DomainKeys;
use crate::layout;

/// The size at which a pack of `kind` is closed. Tree packs close at a quarter: trees are read
/// on every listing, so smaller packs keep a cold `ls` from fetching megabytes of neighbours.
pub fn pack_target(config: &Config, kind: BlobKind) -> u64 {
    match kind {
        BlobKind::Data => u64::from(config.pack_target),
        BlobKind::Tree => u64::from(config.pack_target) / 4,
    }
}

pub struct Packer<'a> {
    repo: &'a Repository,
    domain: DomainKeys,
    open: HashMap<BlobKind, PackWriter<Vec<u8>>>,
    done: Vec<IndexPack>,
    /// Hit after each pack is stored (the crash matrix kills there).
    crash_point: &'static str,
}

impl<'a> Packer<'a> {
    pub fn new(repo: &'a Repository, domain: DomainKeys, crash_point: &'static str) -> Packer<'a> {
        Packer { repo, domain, open: HashMap::new(), done: Vec::new(), crash_point }
    }

    fn local(e: std::io::Error) -> RepoError {
        RepoError::Local { what: "building a pack in memory".into(), source: e }
    }

    /// Adds the blob `id` (its plaintext), compressing and sealing it; uploads the pack when full.
    pub fn add(&mut self, kind: BlobKind, id: Id, plain: &[u8]) -> Result<(), RepoError> {
        let level = self.repo.config.compression_level;
        self.writer(kind)?.add_blob(id, plain, level).map_err(Self::local)?;
        self.store_if_full(kind)
    }

    fn writer(&mut self, kind: BlobKind) -> Result<&mut PackWriter<Vec<u8>>, RepoError> {
        let (public, index_key) = (&self.repo.keys.public, &self.domain.index_key);
        Ok(match self.open.entry(kind) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(PackWriter::new(public, index_key, kind, Vec::new()).map_err(Self::local)?)
            }
        })
    }

    fn store_if_full(&mut self, kind: BlobKind) -> Result<(), RepoError> {
        let full = self.open.get(&kind).is_some_and(|w| w.len() >= pack_target(&self.repo.config, kind));
        if full {
            if let Some(writer) = self.open.remove(&kind) {
                self.store(writer)?;
            }
        }
        Ok(())
    }

    fn store(&mut self, writer: PackWriter<Vec<u8>>) -> Result<(), RepoError> {
        let finished = writer.finish().map_err(Self::local)?;
        self.repo.store.write(&layout::pack(&finished.id), finished.out)?;
        crashpoint::hit(self.crash_point);
        self.done.push(IndexPack { id: finished.id, size: finished.size, blobs: finished.entries });
        Ok(())
    }

    /// Stores the packs still open and returns every pack written, for the caller to index
    /// (prune indexes them together with the packs it keeps).
    pub fn finish(mut self) -> Result<Vec<IndexPack>, RepoError> {
        let mut open: Vec<_> = self.open.drain().collect();
        open.sort_by_key(|(kind, _)| *kind == BlobKind::Tree);
        for (_, writer) in open {
            if !writer.is_empty() {
                self.store(writer)?;
            }
        }
        Ok(self.done)
    }

    /// [`finish`](Self::finish), then one index file of the new packs in this domain.
    pub fn finish_and_index(self) -> Result<(), RepoError> {
        let (repo, domain) = (self.repo, self.domain.clone());
        let packs = self.finish()?;
        if !packs.is_empty() {
            repo.save_index_in(&domain, &IndexFile { packs })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_kit::{memory_repo_with, noise, small_packs};

    fn stored_packs(repo: &Repository) -> usize {
        repo.list_object_ids(layout::DATA).unwrap().len()
    }

    fn add(packer: &mut Packer<'_>, repo: &Repository, kind: BlobKind, seed: u64) -> (Id, Vec<u8>) {
        let plain = noise(6 << 10, seed);
        let id = repo.keys.id_key.blob_id(&plain);
        packer.add(kind, id, &plain).unwrap();
        (id, plain)
    }

    #[test]
    fn tree_packs_close_at_a_quarter_of_the_target_and_data_packs_at_it() {
        let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
        let mut packer = Packer::new(&repo, repo.keys.write_domain(), "packer-test");
        let mut added = Vec::new();
        // Blobs of 6 KiB: a tree pack (16 KiB) is full at the third, a data pack (64 KiB) at
        // the eleventh.
        for seed in 0..2 {
            added.push(add(&mut packer, &repo, BlobKind::Tree, seed));
            added.push(add(&mut packer, &repo, BlobKind::Data, 100 + seed));
        }
        assert_eq!(stored_packs(&repo), 0, "no pack is stored while it has room");
        added.push(add(&mut packer, &repo, BlobKind::Tree, 2));
        assert_eq!(stored_packs(&repo), 1, "the tree pack closes at a quarter");
        for seed in 2..10 {
            added.push(add(&mut packer, &repo, BlobKind::Data, 100 + seed));
        }
        assert_eq!(stored_packs(&repo), 1, "ten data blobs still fit");
        added.push(add(&mut packer, &repo, BlobKind::Data, 110));
        assert_eq!(stored_packs(&repo), 2, "the data pack closes at the target");
        added.push(add(&mut packer, &repo, BlobKind::Tree, 3));
        assert!(repo.list_object_ids(layout::INDEX).unwrap().is_empty(), "no index before finishing");

        packer.finish_and_index().unwrap();
        assert_eq!(stored_packs(&repo), 3, "the open tree pack is stored at the end");
        let index = repo.list_object_ids(layout::INDEX).unwrap();
        assert_eq!(index.len(), 1, "one index file for the packs written");
        let (_, file) = repo.read_index_file(&index[0].0).unwrap();
        let mut named: Vec<Id> = file.packs.iter().map(|p| p.id).collect();
        let mut listed: Vec<Id> = repo.list_object_ids(layout::DATA).unwrap().into_iter().map(|(id, _)| id).collect();
        named.sort();
        listed.sort();
        assert_eq!(named, listed, "the index names exactly the packs stored");
        for (id, plain) in &added {
            assert_eq!(&repo.load_blob(id).unwrap(), plain, "every blob reads back through the index");
        }
    }

    #[test]
    fn nothing_added_writes_nothing() {
        let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
        Packer::new(&repo, repo.keys.write_domain(), "packer-test").finish_and_index().unwrap();
        assert_eq!(stored_packs(&repo), 0);
        assert!(repo.list_object_ids(layout::INDEX).unwrap().is_empty());
    }

    #[test]
    fn pack_targets_follow_the_config() {
        let (repo, _cache) = memory_repo_with(small_packs(1 << 20));
        assert_eq!(pack_target(repo.config(), BlobKind::Data), 1 << 20);
        assert_eq!(pack_target(repo.config(), BlobKind::Tree), 1 << 18);
    }
}
