//! Counters a long operation bumps as it goes, for a progress display to read. Lock-free so
//! the hot paths pay one relaxed atomic add; the current file's name costs a short lock per
//! file, and the change listener is only called for files that are read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// How a file read by a backup relates to the last backup of this machine (its files cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileChange {
    New,
    Changed,
}

type ChangeListener = Box<dyn Fn(FileChange, &Path) + Send + Sync>;

#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Known total, when a scan has measured it (0 = unknown).
    pub total_bytes: AtomicU64,
    /// The file being read or written most recently, for the display.
    current: Mutex<Option<PathBuf>>,
    /// Called for each new or changed file a backup reads (`backup -v`).
    on_change: OnceLock<ChangeListener>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("files", &self.files)
            .field("bytes", &self.bytes)
            .field("total_bytes", &self.total_bytes)
            .finish_non_exhaustive()
    }
}

impl Counters {
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_current(&self, path: &Path) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_mut() {
            Some(kept) => {
                kept.clear();
                kept.push(path);
            }
            None => *current = Some(path.to_path_buf()),
        }
    }

    pub fn current(&self) -> Option<PathBuf> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets who hears of new and changed files; the first caller wins.
    pub fn listen_for_changes(&self, listener: impl Fn(FileChange, &Path) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(listener));
    }

    pub fn file_changed(&self, change: FileChange, path: &Path) {
        if let Some(listener) = self.on_change.get() {
            listener(change, path);
        }
    }
}
