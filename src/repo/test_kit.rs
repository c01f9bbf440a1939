//! Repositories for unit tests: on the in-memory store, with a cheap key derivation, and
//! with settings a test needs that `init` does not offer (small packs, to see them close).
//! Any module's tests may use it; it is the door's test-side twin (no test outside `repo/`
//! needs to build a `Store` itself).

use std::sync::Arc;

use super::{OpenOptions, Repository};
use crate::crypto::KdfParams;
use crate::store::Store;

/// A key derivation that costs nothing: tests open many repositories.
pub fn kdf() -> KdfParams {
    KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }
}

/// A new repository (password `pw`) on the in-memory store; the folder holds its local
/// database and must outlive it.
pub fn memory_repo() -> (Arc<Repository>, tempfile::TempDir) {
    memory_repo_with(|_| {})
}

/// [`memory_repo`], with `adjust` applied to the repository before it is shared (its config
/// in memory: what packing reads, not what storage holds).
pub fn memory_repo_with(adjust: impl FnOnce(&mut Repository)) -> (Arc<Repository>, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache folder");
    let options = OpenOptions { data_dir: cache.path().to_path_buf(), kdf: kdf() };
    let mut repo = Repository::init(Store::memory().expect("memory store"), b"pw", &options).expect("init");
    adjust(&mut repo);
    (Arc::new(repo), cache)
}

/// Packs close at `target` bytes (the smallest a config allows is 64 KiB), trees at a quarter.
pub fn small_packs(target: u32) -> impl FnOnce(&mut Repository) {
    move |repo| repo.config.pack_target = target
}

/// Incompressible bytes, the same for the same seed: a blob then takes in a pack about what it
/// holds.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}
