//! Counters a long operation bumps as it goes, for a progress display to read. Lock-free so
//! the hot paths pay one relaxed atomic add.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Known total, when a scan has measured it (0 = unknown).
    pub total_bytes: AtomicU64,
}

impl Counters {
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}
