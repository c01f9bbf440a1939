//! Files cache: path (raw bytes) → what the file was at the last backup (device, inode, size,
//! mtime, ctime) and its content blob ids, so an unchanged file is re-backed-up without being
//! read. Deciding whether a file is unchanged, and checking that its blobs are still in the
//! index, is the archiver's job; this only stores and returns the record.
//!
//! Content ids are stored as one BLOB of concatenated 32-byte ids; extended attributes as
//! postcard, so an unchanged file's are not read again either (changing them changes ctime).
//! `dev`, `ino` and `size` are stored bit for bit in SQLite's signed 64-bit integers.

use rusqlite::types::Type;
use rusqlite::OptionalExtension;

use super::{Db, DbError};
use crate::format::tree::Xattr;
use crate::id::{Id, ID_LEN};

/// A file as seen by the last backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub content: Vec<Id>,
    pub xattrs: Vec<Xattr>,
}

// SQLite integers are i64; these u64 are stored with their bits unchanged.
fn to_sql_u64(v: u64) -> i64 {
    v as i64
}

fn from_sql_u64(v: i64) -> u64 {
    v as u64
}

fn cached_file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedFile> {
    let blob: Vec<u8> = r.get(5)?;
    if !blob.len().is_multiple_of(ID_LEN) {
        let e = format!("content of {} bytes is not a list of ids", blob.len());
        return Err(rusqlite::Error::FromSqlConversionFailure(5, Type::Blob, e.into()));
    }
    let content =
        blob.chunks_exact(ID_LEN).map(|c| Id(c.try_into().expect("chunks_exact yields ID_LEN bytes"))).collect();
    let xattrs: Vec<u8> = r.get(6)?;
    let xattrs = crate::format::from_postcard(&xattrs, "cached extended attributes")
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, Type::Blob, e.into()))?;
    Ok(CachedFile {
        dev: from_sql_u64(r.get(0)?),
        ino: from_sql_u64(r.get(1)?),
        size: from_sql_u64(r.get(2)?),
        mtime_ns: r.get(3)?,
        ctime_ns: r.get(4)?,
        content,
        xattrs,
    })
}

impl Db {
    /// Ties the files cache to the machine that backs up. A database copied to another machine
    /// (or restored onto a new one) describes the files of the old one, whose device and inode
    /// numbers can coincide with different files here: when `machine` differs from the one
    /// recorded, the files cache is cleared. Returns the previous machine when it did that.
    pub fn claim_files_cache(&mut self, machine: &str) -> Result<Option<String>, DbError> {
        self.write("checking the owner of the files cache", |tx| {
            let previous: Option<String> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = 'files_cache_machine'")?
                .query_row([], |r| r.get(0))
                .optional()?;
            if previous.as_deref() == Some(machine) {
                return Ok(None);
            }
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('files_cache_machine', ?1)", [machine])?;
            let had_files: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM files)", [], |r| r.get(0))?;
            tx.execute("DELETE FROM files", [])?;
            Ok(previous.filter(|_| had_files))
        })
    }

    /// The record of `path` from the last backup, if any.
    pub fn cached_file(&self, path: &[u8]) -> Result<Option<CachedFile>, DbError> {
        let mut record = None;
        self.cached_files(&mut [(path, &mut record)])?;
        Ok(record)
    }

    /// Fills in the record of each path from the last backup (`None` where there is none).
    /// One read transaction for them all: a directory's files cost one lock, not one each.
    pub fn cached_files(&self, lookups: &mut [(&[u8], &mut Option<CachedFile>)]) -> Result<(), DbError> {
        self.read("reading the files cache", |conn| {
            let tx = conn.unchecked_transaction()?;
            let mut stmt = tx.prepare_cached(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, content, xattrs FROM files WHERE path = ?1",
            )?;
            for (path, record) in lookups.iter_mut() {
                **record = stmt.query_row([*path], cached_file_row).optional()?;
            }
            drop(stmt);
            tx.commit()
        })
    }
    /// Records a batch of files (replacing earlier records of the same paths) in one
    /// transaction; call it every few thousand files.
    pub fn store_files(&mut self, files: &[(Vec<u8>, CachedFile)]) -> Result<(), DbError> {
        self.write("writing the files cache", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (path, dev, ino, size, mtime_ns, ctime_ns, content, xattrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut content = Vec::new();
            for (path, f) in files {
                content.clear();
                f.content.iter().for_each(|id| content.extend_from_slice(&id.0));
                stmt.execute((
                    path,
                    to_sql_u64(f.dev),
                    to_sql_u64(f.ino),
                    to_sql_u64(f.size),
                    f.mtime_ns,
                    f.ctime_ns,
                    &content,
                    crate::format::to_postcard(&f.xattrs),
                ))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u8, chunks: usize) -> CachedFile {
        CachedFile {
            dev: u64::MAX - n as u64,
            ino: 1 << 63 | n as u64,
            size: 4096 * n as u64,
            mtime_ns: -1_000_000_007,
            ctime_ns: 1_700_000_000_123_456_789,
            content: (0..chunks).map(|i| Id::of_bytes(&[n, i as u8])).collect(),
            xattrs: (0..n % 3)
                .map(|i| Xattr { name: vec![b'u', i].into(), value: vec![n; i as usize].into() })
                .collect(),
        }
    }

    #[test]
    fn the_files_cache_is_cleared_when_another_machine_claims_it() {
        let mut db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        assert_eq!(db.claim_files_cache("host-a").unwrap(), None, "a new database has no previous machine");
        let file = CachedFile {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
            content: vec![Id::of_bytes(b"x")],
            xattrs: Vec::new(),
        };
        db.store_files(&[(b"/f".to_vec(), file)]).unwrap();
        assert_eq!(db.claim_files_cache("host-a").unwrap(), None);
        assert!(db.cached_file(b"/f").unwrap().is_some(), "same machine: kept");
        assert_eq!(db.claim_files_cache("host-b").unwrap().as_deref(), Some("host-a"));
        assert!(db.cached_file(b"/f").unwrap().is_none(), "another machine: cleared");
        assert_eq!(db.claim_files_cache("host-b").unwrap(), None);
    }

    #[test]
    fn round_trip_and_replace() {
        let mut db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        let non_utf8 = b"/home/\xff\xfe/photo.jpg".to_vec();
        let files = vec![(non_utf8.clone(), file(1, 3)), (b"/empty".to_vec(), file(2, 0))];
        db.store_files(&files).unwrap();
        assert_eq!(db.cached_file(&non_utf8).unwrap(), Some(file(1, 3)));
        assert_eq!(db.cached_file(b"/empty").unwrap(), Some(file(2, 0)));
        assert_eq!(db.cached_file(b"/missing").unwrap(), None);
        db.store_files(&[(non_utf8.clone(), file(3, 1))]).unwrap();
        assert_eq!(db.cached_file(&non_utf8).unwrap(), Some(file(3, 1)));
    }

    #[test]
    fn malformed_content_is_reported_corrupt() {
        let db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        db.conn.execute("INSERT INTO files VALUES (x'2f61', 1, 2, 3, 4, 5, x'0102', x'')", []).unwrap();
        // Content ids of the wrong length, then attributes that do not decode.
        db.conn.execute("INSERT INTO files VALUES (x'2f62', 1, 2, 3, 4, 5, x'', x'05ff')", []).unwrap();
        for path in [b"/a", b"/b"] {
            let err = db.cached_file(path).unwrap_err();
            assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("delete it"), "{err}");
        }
    }
}
