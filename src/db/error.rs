//! Errors of the local database. Every message names the database file and says what to do;
//! SQLite failures are sorted into the few cases a user can act on (corrupt, locked, disk full,
//! cannot open) so no caller has to look inside a `rusqlite::Error`.

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database file or its directory can be read by other users.
    #[error(
        "local database {what} {} is accessible by other users (mode {mode:03o}); it must be \
         private to you: run `chmod {wanted:o} {}`",
        .path.display(), .path.display()
    )]
    Permissions { what: &'static str, path: PathBuf, mode: u32, wanted: u32 },

    /// A filesystem operation around the database failed.
    #[error("local database: cannot {action} {}: {source}", .path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    /// SQLite reports damage, or a row holds a value coffer never writes.
    #[error(
        "local database {} is corrupt ({source}): delete it, it is rebuilt from the repository",
        .path.display()
    )]
    Corrupt { path: PathBuf, source: rusqlite::Error },

    /// Still not a usable database right after being recreated.
    #[error(
        "local database {} {reason}, even after being recreated: delete it and its -wal and -shm \
         files, and check the disk",
        .path.display()
    )]
    Unusable { path: PathBuf, reason: String },

    /// Another process held the write lock for longer than the busy timeout.
    #[error(
        "local database {} is locked by another coffer process (waited {} s while {op}): wait \
         for that process to finish, then retry",
        .path.display(), super::BUSY_TIMEOUT.as_secs()
    )]
    Busy { path: PathBuf, op: &'static str },

    #[error("local database {}: {op} failed: the disk is full: free some space, then retry", .path.display())]
    DiskFull { path: PathBuf, op: &'static str },

    #[error(
        "local database {} cannot be opened for writing ({source}): check that its directory \
         exists and is writable by you",
        .path.display()
    )]
    CannotOpen { path: PathBuf, source: rusqlite::Error },

    #[error("local database {}: {op} failed: {source}", .path.display())]
    Sqlite { path: PathBuf, op: &'static str, source: rusqlite::Error },
}

impl DbError {
    /// Sorts a SQLite failure that happened while doing `op` on the database at `path`.
    pub(super) fn sqlite(path: &Path, op: &'static str, source: rusqlite::Error) -> DbError {
        let path = path.to_path_buf();
        if is_corruption(&source) {
            return DbError::Corrupt { path, source };
        }
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::Busy { path, op },
            Some(ErrorCode::DiskFull) => DbError::DiskFull { path, op },
            Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
                DbError::CannotOpen { path, source }
            }
            _ => DbError::Sqlite { path, op, source },
        }
    }

    pub(super) fn io(action: &'static str, path: &Path, source: io::Error) -> DbError {
        DbError::Io { action, path: path.to_path_buf(), source }
    }
}

/// True when the file is not a database, is damaged, or holds a value of a type or size coffer
/// never writes: the cases where deleting the cache is the cure.
pub(super) fn is_corruption(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => true,
        _ => matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)),
    }
}
