//! `coffer restore`: recreate a snapshot (or part of it) under a target folder, bit for bit:
//! contents (holes stay holes), modes, owners (when running as root), timestamps with
//! nanoseconds, xattrs, symlinks, hardlinks, FIFOs and device nodes.
//!
//! The tree walk runs on this thread and creates entries; file chunks are fetched, verified,
//! and written at their offsets by a pool of workers. A file whose data cannot be read or
//! verified is removed and reported, never left with wrong bytes. Folder metadata is applied
//! last, deepest first, so writing into a folder does not disturb its mtime.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crossbeam_channel::bounded;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use crate::filter::Patterns;
use crate::format::tree::{Metadata, Node, NodeKind};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
use crate::repo::BlobLocation;
use crate::repo::{plan_regions, RepoError, Repository, REGION_GAP, REGION_MAX};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("restore target {path}: {source}")]
    Target { path: PathBuf, source: std::io::Error },
    #[error("no space left on the restore target while writing {path}; free space and run the restore again")]
    DiskFull { path: PathBuf },
    #[error("{0:?} is not in this snapshot")]
    NoSuchPath(String),
    #[error(transparent)]
    Pattern(#[from] crate::filter::FilterError),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub progress: Arc<crate::progress::Counters>,
    /// When restoring as root, leave out what grants privileges: set-user/group-id bits,
    /// device nodes, and `security.*` / `trusted.*` xattrs (file capabilities). For snapshots
    /// a write-only key wrote: its holder (a thief, perhaps) chose those bytes (issue 15).
    pub confine_special: bool,
    /// Like `includes`/`excludes`, ignoring case (restic's `--iinclude`, `--iexclude`).
    pub iincludes: Vec<String>,
    pub iexcludes: Vec<String>,
    /// Walk and decide, count and list what would be written; write nothing.
    pub dry_run: bool,
    /// What to do with an entry already at the target.
    pub overwrite: super::restore_policy::Overwrite,
    /// Read every file of the selection back afterwards and compare with the snapshot.
    pub verify: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason (and the damaged object).
    pub errors: Vec<(String, String)>,
    /// Set-id bits, device nodes and privileged xattrs left out (`confine_special`).
    pub special_left_out: u64,
    /// Entries already at the target and kept (`--overwrite`).
    pub skipped: u64,
    /// Files read back and found equal to the snapshot (`--verify`).
    pub verified: u64,
    /// Files whose content differs from the snapshot's (`--verify`); also in `errors`.
    pub verify_failed: u64,
    /// A dry run: nothing was written; `planned` lists what would have been.
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

/// A file being restored. It is created (sized, so zero chunks stay holes) by the first worker
/// with a chunk for it, not by the walk: the walk created a batch's thousands of small files
/// one after another before any of them was read, and ext4's inode allocation can cost a
/// millisecond per file (after many deletions). The workers create them side by side, as
/// their bytes arrive. /usr/share/doc from S3 at 15 ms each way: 1.2-4.9 s before, 0.8-1.3 s
/// after, interleaved runs. A file that fails before it was created is never created.
struct PendingFile {
    path: PathBuf,
    size: u64,
    file: OnceLock<std::io::Result<File>>,
    meta: Metadata,
    remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
    /// Fill the page cache for a range before writing it (see `prefault`).
    prefault: bool,
}

impl PendingFile {
    fn failed(&self) -> bool {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The file, created on first use (replacing what is in the way, as the walk decided).
    fn created(&self) -> std::io::Result<&File> {
        let created = self.file.get_or_init(|| {
            let file =
                replacing(&self.path, || std::fs::OpenOptions::new().write(true).create_new(true).open(&self.path))?;
            file.set_len(self.size)?;
            Ok(file)
        });
        created.as_ref().map_err(copy_of)
    }
}

struct ChunkJob {
    file: Arc<PendingFile>,
    offset: u64,
    /// Where the blob is, looked up once by the walker (which needs its length anyway).
    location: Result<BlobLocation, RepoError>,
}

struct Shared<'a> {
    repo: &'a Repository,
    errors: Mutex<Vec<(String, String)>>,
    disk_full: Mutex<Option<PathBuf>>,
    bytes: AtomicU64,
    as_root: bool,
    /// Leave privileges out (`RestoreOptions::confine_special`, as root only).
    confine: bool,
    progress: &'a crate::progress::Counters,
    /// The target is a local disk filesystem, whose readahead of a hole makes zeroed pages
    /// without any I/O.
    target_local: bool,
    /// Files finished (written and closed, or failed), for the walker's bound on open files.
    finished: Mutex<usize>,
    finished_changed: Condvar,
}

/// Fetching workers for a remote store (each holds at most one chunk, ≤ 4 MiB, at a time).
const REMOTE_WORKERS: usize = 16;

/// Restores the node at `subpath` of a snapshot's tree (or the whole tree) into the target.
pub fn restore(
    repo: &Repository,
    root_tree: &Id,
    subpath: Option<&[u8]>,
    options: &RestoreOptions,
    interrupted: &AtomicBool,
) -> Result<RestoreReport, RestoreError> {
    repo.require_full_key("restore")?;
    let mut excludes = Patterns::new(&options.excludes)?;
    excludes.add(&options.iexcludes, true)?;
    let includes = if options.includes.is_empty() && options.iincludes.is_empty() {
        None
    } else {
        let mut includes = Patterns::new(&options.includes)?;
        includes.add(&options.iincludes, true)?;
        Some(includes)
    };
    if !options.dry_run {
        std::fs::create_dir_all(&options.target)
            .map_err(|source| RestoreError::Target { path: options.target.clone(), source })?;
    }

    let shared = Shared {
        repo,
        errors: Mutex::new(Vec::new()),
        disk_full: Mutex::new(None),
        bytes: AtomicU64::new(0),
        as_root: nix::unistd::geteuid().is_root(),
        confine: options.confine_special && nix::unistd::geteuid().is_root(),
        progress: &options.progress,
        target_local: on_local_disk(&options.target),
        finished: Mutex::new(0),
        finished_changed: Condvar::new(),
    };
    let mut report = RestoreReport::default();
    // Large blobs are read with O_DIRECT (see `store`), which waits for the disk: four workers
    // per core keep both cores decoding meanwhile (the 1 GiB restore: 1.69-1.89 s against
    // 1.81-1.97 s with two per core). Each holds at most two blob buffers.
    let mut workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
    if !repo.is_local() {
        // Each small file is one ranged read: over a network, latency, not the CPU, bounds them.
        workers = workers.max(REMOTE_WORKERS);
    }
    // Over a network, chunks are gathered into batches and read by pack region (see `Batch`).
    let batch = (!repo.is_local()).then(|| Batch::new(open_file_limit()));
    let (tx, rx) = bounded::<Vec<ChunkJob>>(if batch.is_some() { workers } else { 256 });
    let walk_result = std::thread::scope(|scope| {
        for _ in 0..workers {
            let rx = rx.clone();
            let shared = &shared;
            scope.spawn(move || {
                let mut buffers = (Vec::new(), Vec::new());
                for mut jobs in rx {
                    // Interrupted: drop what is queued.
                    if interrupted.load(Ordering::Relaxed) {
                        continue;
                    }
                    if jobs.len() == 1 {
                        write_chunk(shared, jobs.pop().expect("one job"), &mut buffers);
                    } else {
                        write_region(shared, jobs, &mut buffers);
                    }
                }
            });
        }
        drop(rx);
        let mut walker = RestoreWalk {
            shared: &shared,
            excludes: &excludes,
            includes: includes.as_ref(),
            jobs: tx,
            report: &mut report,
            hardlinks: HashMap::new(),
            dirs: Vec::new(),
            interrupted,
            batch,
            opened: 0,
            root: *root_tree,
            dry_run: options.dry_run,
            overwrite: options.overwrite,
            to_verify: (options.verify && !options.dry_run).then(Vec::new),
        };
        let result = match walker.start(root_tree, subpath, &options.target) {
            Ok(()) => walker.flush(),
            Err(e) => {
                walker.abandon();
                Err(e)
            }
        };
        let dirs = std::mem::take(&mut walker.dirs);
        let to_verify = walker.to_verify.take().unwrap_or_default();
        drop(walker);
        result.map(|()| (dirs, to_verify))
    });
    let (dirs, to_verify) = walk_result?;
    // The walk may have queued a file's last chunks before the signal, which the workers then
    // dropped: stopped is stopped, even when no folder was left to walk.
    if interrupted.load(Ordering::Relaxed) {
        return Err(RestoreError::Interrupted);
    }
    if let Some(path) = shared.disk_full.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(RestoreError::DiskFull { path });
    }
    // A dry run created no folder (the target's own may be listed, from a `SNAP:/folder`).
    for (path, meta) in dirs.iter().rev().filter(|_| !options.dry_run) {
        if let Err(e) = apply_metadata(path, meta, shared.as_root, false) {
            shared.errors.lock().unwrap_or_else(|p| p.into_inner()).push((path.display().to_string(), e.to_string()));
        }
    }
    if !options.dry_run {
        report.bytes = shared.bytes.load(Ordering::Relaxed);
    }
    report.errors = shared.errors.into_inner().unwrap_or_else(|p| p.into_inner());
    report.dry_run = options.dry_run;
    verify(repo, to_verify, &mut report, interrupted)?;
    Ok(report)
}

/// `--verify`: reads back each file of the selection (restored or kept) that did not already
/// fail, and records those that differ from the snapshot as errors.
fn verify(
    repo: &Repository,
    files: Vec<(PathBuf, Vec<Id>)>,
    report: &mut RestoreReport,
    interrupted: &AtomicBool,
) -> Result<(), RestoreError> {
    let failed: std::collections::HashSet<String> = report.errors.iter().map(|(path, _)| path.clone()).collect();
    for (path, content) in files {
        if interrupted.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        let shown = path.display().to_string();
        if failed.contains(&shown) {
            continue;
        }
        match super::restore_policy::verify_file(repo, &path, &content) {
            Ok(()) => report.verified += 1,
            Err(message) => {
                report.verify_failed += 1;
                report.errors.push((shown, message));
            }
        }
    }
    Ok(())
}

struct RestoreWalk<'a, 'r> {
    shared: &'a Shared<'r>,
    excludes: &'a Patterns,
    includes: Option<&'a Patterns>,
    jobs: crossbeam_channel::Sender<Vec<ChunkJob>>,
    report: &'a mut RestoreReport,
    /// (device, inode) at backup time → first restored path, to recreate hardlinks.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, Metadata)>,
    interrupted: &'a AtomicBool,
    /// Chunks waiting to be planned by region (remote stores); `None`: each is sent at once.
    batch: Option<Batch>,
    /// Files created so far (compared with `Shared::finished` to bound those open).
    opened: usize,
    /// The snapshot's root tree, to name it in errors.
    root: Id,
    dry_run: bool,
    overwrite: super::restore_policy::Overwrite,
    /// Files to read back afterwards (`--verify`), with their content.
    to_verify: Option<Vec<(PathBuf, Vec<Id>)>>,
}

/// A folder being restored: where its entries go, and whether `--include` selected it.
struct RestoreDir {
    dest: PathBuf,
    included: bool,
}

impl Visitor for RestoreWalk<'_, '_> {
    type Error = RestoreError;
    type Dir = RestoreDir;

    fn entry(&mut self, dir: &mut RestoreDir, path: &[u8], node: &Node) -> Result<Option<RestoreDir>, RestoreError> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        if let Some(path) = self.shared.disk_full.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(RestoreError::DiskFull { path });
        }
        let dest = dir.dest.join(OsStr::from_bytes(&node.name));
        let included = dir.included || self.includes.is_none();
        self.restore_node(node, Path::new(OsStr::from_bytes(path)), &dest, included)
    }
}

/// Chunks gathered before they are read: grouped by pack region, a batch costs a request per
/// region (see `repo::plan_regions`) instead of one per chunk. Its files are open meanwhile, so
/// a batch closes at `max_files` files (bounded by the open-file limit) or [`BATCH_BYTES`].
struct Batch {
    jobs: Vec<(BlobLocation, ChunkJob)>,
    files: usize,
    bytes: u64,
    max_files: usize,
}

/// Plaintext bytes a batch may plan at once: enough for many regions of large files, while the
/// workers start on the first batch early.
const BATCH_BYTES: u64 = 256 << 20;

impl Batch {
    fn new(open_file_limit: usize) -> Batch {
        // A quarter of the limit per batch: one being gathered, one being written, and room
        // for the process's other descriptors.
        Batch { jobs: Vec::new(), files: 0, bytes: 0, max_files: (open_file_limit / 4).clamp(16, 4096) }
    }

    fn full(&self) -> bool {
        self.files >= self.max_files || self.bytes >= BATCH_BYTES
    }
}

impl RestoreWalk<'_, '_> {
    fn send(&self, jobs: Vec<ChunkJob>) -> std::io::Result<()> {
        self.jobs.send(jobs).map_err(|_| std::io::Error::other("restore workers stopped"))
    }

    /// Sends the gathered chunks, region by region in pack order.
    fn flush(&mut self) -> Result<(), RestoreError> {
        let Some(batch) = self.batch.as_mut() else { return Ok(()) };
        let jobs = std::mem::take(&mut batch.jobs);
        (batch.files, batch.bytes) = (0, 0);
        for region in plan_regions(jobs, REGION_GAP, REGION_MAX) {
            self.send(region.into_iter().map(|(_, job)| job).collect())
                .map_err(|source| RestoreError::Target { path: PathBuf::from("(restore)"), source })?;
        }
        Ok(())
    }

    /// After a failed walk: the chunks not sent yet will not be read, so their files are
    /// removed and reported rather than left at full size with holes for content.
    fn abandon(&mut self) {
        let Some(batch) = self.batch.as_mut() else { return };
        for (_, job) in std::mem::take(&mut batch.jobs) {
            deliver(self.shared, &job, Err("the restore stopped before it was read".into()));
        }
    }

    /// Before a file is created: with batches, waits until fewer than twice a batch's files are
    /// open (sending the batch first, so the wait always ends).
    fn wait_for_file_room(&mut self) -> Result<(), RestoreError> {
        let Some(limit) = self.batch.as_ref().map(|b| b.max_files * 2) else { return Ok(()) };
        let finished = *self.shared.finished.lock().unwrap_or_else(|p| p.into_inner());
        if self.opened - finished.min(self.opened) < limit {
            return Ok(());
        }
        self.flush()?;
        let mut finished = self.shared.finished.lock().unwrap_or_else(|p| p.into_inner());
        while self.opened - (*finished).min(self.opened) >= limit {
            finished = self.shared.finished_changed.wait(finished).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    fn start(&mut self, root: &Id, subpath: Option<&[u8]>, target: &Path) -> Result<(), RestoreError> {
        let components: Vec<&[u8]> = subpath.unwrap_or(b"/").split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if components.is_empty() {
            return self.restore_tree(root, Path::new("/"), target, false);
        }
        let mut tree = self.shared.repo.load_tree(root)?;
        let mut snapshot_path = PathBuf::from("/");
        for (i, component) in components.iter().enumerate() {
            let node = tree
                .find(component)
                .cloned()
                .ok_or_else(|| RestoreError::NoSuchPath(String::from_utf8_lossy(subpath.unwrap_or(b"/")).into()))?;
            snapshot_path.push(OsStr::from_bytes(component));
            if i + 1 == components.len() {
                return match node.kind {
                    // The folder's contents go straight into the target, as restic does.
                    NodeKind::Dir { subtree } => {
                        self.dirs.push((target.to_path_buf(), node.meta.clone()));
                        self.restore_tree(&subtree, &snapshot_path, target, false)
                    }
                    _ => self
                        .restore_node(&node, &snapshot_path, &target.join(OsStr::from_bytes(&node.name)), false)
                        .map(|_| ()),
                };
            }
            match node.kind {
                NodeKind::Dir { subtree } => tree = self.shared.repo.load_tree(&subtree)?,
                _ => return Err(RestoreError::NoSuchPath(String::from_utf8_lossy(subpath.unwrap_or(b"/")).into())),
            }
        }
        Ok(())
    }

    fn selected(&self, snapshot_path: &Path, parent_included: bool) -> (bool, bool) {
        if self.excludes.matches(snapshot_path) {
            return (false, false);
        }
        let included = parent_included || self.includes.is_none_or(|inc| inc.matches(snapshot_path));
        (true, included)
    }

    fn restore_tree(
        &mut self,
        id: &Id,
        snapshot_dir: &Path,
        dest: &Path,
        parent_included: bool,
    ) -> Result<(), RestoreError> {
        let label = format!("snapshot tree {}", self.root.short());
        let base = snapshot_dir.as_os_str().as_bytes();
        let state = RestoreDir { dest: dest.to_path_buf(), included: parent_included };
        let repo = self.shared.repo;
        walk::walk(repo, &label, id, base, state, self)
    }

    /// Restores one entry; for a folder, creates it and returns what its entries need.
    fn restore_node(
        &mut self,
        node: &Node,
        snapshot_path: &Path,
        dest: &Path,
        parent_included: bool,
    ) -> Result<Option<RestoreDir>, RestoreError> {
        let (visit, included) = self.selected(snapshot_path, parent_included);
        if !visit {
            return Ok(None);
        }
        let confined;
        let node = if self.shared.confine {
            match confine(node) {
                Confined::Unchanged => node,
                Confined::Changed(safe) => {
                    self.report.special_left_out += 1;
                    confined = safe;
                    &confined
                }
                Confined::LeftOut => {
                    self.report.special_left_out += 1;
                    return Ok(None);
                }
            }
        } else {
            node
        };
        if let NodeKind::Dir { .. } = &node.kind {
            if included && self.dry_run {
                if !dest.is_dir() {
                    self.report.dirs += 1;
                    self.report.planned.push(format!("{}/", dest.display()));
                }
                return Ok(Some(RestoreDir { dest: dest.to_path_buf(), included }));
            }
            if included {
                self.make_parent(dest)?;
                match std::fs::create_dir(dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    // Too deep for the target's paths (a snapshot may nest past PATH_MAX): that
                    // folder is lost, the rest of the snapshot is not.
                    Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                        let mut errors = self.shared.errors.lock().unwrap_or_else(|p| p.into_inner());
                        errors.push((dest.display().to_string(), format!("{e}; what it holds was not restored")));
                        return Ok(None);
                    }
                    Err(source) => return Err(RestoreError::Target { path: dest.to_path_buf(), source }),
                }
                self.report.dirs += 1;
                self.dirs.push((dest.to_path_buf(), node.meta.clone()));
            }
            return Ok(Some(RestoreDir { dest: dest.to_path_buf(), included }));
        }
        if !included {
            return Ok(None);
        }
        if let (Some(to_verify), NodeKind::File { content, .. }) = (self.to_verify.as_mut(), &node.kind) {
            to_verify.push((dest.to_path_buf(), content.clone()));
        }
        if !super::restore_policy::should_write(self.overwrite, dest, node) {
            self.report.skipped += 1;
            return Ok(None);
        }
        if self.dry_run {
            match &node.kind {
                NodeKind::File { size, .. } => {
                    self.report.files += 1;
                    self.report.bytes += size;
                }
                NodeKind::Socket => return Ok(None),
                _ => self.report.other += 1,
            }
            self.report.planned.push(dest.display().to_string());
            return Ok(None);
        }
        self.make_parent(dest)?;
        let result = self.restore_leaf(node, dest);
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        if let Err(e) = result {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(RestoreError::DiskFull { path: dest.to_path_buf() });
            }
            self.shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((dest.display().to_string(), e.to_string()));
        }
        Ok(None)
    }

    /// Creates missing parents of an entry selected by `--include` inside unselected folders.
    fn make_parent(&self, dest: &Path) -> Result<(), RestoreError> {
        if self.includes.is_none() {
            // Without --include every folder is created before what it holds.
            return Ok(());
        }
        match dest.parent() {
            Some(parent) if !parent.exists() => std::fs::create_dir_all(parent)
                .map_err(|source| RestoreError::Target { path: parent.to_path_buf(), source }),
            _ => Ok(()),
        }
    }

    fn restore_leaf(&mut self, node: &Node, dest: &Path) -> std::io::Result<()> {
        let meta = &node.meta;
        if !matches!(node.kind, NodeKind::Dir { .. }) && meta.nlink > 1 {
            if let Some(first) = self.hardlinks.get(&(meta.dev, meta.inode)) {
                replacing(dest, || std::fs::hard_link(first, dest))?;
                self.report.files += 1;
                return Ok(());
            }
            self.hardlinks.insert((meta.dev, meta.inode), dest.to_path_buf());
        }
        match &node.kind {
            NodeKind::File { size, content } => {
                self.wait_for_file_room().map_err(std::io::Error::other)?;
                let pending = Arc::new(PendingFile {
                    path: dest.to_path_buf(),
                    size: *size,
                    file: OnceLock::new(),
                    meta: meta.clone(),
                    remaining: AtomicUsize::new(content.len()),
                    failure: Mutex::new(None),
                    prefault: self.shared.target_local && content.len() > 1,
                });
                // Created here when nothing else would create it in time: an empty file, or
                // one whose other names are linked to it right after this.
                if content.is_empty() || meta.nlink > 1 {
                    pending.created()?;
                }
                self.report.files += 1;
                self.opened += 1;
                self.shared.progress.add_file();
                self.shared.progress.set_current(dest);
                if content.is_empty() {
                    return finish_file(self.shared, &pending);
                }
                let mut offset = 0u64;
                for id in content {
                    // A large file is many chunks: stop between them, not only between files.
                    if self.interrupted.load(Ordering::Relaxed) {
                        break;
                    }
                    let location = self.shared.repo.locate(id);
                    let length = location.as_ref().map(|l| l.entry.raw_len as u64).unwrap_or(0);
                    let job = ChunkJob { file: Arc::clone(&pending), offset, location };
                    offset += length;
                    match (&mut self.batch, &job.location) {
                        (Some(batch), Ok(location)) => {
                            batch.bytes += location.entry.raw_len as u64;
                            batch.jobs.push((*location, job));
                        }
                        _ => self.send(vec![job])?,
                    }
                }
                if let Some(batch) = &mut self.batch {
                    batch.files += 1;
                    if batch.full() {
                        self.flush().map_err(std::io::Error::other)?;
                    }
                }
                Ok(())
            }
            NodeKind::Symlink { target } => {
                replacing(dest, || std::os::unix::fs::symlink(OsStr::from_bytes(target), dest))?;
                self.report.other += 1;
                apply_metadata(dest, meta, self.shared.as_root, true)
            }
            NodeKind::Fifo => {
                replacing(dest, || Ok(nix::unistd::mkfifo(dest, Mode::from_bits_truncate(meta.mode & 0o777))?))?;
                self.report.other += 1;
                apply_metadata(dest, meta, self.shared.as_root, false)
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                let kind =
                    if matches!(node.kind, NodeKind::CharDevice { .. }) { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                replacing(dest, || {
                    let mode = Mode::from_bits_truncate(meta.mode & 0o777);
                    Ok(nix::sys::stat::mknod(dest, kind, mode, *rdev as nix::libc::dev_t)?)
                })?;
                self.report.other += 1;
                apply_metadata(dest, meta, self.shared.as_root, false)
            }
            // A socket only means something to the process that listened on it.
            NodeKind::Socket => Ok(()),
            NodeKind::Dir { .. } => Ok(()),
        }
    }
}

/// This process's soft limit on open files (the binary raises it to the hard limit at start):
/// restore over a network keeps a batch of files open, see `Batch`.
fn open_file_limit() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
}

/// Creates an entry with `create`; if something is already there (a restore over an
/// earlier one), removes it and tries once more. A folder in the way is an error.
fn replacing<T>(path: &Path, create: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path)?.is_dir() {
                return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a folder is in the way"));
            }
            std::fs::remove_file(path)?;
            create()
        }
        other => other,
    }
}

/// `buffers`: the worker's sealed and plain blob buffers, reused from chunk to chunk.
fn write_chunk(shared: &Shared<'_>, job: ChunkJob, buffers: &mut (Vec<u8>, Vec<u8>)) {
    if job.file.failed() {
        return deliver(shared, &job, Ok(&[]));
    }
    let (sealed, data) = buffers;
    let result = match &job.location {
        Ok(l) => shared
            .repo
            .read_blob_into(l, crate::repo::Copies::Current, sealed, data)
            .map(|()| &data[..])
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    deliver(shared, &job, result);
}

/// Reads one pack region's chunks with one request (see `Repository::read_region`) and
/// writes each as it is opened. Chunks of files that already failed are not read.
fn write_region(shared: &Shared<'_>, jobs: Vec<ChunkJob>, buffers: &mut (Vec<u8>, Vec<u8>)) {
    let (live, dead): (Vec<ChunkJob>, Vec<ChunkJob>) = jobs.into_iter().partition(|j| !j.file.failed());
    for job in &dead {
        deliver(shared, job, Ok(&[]));
    }
    let (locations, live): (Vec<BlobLocation>, Vec<ChunkJob>) = live
        .into_iter()
        .filter_map(|job| match &job.location {
            Ok(l) => Some((*l, job)),
            Err(_) => {
                // Batches hold only located chunks; should one slip in, it fails on its own.
                write_chunk(shared, job, buffers);
                None
            }
        })
        .unzip();
    let (sealed, data) = buffers;
    shared.repo.read_region(&locations, sealed, data, |i, result| {
        deliver(shared, &live[i], result.map_err(|e| e.to_string()));
    });
}

/// Writes a chunk's plaintext (or records why it could not be had), and finishes its file
/// after its last chunk. Called exactly once per chunk; a chunk of a file that already failed
/// is only counted.
fn deliver(shared: &Shared<'_>, job: &ChunkJob, data: Result<&[u8], String>) {
    if !job.file.failed() {
        // The offsets of a file's later chunks were planned from this entry's length: a copy of
        // another length (read after this entry's copy failed) would land in the wrong place.
        let planned = job.location.as_ref().map_or(0, |l| l.entry.raw_len as usize);
        let data = data.and_then(|data| match data.len() == planned {
            true => Ok(data),
            false => Err(format!(
                "blob {} is {} bytes where its index entry said {planned}: not written (run `coffer check`)",
                job.location.as_ref().map(|l| l.entry.id.short()).unwrap_or_default(),
                data.len()
            )),
        });
        let result = data.and_then(|data| {
            let file = job.file.created();
            file.and_then(|file| write_sparse(file, data, job.offset, job.file.prefault)).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    shared.disk_full.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(job.file.path.clone());
                }
                e.to_string()
            })
        });
        match result {
            Ok(written) => {
                shared.bytes.fetch_add(written, Ordering::Relaxed);
                shared.progress.add_bytes(written);
            }
            Err(e) => {
                job.file.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            }
        }
    }
    if job.file.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        let _ = finish_file(shared, &job.file);
    }
}

/// Writes `data` at `offset`, skipping zero pages (aligned to the file offset) so they stay
/// holes in the file, which was sized beforehand; `read_ahead_first` runs `prefault` on each
/// range before writing it. Returns the bytes actually written.
fn write_sparse(file: &File, data: &[u8], offset: u64, read_ahead_first: bool) -> std::io::Result<u64> {
    let write = |from: usize, to: usize| {
        if read_ahead_first {
            prefault(file, offset + from as u64, (to - from) as u64);
        }
        file.write_all_at(&data[from..to], offset + from as u64)
    };
    const PAGE: u64 = 4096;
    let mut written = 0;
    let mut run: Option<usize> = None;
    let mut start = 0usize;
    while start < data.len() {
        let end = ((((offset + start as u64) / PAGE) + 1) * PAGE - offset).min(data.len() as u64) as usize;
        let zero = data[start..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(start),
            (true, Some(from)) => {
                write(from, start)?;
                written += (start - from) as u64;
                run = None;
            }
            _ => {}
        }
        start = end;
    }
    if let Some(from) = run {
        write(from, data.len())?;
        written += (data.len() - from) as u64;
    }
    Ok(written)
}

/// Asks the kernel to read ahead a range of the file that is still a hole, so it adds
/// zeroed pages to the page cache before the range is written.
///
/// Writes to one file hold its inode lock, so the workers restoring a large file take turns,
/// and a write's first touch of each fresh page happens under that lock. Readahead takes no
/// such lock: the workers then fault in fresh pages side by side, and the locked write only
/// copies. On a virtual machine whose host has reclaimed the guest's free memory, first
/// touches dominate: the 1 GiB restore went from 2.33 s to 1.51 s (medians of five,
/// interleaved). A small file has one writer and nothing to gain, and a network filesystem
/// would fetch the hole over the wire, so this is only for files of several chunks on a local
/// disk. A hint: its failure changes nothing.
fn prefault(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // One call reads ahead at most the device's readahead window, 128 KiB by default.
    const STEP: u64 = 128 * 1024;
    let end = offset + len;
    let mut from = offset;
    while from < end {
        let step = STEP.min(end - from);
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            from as i64,
            step as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
        from += step;
    }
}

fn on_local_disk(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, XFS_SUPER_MAGIC};
    statfs(path).is_ok_and(|fs| {
        // ext2 and ext3 share ext4's magic number.
        [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, F2FS_SUPER_MAGIC].contains(&fs.filesystem_type())
    })
}

/// An I/O error again (they are not `Clone`), keeping the OS error code that disk-full
/// detection looks at.
fn copy_of(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Applies metadata once the last chunk is written, or removes a file that failed.
fn finish_file(shared: &Shared<'_>, file: &PendingFile) -> std::io::Result<()> {
    let failure = file.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    let result = match (failure, file.file.get()) {
        (Some(reason), created) => {
            // Only what this restore created is removed: a file it never got to stays as it was.
            if matches!(created, Some(Ok(_))) {
                let _ = std::fs::remove_file(&file.path);
            }
            Err(std::io::Error::other(format!("not restored: {reason}")))
        }
        (None, Some(Ok(created))) => apply_file_metadata(created, &file.meta, shared.as_root),
        (None, Some(Err(e))) => Err(copy_of(e)),
        (None, None) => Err(std::io::Error::other("not restored: none of its content was read")),
    };
    if let Err(e) = &result {
        shared.errors.lock().unwrap_or_else(|p| p.into_inner()).push((file.path.display().to_string(), e.to_string()));
    }
    *shared.finished.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    shared.finished_changed.notify_all();
    result
}

enum Confined {
    Unchanged,
    Changed(Node),
    LeftOut,
}

/// `node` without what would grant privileges when restored as root: device nodes are left
/// out, set-id bits cleared, `security.*` and `trusted.*` xattrs (capabilities, labels) dropped.
fn confine(node: &Node) -> Confined {
    if matches!(node.kind, NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. }) {
        return Confined::LeftOut;
    }
    let privileged = |name: &[u8]| name.starts_with(b"security.") || name.starts_with(b"trusted.");
    if node.meta.mode & 0o6000 == 0 && !node.meta.xattrs.iter().any(|x| privileged(&x.name)) {
        return Confined::Unchanged;
    }
    let mut safe = node.clone();
    safe.meta.mode &= !0o6000;
    safe.meta.xattrs.retain(|x| !privileged(&x.name));
    Confined::Changed(safe)
}

/// Like [`apply_metadata`], through the open file: no path lookups, which matters with
/// many small files.
fn apply_file_metadata(file: &File, meta: &Metadata, as_root: bool) -> std::io::Result<()> {
    use xattr::FileExt as _;
    for attr in &meta.xattrs {
        let name = OsStr::from_bytes(&attr.name);
        file.set_xattr(name, &attr.value)
            .map_err(|e| std::io::Error::new(e.kind(), format!("setting xattr {}: {e}", name.to_string_lossy())))?;
    }
    if as_root {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
    }
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(meta.mode))?;
    let at = |secs: i64, nsec: u32| {
        let whole = std::time::Duration::from_secs(secs.unsigned_abs());
        let base = if secs >= 0 { std::time::UNIX_EPOCH + whole } else { std::time::UNIX_EPOCH - whole };
        base + std::time::Duration::from_nanos(nsec.into())
    };
    let modified = at(meta.mtime, meta.mtime_nsec);
    let accessed = if meta.atime == 0 && meta.atime_nsec == 0 { modified } else { at(meta.atime, meta.atime_nsec) };
    file.set_times(std::fs::FileTimes::new().set_accessed(accessed).set_modified(modified))
}

/// xattrs, then owner (which clears set-id bits), then mode, then times (last, since the
/// other steps change ctime only, but writing xattrs may touch mtime on some filesystems).
fn apply_metadata(path: &Path, meta: &Metadata, as_root: bool, is_symlink: bool) -> std::io::Result<()> {
    for attr in &meta.xattrs {
        let name = OsStr::from_bytes(&attr.name);
        if let Err(e) = xattr::set(path, name, &attr.value) {
            // user.* xattrs are not allowed on symlinks; others may be unsupported here.
            if !is_symlink {
                return Err(std::io::Error::new(e.kind(), format!("setting xattr {}: {e}", name.to_string_lossy())));
            }
        }
    }
    if as_root {
        nix::unistd::fchownat(
            None,
            path,
            Some(meta.uid.into()),
            Some(meta.gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if !is_symlink {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(meta.mode))?;
    }
    let atime = if meta.atime == 0 && meta.atime_nsec == 0 {
        TimeSpec::new(meta.mtime, meta.mtime_nsec as i64)
    } else {
        TimeSpec::new(meta.atime, meta.atime_nsec as i64)
    };
    let mtime = TimeSpec::new(meta.mtime, meta.mtime_nsec as i64);
    nix::sys::stat::utimensat(None, path, &atime, &mtime, nix::sys::stat::UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_pages_stay_holes() {
        for prefault in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = File::create(&path).unwrap();
            file.set_len(1 << 20).unwrap();
            let mut data = vec![0u8; 512 * 1024];
            data[100] = 1;
            data[300_000] = 2;
            let written = write_sparse(&file, &data, 1000, prefault).unwrap();
            assert!(written <= 3 * 4096, "wrote {written}");
            let back = std::fs::read(&path).unwrap();
            assert_eq!(&back[1000..1000 + data.len()], &data[..]);
            assert!(std::fs::metadata(&path).unwrap().blocks() * 512 <= 64 * 1024);
        }
    }

    /// Chunks that share pages, written last first by several threads, with the pages read
    /// ahead before each write: the readahead must never cost a byte already written.
    #[test]
    fn prefaulted_writes_out_of_order_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let expected: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 | 1).collect();
        file.set_len(expected.len() as u64).unwrap();
        let cuts: Vec<usize> = (0..=expected.len()).step_by(70_001).chain([expected.len()]).collect();
        let pieces: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).rev().collect();
        std::thread::scope(|scope| {
            for part in pieces.chunks(pieces.len().div_ceil(4)) {
                let (file, expected) = (&file, &expected);
                scope.spawn(move || {
                    for &(from, to) in part {
                        write_sparse(file, &expected[from..to], from as u64, true).unwrap();
                    }
                });
            }
        });
        drop(file);
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn pseudo_filesystems_are_not_local_disks() {
        assert!(!on_local_disk(Path::new("/proc")));
        assert!(!on_local_disk(Path::new("/no/such/folder")));
    }
}
