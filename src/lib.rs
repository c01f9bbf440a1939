//! Coffer: encrypted, deduplicated, compressed backups into any storage OpenDAL reaches,
//! browsable through a FUSE mount. See `../shared/DESIGN.md` (kept as docs/DESIGN.md in the
//! design repository) for the whole picture; each module's header says what it owns.

pub mod archiver;
pub mod chunker;
pub mod commands;
pub mod crashpoint;
pub mod crypto;
pub mod db;
pub mod filter;
pub mod format;
pub mod id;
pub mod keys;
pub mod layout;
pub mod profile;
pub mod progress;
pub mod repo;
pub mod safetext;
pub mod secrets;
pub mod store;
#[cfg(test)]
pub(crate) mod test_kit;
pub mod vfs;
