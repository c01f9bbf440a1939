//! The crate's test kit: a repository in memory holding a backup of a small folder, which the
//! unit tests of the commands, the walkers and the archiver share (it was
//! `commands::check::test_support`). It builds on `repo::test_kit` (memory repositories, and
//! settings only `repo/` may set, such as small packs), whose basics it re-exports.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::archiver::{backup as run_backup, BackupOptions, BackupOutcome};
pub use crate::repo::test_kit::{kdf, memory_repo};
use crate::repo::Repository;

pub struct Fixture {
    pub repo: Arc<Repository>,
    pub src: tempfile::TempDir,
    /// Holds the local database.
    pub _cache: tempfile::TempDir,
}

impl Fixture {
    /// The source folder as the snapshot records it (symlinks resolved).
    pub fn src_path(&self) -> PathBuf {
        std::fs::canonicalize(self.src.path()).unwrap()
    }
}

/// `a.txt` (5 bytes), `sub/b.txt` (11 bytes), `link -> a.txt`.
pub fn fixture() -> Fixture {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"hello").unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/b.txt"), b"hello world").unwrap();
    std::os::unix::fs::symlink("a.txt", src.path().join("link")).unwrap();
    let (repo, cache) = memory_repo();
    Fixture { repo, src, _cache: cache }
}

pub fn backup(fx: &Fixture) -> BackupOutcome {
    let options = BackupOptions { paths: vec![fx.src.path().to_path_buf()], ..Default::default() };
    let outcome = run_backup(&fx.repo, &options, &AtomicBool::new(false)).unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    outcome
}
