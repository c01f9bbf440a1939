//! The local state: one SQLite database per repository (DESIGN.md §5). It owns the file, its
//! permissions and its schema; the tables live in one submodule each:
//! - `index`: mirror of the repository's `index/` files (blob → pack, offset, length);
//! - `files`: path → (device, inode, size, mtime, ctime, content ids), for unchanged re-backups;
//! - `snapshots`: the snapshots seen, to notice ones that vanish;
//! - `trees`: plaintext tree blobs, so `ls` and the mount skip storage reads.
//!
//! It is a cache: everything in it can be rebuilt from the repository and its loss loses no
//! data. So on a schema version mismatch or a file that is not a valid database it is deleted
//! and recreated empty, with a warning. It holds **no secret by construction** (DESIGN.md §1):
//! no key, password or credential has a column here; blob ids are keyed hashes, which reveal
//! nothing without the key. Tree blobs do hold file names, so the file is still made private
//! (0600 in a 0700 directory) and an existing one readable by others is refused.
//!
//! Concurrency follows bupstash's `querycache.rs`: WAL, a 30 s busy timeout, every write in an
//! IMMEDIATE transaction (so two writers queue instead of failing on lock upgrade).
//! Nothing outside SQLite may open the database file while a connection is open in this
//! process: closing any descriptor of it drops the process's POSIX locks, which the
//! connections rely on (sqlite.org, "How To Corrupt An SQLite Database File", 2.2). `Db` is
//! `Send`, not `Sync`: share it behind a `Mutex`.

mod error;
mod files;
mod index;
mod regions;
mod snapshots;
mod trees;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior};

pub use error::DbError;
pub use files::{CachedFile, FilesCacheReader};
pub use index::BlobLocation;

use crate::id::{Id, ID_LEN};

/// Bump on any change to `SCHEMA`: older databases are then rebuilt, never migrated.
const SCHEMA_VERSION: i64 = 5;
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Packs and index files get small integer keys so that each blob row stores two integers
/// instead of two more 32-byte ids.
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value);
CREATE TABLE index_files (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, domain BLOB);
CREATE TABLE packs (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
CREATE TABLE index_packs (
    index_file INTEGER NOT NULL, pack INTEGER NOT NULL, PRIMARY KEY (index_file, pack)
) WITHOUT ROWID;
CREATE INDEX index_packs_by_pack ON index_packs (pack);
CREATE TABLE blobs (
    blob BLOB NOT NULL, pack INTEGER NOT NULL, index_file INTEGER NOT NULL,
    kind INTEGER NOT NULL, pos INTEGER NOT NULL, len INTEGER NOT NULL, raw_len INTEGER NOT NULL,
    PRIMARY KEY (blob, pack, index_file)
) WITHOUT ROWID;
CREATE INDEX blobs_by_index_file ON blobs (index_file);
CREATE TABLE files (
    dir BLOB NOT NULL, name BLOB NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    content BLOB NOT NULL, xattrs BLOB NOT NULL,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
CREATE TABLE snapshots (id BLOB PRIMARY KEY NOT NULL, time INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE trees (id BLOB PRIMARY KEY NOT NULL, bytes BLOB NOT NULL);
CREATE TABLE snapshot_bodies (id BLOB PRIMARY KEY NOT NULL, signer BLOB NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
";

/// Tables holding repository data, cleared when another repository takes over the path.
const DATA_TABLES: &[&str] =
    &["blobs", "index_packs", "packs", "index_files", "files", "snapshots", "trees", "snapshot_bodies"];

/// The local database of one repository.
pub struct Db {
    conn: Connection,
    /// For error messages; `:memory:` for an in-memory database.
    path: PathBuf,
}

/// Why opening stopped short.
enum OpenError {
    /// The file is not a usable coffer database of this version: delete and recreate it.
    Stale(String),
    Fail(DbError),
}

impl Db {
    /// Opens or creates the database at `path`: parent dirs created with mode 0700, file 0600
    /// (also `-wal`/`-shm`). Refuses an existing file or directory that other users can access.
    /// A file of another schema version, or not a database at all, is replaced by an empty one.
    /// Opening with a `repo_id` other than the stored one clears every table.
    pub fn open(path: &Path, repo_id: &Id) -> Result<Db, DbError> {
        prepare_location(path)?;
        match Db::open_file(path, repo_id) {
            Ok(db) => Ok(db),
            Err(OpenError::Fail(e)) => Err(e),
            Err(OpenError::Stale(why)) => {
                log::warn!(
                    "local database {} {why}: rebuilding it (it is only a cache of the repository)",
                    path.display()
                );
                remove_db_files(path)?;
                prepare_location(path)?;
                Db::open_file(path, repo_id).map_err(|e| match e {
                    OpenError::Fail(e) => e,
                    OpenError::Stale(why) => stale_error(path, why),
                })
            }
        }
    }

    /// An empty database in memory, for tests.
    pub fn open_in_memory(repo_id: &Id) -> Result<Db, DbError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| DbError::sqlite(&path, "opening", e))?;
        Db::init(conn, path, repo_id).map_err(|e| match e {
            OpenError::Fail(e) => e,
            OpenError::Stale(why) => stale_error(Path::new(":memory:"), why),
        })
    }

    /// The file this database lives in (`:memory:` for an in-memory one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_file(path: &Path, repo_id: &Id) -> Result<Db, OpenError> {
        let conn = Connection::open(path).map_err(|e| OpenError::Fail(DbError::sqlite(path, "opening", e)))?;
        let db = Db::init(conn, path.to_path_buf(), repo_id)?;
        for suffix in ["-wal", "-shm"] {
            make_private(&sidecar(path, suffix)).map_err(OpenError::Fail)?;
        }
        Ok(db)
    }

    /// Sets the connection up and checks or creates the schema, in one IMMEDIATE transaction
    /// so that two processes opening a new database at once do not both create it.
    fn init(mut conn: Connection, path: PathBuf, repo_id: &Id) -> Result<Db, OpenError> {
        let fail = |op: &'static str| {
            let path = path.clone();
            move |e: rusqlite::Error| {
                if error::is_corruption(&e) {
                    OpenError::Stale(format!("is not a valid database ({e})"))
                } else {
                    OpenError::Fail(DbError::sqlite(&path, op, e))
                }
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail("setting the busy timeout"))?;
        conn.set_prepared_statement_cache_capacity(64);
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(fail("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            log::warn!(
                "local database {}: journal mode is {mode}, not WAL: readers will wait for writers",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail("setting synchronous"))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail("starting the schema transaction"))?;
        check_schema(&tx, repo_id, &path)?;
        regions::ensure_index(&tx).map_err(fail("indexing blobs by pack"))?;
        tx.commit().map_err(fail("committing the schema"))?;
        Ok(Db { conn, path })
    }

    /// A note this client keeps for itself between runs (e.g. that a backup is under way).
    pub fn note(&self, key: &str) -> Result<Option<String>, DbError> {
        self.read("reading a note", |conn| {
            conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([format!("note:{key}")], |r| r.get(0))
                .optional()
        })
    }

    /// Sets (`Some`) or clears (`None`) a note.
    pub fn set_note(&mut self, key: &str, value: Option<&str>) -> Result<(), DbError> {
        let key = format!("note:{key}");
        self.write("writing a note", |tx| {
            match value {
                Some(v) => tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", (&key, v))?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [&key])?,
            };
            Ok(())
        })
    }

    /// Runs `f` on the connection, naming `op` in any error.
    fn read<T>(&self, op: &'static str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        f(&self.conn).map_err(|e| DbError::sqlite(&self.path, op, e))
    }

    /// Runs `f` in one IMMEDIATE transaction, committed when `f` succeeds.
    fn write<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            crate::crashpoint::hit("db-commit");
            tx.commit()?;
            Ok(out)
        };
        run(&mut self.conn).map_err(|e| DbError::sqlite(&self.path, op, e))
    }
}

/// Creates the schema in an empty database, or checks its version and repository id.
fn check_schema(tx: &Transaction<'_>, repo_id: &Id, path: &Path) -> Result<(), OpenError> {
    let inner = || -> rusqlite::Result<Result<(), String>> {
        let objects: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        let has_meta: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )?;
        if objects == 0 {
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('repo_id', ?2)",
                (SCHEMA_VERSION, repo_id),
            )?;
            return Ok(Ok(()));
        }
        if !has_meta {
            return Ok(Err("was not written by coffer".to_string()));
        }
        let version: Option<i64> =
            tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
        if version != Some(SCHEMA_VERSION) {
            let found = version.map_or("none".to_string(), |v| v.to_string());
            return Ok(Err(format!("has schema version {found}, this coffer uses {SCHEMA_VERSION}")));
        }
        let stored: Option<Id> =
            tx.query_row("SELECT value FROM meta WHERE key = 'repo_id'", [], |r| r.get(0)).optional()?;
        if stored != Some(*repo_id) {
            log::info!("local database {} belonged to another repository: clearing it", path.display());
            for table in DATA_TABLES {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('repo_id', ?1)", [repo_id])?;
        }
        Ok(Ok(()))
    };
    match inner() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(OpenError::Stale(why)),
        Err(e) if error::is_corruption(&e) => Err(OpenError::Stale(format!("is not a valid database ({e})"))),
        Err(e) => Err(OpenError::Fail(DbError::sqlite(path, "checking the schema", e))),
    }
}

fn stale_error(path: &Path, reason: String) -> DbError {
    DbError::Unusable { path: path.to_path_buf(), reason }
}

/// Marks the database's folder as a cache (https://bford.info/cachedir/): it can be rebuilt,
/// so backup tools honouring the tag (Coffer's `--exclude-caches`, restic, Borg) skip it.
fn tag_as_cache(dir: &Path) {
    let tag = dir.join("CACHEDIR.TAG");
    if !tag.exists() {
        let text = format!(
            "{}\n# This folder holds Coffer's local database, a cache rebuilt from the repository.\n",
            crate::filter::CACHEDIR_TAG_SIGNATURE
        );
        if let Err(e) = fs::write(&tag, text) {
            log::debug!("writing {}: {e}", tag.display());
        }
    }
}

/// Creates the parent directories (0700) and the file (0600), refusing an existing file or
/// directory that other users can access.
fn prepare_location(path: &Path) -> Result<(), DbError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| DbError::io("create directory", dir, e))?;
    check_private("directory", dir, 0o700)?;
    tag_as_cache(dir);
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "it exists and is not a regular file");
            return Err(DbError::io("use", path, e));
        }
        Ok(_) => check_private("file", path, 0o600)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DbError::io("inspect", path, e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| DbError::io("create", path, e))?;
    Ok(())
}

#[cfg(unix)]
fn check_private(what: &'static str, path: &Path, wanted: u32) -> Result<(), DbError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| DbError::io("inspect", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DbError::Permissions { what, path: path.to_path_buf(), mode, wanted });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_what: &'static str, _path: &Path, _wanted: u32) -> Result<(), DbError> {
    Ok(())
}

/// Sets a `-wal`/`-shm` file, when present, to 0600. SQLite already copies the database
/// file's mode; this makes it hold whatever the umask or an older version did.
fn make_private(path: &Path) -> Result<(), DbError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .map_err(|e| DbError::io("restrict the permissions of", path, e))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DbError::io("inspect", path, e)),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_db_files(path: &Path) -> Result<(), DbError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = sidecar(path, suffix);
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DbError::io("delete the stale database", &file, e)),
        }
    }
    Ok(())
}

/// Ids are stored as 32-byte BLOBs.
impl ToSql for Id {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

impl FromSql for Id {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let bytes = value.as_blob()?;
        let array: [u8; ID_LEN] = bytes
            .try_into()
            .map_err(|_| FromSqlError::InvalidBlobSize { expected_size: ID_LEN, blob_size: bytes.len() })?;
        Ok(Id(array))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    use super::*;

    /// `tempdir()` may be 0755; the database goes in a subdirectory that `open` creates 0700.
    fn db_path(tmp: &tempfile::TempDir) -> PathBuf {
        let path = tmp.path().join("state/coffer.db");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(path.parent().expect("has a parent")).unwrap();
        path
    }

    fn repo(n: u8) -> Id {
        Id([n; ID_LEN])
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    /// Puts one row in every table.
    fn fill(db: &mut Db) {
        let blob = Id::of_bytes(b"blob");
        let entry = crate::format::pack::PackEntry {
            id: blob,
            kind: crate::format::pack::BlobKind::Data,
            offset: 0,
            length: 10,
            raw_len: 5,
        };
        db.add_index_file(&Id::of_bytes(b"index"), Some(&Id([1; 32])), &[(Id::of_bytes(b"pack"), 10, vec![entry])])
            .unwrap();
        let file =
            CachedFile { dev: 1, ino: 2, size: 3, mtime_ns: 4, ctime_ns: 5, content: vec![blob], xattrs: Vec::new() };
        db.store_files(&[(b"/f".to_vec(), file)]).unwrap();
        db.record_snapshots(&[(Id::of_bytes(b"snap"), 7)]).unwrap();
        db.store_tree(&Id::of_bytes(b"tree"), b"t").unwrap();
    }

    fn is_filled(db: &Db) -> bool {
        db.blob_count().unwrap() == 1
            && db.cached_file(b"/f").unwrap().is_some()
            && db.seen_snapshots().unwrap().len() == 1
            && db.cached_tree(&Id::of_bytes(b"tree")).unwrap().is_some()
    }

    fn is_empty(db: &Db) -> bool {
        db.blob_count().unwrap() == 0
            && db.index_files().unwrap().is_empty()
            && db.pack_sizes().unwrap().is_empty()
            && db.cached_file(b"/f").unwrap().is_none()
            && db.seen_snapshots().unwrap().is_empty()
            && db.cached_tree(&Id::of_bytes(b"tree")).unwrap().is_none()
    }

    #[test]
    fn creates_private_dirs_and_files_and_reopens_with_data() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/coffer.db");
        let mut db = Db::open(&path, &repo(1)).unwrap();
        fill(&mut db);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
        assert_eq!(mode(&path), 0o600);
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(&path, suffix);
            if side.exists() {
                assert_eq!(mode(&side), 0o600, "{}", side.display());
            }
        }
        drop(db);
        let db = Db::open(&path, &repo(1)).unwrap();
        assert!(is_filled(&db));
        let journal: String = db.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn db_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Db>();
    }

    #[test]
    fn refuses_files_and_dirs_others_can_access() {
        let tmp = tempfile::tempdir().unwrap();
        let path = db_path(&tmp);
        let dir = path.parent().expect("has a parent");
        drop(Db::open(&path, &repo(1)).unwrap());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Db::open(&path, &repo(1)).err().expect("a 0644 database is refused");
        assert!(matches!(err, DbError::Permissions { what: "file", .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{msg}");
        assert_eq!(mode(&path), 0o644, "a refused file is left alone");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = Db::open(&path, &repo(1)).err().expect("a 0755 directory is refused");
        assert!(matches!(err, DbError::Permissions { what: "directory", .. }), "{err}");
        assert!(err.to_string().contains(&format!("chmod 700 {}", dir.display())), "{err}");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(Db::open(&path, &repo(1)).is_ok());
    }

    #[test]
    fn schema_version_mismatch_rebuilds() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/coffer.db");
        let mut db = Db::open(&path, &repo(1)).unwrap();
        fill(&mut db);
        db.conn.execute("UPDATE meta SET value = 999 WHERE key = 'schema_version'", []).unwrap();
        drop(db);
        let db = Db::open(&path, &repo(1)).unwrap();
        assert!(is_empty(&db));
        let version: i64 =
            db.conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn foreign_sqlite_database_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = db_path(&tmp);
        {
            let mut options = fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create(true), 0o600);
            options.open(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE other (x)").unwrap();
        }
        let mut db = Db::open(&path, &repo(1)).unwrap();
        fill(&mut db);
        assert!(is_filled(&db));
    }

    #[test]
    fn garbage_file_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, garbage) in [("short.db", vec![b'x'; 10]), ("long.db", vec![0xa5; 8192])] {
            let path = db_path(&tmp).with_file_name(name);
            let mut options = fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create(true), 0o600);
            io::Write::write_all(&mut options.open(&path).unwrap(), &garbage).unwrap();
            let mut db = Db::open(&path, &repo(1)).unwrap_or_else(|e| panic!("{name}: {e}"));
            fill(&mut db);
            drop(db);
            assert!(is_filled(&Db::open(&path, &repo(1)).unwrap()));
            assert_eq!(mode(&path), 0o600);
        }
    }

    #[test]
    fn another_repo_id_clears_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/coffer.db");
        let mut db = Db::open(&path, &repo(1)).unwrap();
        fill(&mut db);
        drop(db);
        let db = Db::open(&path, &repo(2)).unwrap();
        assert!(is_empty(&db));
        drop(db);
        // The new id is stored: reopening with it keeps what is written.
        let mut db = Db::open(&path, &repo(2)).unwrap();
        fill(&mut db);
        drop(db);
        assert!(is_filled(&Db::open(&path, &repo(2)).unwrap()));
    }

    #[test]
    fn two_connections_share_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/coffer.db");
        let mut writer = Db::open(&path, &repo(1)).unwrap();
        let reader = Db::open(&path, &repo(1)).unwrap();
        fill(&mut writer);
        assert!(is_filled(&reader));
    }

    #[test]
    fn path_that_is_a_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = db_path(&tmp);
        fs::create_dir(&path).unwrap();
        let err = Db::open(&path, &repo(1)).err().expect("a directory is not a database");
        assert!(matches!(err, DbError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}
