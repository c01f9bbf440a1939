//! Coffer: encrypted, deduplicated, compressed backups into any storage OpenDAL reaches,
//! browsable through a FUSE mount. `docs/design.md` is the design as built (threat model,
//! formats, protocols, measurements); each module's header says what it owns.
//!
//! The layers, each behind the one below: `commands`, `archiver`, `vfs` (and the binary's
//! `cli`) use the repository only through [`Repository`]'s operations (`tests/door.rs` holds
//! them to that); `repo` alone reads and writes through `store` (OpenDAL) and `db` (the local
//! SQLite cache); `format`, `crypto`, `chunker` and `layout` are pure.

pub mod archiver;
pub mod chunker;
pub mod commands;
pub mod crashpoint;
pub mod crypto;
pub mod db;
pub mod filter;
pub mod format;
pub mod fuzz;
pub mod id;
pub mod keys;
pub mod layout;
pub mod profile;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod safetext;
pub mod secrets;
pub mod store;
#[cfg(test)]
pub(crate) mod test_kit;
pub mod vfs;

// The library's API: what the binary and the tests start from.
pub use archiver::{backup, BackupOptions, BackupOutcome};
pub use repo::{Located, OpenOptions, RepoError, Repository, SnapshotEntry};
pub use store::{Location, Store};
