//! The one pack writer: every blob the repository gains is written by a [`Packer`] — a
//! backup's and a copy's (which stream, deduplicate against the index, and index as they go),
//! prune's repack and `repair snapshots`' new trees (which decide themselves what to write and
//! index it themselves). One type owns what they share:
//!
//! - **deduplication against the index** (a backup's and a copy's: [`Dedup::AgainstIndex`],
//!   counting blobs only in condemned packs as absent) or none ([`Dedup::ByCaller`]);
//! - **open packs per kind**, in spool files (packs never sit whole in memory), closed at
//!   [`pack_target`] (tree packs at a quarter: one rule, here); data blobs packed by a pool of
//!   worker threads (one open data pack each) when the packer owns its repository handle, on
//!   the calling thread otherwise;
//! - **publish and wait**, with a bounded number of uploads in flight, so fsync or a network
//!   round trip overlaps packing (remote backup speed depends on it);
//! - **packs before index** (DESIGN §3): an index file every [`PACKS_PER_INDEX`] packs or
//!   [`INDEX_INTERVAL`] and at the end ([`Indexing::AsItGoes`]), or the packs handed back for
//!   the caller to index with others ([`Indexing::ByCaller`], prune);
//! - **the tree-cache batch** (new trees into the local cache, so the next `ls` reads none);
//! - **the crash points** the crash matrix kills at: after each pack is stored (named by the
//!   caller: `backup-after-pack-upload`, `prune-after-new-pack`, `repair-after-tree-pack`),
//!   and `backup-before-index-write` / `backup-after-index-write` around the index files it
//!   writes as it goes.
//!
//! This file decides what goes into which pack and when a pack closes; `spool.rs` moves the
//! bytes (spool files, publish and wait, the index files written as it goes, the data workers).
//! The archiver sees this type only through the `SaveBlobs` trait it declares.

mod spool;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use super::{RepoError, Repository};
use crate::format::config::Config;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::keys::DomainKeys;
use crate::store::Publishing;
use spool::{pack_worker, SpooledPack};

/// The size at which a pack of `kind` is closed. Tree packs close at a quarter: trees are read
/// on every listing, so smaller packs keep a cold `ls` from fetching megabytes of neighbours.
pub fn pack_target(config: &Config, kind: BlobKind) -> u64 {
    match kind {
        BlobKind::Data => u64::from(config.pack_target),
        BlobKind::Tree => u64::from(config.pack_target) / 4,
    }
}

/// Packs being stored at once (their bytes are in spool files, not memory): enough to overlap
/// fsync or network latency with packing.
const UPLOADS_IN_FLIGHT: usize = 4;
/// An index file is written every this many packs or this often, whichever comes first, so
/// the uploads of a backup killed outright are found (and reused) by the next run.
const PACKS_PER_INDEX: usize = 64;
const TREE_CACHE_BATCH: usize = 512;
const TREE_CACHE_BYTES: usize = 1 << 20;
const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Chunk buffers kept for reuse. A buffer this large is a fresh mapping when allocated
/// (see `cli::alloc`), and faulting in a new one for every chunk cost more system time than
/// reading the file; a few spares cover the chunks in flight.
const SPARE_BUFFERS: usize = 1;
const SPARE_MIN_CAPACITY: usize = 256 << 10;
const SPARE_MAX_CAPACITY: usize = 4 << 20;
/// Gathers small blobs into fewer writes; larger ones go to the spool file directly, with no
/// copy through the buffer.
const PACK_WRITE_BUFFER: usize = 64 << 10;

/// Which blobs a packer skips.
enum Dedup<'c> {
    /// Those the index of its domain holds (except only in `condemned` packs, which a prune
    /// plan will delete) and those already added in this run: a backup, a copy.
    AgainstIndex { condemned: &'c HashSet<Id> },
    /// None: the caller adds exactly what must be written (prune's live blobs, repair's new
    /// trees).
    ByCaller,
}

/// Who writes the index files naming the packs a packer stores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// The packer, every [`PACKS_PER_INDEX`] packs or [`INDEX_INTERVAL`], and at the end.
    AsItGoes,
    /// The caller, with the packs [`Packer::finish_unindexed`] returns (prune indexes them
    /// together with the packs it keeps).
    ByCaller,
}

/// How a packer is set up; its constructors name the settings each caller uses.
struct PackerOptions<'c> {
    dedup: Dedup<'c>,
    indexing: Indexing,
    /// New trees go to the local tree cache too.
    cache_trees: bool,
    /// Packs are built (so sizes are real) and then dropped: nothing reaches the store or the
    /// local tree cache (`backup --dry-run`).
    dry_run: bool,
    /// Hit after each pack is stored (the crash matrix kills there).
    after_pack: &'static str,
}

#[derive(Default)]
pub struct SinkStats {
    /// Plaintext bytes of the new blobs.
    pub raw_added: AtomicU64,
    /// The same blobs after compression (and encryption overhead): what the store gains.
    pub bytes_added: AtomicU64,
    pub packs_added: AtomicU64,
}

/// What a finished packer added to the repository.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkTotals {
    pub raw_added: u64,
    pub bytes_added: u64,
    pub packs_added: u64,
}

struct Uploads {
    in_flight: VecDeque<(IndexPack, Publishing)>,
    done: Vec<IndexPack>,
    last_index: std::time::Instant,
}

/// The repository a packer writes to: owned (a backup's packer, whose worker threads outlive
/// any borrow) or borrowed (prune and repair, which pack on their own thread).
enum RepoRef<'a> {
    Owned(Arc<Repository>),
    Borrowed(&'a Repository),
}

impl std::ops::Deref for RepoRef<'_> {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        match self {
            RepoRef::Owned(repo) => repo,
            RepoRef::Borrowed(repo) => repo,
        }
    }
}

struct Shared<'a> {
    repo: RepoRef<'a>,
    domain: DomainKeys,
    /// Chunk buffers on their way back from the pack workers to the readers.
    spare: (Sender<Vec<u8>>, crossbeam_channel::Receiver<Vec<u8>>),
    uploads: Mutex<Uploads>,
    failure: Mutex<Option<RepoError>>,
    stats: SinkStats,
    indexing: Indexing,
    dry_run: bool,
    after_pack: &'static str,
}

pub struct Packer<'a> {
    shared: Arc<Shared<'a>>,
    /// Blob ids in the repository or already queued in this run; `None` with [`Dedup::ByCaller`].
    known: Option<Mutex<HashSet<Id>>>,
    /// To the data workers; `None` when data is packed on the calling thread.
    data_tx: Option<Sender<(Id, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    /// The packs open on the calling threads, by kind (trees always; data without workers).
    open: Mutex<HashMap<BlobKind, SpooledPack>>,
    cache_trees: bool,
    /// Trees waiting to be written to the local cache, and their total size.
    trees_to_cache: Mutex<(Vec<TreeBytes>, usize)>,
}

type TreeBytes = (Id, Vec<u8>);

/// A packer that owns its repository handle can pack on worker threads: backup and copy.
impl Packer<'static> {
    /// A backup's or a copy's packer: `workers` threads pack data, blobs the index holds are
    /// skipped (`condemned`: packs a prune plan will delete; blobs found only there count as
    /// absent), index files are written as it goes, new trees are cached.
    pub fn new(repo: Arc<Repository>, workers: usize, condemned: &HashSet<Id>) -> Result<Self, RepoError> {
        Packer::with_dry_run(repo, workers, condemned, false)
    }

    /// Like [`new`](Self::new); with `dry_run`, blobs are packed and counted but never stored.
    pub fn with_dry_run(
        repo: Arc<Repository>,
        workers: usize,
        condemned: &HashSet<Id>,
        dry_run: bool,
    ) -> Result<Self, RepoError> {
        let domain = repo.keys().write_domain();
        let options = PackerOptions {
            dedup: Dedup::AgainstIndex { condemned },
            indexing: Indexing::AsItGoes,
            cache_trees: true,
            dry_run,
            after_pack: "backup-after-pack-upload",
        };
        let mut packer = Packer::start(RepoRef::Owned(repo), domain, options)?;
        packer.spawn_workers(workers)?;
        Ok(packer)
    }
}

impl<'a> Packer<'a> {
    /// A packer that writes exactly what it is given in `domain`, on the calling thread, and
    /// hands its packs back for indexing (prune's repack, repair's new trees), hitting
    /// `after_pack` after each pack is stored.
    pub fn in_domain(repo: &'a Repository, domain: DomainKeys, after_pack: &'static str) -> Packer<'a> {
        let options = PackerOptions {
            dedup: Dedup::ByCaller,
            indexing: Indexing::ByCaller,
            cache_trees: false,
            dry_run: false,
            after_pack,
        };
        Packer::start_with(RepoRef::Borrowed(repo), domain, options, None)
    }

    /// A packer with its index read (for [`Dedup::AgainstIndex`]) and no workers yet.
    fn start(repo: RepoRef<'a>, domain: DomainKeys, options: PackerOptions<'_>) -> Result<Packer<'a>, RepoError> {
        let known = match options.dedup {
            Dedup::AgainstIndex { condemned } => Some(known_blobs(&repo, &domain.id, condemned)?),
            Dedup::ByCaller => None,
        };
        Ok(Packer::start_with(repo, domain, options, known))
    }

    fn start_with(
        repo: RepoRef<'a>,
        domain: DomainKeys,
        options: PackerOptions<'_>,
        known: Option<HashSet<Id>>,
    ) -> Packer<'a> {
        let PackerOptions { indexing, cache_trees, dry_run, after_pack, .. } = options;
        let shared = Arc::new(Shared {
            repo,
            domain,
            uploads: Mutex::new(Uploads {
                in_flight: VecDeque::new(),
                done: Vec::new(),
                last_index: std::time::Instant::now(),
            }),
            failure: Mutex::new(None),
            stats: SinkStats::default(),
            spare: bounded(SPARE_BUFFERS),
            indexing,
            dry_run,
            after_pack,
        });
        Packer {
            shared,
            known: known.map(Mutex::new),
            data_tx: None,
            workers: Vec::new(),
            open: Mutex::new(HashMap::new()),
            cache_trees: cache_trees && !dry_run,
            trees_to_cache: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Whether the repository (or this run) already has the blob.
    pub fn contains_all(&self, ids: &[Id]) -> bool {
        let Some(known) = &self.known else { return false };
        let known = known.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter().all(|id| known.contains(id))
    }

    /// Claims `id` for this run; true when the caller must store the blob.
    fn claim(&self, id: Id) -> bool {
        match &self.known {
            Some(known) => known.lock().unwrap_or_else(|p| p.into_inner()).insert(id),
            None => true,
        }
    }

    /// A buffer for the next chunk of a file of `file_size` bytes, reused when one is spare.
    /// (Small files allocate exactly what they need: a spare would hold far more.)
    pub fn chunk_buffer(&self, file_size: u64) -> Vec<u8> {
        if file_size < SPARE_MIN_CAPACITY as u64 {
            return Vec::new();
        }
        self.shared.spare.1.try_recv().unwrap_or_default()
    }

    /// Takes back a chunk buffer that was not handed to [`add_data`](Self::add_data).
    pub fn recycle(&self, buffer: Vec<u8>) {
        self.shared.recycle(buffer);
    }

    /// Queues a data blob unless it is already stored. Blocks while the workers are busy,
    /// which is what bounds the memory of the whole pipeline.
    pub fn add_data(&self, id: Id, data: Vec<u8>) -> Result<(), RepoError> {
        self.add(BlobKind::Data, id, data)
    }

    /// Stores a tree blob (deduplicated) and returns its id in the packer's domain.
    pub fn add_tree(&self, bytes: Vec<u8>) -> Result<Id, RepoError> {
        let id = self.shared.domain.id_key.blob_id(&bytes);
        self.add(BlobKind::Tree, id, bytes)?;
        Ok(id)
    }

    /// Adds the blob `id` of `kind` (its plaintext) unless it is known; the pack it goes to is
    /// stored when full.
    pub fn add(&self, kind: BlobKind, id: Id, plain: Vec<u8>) -> Result<(), RepoError> {
        self.check_failure()?;
        if !self.claim(id) {
            self.shared.recycle(plain);
            return Ok(());
        }
        self.shared.stats.raw_added.fetch_add(plain.len() as u64, Ordering::Relaxed);
        if let (BlobKind::Data, Some(tx)) = (kind, &self.data_tx) {
            return tx.send((id, plain)).map_err(|_| self.take_failure());
        }
        self.add_here(kind, id, &plain)?;
        if kind == BlobKind::Tree && self.cache_trees {
            self.cache_tree(id, plain)?;
        }
        Ok(())
    }

    /// Adds a blob to the open pack of its kind on this thread; stores the pack when full.
    fn add_here(&self, kind: BlobKind, id: Id, plain: &[u8]) -> Result<(), RepoError> {
        let full = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let pack = match open.entry(kind) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(self.shared.open_pack(kind)?),
            };
            self.shared.add_to(pack, id, plain)?;
            if pack.writer.len() >= pack_target(self.shared.repo.config(), kind) {
                open.remove(&kind)
            } else {
                None
            }
        };
        if let Some(pack) = full {
            self.shared.upload(pack);
        }
        Ok(())
    }

    /// Caches the plaintext tree, so the next `ls` or mount needs no storage read; in
    /// batches, since one transaction per folder would cost more than the folder.
    fn cache_tree(&self, id: Id, bytes: Vec<u8>) -> Result<(), RepoError> {
        let batch = {
            let mut trees = self.trees_to_cache.lock().unwrap_or_else(|p| p.into_inner());
            let (batch, batch_bytes) = &mut *trees;
            *batch_bytes += bytes.len();
            batch.push((id, bytes));
            (batch.len() >= TREE_CACHE_BATCH || *batch_bytes >= TREE_CACHE_BYTES).then(|| {
                *batch_bytes = 0;
                std::mem::take(batch)
            })
        };
        if let Some(batch) = batch {
            self.shared.repo.cache_trees(&batch)?;
        }
        Ok(())
    }

    fn check_failure(&self) -> Result<(), RepoError> {
        if self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Err(self.take_failure());
        }
        Ok(())
    }

    fn take_failure(&self) -> RepoError {
        self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| RepoError::Internal {
            worker: "pack writer thread",
            detail: "stopped unexpectedly".into(),
        })
    }

    /// Flushes every open pack, waits for all uploads and writes the last index file. Only
    /// after this returns Ok may a snapshot reference the blobs added.
    pub fn finish(self) -> Result<SinkTotals, RepoError> {
        Ok(self.close()?.0)
    }

    /// Stores the packs still open and returns every pack written that no index file names
    /// yet, for the caller to index (`Indexing::ByCaller`: prune indexes them together with
    /// the packs it keeps).
    pub fn finish_unindexed(self) -> Result<Vec<IndexPack>, RepoError> {
        Ok(self.close()?.1)
    }

    /// [`finish_unindexed`](Self::finish_unindexed), then one index file of the new packs in
    /// the packer's domain.
    pub fn finish_and_index(self) -> Result<(), RepoError> {
        let shared = Arc::clone(&self.shared);
        let packs = self.close()?.1;
        if !packs.is_empty() {
            shared.repo.save_index_in(&shared.domain, &IndexFile { packs })?;
        }
        Ok(())
    }

    /// Data packs first, then trees; every upload waited for; the last index file written
    /// when the packer indexes as it goes. Returns the totals and the packs left unindexed.
    fn close(mut self) -> Result<(SinkTotals, Vec<IndexPack>), RepoError> {
        drop(self.data_tx.take());
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                self.shared.fail(RepoError::Internal { worker: "pack writer thread", detail: "panicked".into() });
            }
        }
        let (trees, _) = std::mem::take(&mut *self.trees_to_cache.lock().unwrap_or_else(|p| p.into_inner()));
        if self.cache_trees && !trees.is_empty() {
            self.shared.repo.cache_trees(&trees)?;
        }
        let mut open: Vec<_> = self.open.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        open.sort_by_key(|(kind, _)| *kind == BlobKind::Tree);
        for (_, pack) in open {
            if !pack.writer.is_empty() {
                self.shared.upload(pack);
            }
        }
        let mut uploads = self.shared.lock_uploads();
        while !uploads.in_flight.is_empty() {
            self.shared.complete_oldest(&mut uploads);
        }
        self.check_failure()?;
        if self.shared.indexing == Indexing::AsItGoes {
            self.shared.write_index(&mut uploads);
        }
        let unindexed = std::mem::take(&mut uploads.done);
        drop(uploads);
        self.check_failure()?;
        let stats = &self.shared.stats;
        let totals = SinkTotals {
            raw_added: stats.raw_added.load(Ordering::Relaxed),
            bytes_added: stats.bytes_added.load(Ordering::Relaxed),
            packs_added: stats.packs_added.load(Ordering::Relaxed),
        };
        Ok((totals, unindexed))
    }
}

impl Packer<'static> {
    /// Starts the threads that pack data blobs (the backup pipeline's parallel stage); with
    /// none, data is packed on the thread that adds it.
    fn spawn_workers(&mut self, workers: usize) -> Result<(), RepoError> {
        if workers == 0 {
            return Ok(());
        }
        let (data_tx, data_rx) = bounded::<(Id, Vec<u8>)>(workers);
        self.workers = (0..workers)
            .map(|i| {
                let rx = data_rx.clone();
                let shared = Arc::clone(&self.shared);
                std::thread::Builder::new()
                    .name(format!("coffer-pack-{i}"))
                    .spawn(move || pack_worker(&shared, rx))
                    .map_err(|e| RepoError::Internal {
                        worker: "pack writer thread",
                        detail: format!("could not start: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.data_tx = Some(data_tx);
        Ok(())
    }
}

/// The blobs of `domain` the index holds, counting those only in `condemned` packs as absent.
fn known_blobs(repo: &Repository, domain: &Id, condemned: &HashSet<Id>) -> Result<HashSet<Id>, RepoError> {
    let mut known = HashSet::new();
    let mut doubtful = Vec::new();
    // Only this client's own domain: another key's index can neither be read nor trusted
    // to hold what its ids claim (issue 15).
    repo.for_each_blob(Some(domain), |id, location| {
        if condemned.contains(&location.pack) {
            doubtful.push(*id);
        } else {
            known.insert(*id);
        }
    })?;
    for id in doubtful {
        if repo.blob_packs(domain, &id)?.iter().any(|pack| !condemned.contains(pack)) {
            known.insert(id);
        }
    }
    Ok(known)
}
