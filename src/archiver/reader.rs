//! Reading one file: open, chunk, name each chunk by its keyed hash and hand new chunks to the
//! sink. Runs on a pool of threads so that several files are read while others compress.
//! Also the files-cache decision: whether a file is unchanged since the last backup.

use std::fs::{File, Metadata as FsMetadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::direct::DirectReader;
use super::meta::{ctime_ns, mtime_ns};
use super::save::SaveBlobs;
use crate::chunker::Chunker;
use crate::id::Id;
use crate::repo::{CachedFile, RepoError};

/// Largest chunking window kept between large files.
const KEPT_WINDOW: usize = 512 << 10;

/// Caps how many readers chunk large files at once, and lends each of them a chunking window.
/// A window grows to the largest chunk, and a chunk in flight is that large too; small files
/// need neither, so the other readers keep the disk busy with them while the large ones are
/// cut. Windows stay with the gate, not with each reader thread: only as many are resident as
/// there are permits.
pub struct LargeFileGate {
    state: std::sync::Mutex<GateState>,
    freed: std::sync::Condvar,
}

struct GateState {
    free: usize,
    windows: Vec<Vec<u8>>,
}

impl LargeFileGate {
    pub fn new(permits: usize) -> LargeFileGate {
        let state = GateState { free: permits.max(1), windows: Vec::new() };
        LargeFileGate { state: std::sync::Mutex::new(state), freed: std::sync::Condvar::new() }
    }

    fn enter(&self) -> LargeFilePermit<'_> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.free == 0 {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.free -= 1;
        let window = state.windows.pop().unwrap_or_default();
        LargeFilePermit { gate: self, window }
    }
}

struct LargeFilePermit<'a> {
    gate: &'a LargeFileGate,
    window: Vec<u8>,
}

impl Drop for LargeFilePermit<'_> {
    fn drop(&mut self) {
        let mut window = std::mem::take(&mut self.window);
        // A window as large as the largest chunk would stay resident through the many small
        // files that may follow. Shrinking keeps the pages already faulted in, which dropping
        // and allocating anew would fault again.
        if window.capacity() > KEPT_WINDOW {
            window.truncate(KEPT_WINDOW);
            window.shrink_to(KEPT_WINDOW);
        }
        let mut state = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        state.free += 1;
        state.windows.push(window);
        drop(state);
        self.gate.freed.notify_one();
    }
}

pub struct FileJob {
    pub path: PathBuf,
    pub meta: FsMetadata,
    pub reply: super::oneshot::Sender<FileOutcome>,
}

pub enum FileOutcome {
    Read {
        content: Vec<Id>,
        size: u64,
        /// Set when the file may be trusted from the files cache next time.
        cache: Option<CachedFile>,
        changed_while_reading: bool,
    },
    /// The file could not be read; the backup goes on without it.
    Unreadable(std::io::Error),
    /// Storing failed; the whole backup must stop.
    Fatal(RepoError),
}

/// The files-cache decision: same inode, size and timestamps as when the cached content was
/// read. ctime catches changes that preserve mtime (`touch -r`, most metadata-preserving
/// copies), since nobody can set it.
pub fn unchanged(cached: &CachedFile, meta: &FsMetadata) -> bool {
    cached.dev == meta.dev()
        && cached.ino == meta.ino()
        && cached.size == meta.size()
        && cached.mtime_ns == mtime_ns(meta)
        && cached.ctime_ns == ctime_ns(meta)
}

/// A file modified within one timestamp tick after we read it would keep its timestamps, so
/// such recent files are not cached. Filesystems with whole-second stamps need a wider margin.
fn settled(meta: &FsMetadata, read_started_ns: i64) -> bool {
    let coarse = meta.mtime_nsec() == 0 && meta.ctime_nsec() == 0;
    let margin = if coarse { 2_000_000_000 } else { 100_000_000 };
    mtime_ns(meta).max(ctime_ns(meta)) < read_started_ns - margin
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Files at least this large are read with `O_DIRECT` (see `direct`): for them, bypassing
/// the page cache saves a copy; small files gain from readahead and are many.
const DIRECT_MIN: u64 = 8 << 20;

/// Opens a file to back it up; true when it is open with `O_DIRECT`.
fn open_for_backup(path: &Path, size: u64) -> std::io::Result<(File, bool)> {
    // O_NOATIME keeps a backup from touching access times; only the owner (or root) may ask.
    let open = |flags: i32| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path);
    if size >= DIRECT_MIN {
        match open(libc::O_NOATIME | libc::O_DIRECT) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                if let Ok(file) = open(libc::O_DIRECT) {
                    return Ok((file, true));
                }
            }
            // EINVAL: this filesystem has no O_DIRECT; other errors recur below.
            Err(_) => {}
        }
    }
    let file = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }?;
    Ok((file, false))
}

pub struct ReaderContext<'a> {
    pub sink: &'a dyn SaveBlobs,
    pub gear: &'a crate::chunker::Gear,
    pub id_key: &'a crate::crypto::IdKey,
    pub progress: &'a crate::progress::Counters,
    pub interrupted: &'a std::sync::atomic::AtomicBool,
    pub large_files: &'a LargeFileGate,
}

fn interrupted_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "backup interrupted")
}

/// Reads all of a file smaller than the smallest chunk, which is then its only chunk, straight
/// into that chunk's buffer (no chunking window, no copy). `None` if it grew to `min` bytes or
/// more meanwhile: then it must be cut like any other.
fn read_whole_small(file: &File, min: u32, size_hint: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut data = Vec::with_capacity(size_hint as usize + 1);
    file.take(min as u64).read_to_end(&mut data)?;
    Ok((data.len() < min as usize).then_some(data))
}

/// Hashes one chunk of a file, hands it to the sink and records it.
fn add_chunk(ctx: &ReaderContext<'_>, chunk: Vec<u8>, content: &mut Vec<Id>, size: &mut u64) -> Result<(), RepoError> {
    *size += chunk.len() as u64;
    ctx.progress.add_bytes(chunk.len() as u64);
    let id = ctx.id_key.blob_id(&chunk);
    ctx.sink.add_data(id, chunk)?;
    content.push(id);
    Ok(())
}

/// Reads one file.
pub fn read_file(ctx: &ReaderContext<'_>, path: &Path, before: &FsMetadata) -> FileOutcome {
    let large = before.size() > KEPT_WINDOW as u64;
    let mut permit = large.then(|| ctx.large_files.enter());
    let started = now_ns();
    ctx.progress.set_current(path);
    let (mut file, direct) = match open_for_backup(path, before.size()) {
        Ok(opened) => opened,
        Err(e) => return FileOutcome::Unreadable(e),
    };
    // Sized for the chunks the file should have: the lists of a folder's files wait for the
    // builder together, and a doubled list of one id is four times its size.
    let mut content = Vec::with_capacity((before.size() / u64::from(ctx.gear.params().avg.max(1))) as usize + 1);
    let mut size = 0u64;
    if before.size() < ctx.gear.params().min as u64 {
        match read_whole_small(&file, ctx.gear.params().min, before.size()) {
            Ok(Some(data)) => {
                if !data.is_empty() {
                    if let Err(e) = add_chunk(ctx, data, &mut content, &mut size) {
                        return FileOutcome::Fatal(e);
                    }
                }
                return finish_read(ctx, &file, before, started, content, size);
            }
            Ok(None) => {
                if let Err(e) = std::io::Seek::rewind(&mut file) {
                    return FileOutcome::Unreadable(e);
                }
            }
            Err(e) => return FileOutcome::Unreadable(e),
        }
    }
    let window = permit.as_mut().map(|p| std::mem::take(&mut p.window)).unwrap_or_default();
    // The scope holds the read-ahead thread of a direct read; it ends with the chunker's input.
    let (outcome, window) = std::thread::scope(|scope| {
        let input = DirectReader::new(scope, &file, direct);
        let mut chunker = Chunker::with_buffer(input, ctx.gear, window, before.size());
        let outcome = loop {
            if ctx.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                break Some(FileOutcome::Unreadable(interrupted_error()));
            }
            let mut chunk = ctx.sink.chunk_buffer(before.size());
            match chunker.next_chunk_into(&mut chunk) {
                Ok(true) => {
                    if let Err(e) = add_chunk(ctx, chunk, &mut content, &mut size) {
                        break Some(FileOutcome::Fatal(e));
                    }
                }
                Ok(false) => {
                    ctx.sink.recycle(chunk);
                    break None;
                }
                Err(e) => break Some(FileOutcome::Unreadable(e)),
            }
        };
        (outcome, chunker.into_parts().1)
    });
    if let Some(permit) = permit.as_mut() {
        permit.window = window;
    }
    if let Some(failed) = outcome {
        return failed;
    }
    finish_read(ctx, &file, before, started, content, size)
}

/// The outcome of a file read to its end: whether it changed meanwhile, and its cache record.
fn finish_read(
    ctx: &ReaderContext<'_>,
    file: &File,
    before: &FsMetadata,
    started: i64,
    content: Vec<Id>,
    size: u64,
) -> FileOutcome {
    ctx.progress.add_file();
    let after = file.metadata();
    let changed = match &after {
        Ok(after) => {
            after.size() != before.size()
                || mtime_ns(after) != mtime_ns(before)
                || ctime_ns(after) != ctime_ns(before)
                || size != before.size()
        }
        Err(_) => true,
    };
    let cache = (!changed && settled(before, started)).then(|| CachedFile {
        dev: before.dev(),
        ino: before.ino(),
        size,
        mtime_ns: mtime_ns(before),
        ctime_ns: ctime_ns(before),
        content: content.clone(),
        // The builder, which has the file's metadata, fills these in.
        xattrs: Vec::new(),
    });
    FileOutcome::Read { content, size, cache, changed_while_reading: changed }
}

/// Runs on each reader thread until the job channel closes.
pub fn reader_loop(ctx: ReaderContext<'_>, jobs: Receiver<FileJob>) {
    for job in jobs {
        let outcome = if ctx.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            FileOutcome::Unreadable(interrupted_error())
        } else {
            read_file(&ctx, &job.path, &job.meta)
        };
        // The builder may have stopped after a fatal error; then nobody hears it.
        job.reply.send(outcome);
    }
}

/// Reading files into an in-memory saver: chunks, ids and deduplication with no repository.
#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::archiver::save::fakes::MemoryBlobs;
    use crate::chunker::Gear;
    use crate::crypto::IdKey;
    use crate::format::config::ChunkerParams;
    use crate::format::pack::BlobKind;
    use crate::repo::test_kit::noise;

    const PARAMS: ChunkerParams = ChunkerParams { min: 4 << 10, avg: 16 << 10, max: 64 << 10 };

    struct Bench {
        blobs: MemoryBlobs,
        gear: Gear,
        id_key: IdKey,
        progress: crate::progress::Counters,
        interrupted: AtomicBool,
        gate: LargeFileGate,
        dir: tempfile::TempDir,
    }

    impl Bench {
        fn new() -> Bench {
            let id_key = IdKey::random();
            Bench {
                blobs: MemoryBlobs::default(),
                gear: Gear::seeded(PARAMS, 7),
                id_key,
                progress: Default::default(),
                interrupted: AtomicBool::new(false),
                gate: LargeFileGate::new(1),
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn read(&self, name: &str, data: &[u8]) -> FileOutcome {
            let path = self.dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ctx = ReaderContext {
                sink: &self.blobs,
                gear: &self.gear,
                id_key: &self.id_key,
                progress: &self.progress,
                interrupted: &self.interrupted,
                large_files: &self.gate,
            };
            read_file(&ctx, &path, &meta)
        }

        /// The file's content, put back together from the saver.
        fn reassemble(&self, content: &[Id]) -> Vec<u8> {
            content
                .iter()
                .flat_map(|id| {
                    let (kind, bytes) = self.blobs.get(id).expect("every chunk saved");
                    assert_eq!(kind, BlobKind::Data);
                    assert_eq!(self.id_key.blob_id(&bytes), *id, "a chunk is named by its keyed hash");
                    bytes
                })
                .collect()
        }
    }

    #[test]
    fn a_file_is_cut_into_chunks_named_by_their_keyed_hash() {
        let bench = Bench::new();
        let data = noise(1 << 20, 1);
        let FileOutcome::Read { content, size, changed_while_reading, .. } = bench.read("big", &data) else {
            panic!("read")
        };
        assert_eq!(size, data.len() as u64);
        assert!(!changed_while_reading);
        assert!(content.len() > 4, "1 MiB in chunks of ~16 KiB: {}", content.len());
        assert_eq!(bench.reassemble(&content), data);
    }

    #[test]
    fn small_and_empty_files() {
        let bench = Bench::new();
        let small = noise(1000, 2);
        let FileOutcome::Read { content, size, .. } = bench.read("small", &small) else { panic!("read") };
        assert_eq!((content.len(), size), (1, 1000), "smaller than the smallest chunk: one chunk");
        assert_eq!(bench.reassemble(&content), small);
        let FileOutcome::Read { content, size, .. } = bench.read("empty", b"") else { panic!("read") };
        assert!(content.is_empty() && size == 0, "an empty file has no chunk");
    }

    #[test]
    fn the_same_content_is_named_the_same_and_saved_once() {
        let bench = Bench::new();
        let data = noise(300 << 10, 3);
        let FileOutcome::Read { content: first, .. } = bench.read("one", &data) else { panic!("read") };
        let held = bench.blobs.len();
        let FileOutcome::Read { content: second, .. } = bench.read("two", &data) else { panic!("read") };
        assert_eq!(first, second);
        assert_eq!(bench.blobs.len(), held, "no new blob for a copy");
    }

    #[test]
    fn an_interrupted_read_leaves_the_file_unreadable() {
        let bench = Bench::new();
        bench.interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcome = bench.read("big", &noise(1 << 20, 4));
        assert!(matches!(outcome, FileOutcome::Unreadable(e) if e.kind() == std::io::ErrorKind::Interrupted));
    }

    #[test]
    fn unreadable_files_are_reported_not_fatal() {
        let bench = Bench::new();
        let path = bench.dir.path().join("vanishing");
        std::fs::write(&path, b"soon gone").unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let ctx = ReaderContext {
            sink: &bench.blobs,
            gear: &bench.gear,
            id_key: &bench.id_key,
            progress: &bench.progress,
            interrupted: &bench.interrupted,
            large_files: &bench.gate,
        };
        assert!(matches!(read_file(&ctx, &path, &meta), FileOutcome::Unreadable(_)));
    }
}
