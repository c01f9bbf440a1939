//! The snapshots seen in the repository, with their times, so that one which vanishes without
//! this machine having forgotten it is noticed (a deletion by someone else, issue 6/6).

use super::{Db, DbError};
use crate::id::Id;

impl Db {
    /// Remembers snapshots listed in the repository; ones already recorded keep their time.
    pub fn record_snapshots(&mut self, ids: &[(Id, i64)]) -> Result<(), DbError> {
        self.write("recording snapshots", |tx| {
            let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO snapshots (id, time) VALUES (?1, ?2)")?;
            for (id, time) in ids {
                stmt.execute((id, time))?;
            }
            Ok(())
        })
    }

    /// Every snapshot recorded, oldest first.
    pub fn seen_snapshots(&self) -> Result<Vec<(Id, i64)>, DbError> {
        self.read("listing seen snapshots", |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, time FROM snapshots ORDER BY time, id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
            rows
        })
    }

    /// Verified, decrypted snapshots (their encoded body and the key that signed them), so
    /// listing snapshots and mounting need not read and decrypt every snapshot each time.
    pub fn cached_snapshots(&self) -> Result<std::collections::HashMap<Id, (Id, Vec<u8>)>, DbError> {
        self.read("reading the snapshot cache", |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, signer, body FROM snapshot_bodies")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?.collect();
            rows
        })
    }

    pub fn cache_snapshots(&mut self, snapshots: &[(Id, Id, Vec<u8>)]) -> Result<(), DbError> {
        self.write("writing the snapshot cache", |tx| {
            let mut stmt =
                tx.prepare_cached("INSERT OR REPLACE INTO snapshot_bodies (id, signer, body) VALUES (?1, ?2, ?3)")?;
            for (id, signer, body) in snapshots {
                stmt.execute((id, signer, body))?;
            }
            Ok(())
        })
    }

    /// Forgets snapshots this machine removed on purpose (`forget`, `prune`), so their absence
    /// is not reported as a vanished snapshot.
    pub fn forget_snapshots(&mut self, ids: &[Id]) -> Result<(), DbError> {
        self.write("forgetting snapshots", |tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM snapshots WHERE id = ?1")?;
            let mut bodies = tx.prepare_cached("DELETE FROM snapshot_bodies WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
                bodies.execute([id])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut db = Db::open_in_memory(&Id::default()).expect("in-memory database");
        let (a, b, c) = (Id::of_bytes(b"a"), Id::of_bytes(b"b"), Id::of_bytes(b"c"));
        db.record_snapshots(&[(a, 300), (b, 100)]).unwrap();
        db.record_snapshots(&[(a, 999), (c, 200)]).unwrap();
        assert_eq!(db.seen_snapshots().unwrap(), vec![(b, 100), (c, 200), (a, 300)]);
        db.forget_snapshots(&[c]).unwrap();
        assert_eq!(db.seen_snapshots().unwrap(), vec![(b, 100), (a, 300)]);
    }
}
