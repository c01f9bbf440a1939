//! `coffer backup`: walk → read and chunk → hash → deduplicate → compress → encrypt → pack →
//! upload, as a pipeline over threads with bounded queues between stages:
//!
//! ```text
//! scanner pool ──dirs──▶ walker (this thread) ──events──▶ builder thread ── trees ──▶ sink (tree pack)
//!        └──file jobs──▶ reader pool ── new chunks ──▶ sink pack workers ──▶ uploads ──▶ index
//! ```
//! Memory is bounded by the queue sizes, the packs being filled and the uploads in flight;
//! no file and no tree is held whole, except one directory's entries at a time.
//! The snapshot is written last, after every pack and index file it needs (DESIGN §3).

mod builder;
mod direct;
mod meta;
mod oneshot;
mod reader;
mod save;
mod scan;
mod stdin;
mod walker;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::bounded;
use serde_bytes::ByteBuf;

pub use crate::filter::Excludes;
pub use save::{FilesCache, SaveBlobs};
pub use stdin::backup_stdin;

use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::{FilesCacheReader, Packer, RepoError, Repository};

/// Readers chunking a large file at once. One keeps both cores compressing (chunking and
/// hashing run at several times zstd's speed), and each more holds a window of the largest
/// chunk plus chunks in flight.
const LARGE_FILE_READERS: usize = 1;

/// Set in the local database while a backup runs; found set, it means the last one died.
const RUNNING_NOTE: &str = "backup-running";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("source {path}: {source}")]
    Source { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Exclude(#[from] crate::filter::FilterError),
    #[error("nothing to back up: give at least one path")]
    NoPaths,
    #[error("{0}; choose another")]
    Label(String),
    #[error("interrupted; no snapshot was written (uploaded data is reused by the next backup)")]
    Interrupted,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<crate::repo::DbError> for BackupError {
    fn from(e: crate::repo::DbError) -> BackupError {
        BackupError::Repo(e.into())
    }
}

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    /// What else to leave out: markers, sizes, other filesystems.
    pub selection: crate::filter::Selection,
    pub hostname: Option<String>,
    pub progress: Arc<crate::progress::Counters>,
    /// Measure the total size first (in parallel with the backup) so progress can show an ETA.
    pub scan_total: bool,
    /// Read, chunk and pack as usual but write nothing: no pack, index, lock or snapshot in the
    /// store, and no change to the local database's caches.
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Files and folders that could not be read: the snapshot lacks them.
    pub errors: Vec<(PathBuf, String)>,
    pub warnings: Vec<(PathBuf, String)>,
    /// A dry run: `id` is that of the root tree, and nothing was stored.
    pub dry_run: bool,
}

/// Absolute, symlink-free source paths, without duplicates or paths inside other sources;
/// and the sources that do not exist. restic's rule: a missing source among several is an
/// error of the snapshot (marked incomplete), not of the backup; all of them missing is.
fn prepare_sources(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>), BackupError> {
    if paths.is_empty() {
        return Err(BackupError::NoPaths);
    }
    let mut sources = Vec::with_capacity(paths.len());
    let mut missing = Vec::new();
    let mut first_missing = None;
    for path in paths {
        match std::fs::canonicalize(path) {
            Ok(source) => sources.push(source),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push((path.clone(), "source does not exist; the snapshot lacks it".to_string()));
                first_missing.get_or_insert((path.clone(), e));
            }
            Err(source) => return Err(BackupError::Source { path: path.clone(), source }),
        }
    }
    if sources.is_empty() {
        if let Some((path, source)) = first_missing {
            return Err(BackupError::Source { path, source });
        }
    }
    sources.sort();
    sources.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for source in sources {
        if !kept.iter().any(|k| source.starts_with(k)) {
            kept.push(source);
        }
    }
    Ok((kept, missing))
}

/// A backup's sources, checked, with their scan under way. Start it with [`scan_ahead`] as
/// soon as the repository's local database is known, which is before its key is: the scan
/// then runs while the key is derived from the passphrase.
pub struct ScanAhead {
    sources: Vec<PathBuf>,
    /// Sources that do not exist, as snapshot errors.
    missing: Vec<(PathBuf, String)>,
    pool: scan::ScanPool,
}

/// Checks the sources of `options` and starts scanning them, looking files up in
/// `files_cache` (see [`FilesCacheReader`]: it may be opened before the repository is).
pub fn scan_ahead(options: &BackupOptions, files_cache: Option<FilesCacheReader>) -> Result<ScanAhead, BackupError> {
    let (sources, missing) = prepare_sources(&options.paths)?;
    let excludes = Excludes::for_backup(&options.excludes, &options.selection, &sources)?;
    let pool = scan::ScanPool::start(scan::Scanner::new(excludes, files_cache), &sources);
    Ok(ScanAhead { sources, missing, pool })
}

/// Backs up `options.paths` into `repo`.
pub fn backup(
    repo: &Arc<Repository>,
    options: &BackupOptions,
    interrupted: &AtomicBool,
) -> Result<BackupOutcome, BackupError> {
    let files_cache = repo.files_cache_reader();
    let scan = scan_ahead(options, files_cache)?;
    backup_scanned(repo, options, scan, interrupted)
}

impl BackupOptions {
    /// Refuses a host name or tag that would be ambiguous or unsafe to show or mount
    /// ([`crate::safetext::check_label`]).
    pub fn check_labels(&self) -> Result<(), BackupError> {
        let host = self.hostname.clone().unwrap_or_else(crate::repo::hostname);
        let problem = crate::safetext::check_label("host name", &host)
            .or_else(|| self.tags.iter().find_map(|t| crate::safetext::check_label("tag", t)));
        problem.map_or(Ok(()), |p| Err(BackupError::Label(p)))
    }
}

/// Backs up what `scan` (started on the same `options`) scans into `repo`.
pub fn backup_scanned(
    repo: &Arc<Repository>,
    options: &BackupOptions,
    scan: ScanAhead,
    interrupted: &AtomicBool,
) -> Result<BackupOutcome, BackupError> {
    options.check_labels()?;
    let start = chrono::Utc::now();
    let host = options.hostname.clone().unwrap_or_else(crate::repo::hostname);
    repo.check_may_claim(&host)?;
    // The lock first, then the index and plans as they are after it (docs/design.md, "Prune
    // protocol"): either a prune sees this lock, or this backup sees the prune's plan.
    // A dry run takes no lock: it writes nothing a prune could lose.
    let lock = if options.dry_run { None } else { Some(crate::repo::locks::BackupLock::acquire(repo)?) };
    // The three folders are listed at once: a round trip each on a remote store.
    use crate::layout;
    let [index, plans, data] = repo
        .list_object_ids_together([layout::INDEX, layout::PLANS, layout::DATA])
        .map_err(crate::repo::RepoError::from)?;
    repo.sync_index_listed(index)?;
    let condemned = repo.condemned_packs_listed(plans)?;
    let machine = crate::repo::machine_identity();
    // The scan only used the files cache if this machine owned it already, so this changes
    // nothing it has read.
    let claimed = if options.dry_run { None } else { repo.claim_files_cache(&machine)? };
    if let Some(previous) = claimed {
        log::warn!(
            "the local database was last used for backups on {previous}, not {machine} (copied or restored?): \
             every file is read again this time"
        );
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let scanner = scan.pool.scanner();
    let context =
        Context { repo, options, interrupted, sources: &scan.sources, excludes: scanner.excludes(), scanner, cores };
    archive(context, start, lock, &condemned, data, &scan.missing)
}

/// What the stages of one backup share.
#[derive(Clone, Copy)]
struct Context<'a> {
    repo: &'a Arc<Repository>,
    options: &'a BackupOptions,
    interrupted: &'a AtomicBool,
    sources: &'a [PathBuf],
    excludes: &'a Excludes,
    scanner: &'a scan::Scanner,
    cores: usize,
}

/// The backup proper, once the repository is locked and the scanner runs.
fn archive(
    ctx: Context<'_>,
    start: chrono::DateTime<chrono::Utc>,
    lock: Option<crate::repo::locks::BackupLock>,
    condemned: &std::collections::HashSet<Id>,
    data_listing: Vec<(Id, u64)>,
    missing: &[(PathBuf, String)],
) -> Result<BackupOutcome, BackupError> {
    let Context { repo, options, interrupted, sources, cores, .. } = ctx;
    let clock = std::time::Instant::now();
    let phase = |what: &str| log::debug!("backup: {what} after {} ms", clock.elapsed().as_millis());
    // Deduplicate only against packs storage still holds (a lost pack's blobs are uploaded
    // again). A backup that died last time may have left packs without an index; index them
    // now so their data is reused rather than uploaded again.
    let dry_run = options.dry_run;
    // Adopting orphan packs writes an index file: not in a dry run.
    let died = !dry_run && repo.local_note(RUNNING_NOTE)?.is_some();
    let packs = repo.reconcile_packs_listed(data_listing, died, condemned)?;
    if packs.adopted > 0 {
        log::info!("indexed {} packs left by an interrupted backup", packs.adopted);
    }
    if !dry_run {
        repo.set_local_note(RUNNING_NOTE, Some(&start.to_rfc3339()))?;
    }
    phase("packs checked");
    let sink = Packer::with_dry_run(Arc::clone(repo), cores, condemned, dry_run)?;
    phase("known blobs loaded");
    let (walk, build) = run_stages(ctx, &sink, &phase);
    let (stopped, walk_errors, files_unmodified, files_changed, other_nodes) = walk;
    if stopped || interrupted.load(Ordering::Relaxed) {
        // Index what was uploaded, so the next backup reuses it; write no snapshot.
        sink.finish()?;
        if !dry_run {
            repo.set_local_note(RUNNING_NOTE, None)?;
        }
        return Err(BackupError::Interrupted);
    }
    let report = build?;
    phase("trees built");

    let root = store_prefix_trees(&sink, sources, report.roots)?;
    let totals = sink.finish()?;
    phase("packs stored");
    if !dry_run {
        repo.cache_files(&report.cache_records)?;
        phase("files cache stored");
    }

    let mut errors = missing.to_vec();
    errors.extend(walk_errors);
    errors.extend(report.errors);
    let summary = Summary {
        files_new: report.files_read.saturating_sub(files_changed),
        files_changed,
        files_unmodified,
        dirs: report.dirs,
        other_nodes,
        bytes_read: report.bytes_read,
        total_bytes: report.total_bytes,
        raw_added: totals.raw_added,
        bytes_added: totals.bytes_added,
        packs_added: totals.packs_added,
        ..Summary::default()
    };
    let outcome = conclude(
        Concluding { repo, options, interrupted, lock, start, paths: sources, root, summary },
        errors,
        report.warnings,
    )?;
    phase("snapshot saved");
    Ok(outcome)
}

/// What the walk left: whether it stopped, its errors, files unmodified and changed, other
/// nodes.
type Walked = (bool, Vec<(PathBuf, String)>, u64, u64, u64);

/// Runs the stages over the sources (readers, tree builder, the optional size scan, and the
/// walk on this thread) until the walk is done and the builder has built every tree.
fn run_stages(
    ctx: Context<'_>,
    sink: &Packer<'static>,
    phase: &dyn Fn(&str),
) -> (Walked, Result<builder::BuildReport, RepoError>) {
    let Context { repo, options, interrupted, sources, excludes, scanner, cores } = ctx;
    let (event_tx, event_rx) = bounded(8);
    let (job_tx, job_rx) = bounded::<reader::FileJob>(64);

    let large_files = reader::LargeFileGate::new(LARGE_FILE_READERS);
    let gear = crate::chunker::Gear::new(repo.config().chunker, repo.config().gear, &repo.keys().id_key);
    std::thread::scope(|scope| {
        if options.scan_total {
            let progress = &options.progress;
            scope.spawn(move || scan_total(sources, excludes, progress, interrupted));
        }
        // Readers mostly wait for the disk: many more of them than cores keep it busy (on a
        // cold cache, 8 readers back /usr/share up in 3.3 s on 2 cores, 4 in 3.6 s).
        for _ in 0..(4 * cores).clamp(8, 32) {
            let jobs = job_rx.clone();
            let ctx = reader::ReaderContext {
                sink,
                gear: &gear,
                id_key: &repo.keys().id_key,
                progress: &options.progress,
                interrupted,
                large_files: &large_files,
            };
            scope.spawn(move || reader::reader_loop(ctx, jobs));
        }
        drop(job_rx);
        let builder = scope.spawn(move || builder::build(sink, &**repo, event_rx));
        let mut walker = walker::Walker {
            files: &**repo,
            sink,
            scanner,
            events: event_tx,
            batch: Vec::new(),
            jobs: job_tx,
            names: meta::NameCache::default(),
            interrupted,
            errors: Vec::new(),
            files_unmodified: 0,
            files_changed: 0,
            other_nodes: 0,
            progress: &options.progress,
        };
        let mut stopped = false;
        for source in sources {
            let name = source.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| OsString::from("/"));
            if walker.visit_source(source, &name).is_err() {
                stopped = true;
                break;
            }
        }
        if !stopped && walker.flush().is_err() {
            stopped = true;
        }
        phase("walk done");
        scanner.stop();
        let walker::Walker { events, jobs, errors, files_unmodified, files_changed, other_nodes, .. } = walker;
        drop((events, jobs));
        let build = builder
            .join()
            .unwrap_or_else(|_| Err(RepoError::Internal { worker: "tree builder thread", detail: "panicked".into() }));
        ((stopped, errors, files_unmodified, files_changed, other_nodes), build)
    })
}

/// What a backup whose data is stored hands over to have its snapshot written.
struct Concluding<'a> {
    repo: &'a Arc<Repository>,
    options: &'a BackupOptions,
    interrupted: &'a AtomicBool,
    /// None in a dry run.
    lock: Option<crate::repo::locks::BackupLock>,
    start: chrono::DateTime<chrono::Utc>,
    paths: &'a [PathBuf],
    root: Id,
    /// The counts; errors and times are filled in here.
    summary: Summary,
}

/// Writes the snapshot (not in a dry run) once every pack and index it needs is stored.
fn conclude(
    c: Concluding<'_>,
    errors: Vec<(PathBuf, String)>,
    warnings: Vec<(PathBuf, String)>,
) -> Result<BackupOutcome, BackupError> {
    let Concluding { repo, options, interrupted, lock, start, paths, root, mut summary } = c;
    summary.errors = errors.len() as u64;
    summary.start_unix = start.timestamp();
    summary.end_unix = chrono::Utc::now().timestamp();
    let snapshot = Snapshot {
        time_unix: start.timestamp(),
        time_nsec: start.timestamp_subsec_nanos(),
        hostname: options.hostname.clone().unwrap_or_else(crate::repo::hostname),
        username: crate::repo::username(),
        paths: paths.iter().map(|p| ByteBuf::from(p.as_os_str().as_bytes().to_vec())).collect(),
        tags: options.tags.clone(),
        excludes: options.excludes.clone(),
        tree: root,
        incomplete: !errors.is_empty(),
        program: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        summary,
        extensions: lock
            .iter()
            .map(|lock| {
                (crate::repo::locks::LOCK_EXTENSION.to_string(), ByteBuf::from(lock.session.as_bytes().to_vec()))
            })
            .chain(repo.anchor_extensions()?)
            .collect(),
    };
    let Some(lock) = lock else {
        return Ok(BackupOutcome { id: root, snapshot, errors, warnings, dry_run: true });
    };
    // A signal while the last packs were stored still means no snapshot: what was uploaded
    // is indexed and the next backup reuses it.
    if interrupted.load(Ordering::Relaxed) {
        repo.set_local_note(RUNNING_NOTE, None)?;
        return Err(BackupError::Interrupted);
    }
    lock.check_fresh()?;
    crate::crashpoint::hit("backup-before-snapshot-write");
    let id = repo.save_snapshot(&snapshot)?;
    crate::crashpoint::hit("backup-after-snapshot-write");
    drop(lock);
    repo.set_local_note(RUNNING_NOTE, None)?;
    Ok(BackupOutcome { id, snapshot, errors, warnings, dry_run: false })
}

/// Adds up the sizes of the files to back up, for the progress display's ETA. Metadata only,
/// and it stops early when the backup is interrupted.
fn scan_total(sources: &[PathBuf], excludes: &Excludes, progress: &crate::progress::Counters, stop: &AtomicBool) {
    let mut pending: Vec<PathBuf> = sources.to_vec();
    while let Some(path) = pending.pop() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_file() {
            progress.total_bytes.fetch_add(meta.len(), Ordering::Relaxed);
        } else if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()).filter(|p| !excludes.matches(p)));
            }
        }
    }
}

/// One level of the folders leading from `/` to the sources.
#[derive(Default)]
struct PrefixDir {
    children: BTreeMap<Vec<u8>, PrefixEntry>,
}

enum PrefixEntry {
    Dir(PathBuf, PrefixDir),
    Source(Node),
}

/// Stores the trees of the folders above the sources (with their real metadata), so the
/// snapshot's root is `/` and each source sits at its absolute path.
fn store_prefix_trees(sink: &dyn SaveBlobs, sources: &[PathBuf], roots: Vec<Node>) -> Result<Id, RepoError> {
    let mut top = PrefixDir::default();
    let by_name: Vec<(&PathBuf, Node)> = sources.iter().zip(roots).collect();
    for (source, node) in by_name {
        let mut dir = &mut top;
        let mut so_far = PathBuf::from("/");
        let components: Vec<_> = source.components().skip(1).collect();
        for (i, component) in components.iter().enumerate() {
            let name = component.as_os_str().as_bytes().to_vec();
            so_far.push(component);
            if i + 1 == components.len() {
                dir.children.insert(name, PrefixEntry::Source(node.clone()));
                break;
            }
            let entry =
                dir.children.entry(name).or_insert_with(|| PrefixEntry::Dir(so_far.clone(), PrefixDir::default()));
            dir = match entry {
                PrefixEntry::Dir(_, d) => d,
                PrefixEntry::Source(_) => unreachable!("nested sources were removed"),
            };
        }
        if components.is_empty() {
            // Backing up `/` itself: its content is the root.
            if let NodeKind::Dir { subtree } = node.kind {
                return Ok(subtree);
            }
        }
    }
    store_prefix_dir(sink, top)
}

fn store_prefix_dir(sink: &dyn SaveBlobs, dir: PrefixDir) -> Result<Id, RepoError> {
    let mut names = meta::NameCache::default();
    let mut nodes = Vec::with_capacity(dir.children.len());
    for (name, entry) in dir.children {
        match entry {
            PrefixEntry::Source(mut node) => {
                node.name = ByteBuf::from(name);
                nodes.push(node);
            }
            PrefixEntry::Dir(path, sub) => {
                let subtree = store_prefix_dir(sink, sub)?;
                let meta = std::fs::symlink_metadata(&path)
                    .map(|m| meta::metadata(&m, meta::read_xattrs(&path).unwrap_or_default(), &mut names))
                    .unwrap_or_default();
                nodes.push(Node { name: ByteBuf::from(name), kind: NodeKind::Dir { subtree }, meta });
            }
        }
    }
    sink.add_tree(Tree { nodes }.encode())
}

/// The archiver's own steps against an in-memory saver (`save::fakes`): no repository.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::save::fakes::MemoryBlobs;
    use crate::format::pack::BlobKind;
    use crate::format::tree::Metadata;

    fn tree(blobs: &MemoryBlobs, id: &Id) -> Tree {
        let (kind, bytes) = blobs.get(id).expect("tree saved");
        assert_eq!(kind, BlobKind::Tree);
        Tree::decode(&bytes).expect("tree decodes")
    }

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node { name: ByteBuf::from(name.to_vec()), kind, meta: Metadata::default() }
    }

    #[test]
    fn sources_sit_at_their_absolute_paths_below_prefix_trees() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        for sub in ["x/a", "x/b", "y"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        let blobs = MemoryBlobs::default();
        let inner = Id::of_bytes(b"a's tree");
        let sources = [base.join("x/a"), base.join("x/b"), base.join("y")];
        let roots = vec![
            node(b"a", NodeKind::Dir { subtree: inner }),
            node(b"b", NodeKind::File { size: 0, content: Vec::new() }),
            node(b"y", NodeKind::Dir { subtree: inner }),
        ];
        let root = store_prefix_trees(&blobs, &sources, roots).expect("stored");

        // From `/` down to the base folder, one folder a level, with its real metadata.
        let mut at = tree(&blobs, &root);
        for component in base.components().skip(1) {
            let name = component.as_os_str().as_bytes();
            assert_eq!(at.nodes.len(), 1, "only the way to the sources at {}", String::from_utf8_lossy(name));
            assert_eq!(at.nodes[0].name.as_slice(), name);
            assert_ne!(at.nodes[0].meta.mode, 0, "the folder's own metadata");
            let NodeKind::Dir { subtree } = &at.nodes[0].kind else { panic!("a folder") };
            at = tree(&blobs, subtree);
        }
        let names: Vec<&[u8]> = at.nodes.iter().map(|n| n.name.as_slice()).collect();
        assert_eq!(names, [&b"x"[..], b"y"]);
        assert!(matches!(at.nodes[1].kind, NodeKind::Dir { subtree } if subtree == inner), "a source keeps its node");
        let NodeKind::Dir { subtree: x } = &at.nodes[0].kind else { panic!("a folder") };
        let x = tree(&blobs, x);
        let names: Vec<&[u8]> = x.nodes.iter().map(|n| n.name.as_slice()).collect();
        assert_eq!(names, [&b"a"[..], b"b"]);
    }

    #[test]
    fn backing_up_the_root_folder_makes_its_tree_the_root() {
        let blobs = MemoryBlobs::default();
        let inner = Id::of_bytes(b"the root's tree");
        let root =
            store_prefix_trees(&blobs, &[PathBuf::from("/")], vec![node(b"/", NodeKind::Dir { subtree: inner })]);
        assert_eq!(root.expect("stored"), inner);
        assert_eq!(blobs.len(), 0, "nothing above `/` to store");
    }

    #[test]
    fn sources_are_made_absolute_and_nested_ones_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("a/inner")).unwrap();
        let (sources, missing) =
            prepare_sources(&[base.join("a/inner"), base.join("a"), base.join("a/../a"), base.join("gone")]).unwrap();
        assert_eq!(sources, [base.join("a")]);
        assert_eq!(missing.len(), 1);
        assert!(matches!(prepare_sources(&[base.join("gone")]), Err(BackupError::Source { .. })));
        assert!(matches!(prepare_sources(&[]), Err(BackupError::NoPaths)));
    }
}
