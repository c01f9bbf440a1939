//! Files cache: path (raw bytes) → what the file was at the last backup (device, inode, size,
//! mtime, ctime) and its content blob ids, so an unchanged file is re-backed-up without being
//! read. The path is stored as folder and name, the table's key, so that one folder's records
//! are read together. Deciding whether a file is unchanged, and checking that its blobs are
//! still in the index, is the archiver's job; this only stores and returns the record.
//!
//! Content ids are stored as one BLOB of concatenated 32-byte ids; extended attributes as
//! postcard, so an unchanged file's are not read again either (changing them changes ctime).
//! `dev`, `ino` and `size` are stored bit for bit in SQLite's signed 64-bit integers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{Db, DbError, BUSY_TIMEOUT, SCHEMA_VERSION};
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
    pub fn cached_files(&self, lookups: &mut [(&[u8], &mut Option<CachedFile>)]) -> Result<(), DbError> {
        self.read("reading the files cache", |conn| look_up(conn, lookups))
    }
    /// Records a batch of files (replacing earlier records of the same paths) in one
    /// transaction; call it every few thousand files.
    pub fn store_files(&mut self, files: &[(Vec<u8>, CachedFile)]) -> Result<(), DbError> {
        self.write("writing the files cache", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (dir, name, dev, ino, size, mtime_ns, ctime_ns, content, xattrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut content = Vec::new();
            for (path, f) in files {
                content.clear();
                f.content.iter().for_each(|id| content.extend_from_slice(&id.0));
                let (dir, name) = split_path(path);
                stmt.execute((
                    dir,
                    name,
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

/// One read transaction for all `lookups`: a directory's files cost one lock, not one each.
/// The files of one folder are neighbours in the table, so consecutive lookups in the same
/// folder are answered by one range read rather than a search each.
fn look_up(conn: &Connection, lookups: &mut [(&[u8], &mut Option<CachedFile>)]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let mut one = tx.prepare_cached(
        "SELECT dev, ino, size, mtime_ns, ctime_ns, content, xattrs FROM files WHERE dir = ?1 AND name = ?2",
    )?;
    let mut range = tx.prepare_cached(
        "SELECT dev, ino, size, mtime_ns, ctime_ns, content, xattrs, name FROM files
         WHERE dir = ?1 AND name BETWEEN ?2 AND ?3 ORDER BY name",
    )?;
    let mut rest = lookups;
    while let Some(((first, _), _)) = rest.split_first() {
        let dir = split_path(first).0;
        let in_dir = rest.iter().take_while(|(path, _)| split_path(path).0 == dir).count();
        let (group, after) = rest.split_at_mut(in_dir);
        rest = after;
        if let [(path, record)] = group {
            **record = one.query_row((dir, split_path(path).1), cached_file_row).optional()?;
            continue;
        }
        group.sort_unstable_by(|a, b| split_path(a.0).1.cmp(split_path(b.0).1));
        let low = split_path(group[0].0).1;
        let high = split_path(group[group.len() - 1].0).1;
        let mut wanted = group.iter_mut().peekable();
        let mut rows = range.query((dir, low, high))?;
        while let Some(row) = rows.next()? {
            let name = row.get_ref(7)?.as_blob()?;
            while wanted.next_if(|(path, _)| split_path(path).1 < name).is_some() {}
            match wanted.next_if(|(path, _)| split_path(path).1 == name) {
                Some((_, record)) => **record = Some(cached_file_row(row)?),
                None if wanted.peek().is_none() => break,
                None => {}
            }
        }
    }
    drop((one, range));
    tx.commit()
}

/// A path's folder and name: the table's key, so that one folder's files are neighbours.
fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

/// Reads the files cache of a database that may not be opened yet, on connections of its own.
///
/// A backup scans its sources while the repository's key is still being derived (a tenth of
/// a second of one core), and the scan's lookups need only this table. Until the key has
/// verified the config, the database is the one its unverified repository id names: this
/// reader only reads, never creates or changes anything, and gives up unless the database
/// already is what [`Db::open`] will accept (same schema version and repository id) and its
/// files cache belongs to this machine. Nothing it returns is trusted further: the archiver
/// checks every record against the file and the verified index before using it.
///
/// Each thread that looks up takes a connection of its own from a small pool, so lookups of
/// several scanner threads run side by side (WAL lets readers share the file).
pub struct FilesCacheReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl FilesCacheReader {
    /// `None` when there is no usable files cache at `path`: every file is then read.
    pub fn open(path: &Path, repo_id: &Id, machine: &str) -> Option<FilesCacheReader> {
        let conn = Self::connect(path).ok()?;
        let meta = "SELECT value FROM meta WHERE key = ?1";
        let version: Option<i64> = conn.query_row(meta, ["schema_version"], |r| r.get(0)).ok();
        let repo: Option<Id> = conn.query_row(meta, ["repo_id"], |r| r.get(0)).ok();
        let owner: Option<String> = conn.query_row(meta, ["files_cache_machine"], |r| r.get(0)).ok();
        let usable = version == Some(SCHEMA_VERSION) && repo == Some(*repo_id) && owner.as_deref() == Some(machine);
        usable.then(|| FilesCacheReader { path: path.to_path_buf(), idle: Mutex::new(vec![conn]) })
    }

    /// Never creates the file; refuses to write through this connection.
    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    /// As [`Db::cached_files`]; a failure means only that the files are read again.
    pub fn cached_files(&self, lookups: &mut [(&[u8], &mut Option<CachedFile>)]) -> Result<(), DbError> {
        let fail = |e| DbError::sqlite(&self.path, "reading the files cache", e);
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => Self::connect(&self.path).map_err(fail)?,
        };
        let result = look_up(&conn, lookups).map_err(fail);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        result
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
        db.conn.execute("INSERT INTO files VALUES (x'', x'61', 1, 2, 3, 4, 5, x'0102', x'')", []).unwrap();
        // Content ids of the wrong length, then attributes that do not decode.
        db.conn.execute("INSERT INTO files VALUES (x'', x'62', 1, 2, 3, 4, 5, x'', x'05ff')", []).unwrap();
        for path in [b"/a", b"/b"] {
            let err = db.cached_file(path).unwrap_err();
            assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("delete it"), "{err}");
        }
    }

    #[test]
    fn lookups_in_one_folder_find_each_record() {
        let mut db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        let stored: Vec<(Vec<u8>, CachedFile)> = [&b"/d/a"[..], b"/d/b", b"/d/c", b"/d/sub/a", b"/e/a", b"/d/\xff"]
            .iter()
            .enumerate()
            .map(|(n, p)| (p.to_vec(), file(n as u8, n)))
            .collect();
        db.store_files(&stored).unwrap();
        let wanted: [&[u8]; 8] = [b"/d/c", b"/d/a", b"/d/aa", b"/d/\xff", b"/d/sub/a", b"/e/a", b"/d/b", b"/d/z"];
        let mut found = vec![None; wanted.len()];
        let mut lookups: Vec<(&[u8], &mut Option<CachedFile>)> = wanted.iter().copied().zip(found.iter_mut()).collect();
        db.cached_files(&mut lookups).unwrap();
        for (path, record) in wanted.iter().zip(&found) {
            let expected = stored.iter().find(|(p, _)| p == path).map(|(_, f)| f.clone());
            assert_eq!(record, &expected, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn reader_opens_only_a_database_this_machine_owns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo").join("state.db");
        let repo = Id::of_bytes(b"repo");
        assert!(FilesCacheReader::open(&path, &repo, "here").is_none());
        assert!(!path.exists(), "the reader must not create the database");
        let mut db = Db::open(&path, &repo).unwrap();
        db.store_files(&[(b"/x/f".to_vec(), file(1, 1))]).unwrap();
        assert!(FilesCacheReader::open(&path, &repo, "here").is_none(), "no machine owns it yet");
        assert_eq!(db.claim_files_cache("here").unwrap(), None);
        db.store_files(&[(b"/x/f".to_vec(), file(1, 1))]).unwrap();
        assert!(FilesCacheReader::open(&path, &repo, "elsewhere").is_none());
        assert!(FilesCacheReader::open(&path, &Id::of_bytes(b"other"), "here").is_none());
        let reader = FilesCacheReader::open(&path, &repo, "here").expect("usable");
        let (mut f, mut g) = (None, None);
        reader.cached_files(&mut [(&b"/x/f"[..], &mut f), (&b"/x/g"[..], &mut g)]).unwrap();
        assert_eq!((f, g), (Some(file(1, 1)), None));
        // Several threads at once each get a connection.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut f = None;
                    reader.cached_files(&mut [(&b"/x/f"[..], &mut f)]).unwrap();
                    assert_eq!(f, Some(file(1, 1)));
                });
            }
        });
        db.conn.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'", []).unwrap();
        assert!(FilesCacheReader::open(&path, &repo, "here").is_none(), "another schema version");
    }

    proptest::proptest! {
        /// The range reads answer every lookup as a search of its own would.
        #[test]
        fn grouped_lookups_match_single_ones(
            stored in proptest::collection::btree_set((0..3usize, proptest::collection::vec(0..3u8, 1..3)), 0..20),
            wanted in proptest::collection::vec((0..3usize, proptest::collection::vec(0..3u8, 1..3)), 0..20),
        ) {
            const DIRS: [&[u8]; 3] = [b"", b"/a", b"/a/\xfe"];
            let path = |(dir, name): &(usize, Vec<u8>)| {
                let mut p = DIRS[*dir].to_vec();
                p.push(b'/');
                p.extend(name.iter().map(|b| [b'a', b'b', 0xff][*b as usize]));
                p
            };
            let mut db = Db::open_in_memory(&Id::default()).expect("in-memory database");
            let records: Vec<(Vec<u8>, CachedFile)> =
                stored.iter().enumerate().map(|(n, key)| (path(key), file(n as u8, 1))).collect();
            db.store_files(&records).unwrap();
            let mut wanted: Vec<Vec<u8>> = wanted.iter().map(path).collect();
            wanted.sort();
            wanted.dedup();
            let mut found = vec![None; wanted.len()];
            let mut lookups: Vec<(&[u8], &mut Option<CachedFile>)> =
                wanted.iter().map(|p| p.as_slice()).zip(found.iter_mut()).collect();
            db.cached_files(&mut lookups).unwrap();
            for (p, record) in wanted.iter().zip(&found) {
                proptest::prop_assert_eq!(record, &db.cached_file(p).unwrap());
                let expected = records.iter().find(|(q, _)| q == p).map(|(_, f)| f.clone());
                proptest::prop_assert_eq!(record, &expected);
            }
        }
    }
}
