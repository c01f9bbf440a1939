//! The check's own index: every index file read afresh from storage (not the local cache),
//! each one verified, their union held in memory (about 100 bytes per blob), and the packs it
//! lists compared with what storage holds.

use std::collections::{HashMap, HashSet};

use super::{describe, CheckReport};
use crate::format::index::IndexFile;
use crate::format::pack::{PackEntry, HEADER_LEN, TRAILER_FIXED_LEN};
use crate::id::Id;
use crate::layout;
use crate::repo::{BlobLocation, RepoError, Repository};

/// A pack as the index files describe it.
pub(super) struct IndexedPack {
    pub(super) id: Id,
    pub(super) size: u64,
    /// The domain of the index file that lists it (whose keys seal its table and name its blobs).
    pub(super) domain: Id,
    /// The (first) index file that lists it.
    pub(super) index_file: Id,
    pub(super) entries: Vec<PackEntry>,
}

/// The union of all readable index files.
#[derive(Default)]
pub(super) struct CheckIndex {
    pub(super) packs: Vec<IndexedPack>,
    /// By pack and domain: an index file of another key that claims a pack is kept apart, so
    /// it cannot stand in for the pack's own entries.
    pub(super) pack_numbers: HashMap<(Id, Id), usize>,
    /// Blob id → (pack number, entry number); the lowest pack id when several hold it, as in
    /// the local index cache.
    pub(super) blobs: HashMap<Id, (u32, u32)>,
}

impl CheckIndex {
    pub(super) fn locate(&self, blob: &Id) -> Option<BlobLocation> {
        let &(pack, entry) = self.blobs.get(blob)?;
        let pack = self.packs.get(pack as usize)?;
        Some(BlobLocation { pack: pack.id, entry: *pack.entries.get(entry as usize)?, domain: pack.domain })
    }

    fn add(&mut self, file_id: Id, domain: Id, file: IndexFile, report: &mut CheckReport) {
        let file_path = layout::in_dir(layout::INDEX, &file_id);
        for listed in file.packs {
            let pack_path = layout::pack(&listed.id);
            for entry in &listed.blobs {
                let end = u64::from(entry.offset) + u64::from(entry.length);
                if (entry.offset as usize) < HEADER_LEN || end + TRAILER_FIXED_LEN as u64 > listed.size {
                    report.error(
                        &file_path,
                        format!("places blob {} outside pack {pack_path} ({} bytes)", entry.id, listed.size),
                    );
                }
            }
            if let Some(&n) = self.pack_numbers.get(&(listed.id, domain)) {
                let known = &self.packs[n];
                if known.size != listed.size {
                    report.error(
                        pack_path,
                        format!(
                            "index files disagree on its size: {} says {} bytes, {file_path} says {}",
                            layout::in_dir(layout::INDEX, &known.index_file),
                            known.size,
                            listed.size
                        ),
                    );
                }
                continue;
            }
            let n = self.packs.len();
            for (i, entry) in listed.blobs.iter().enumerate() {
                let here = (n as u32, i as u32);
                self.blobs
                    .entry(entry.id)
                    .and_modify(|slot| {
                        if self.packs[slot.0 as usize].id > listed.id {
                            *slot = here;
                        }
                    })
                    .or_insert(here);
            }
            self.pack_numbers.insert((listed.id, domain), n);
            self.packs.push(IndexedPack {
                id: listed.id,
                size: listed.size,
                domain,
                index_file: file_id,
                entries: listed.blobs,
            });
        }
    }
}

pub(super) fn load_index(
    repo: &Repository,
    listing: Vec<(String, u64)>,
    report: &mut CheckReport,
) -> Result<CheckIndex, RepoError> {
    let mut files = Vec::new();
    for (path, size) in listing {
        match path.strip_prefix(layout::INDEX).and_then(Id::from_hex) {
            Some(id) => files.push((id, size)),
            None => report.warn(path, "not an index file (its name is not an id); ignored"),
        }
    }
    files.sort();
    let mut index = CheckIndex::default();
    // Read several at a time (a round trip each on a remote store), added in name order.
    let read = repo.read_index_files(&files);
    for ((id, size), read) in files.into_iter().zip(read) {
        match read {
            Ok((domain, file)) => {
                report.index_files_checked += 1;
                report.bytes_read += size;
                index.add(id, domain, file, report);
            }
            // Removed since the listing, by a concurrent prune.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) => {
                report.index_files_checked += 1;
                report.error(layout::in_dir(layout::INDEX, &id), format!("unreadable index file: {}", describe(&e)));
            }
        }
    }
    Ok(index)
}

/// Compares the index with the packs in storage. Returns the packs that are missing.
pub(super) fn check_packs(
    repo: &Repository,
    index: &CheckIndex,
    report: &mut CheckReport,
) -> Result<HashSet<Id>, RepoError> {
    let mut stored: HashMap<Id, (String, u64)> = HashMap::new();
    for (path, size) in repo.list_objects(layout::DATA)? {
        let name = path.rsplit('/').next().unwrap_or_default();
        match Id::from_hex(name) {
            Some(id) if path == layout::pack(&id) => {
                stored.insert(id, (path, size));
            }
            Some(id) => report
                .warn(path, format!("pack stored outside its folder (expected {}); it is not used", layout::pack(&id))),
            None => report.warn(path, "not a pack (its name is not an id); ignored"),
        }
    }

    let mut missing = HashSet::new();
    for pack in &index.packs {
        report.packs_checked += 1;
        let path = layout::pack(&pack.id);
        let listed_by = layout::in_dir(layout::INDEX, &pack.index_file);
        // Some stores list without sizes (or lag behind): ask the object itself before blaming it.
        let size = match stored.remove(&pack.id) {
            Some((_, size)) if size == pack.size => Some(size),
            _ => repo.object_size(&path)?,
        };
        match size {
            None => {
                missing.insert(pack.id);
                report.error(
                    path,
                    format!("missing from storage; {listed_by} lists it with {} blobs", pack.entries.len()),
                );
            }
            Some(size) if size != pack.size => report
                .error(path, format!("size is {size} bytes but {listed_by} says {}: truncated or replaced", pack.size)),
            Some(_) => {}
        }
    }

    let mut orphans: Vec<(String, u64)> = stored.into_values().collect();
    orphans.sort();
    for (path, size) in orphans {
        report.warn(
            path,
            format!(
                "orphan pack ({size} bytes) in no index file, usually left by an interrupted backup; \
                 prune removes it"
            ),
        );
    }
    Ok(missing)
}
