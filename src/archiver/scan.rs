//! Reads directories ahead of the walker, on a pool of threads. A directory is listed and
//! sorted, then its entries are described in chunks: `lstat` relative to the open directory
//! (no path is resolved again), extended attributes, a symlink's target, and for regular files
//! their files-cache records, looked up for the whole chunk at once. The walker then only
//! assembles; on a cold cache the many small metadata reads, each waiting for the disk, run
//! side by side, and a large directory is shared among the workers rather than holding the
//! walker up behind one of them.
//!
//! Work is taken from a stack, so it runs depth first ahead of the walker: the chunks of a
//! listed directory go on top in order, and the subdirectories of each described chunk on top
//! of those. The walker does a chunk nobody has started itself rather than wait. Memory stays
//! bounded: workers pause while `HELD_ENTRIES` described entries wait for the walker (fewer
//! once it waits for file reads, or from the start without a files cache), and at most
//! `QUEUED_DIRS` directories wait to be listed (the walker lists the rest when it gets there).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::Metadata as FsMetadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::meta::{read_xattrs, special_kind};
use super::reader::unchanged;
use crate::filter::Excludes;
use crate::format::tree::{NodeKind, Xattr};
use crate::repo::{CachedFile, FilesCacheReader};

/// Described entries waiting for the walker, at most: many while the walker keeps up (an
/// unchanged tree, where looking far ahead keeps every worker busy), few once it waits for
/// the readers (then looking ahead only holds memory).
const HELD_ENTRIES: usize = 32 * 1024;
const HELD_ENTRIES_READING: usize = 1024;
const QUEUED_DIRS: usize = 16 * 1024;
/// Entries described as one piece of work: large enough that handing it over costs little
/// beside it, small enough that a big directory keeps every worker busy.
const CHUNK: usize = 128;

/// One entry of a scanned directory, or the error that made it unreadable.
pub struct ScannedEntry {
    pub name: OsString,
    pub path: PathBuf,
    pub found: Result<Found, String>,
}

pub struct Found {
    pub meta: FsMetadata,
    pub xattrs: Vec<Xattr>,
    /// Reading the extended attributes failed: the entry is kept without them.
    pub xattr_error: Option<String>,
    /// Symlinks, FIFOs, devices and sockets; `None` for files and directories.
    pub special: Option<NodeKind>,
    /// The files-cache record of a regular file.
    pub cached: Option<CachedFile>,
}

/// A directory's entries, sorted by name, before they are described. The `DirEntry` keeps
/// the directory open, so each `lstat` is relative to it.
type Listed = Vec<(OsString, PathBuf, std::fs::DirEntry)>;

enum Chunk {
    Waiting(Listed),
    Describing,
    Described(Vec<ScannedEntry>),
    Taken,
}

enum DirSlot {
    Listing,
    Listed { chunks: Vec<Chunk>, errors: Vec<String> },
}

enum Work {
    List(PathBuf),
    Describe(PathBuf, usize),
}

#[derive(Default)]
struct State {
    /// Work to do, the next on top. May hold work the walker did meanwhile; that is skipped.
    stack: Vec<Work>,
    /// Directories waiting in `stack` to be listed.
    queued: HashSet<PathBuf>,
    dirs: HashMap<PathBuf, DirSlot>,
    held_entries: usize,
    /// Workers waiting for work or room: waking nobody costs a system call, so only they are.
    idle_workers: usize,
    /// The directory the walker waits for.
    awaited: Option<PathBuf>,
    stopped: bool,
}

impl State {
    fn chunk(&mut self, dir: &Path, n: usize) -> Option<&mut Chunk> {
        match self.dirs.get_mut(dir) {
            Some(DirSlot::Listed { chunks, .. }) => chunks.get_mut(n),
            _ => None,
        }
    }
}

pub struct Scanner {
    excludes: Excludes,
    /// `None` when there is no usable files cache: every file is then read.
    files_cache: Option<FilesCacheReader>,
    state: Mutex<State>,
    held_limit: AtomicUsize,
    /// Something the walker waits for is done.
    done: Condvar,
    /// Work was queued, room was made, or the scanner stopped.
    wake: Condvar,
}

/// The walker's place in one directory.
pub struct DirCursor {
    dir: PathBuf,
    next: usize,
    /// Errors that lost entries without naming them (listing failed, or part of it).
    pub errors: Vec<String>,
}

impl Scanner {
    pub fn new(excludes: Excludes, files_cache: Option<FilesCacheReader>) -> Scanner {
        // Without a files cache every file will be read: the walker will wait for the readers.
        let held_limit = if files_cache.is_some() { HELD_ENTRIES } else { HELD_ENTRIES_READING };
        Scanner {
            excludes,
            files_cache,
            state: Mutex::default(),
            held_limit: AtomicUsize::new(held_limit),
            done: Condvar::new(),
            wake: Condvar::new(),
        }
    }

    pub fn excludes(&self) -> &Excludes {
        &self.excludes
    }

    /// The walker now waits for file reads: looking far ahead would only hold memory.
    pub fn reading(&self) {
        self.held_limit.store(HELD_ENTRIES_READING, Ordering::Relaxed);
    }

    fn room(&self, state: &State) -> bool {
        state.held_entries < self.held_limit.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_done<'g>(&self, mut state: MutexGuard<'g, State>, dir: &Path) -> MutexGuard<'g, State> {
        state.awaited = Some(dir.to_path_buf());
        state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        state.awaited = None;
        state
    }

    /// Pushes work and wakes as many idle workers as it can use.
    fn push(&self, state: &mut State, work: impl Iterator<Item = Work>) {
        let before = state.stack.len();
        for w in work {
            if let Work::List(dir) = &w {
                if state.queued.len() >= QUEUED_DIRS
                    || state.dirs.contains_key(dir)
                    || !state.queued.insert(dir.clone())
                {
                    continue;
                }
            }
            state.stack.push(w);
        }
        for _ in 0..(state.stack.len() - before).min(state.idle_workers) {
            self.wake.notify_one();
        }
    }

    /// Queues the source folders, so workers list them before the walker asks.
    pub fn prefetch(&self, sources: &[PathBuf]) {
        let dirs: Vec<PathBuf> =
            sources.iter().filter(|s| s.symlink_metadata().is_ok_and(|m| m.is_dir())).cloned().collect();
        self.push(&mut self.lock(), dirs.into_iter().rev().map(Work::List));
    }

    /// Starts the walker on `dir`: waits while a worker lists it, or lists it here.
    pub fn open(&self, dir: &Path) -> DirCursor {
        let mut state = self.lock();
        state.queued.remove(dir);
        loop {
            match state.dirs.get_mut(dir) {
                Some(DirSlot::Listed { errors, .. }) => {
                    let errors = std::mem::take(errors);
                    return DirCursor { dir: dir.to_path_buf(), next: 0, errors };
                }
                Some(DirSlot::Listing) => state = self.wait_done(state, dir),
                None => {
                    drop(state);
                    let (listed, errors) = self.list(dir);
                    self.publish_listing(dir, listed, Vec::new(), false);
                    return DirCursor { dir: dir.to_path_buf(), next: 0, errors };
                }
            }
        }
    }

    /// The next entries of the directory, described; `None` at its end.
    pub fn next_chunk(&self, cursor: &mut DirCursor) -> Option<Vec<ScannedEntry>> {
        let dir = cursor.dir.as_path();
        let n = cursor.next;
        let mut state = self.lock();
        loop {
            let Some(chunk) = state.chunk(dir, n) else {
                state.dirs.remove(dir);
                return None;
            };
            match std::mem::replace(chunk, Chunk::Taken) {
                Chunk::Described(entries) => {
                    let was_full = !self.room(&state);
                    state.held_entries -= entries.len();
                    if was_full && self.room(&state) && state.idle_workers > 0 {
                        self.wake.notify_all();
                    }
                    cursor.next += 1;
                    return Some(entries);
                }
                Chunk::Waiting(listed) => {
                    drop(state);
                    let entries = self.describe_chunk(listed);
                    self.push(&mut self.lock(), subdirs(&entries));
                    cursor.next += 1;
                    return Some(entries);
                }
                Chunk::Describing => {
                    *chunk = Chunk::Describing;
                    state = self.wait_done(state, dir);
                }
                Chunk::Taken => unreachable!("the walker takes each chunk once"),
            }
        }
    }

    /// Ends every worker's loop; results not taken are dropped.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }

    /// Runs on each worker thread until `stop`.
    pub fn worker(&self) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let Some(work) = (if self.room(&state) { state.stack.pop() } else { None }) else {
                state.idle_workers += 1;
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                state.idle_workers -= 1;
                continue;
            };
            match work {
                Work::List(dir) => {
                    if !state.queued.remove(&dir) {
                        continue; // the walker got there first
                    }
                    state.dirs.insert(dir.clone(), DirSlot::Listing);
                    drop(state);
                    let (listed, errors) = self.list(&dir);
                    self.publish_listing(&dir, listed, errors, true);
                }
                Work::Describe(dir, n) => {
                    let Some(chunk) = state.chunk(&dir, n) else { continue };
                    let listed = match std::mem::replace(chunk, Chunk::Describing) {
                        Chunk::Waiting(listed) => listed,
                        other => {
                            *chunk = other; // the walker did it
                            continue;
                        }
                    };
                    drop(state);
                    let entries = self.describe_chunk(listed);
                    self.publish_chunk(&dir, n, entries);
                }
            }
            state = self.lock();
        }
    }

    /// Records a listing: its chunks wait on the stack, except the first, which a worker that
    /// listed it describes now (the walker takes it next anyway).
    fn publish_listing(&self, dir: &Path, listed: Listed, errors: Vec<String>, by_worker: bool) {
        let mut chunks: Vec<Chunk> = Vec::with_capacity(listed.len().div_ceil(CHUNK));
        let mut rest = listed.into_iter();
        loop {
            let piece: Listed = rest.by_ref().take(CHUNK).collect();
            if piece.is_empty() {
                break;
            }
            chunks.push(Chunk::Waiting(piece));
        }
        let first = match chunks.first_mut() {
            Some(first) if by_worker => match std::mem::replace(first, Chunk::Describing) {
                Chunk::Waiting(listed) => Some(listed),
                _ => None,
            },
            _ => None,
        };
        // The first chunk is not offered: the lister describes it, or the walker takes it next.
        let more = (1..chunks.len()).rev().map(|n| Work::Describe(dir.to_path_buf(), n));
        let mut state = self.lock();
        state.dirs.insert(dir.to_path_buf(), DirSlot::Listed { chunks, errors });
        self.push(&mut state, more);
        if state.awaited.as_deref() == Some(dir) {
            self.done.notify_one();
        }
        drop(state);
        if let Some(listed) = first {
            let entries = self.describe_chunk(listed);
            self.publish_chunk(dir, 0, entries);
        }
    }

    fn publish_chunk(&self, dir: &Path, n: usize, entries: Vec<ScannedEntry>) {
        let mut state = self.lock();
        self.push(&mut state, subdirs(&entries));
        let len = entries.len();
        if let Some(chunk) = state.chunk(dir, n) {
            *chunk = Chunk::Described(entries);
            state.held_entries += len;
        }
        if state.awaited.as_deref() == Some(dir) {
            self.done.notify_one();
        }
    }

    /// Lists `dir` in name order, without excluded entries.
    fn list(&self, dir: &Path) -> (Listed, Vec<String>) {
        let mut errors = Vec::new();
        if self.excludes.skips_contents(dir) {
            return (Vec::new(), errors);
        }
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) => return (Vec::new(), vec![format!("listing directory: {e}")]),
        };
        let mut listed = Vec::new();
        for entry in listing {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name();
                    let path = dir.join(&name);
                    if !self.excludes.matches(&path) {
                        listed.push((name, path, entry));
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.excludes.apply_markers(dir, &mut listed, |(name, _, _)| name.as_os_str());
        listed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        (listed, errors)
    }

    fn describe_chunk(&self, listed: Listed) -> Vec<ScannedEntry> {
        let mut entries: Vec<ScannedEntry> = listed
            .into_iter()
            .map(|(name, path, entry)| {
                let found = entry.metadata().map_err(|e| e.to_string()).and_then(|m| describe(&path, m));
                ScannedEntry { name, path, found }
            })
            .collect();
        entries.retain(|e| !e.found.as_ref().is_ok_and(|f| f.meta.is_file() && self.excludes.too_large(f.meta.len())));
        self.look_up_files(&mut entries);
        for entry in &mut entries {
            if let Ok(found) = &mut entry.found {
                found.read_xattrs(&entry.path);
            }
        }
        entries
    }

    fn look_up_files(&self, entries: &mut [ScannedEntry]) {
        let mut files: Vec<(&[u8], &mut Option<CachedFile>)> = entries
            .iter_mut()
            .filter_map(|e| match &mut e.found {
                Ok(found) if found.meta.is_file() => Some((e.path.as_os_str().as_bytes(), &mut found.cached)),
                _ => None,
            })
            .collect();
        if let Some(cache) = self.files_cache.as_ref().filter(|_| !files.is_empty()) {
            // A files cache that cannot be read only means reading the files again.
            let _ = cache.cached_files(&mut files);
        }
    }
}

/// The scanner's worker threads, stopped and joined when dropped.
pub struct ScanPool {
    scanner: Arc<Scanner>,
    workers: Vec<JoinHandle<()>>,
}

impl ScanPool {
    /// Starts the workers on `sources`, the folders among them first.
    pub fn start(scanner: Scanner, sources: &[PathBuf]) -> ScanPool {
        let scanner = Arc::new(scanner);
        scanner.prefetch(sources);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Scanning mostly waits for the disk on a cold cache: more workers than cores.
        let workers = (0..(2 * cores).max(4))
            .filter_map(|_| {
                let scanner = Arc::clone(&scanner);
                std::thread::Builder::new().name("coffer-scan".into()).spawn(move || scanner.worker()).ok()
            })
            .collect();
        ScanPool { scanner, workers }
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }
}

impl Drop for ScanPool {
    fn drop(&mut self) {
        self.scanner.stop();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn subdirs(entries: &[ScannedEntry]) -> impl Iterator<Item = Work> + '_ {
    entries.iter().rev().filter(|e| e.found.as_ref().is_ok_and(|f| f.meta.is_dir())).map(|e| Work::List(e.path.clone()))
}

/// What `lstat` gave, plus a special file's kind; the files-cache record and the extended
/// attributes come after (see [`Found::read_xattrs`]).
pub fn describe(path: &Path, meta: FsMetadata) -> Result<Found, String> {
    let special = if meta.is_file() || meta.is_dir() {
        None
    } else {
        match special_kind(path, &meta) {
            Ok(Some(kind)) => Some(kind),
            // No other kind exists on Linux today; one that did is skipped like one that vanished.
            Ok(None) => return Err("not a kind of file Coffer records".into()),
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok(Found { meta, xattrs: Vec::new(), xattr_error: None, special, cached: None })
}

impl Found {
    /// Fills in the extended attributes: those of the files-cache record when the file is
    /// unchanged since (setting or removing one changes ctime), else read from `path`.
    pub fn read_xattrs(&mut self, path: &Path) {
        if let Some(cached) = self.cached.as_ref().filter(|c| unchanged(c, &self.meta)) {
            self.xattrs = cached.xattrs.clone();
            return;
        }
        match read_xattrs(path) {
            Ok(xattrs) => self.xattrs = xattrs,
            Err(e) => self.xattr_error = Some(format!("reading extended attributes: {e}")),
        }
    }
}
