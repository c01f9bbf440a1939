//! An open repository: its storage, verified config, keys, and local database. Creating a
//! repository, unlocking a key, and loading and saving the repository's objects (blobs, trees,
//! index files, snapshots) live here; operations that combine them live in `commands`.

pub mod anchors;
mod blobs;
mod door;
pub mod locks;
mod open;
mod packer;
mod ranges;
mod snapshots;
#[cfg(test)]
pub(crate) mod test_kit;
mod trees;
pub mod walk;

use std::collections::HashMap;
use std::sync::Mutex;

pub use blobs::{Copies, PackReconciliation};
// The storage and database types that cross the door: what its operations return or take.
// Callers name them through `repo`, never `store::` or `db::` (see `door.rs`).
pub use crate::db::{BlobLocation, CachedFile, DbError, FilesCacheReader};
pub use crate::store::{Location, Store, StoreError};
pub use open::{default_data_dir, hostname, machine_identity, now_unix, username, Located, OpenOptions};
pub use packer::{Packer, SinkTotals};
pub use ranges::{plan_regions, AROUND_MAX, REGION_GAP, REGION_MAX};
pub use snapshots::{resolve, Rejected, Rejection, Signers, SnapshotEntry, SnapshotFilter};

use crate::crypto::SymKey;
use crate::db::Db;
use crate::format::config::Config;
use crate::format::FormatError;
use crate::id::Id;
use crate::keys::{DomainKeys, RepoKeys};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{location} is not a Coffer repository ({detail}); create one with `coffer init`")]
    NotARepository { location: String, detail: String },
    #[error("{location} already holds a repository")]
    AlreadyExists { location: String },
    #[error("wrong password: no key in this repository opens with it")]
    WrongPassword,
    #[error(
        "the passphrase opened none of the {tried} key files tried, and keys/ holds {total}: more than an unlock \
         tries; move key files you did not create out of keys/ in the repository storage, then retry"
    )]
    TooManyKeyFiles { tried: usize, total: usize },
    #[error("this key can only write: {what} needs the full repository key")]
    WriteOnly { what: &'static str },
    #[error("this write-only key {detail}; create a new one with `coffer key write-only` using the full key")]
    KeyNotTrusted { detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{object}: {source}")]
    Format { object: String, source: FormatError },
    #[error("{object} is damaged: {detail}; run `coffer check` for a full report")]
    Corrupt { object: String, detail: String },
    /// A worker of this process failed (a thread that could not start or panicked): nothing
    /// is wrong with the repository, so the message must not send the user to `check`.
    #[error("internal error: the {worker} {detail} (a bug in Coffer, not damage to the repository); please report it")]
    Internal { worker: &'static str, detail: String },
    // Every DbError message starts with "local database" already.
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no snapshot matches {0:?}; `coffer snapshots` lists them")]
    NoSnapshot(String),
    #[error("{0:?} matches several snapshots; give more digits of the id")]
    AmbiguousSnapshot(String),
    #[error("no key or write-only key {0:?} in this repository; `coffer key list` shows them")]
    NoKey(String),
    #[error("{0:?} matches several keys; give more digits of the id")]
    AmbiguousKey(String),
    #[error("this key cannot be removed: {detail}")]
    KeyInUse { detail: String },
    #[error("cannot back up as host {host:?}: {detail}")]
    BadHost { host: String, detail: String },
    #[error("{object}: none of this client's keys opens it (another key wrote it, or it is not Coffer's)")]
    ForeignDomain { object: String },
    #[error("blob {0} is not in the index: the repository lost data it needs; run `coffer check`")]
    MissingBlob(Id),
    #[error("{what}: folders nest deeper than {max} levels at {path}…; it cannot be walked")]
    TooDeep { what: String, path: String, max: usize },
    #[error("{what}: {source}")]
    Local { what: String, source: std::io::Error },
}

impl RepoError {
    pub(crate) fn format(object: impl Into<String>) -> impl FnOnce(FormatError) -> RepoError {
        let object = object.into();
        move |source| RepoError::Format { object, source }
    }
}

/// An open repository. Its fields are private: what code outside `repo/` needs is a named
/// operation (`door.rs` and the sibling files).
pub struct Repository {
    /// Private: what callers need of storage is a named operation (`door.rs`).
    store: Store,
    config: Config,
    keys: RepoKeys,
    db: Mutex<Db>,
    pack_keys: Mutex<HashMap<Id, SymKey>>,
    /// The deduplication domains this client can open, by id: the one it writes in, and with
    /// the full key every registered key's (issue 15: a write-only key opens only its own).
    domains: HashMap<Id, DomainKeys>,
    /// `signers/` as read when the repository was opened: what a backup checks its host
    /// against and records as seen, without listing and reading `signers/` again.
    signers_at_open: Mutex<Option<std::sync::Arc<Signers>>>,
    /// The `keys/` file the passphrase opened; `None` for a write-only key.
    key_file: Option<Id>,
}

impl Repository {
    pub fn id(&self) -> Id {
        self.config.repo_id
    }

    /// Fails with a clear message when the open key cannot decrypt.
    pub fn require_full_key(&self, what: &'static str) -> Result<&crate::crypto::SecretKey, RepoError> {
        self.keys.secret.as_ref().ok_or(RepoError::WriteOnly { what })
    }

    /// The keys of a domain this client can open.
    pub fn domain(&self, id: &Id) -> Option<&DomainKeys> {
        self.domains.get(id)
    }

    /// Every domain this client can open, the one it writes in first.
    pub fn domains(&self) -> impl Iterator<Item = &DomainKeys> {
        let own = self.domains.get(&self.keys.domain);
        own.into_iter().chain(self.domains.values().filter(|d| d.id != self.keys.domain))
    }

    /// [`Repository::signers`] as first read by this process (reads it on the first call).
    /// Listings that must notice a revocation made since (the mount) call `signers` instead.
    pub fn signers_at_open(&self) -> Result<std::sync::Arc<Signers>, RepoError> {
        let mut cached = self.signers_at_open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signers) = &*cached {
            return Ok(std::sync::Arc::clone(signers));
        }
        let signers = std::sync::Arc::new(self.signers()?);
        *cached = Some(std::sync::Arc::clone(&signers));
        Ok(signers)
    }

    /// The local database, for `repo/` itself; callers outside use the named queries in `door.rs`.
    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        // A panic while holding the lock leaves a cache that is still a valid SQLite file.
        self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::RepoError;

    /// A dead thread is our bug, not damage: its message must not send the user to `check`.
    #[test]
    fn internal_errors_do_not_blame_the_repository() {
        let text = RepoError::Internal { worker: "pack writer thread", detail: "panicked".into() }.to_string();
        assert!(text.contains("pack writer thread panicked") && text.contains("report"), "{text}");
        assert!(!text.contains("check") && !text.contains("damaged:"), "{text}");
    }
}
