//! Blobs by their place in a pack: a reader that misses one blob fetches the region of the pack
//! around it (restore's tree walk, the mount), so it asks which blobs lie in a byte range.

use rusqlite::Transaction;

use super::index::{location_from_row, BlobLocation};
use super::{Db, DbError};
use crate::id::Id;

/// Added beside the versioned schema (`IF NOT EXISTS`, no version bump): an index only
/// speeds up queries, so a database made before it gets it on its next open, and nothing else
/// changes.
pub(super) fn ensure_index(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("CREATE INDEX IF NOT EXISTS blobs_by_pack_pos ON blobs (pack, pos)")
}

impl Db {
    /// The blobs of `pack` whose sealed box starts in `from..to`, by offset (each once per
    /// domain, even when several index files of it list it), as `blob_location` gives them.
    pub fn blobs_in_pack_range(&self, pack: &Id, from: u64, to: u64) -> Result<Vec<BlobLocation>, DbError> {
        self.read("looking up the blobs of a pack", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT p.id, b.kind, b.pos, b.len, b.raw_len, f.domain, b.blob FROM blobs b
                 JOIN packs p ON p.n = b.pack JOIN index_files f ON f.n = b.index_file
                 WHERE p.id = ?1 AND b.pos >= ?2 AND b.pos < ?3 AND f.domain IS NOT NULL
                 ORDER BY b.pos, f.domain",
            )?;
            let rows = stmt.query_map((pack, from as i64, to as i64), |r| location_from_row(r, r.get(6)?))?.collect();
            rows
        })
    }
}
