//! Tree blob cache: plaintext tree blobs by id, so `ls` and the mount need no storage read for
//! a tree seen before. Entries never go stale (an id names its content); they hold file names,
//! which is why the database file is private to its user.

use rusqlite::OptionalExtension;

use super::{Db, DbError};
use crate::id::Id;

impl Db {
    pub fn cached_tree(&self, id: &Id) -> Result<Option<Vec<u8>>, DbError> {
        self.read("reading the tree cache", |conn| {
            conn.prepare_cached("SELECT bytes FROM trees WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()
        })
    }

    /// Stores many tree blobs in one transaction (a backup makes one per folder).
    pub fn store_trees(&mut self, trees: &[(Id, Vec<u8>)]) -> Result<(), DbError> {
        self.write("writing the tree cache", |tx| {
            let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO trees (id, bytes) VALUES (?1, ?2)")?;
            for (id, bytes) in trees {
                stmt.execute((id, bytes))?;
            }
            Ok(())
        })
    }

    /// Stores a verified tree blob; storing one already present does nothing.
    pub fn store_tree(&self, id: &Id, bytes: &[u8]) -> Result<(), DbError> {
        self.read("writing the tree cache", |conn| {
            conn.prepare_cached("INSERT OR IGNORE INTO trees (id, bytes) VALUES (?1, ?2)")?.execute((id, bytes))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        let id = Id::of_bytes(b"tree");
        assert_eq!(db.cached_tree(&id).unwrap(), None);
        db.store_tree(&id, b"tree bytes").unwrap();
        db.store_tree(&id, b"ignored").unwrap();
        assert_eq!(db.cached_tree(&id).unwrap(), Some(b"tree bytes".to_vec()));
        db.store_tree(&Id::of_bytes(b"empty"), b"").unwrap();
        assert_eq!(db.cached_tree(&Id::of_bytes(b"empty")).unwrap(), Some(Vec::new()));
    }
}
