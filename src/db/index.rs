//! Blob index cache: a mirror of the repository's `index/` files, so that finding a blob needs
//! no storage read. Each row remembers the index file it came from, so removing an index file
//! (after prune rewrote it) removes exactly its rows. A blob may sit in several packs (two
//! clients uploaded the same chunk at once): all rows are kept and lookups pick the lowest pack
//! id, so every caller sees the same answer.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row};

use super::{Db, DbError};
use crate::format::pack::{BlobKind, PackEntry};
use crate::id::Id;

/// Where a blob lives: its pack, its entry in that pack's table, and the deduplication domain
/// whose index file says so (the blob is verified with that domain's id key: an index file of
/// another domain cannot vouch for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub entry: PackEntry,
    pub domain: Id,
}

const KIND_DATA: i64 = 0;
const KIND_TREE: i64 = 1;

fn kind_code(kind: BlobKind) -> i64 {
    match kind {
        BlobKind::Data => KIND_DATA,
        BlobKind::Tree => KIND_TREE,
    }
}

/// Reads `kind, pos, len, raw_len` starting at column `first` into an entry for `id`.
fn entry_from_row(row: &Row<'_>, first: usize, id: Id) -> rusqlite::Result<PackEntry> {
    let kind = match row.get::<_, i64>(first)? {
        KIND_DATA => BlobKind::Data,
        KIND_TREE => BlobKind::Tree,
        other => {
            let e = format!("unknown blob kind {other}");
            return Err(rusqlite::Error::FromSqlConversionFailure(first, Type::Integer, e.into()));
        }
    };
    Ok(PackEntry { id, kind, offset: row.get(first + 1)?, length: row.get(first + 2)?, raw_len: row.get(first + 3)? })
}

pub(super) fn location_from_row(row: &Row<'_>, blob: Id) -> rusqlite::Result<BlobLocation> {
    Ok(BlobLocation { pack: row.get(0)?, entry: entry_from_row(row, 1, blob)?, domain: row.get(5)? })
}

impl Db {
    /// Ids of the index files already imported.
    pub fn index_files(&self) -> Result<HashSet<Id>, DbError> {
        self.read("listing imported index files", |conn| {
            let mut stmt = conn.prepare_cached("SELECT id FROM index_files")?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect();
            ids
        })
    }

    /// Imports one index file of `domain`: its packs (id, size) and their entries, in one
    /// transaction. `None` records a file this client cannot open (another key's domain), so
    /// it is not read again. Importing an index file already present does nothing.
    pub fn add_index_file(
        &mut self,
        index_id: &Id,
        domain: Option<&Id>,
        packs: &[(Id, u64, Vec<PackEntry>)],
    ) -> Result<(), DbError> {
        self.write("importing an index file", |tx| {
            if tx.prepare_cached("SELECT 1 FROM index_files WHERE id = ?1")?.exists([index_id])? {
                return Ok(());
            }
            tx.prepare_cached("INSERT INTO index_files (id, domain) VALUES (?1, ?2)")?.execute((index_id, domain))?;
            let file_n = tx.last_insert_rowid();
            let mut add_pack = tx.prepare_cached("INSERT OR IGNORE INTO packs (id, size) VALUES (?1, ?2)")?;
            let mut pack_n = tx.prepare_cached("SELECT n FROM packs WHERE id = ?1")?;
            let mut link = tx.prepare_cached("INSERT OR IGNORE INTO index_packs (index_file, pack) VALUES (?1, ?2)")?;
            let mut add_blob = tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (blob, pack, index_file, kind, pos, len, raw_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (pack, size, entries) in packs {
                add_pack.execute((pack, size))?;
                let n: i64 = pack_n.query_row([pack], |r| r.get(0))?;
                link.execute((file_n, n))?;
                for e in entries {
                    add_blob.execute((&e.id, n, file_n, kind_code(e.kind), e.offset, e.length, e.raw_len))?;
                }
            }
            Ok(())
        })
    }

    /// Forgets the index files recorded as opened by no key this client held, so the next
    /// sync reads them again.
    pub fn forget_unopened_index_files(&mut self) -> Result<(), DbError> {
        self.write("forgetting unopened index files", |tx| {
            tx.execute("DELETE FROM index_files WHERE domain IS NULL", [])?;
            Ok(())
        })
    }

    /// Forgets index files (deleted from the repository): their blob rows, and the packs no
    /// remaining index file lists.
    pub fn remove_index_files(&mut self, ids: &[Id]) -> Result<(), DbError> {
        self.write("removing index files", |tx| {
            let mut find = tx.prepare_cached("SELECT n FROM index_files WHERE id = ?1")?;
            for id in ids {
                let Some(n) = find.query_row([id], |r| r.get::<_, i64>(0)).optional()? else {
                    continue;
                };
                tx.prepare_cached("DELETE FROM blobs WHERE index_file = ?1")?.execute([n])?;
                tx.prepare_cached("DELETE FROM index_packs WHERE index_file = ?1")?.execute([n])?;
                tx.prepare_cached("DELETE FROM index_files WHERE n = ?1")?.execute([n])?;
            }
            tx.execute("DELETE FROM packs WHERE NOT EXISTS (SELECT 1 FROM index_packs WHERE pack = packs.n)", [])?;
            Ok(())
        })
    }

    /// Forgets packs found missing (or replaced) in the repository: their blob rows go, so
    /// nothing deduplicates against them or reads from them, while the index files that list
    /// them stay imported (`coffer repair index` rewrites those). Returns the blobs dropped.
    pub fn forget_packs(&mut self, packs: &[Id]) -> Result<u64, DbError> {
        self.write("forgetting missing packs", |tx| {
            let mut find = tx.prepare_cached("SELECT n FROM packs WHERE id = ?1")?;
            let mut dropped = 0;
            for pack in packs {
                let Some(n) = find.query_row([pack], |r| r.get::<_, i64>(0)).optional()? else {
                    continue;
                };
                dropped += tx.prepare_cached("DELETE FROM blobs WHERE pack = ?1")?.execute([n])? as u64;
                tx.prepare_cached("DELETE FROM index_packs WHERE pack = ?1")?.execute([n])?;
                tx.prepare_cached("DELETE FROM packs WHERE n = ?1")?.execute([n])?;
            }
            Ok(dropped)
        })
    }

    /// Every place `blob` is stored, lowest pack id first: the first is what
    /// [`Db::blob_location`] gives, the others are fallbacks when it cannot be read.
    pub fn blob_locations(&self, blob: &Id) -> Result<Vec<BlobLocation>, DbError> {
        self.read("looking up a blob", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT p.id, b.kind, b.pos, b.len, b.raw_len, f.domain FROM blobs b JOIN packs p ON p.n = b.pack
                 JOIN index_files f ON f.n = b.index_file WHERE b.blob = ?1 ORDER BY p.id, f.domain",
            )?;
            let rows = stmt.query_map([blob], |r| location_from_row(r, *blob))?.collect();
            rows
        })
    }

    /// Where `blob` is stored; the lowest pack id when several packs hold it. Called per block
    /// by the mount, hence the cached statement.
    pub fn blob_location(&self, blob: &Id) -> Result<Option<BlobLocation>, DbError> {
        self.read("looking up a blob", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT p.id, b.kind, b.pos, b.len, b.raw_len, f.domain FROM blobs b JOIN packs p ON p.n = b.pack
                 JOIN index_files f ON f.n = b.index_file WHERE b.blob = ?1 ORDER BY p.id, f.domain LIMIT 1",
            )?;
            stmt.query_row([blob], |r| location_from_row(r, *blob)).optional()
        })
    }

    /// Where `blob` is stored, preferring the copies an index file of `domain` lists (then the
    /// lowest pack id). Readers pass their own domain: an entry of another domain under the
    /// same id is most likely junk, and its lengths must not place the blob in a file.
    pub fn blob_location_preferring(&self, blob: &Id, domain: &Id) -> Result<Option<BlobLocation>, DbError> {
        self.read("looking up a blob", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT p.id, b.kind, b.pos, b.len, b.raw_len, f.domain FROM blobs b JOIN packs p ON p.n = b.pack
                 JOIN index_files f ON f.n = b.index_file WHERE b.blob = ?1
                 ORDER BY f.domain IS NOT ?2, p.id, f.domain LIMIT 1",
            )?;
            stmt.query_row((blob, domain), |r| location_from_row(r, *blob)).optional()
        })
    }

    /// Every pack that an index file of `domain` says holds `blob`.
    pub fn blob_packs(&self, domain: &Id, blob: &Id) -> Result<Vec<Id>, DbError> {
        self.read("looking up a blob", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT p.id FROM blobs b JOIN packs p ON p.n = b.pack JOIN index_files f ON f.n = b.index_file
                 WHERE b.blob = ?1 AND f.domain = ?2 ORDER BY p.id",
            )?;
            let packs = stmt.query_map((blob, domain), |r| r.get(0))?.collect();
            packs
        })
    }

    /// Every pack with its size and blob entries, per domain whose index files list it (a pack
    /// appears under two domains only when an index file claims another key's pack).
    pub fn pack_contents(&self) -> Result<HashMap<(Id, Id), (u64, Vec<PackEntry>)>, DbError> {
        self.read("reading the blob index", |conn| {
            let mut out: HashMap<(Id, Id), (u64, Vec<PackEntry>)> = HashMap::new();
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT p.id, p.size, b.blob, b.kind, b.pos, b.len, b.raw_len, f.domain
                 FROM blobs b JOIN packs p ON p.n = b.pack JOIN index_files f ON f.n = b.index_file",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let pack: Id = row.get(0)?;
                let size: u64 = row.get(1)?;
                let entry = entry_from_row(row, 3, row.get(2)?)?;
                let domain: Id = row.get(7)?;
                out.entry((pack, domain)).or_insert_with(|| (size, Vec::new())).1.push(entry);
            }
            Ok(out)
        })
    }

    /// Whether an index file of `domain` lists `blob`: what a client writing in that domain may
    /// deduplicate against.
    pub fn has_blob(&self, domain: &Id, blob: &Id) -> Result<bool, DbError> {
        self.read("looking up a blob", |conn| {
            conn.prepare_cached(
                "SELECT 1 FROM blobs b JOIN index_files f ON f.n = b.index_file WHERE b.blob = ?1 AND f.domain = ?2",
            )?
            .exists((blob, domain))
        })
    }

    /// Calls `f` once per distinct blob and domain, in blob id order, with the lowest pack
    /// holding it there, among the blobs `domain`'s index files list (every domain's with
    /// `None`). With a domain, it loads the in-memory set for backup dedup.
    pub fn for_each_blob(&self, domain: Option<&Id>, mut f: impl FnMut(&Id, &BlobLocation)) -> Result<(), DbError> {
        self.read("reading the blob index", |conn| {
            let packs: HashMap<i64, Id> = conn
                .prepare_cached("SELECT n, id FROM packs")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let files: HashMap<i64, Option<Id>> = conn
                .prepare_cached("SELECT n, domain FROM index_files")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt =
                conn.prepare_cached("SELECT blob, pack, kind, pos, len, raw_len, index_file FROM blobs ORDER BY blob")?;
            let mut rows = stmt.query([])?;
            let mut current: Vec<BlobLocation> = Vec::new();
            while let Some(row) = rows.next()? {
                let blob: Id = row.get(0)?;
                let pack_n: i64 = row.get(1)?;
                let Some(pack) = packs.get(&pack_n).copied() else {
                    let e = format!("blob row refers to missing pack row {pack_n}");
                    return Err(rusqlite::Error::FromSqlConversionFailure(1, Type::Integer, e.into()));
                };
                let Some(Some(row_domain)) = files.get(&row.get::<_, i64>(6)?).copied() else { continue };
                if domain.is_some_and(|d| *d != row_domain) {
                    continue;
                }
                let here = BlobLocation { pack, entry: entry_from_row(row, 2, blob)?, domain: row_domain };
                if current.first().is_some_and(|loc| loc.entry.id != blob) {
                    for done in current.drain(..) {
                        f(&done.entry.id, &done);
                    }
                }
                // One location per (blob, domain): the lowest pack, as `blob_location` picks.
                match current.iter_mut().find(|loc| loc.domain == row_domain) {
                    Some(loc) if here.pack < loc.pack => *loc = here,
                    Some(_) => {}
                    None => current.push(here),
                }
            }
            for done in current {
                f(&done.entry.id, &done);
            }
            Ok(())
        })
    }

    /// Size of every pack some imported index file lists.
    pub fn pack_sizes(&self) -> Result<HashMap<Id, u64>, DbError> {
        self.read("listing packs", |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, size FROM packs")?;
            let sizes = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
            sizes
        })
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> Result<u64, DbError> {
        self.read("counting blobs", |conn| conn.query_row("SELECT COUNT(DISTINCT blob) FROM blobs", [], |r| r.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        Id::of_bytes(&n.to_le_bytes())
    }

    fn entry(blob: Id, offset: u32) -> PackEntry {
        PackEntry { id: blob, kind: BlobKind::Data, offset, length: 100, raw_len: 80 }
    }

    /// The domain the tests' index files belong to.
    const D: Id = Id([0xd0; 32]);

    fn db() -> Db {
        Db::open_in_memory(&id(0)).expect("in-memory database")
    }

    #[test]
    fn forgotten_packs_are_neither_found_nor_deduplicated_against() {
        let mut db = db();
        let (lost, kept, blob, only_lost) = (id(1), id(2), id(3), id(4));
        db.add_index_file(&id(8), Some(&D), &[(lost, 500, vec![entry(blob, 100), entry(only_lost, 300)])]).unwrap();
        db.add_index_file(&id(9), Some(&D), &[(kept, 700, vec![entry(blob, 120)])]).unwrap();
        let both = db.blob_locations(&blob).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], db.blob_location(&blob).unwrap().unwrap(), "the first is what blob_location gives");
        assert_eq!(db.forget_packs(&[lost, id(77)]).unwrap(), 2);
        assert_eq!(
            db.blob_locations(&blob).unwrap(),
            vec![BlobLocation { pack: kept, entry: entry(blob, 120), domain: D }]
        );
        assert!(!db.has_blob(&D, &only_lost).unwrap());
        assert_eq!(db.pack_sizes().unwrap(), HashMap::from([(kept, 700)]));
        // The index file stays imported: sync_index does not bring the lost pack back.
        assert!(db.index_files().unwrap().contains(&id(8)));
    }

    #[test]
    fn round_trip() {
        let mut db = db();
        let (pack, blob, tree) = (id(1), id(2), id(3));
        let tree_entry = PackEntry { id: tree, kind: BlobKind::Tree, offset: 200, length: 50, raw_len: 300 };
        db.add_index_file(&id(9), Some(&D), &[(pack, 1234, vec![entry(blob, 12), tree_entry])]).unwrap();
        assert_eq!(db.index_files().unwrap(), HashSet::from([id(9)]));
        assert_eq!(db.blob_location(&blob).unwrap(), Some(BlobLocation { pack, entry: entry(blob, 12), domain: D }));
        assert_eq!(db.blob_location(&tree).unwrap(), Some(BlobLocation { pack, entry: tree_entry, domain: D }));
        assert_eq!(db.blob_location(&id(4)).unwrap(), None);
        assert!(db.has_blob(&D, &blob).unwrap());
        assert!(!db.has_blob(&D, &id(4)).unwrap());
        assert_eq!(db.pack_sizes().unwrap(), HashMap::from([(pack, 1234)]));
        assert_eq!(db.blob_count().unwrap(), 2);
        let mut seen = Vec::new();
        db.for_each_blob(Some(&D), |b, loc| seen.push((*b, *loc))).unwrap();
        seen.sort_by_key(|(b, _)| *b);
        let mut want = vec![
            (blob, BlobLocation { pack, entry: entry(blob, 12), domain: D }),
            (tree, BlobLocation { pack, entry: tree_entry, domain: D }),
        ];
        want.sort_by_key(|(b, _)| *b);
        assert_eq!(seen, want);
    }

    #[test]
    fn add_is_idempotent() {
        let mut db = db();
        let packs = [(id(1), 10, vec![entry(id(2), 0), entry(id(3), 100)])];
        db.add_index_file(&id(9), Some(&D), &packs).unwrap();
        db.add_index_file(&id(9), Some(&D), &packs).unwrap();
        assert_eq!(db.blob_count().unwrap(), 2);
        assert_eq!(db.index_files().unwrap().len(), 1);
        let mut calls = 0;
        db.for_each_blob(Some(&D), |_, _| calls += 1).unwrap();
        assert_eq!(calls, 2);
    }

    #[test]
    fn blob_in_two_packs_resolves_to_lowest_pack() {
        let mut db = db();
        let blob = id(2);
        let (a, b) = if id(10) < id(11) { (id(10), id(11)) } else { (id(11), id(10)) };
        db.add_index_file(&id(20), Some(&D), &[(b, 10, vec![entry(blob, 7)])]).unwrap();
        db.add_index_file(&id(21), Some(&D), &[(a, 10, vec![entry(blob, 5)])]).unwrap();
        assert_eq!(db.blob_count().unwrap(), 1);
        let want = BlobLocation { pack: a, entry: entry(blob, 5), domain: D };
        assert_eq!(db.blob_location(&blob).unwrap(), Some(want));
        let mut seen = Vec::new();
        db.for_each_blob(Some(&D), |_, loc| seen.push(*loc)).unwrap();
        assert_eq!(seen, vec![want]);
        // The lower pack's index file goes: the other copy remains.
        db.remove_index_files(&[id(21)]).unwrap();
        assert_eq!(db.blob_location(&blob).unwrap(), Some(BlobLocation { pack: b, entry: entry(blob, 7), domain: D }));
    }

    #[test]
    fn remove_drops_blobs_and_unreferenced_packs() {
        let mut db = db();
        let shared_pack = id(1);
        db.add_index_file(
            &id(20),
            Some(&D),
            &[(shared_pack, 10, vec![entry(id(2), 0)]), (id(3), 30, vec![entry(id(4), 0)])],
        )
        .unwrap();
        db.add_index_file(
            &id(21),
            Some(&D),
            &[(shared_pack, 10, vec![entry(id(2), 0)]), (id(5), 50, vec![entry(id(6), 0)])],
        )
        .unwrap();
        db.remove_index_files(&[id(20), id(99)]).unwrap();
        assert_eq!(db.index_files().unwrap(), HashSet::from([id(21)]));
        assert!(!db.has_blob(&D, &id(4)).unwrap());
        assert!(db.has_blob(&D, &id(2)).unwrap());
        assert!(db.has_blob(&D, &id(6)).unwrap());
        assert_eq!(db.pack_sizes().unwrap(), HashMap::from([(shared_pack, 10), (id(5), 50)]));
        db.remove_index_files(&[id(21)]).unwrap();
        assert_eq!(db.blob_count().unwrap(), 0);
        assert!(db.pack_sizes().unwrap().is_empty());
        assert!(db.index_files().unwrap().is_empty());
        // Re-importing a removed index file works.
        db.add_index_file(&id(21), Some(&D), &[(id(5), 50, vec![entry(id(6), 0)])]).unwrap();
        assert!(db.has_blob(&D, &id(6)).unwrap());
    }

    #[test]
    fn hundred_thousand_blobs_in_one_transaction() {
        let mut db = db();
        let packs: Vec<(Id, u64, Vec<PackEntry>)> = (0..1000u32)
            .map(|p| (id(1_000_000 + p), 1 << 20, (0..100u32).map(|i| entry(id(p * 100 + i), i * 100)).collect()))
            .collect();
        let start = std::time::Instant::now();
        db.add_index_file(&id(u32::MAX), Some(&D), &packs).unwrap();
        eprintln!("100k blob rows inserted in {:?}", start.elapsed());
        assert_eq!(db.blob_count().unwrap(), 100_000);
        let start = std::time::Instant::now();
        let mut n = 0u64;
        db.for_each_blob(Some(&D), |_, _| n += 1).unwrap();
        eprintln!("100k blob rows read in {:?}", start.elapsed());
        assert_eq!(n, 100_000);
        assert_eq!(db.blob_location(&id(4242)).unwrap().map(|l| l.pack), Some(id(1_000_042)));
    }

    #[test]
    fn another_domains_index_neither_locates_for_dedup_nor_hides_the_real_copy() {
        let mut db = db();
        let other = Id([0xee; 32]);
        let (real_pack, junk_pack, blob) = (id(30), id(1), id(31));
        db.add_index_file(&id(40), Some(&D), &[(real_pack, 10, vec![entry(blob, 5)])]).unwrap();
        db.add_index_file(&id(41), Some(&other), &[(junk_pack, 10, vec![entry(blob, 9)])]).unwrap();
        db.add_index_file(&id(42), None, &[]).unwrap();
        assert!(db.has_blob(&D, &blob).unwrap());
        assert!(!db.has_blob(&Id([0xaa; 32]), &blob).unwrap());
        assert_eq!(db.blob_packs(&D, &blob).unwrap(), vec![real_pack]);
        let mut dedup = Vec::new();
        db.for_each_blob(Some(&D), |_, loc| dedup.push(*loc)).unwrap();
        assert_eq!(dedup.len(), 1);
        assert_eq!((dedup[0].pack, dedup[0].domain), (real_pack, D));
        // Reads see both, each with the domain that must verify it.
        let all: HashSet<(Id, Id)> = db.blob_locations(&blob).unwrap().iter().map(|l| (l.pack, l.domain)).collect();
        assert_eq!(all, HashSet::from([(junk_pack, other), (real_pack, D)]));
        assert!(db.index_files().unwrap().contains(&id(42)));
        assert_eq!(db.pack_contents().unwrap().len(), 2);
    }
}
