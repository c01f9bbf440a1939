//! Warms the kernel's caches of the source folders while the repository is being opened.
//! Opening costs the passphrase's key derivation, a tenth of a second or more of one core;
//! on a cold cache the other cores can meanwhile read the folders' metadata from disk, which
//! the scanner would otherwise wait for. Nothing here is used for the backup itself: a
//! failure only costs the warm-up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::walker::Excludes;

/// Folders waiting to be warmed; the surplus is simply not warmed.
const QUEUED: usize = 4096;

#[derive(Default)]
struct Shared {
    stack: Mutex<Vec<PathBuf>>,
    more: Condvar,
    stop: AtomicBool,
}

/// Warms until dropped.
pub struct WarmUp {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WarmUp {
    pub fn start(paths: &[PathBuf], excludes: &[String]) -> WarmUp {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        if let Ok(excludes) = Excludes::new(excludes) {
            let excludes = Arc::new(excludes);
            let sources = paths.iter().filter_map(|p| std::fs::canonicalize(p).ok()).rev();
            shared.stack.lock().unwrap_or_else(|p| p.into_inner()).extend(sources);
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            for _ in 0..(2 * cores).max(4) {
                let (shared, excludes) = (Arc::clone(&shared), Arc::clone(&excludes));
                let thread =
                    std::thread::Builder::new().name("coffer-warm".into()).spawn(move || warm(&shared, &excludes));
                threads.extend(thread.ok());
            }
        }
        WarmUp { shared, threads }
    }
}

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.more.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Depth first, like the scanner after it, so what it needs first is warm first.
fn warm(shared: &Shared, excludes: &Excludes) {
    let mut stack = shared.stack.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(dir) = stack.pop() else {
            stack = shared.more.wait(stack).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        drop(stack);
        let mut subdirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let path = entry.path();
                if !excludes.matches(&path) && entry.metadata().is_ok_and(|m| m.is_dir()) {
                    subdirs.push(path);
                }
            }
        }
        subdirs.sort();
        stack = shared.stack.lock().unwrap_or_else(|p| p.into_inner());
        let room = QUEUED.saturating_sub(stack.len());
        stack.extend(subdirs.into_iter().rev().take(room));
        shared.more.notify_all();
    }
}
