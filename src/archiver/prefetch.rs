//! Warms the kernel's dentry and inode caches ahead of the walker. The walker must visit
//! entries one by one, in name order; on a cold cache each `lstat` waits for the disk and
//! burns kernel time on one core. A few threads walking the same folders first, in any
//! order, turn that into parallel work: the walker then finds everything cached. Nothing here
//! is used for the backup itself, so a failure only costs the warm-up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::walker::Excludes;

/// Folders waiting to be warmed; when full, the surplus is simply not warmed.
pub const QUEUE: usize = 8192;

pub fn worker(queue: Receiver<PathBuf>, more: Sender<PathBuf>, excludes: &Excludes, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let dir = match queue.recv_timeout(Duration::from_millis(20)) {
            Ok(dir) => dir,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let path = entry.path();
            if excludes.matches(&path) {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let _ = std::fs::symlink_metadata(&path);
            if is_dir {
                let _ = more.try_send(path);
            }
        }
    }
}
