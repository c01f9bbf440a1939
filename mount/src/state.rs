//! The mount's state and every operation that does real work, free of fuser reply types.
//!
//! [`fs`](crate::fs) calls these from its callbacks: the `*_now` methods answer from memory on
//! the FUSE thread; the others may call the [`Source`] and run on the request pool. Block
//! fetches run on a separate fetch pool, so a request never waits for a job queued behind
//! itself, and a read waits for its blocks at most `read_timeout`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use lru::LruCache;

use crate::blockmap::BlockMap;
use crate::cache::{key_hex, BlockCache, Lookup};
use crate::errors::SourceError;
use crate::inodes::{InodeTable, Listing, ROOT_INO};
use crate::pool::Pool;
use crate::source::{Attributes, NodeKind, Source, Timestamp, Usage, Xattr};

/// How the mount trades freshness for speed; see [`MountOptions`](crate::MountOptions).
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub(crate) immutable_ttl: Duration,
    pub(crate) volatile_ttl: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) prefetch_blocks: usize,
}

/// An open regular file.
pub(crate) struct OpenFile {
    pub(crate) ino: u64,
    map: Arc<BlockMap>,
    /// One past the last block read, for sequential-access detection (0 before any read).
    next_block: AtomicUsize,
}

/// An open directory: the listing as it was at `opendir`, so offsets stay meaningful.
pub(crate) struct OpenDir {
    pub(crate) ino: u64,
    pub(crate) parent: u64,
    pub(crate) listing: Arc<Listing>,
}

/// Bytes of a read, borrowed from the cache when the read falls in one block.
pub(crate) enum ReadData {
    Block(crate::source::BlockData, std::ops::Range<usize>),
    Joined(Vec<u8>),
}

impl ReadData {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ReadData::Block(data, range) => &data[range.clone()],
            ReadData::Joined(data) => data,
        }
    }
}

/// Block maps of recently opened files, so reopening is free.
const BLOCK_MAPS_KEPT: usize = 4096;

/// See the module documentation.
pub(crate) struct MountState<S: Source> {
    source: S,
    inodes: InodeTable<S::Node>,
    cache: BlockCache,
    pub(crate) requests: Pool,
    fetches: Pool,
    tuning: Tuning,
    block_maps: Mutex<LruCache<u64, Arc<BlockMap>>>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_handle: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Handle tables stay consistent across a panic (single inserts/removes).
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Source> MountState<S> {
    /// Reads the source's root and starts the worker pools.
    pub(crate) fn new(source: S, cache_bytes: u64, workers: usize, tuning: Tuning) -> Result<Self, crate::MountError> {
        let (root, mut attr) = source.root()?;
        attr.kind = NodeKind::Directory;
        let pool = |name, n| Pool::new(name, n).map_err(|e| crate::MountError::io("starting worker threads", e));
        Ok(MountState {
            inodes: InodeTable::new(root, attr),
            source,
            cache: BlockCache::new(cache_bytes),
            requests: pool("coffer-mount-req", workers)?,
            fetches: pool("coffer-mount-fetch", workers)?,
            tuning,
            block_maps: Mutex::new(LruCache::new(NonZeroUsize::new(BLOCK_MAPS_KEPT).unwrap_or(NonZeroUsize::MIN))),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        })
    }

    fn ttl(&self, attr: &Attributes) -> Duration {
        if attr.is_volatile() {
            self.tuning.volatile_ttl
        } else {
            self.tuning.immutable_ttl
        }
    }

    /// Attributes and TTL of `ino` from memory.
    pub(crate) fn attr_now(&self, ino: u64) -> Result<(FileAttr, Duration), Errno> {
        self.inodes.with(ino, |node| (file_attr(ino, &node.attr), self.ttl(&node.attr))).ok_or(Errno::ENOENT)
    }

    /// The listing of `dir`, listing it through the source if the cached one is missing or stale.
    fn listing(&self, dir: u64) -> Result<Arc<Listing>, Errno> {
        if let Some(listing) = self.inodes.listing(dir, self.tuning.volatile_ttl) {
            return Ok(listing);
        }
        let (node, kind) = self.inodes.with(dir, |n| (n.source.clone(), n.attr.kind)).ok_or(Errno::ENOENT)?;
        if kind != NodeKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let entries = self.source.list(&node).map_err(|e| self.fail("list", dir, &e))?;
        self.inodes.install(dir, entries).ok_or(Errno::ENOENT)
    }

    /// `lookup` from memory: `None` when the directory must be listed first. A missing name
    /// in a known listing is `Ok(None)`.
    pub(crate) fn lookup_now(&self, parent: u64, name: &[u8]) -> Option<Result<Option<u64>, Errno>> {
        let listing = self.inodes.listing(parent, self.tuning.volatile_ttl)?;
        Some(Ok(listing.get(name)))
    }

    /// `lookup`, listing `parent` if needed. `Ok(None)`: no such name.
    pub(crate) fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<u64>, Errno> {
        Ok(self.listing(parent)?.get(name))
    }

    /// How long the kernel may remember that a name is absent from `parent`: only immutable
    /// directories get negative entries cached.
    pub(crate) fn negative_ttl(&self, parent: u64) -> Option<Duration> {
        self.inodes.with(parent, |n| (!n.attr.is_volatile()).then_some(self.tuning.immutable_ttl)).flatten()
    }

    /// A symlink's target from memory.
    pub(crate) fn readlink_now(&self, ino: u64) -> Result<Arc<[u8]>, Errno> {
        match self.inodes.with(ino, |n| (n.attr.kind, Arc::clone(&n.link_target))) {
            Some((NodeKind::Symlink, target)) => Ok(target),
            Some(_) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        }
    }

    /// The extended attributes of `ino` from memory.
    pub(crate) fn xattrs_now(&self, ino: u64) -> Result<Arc<[Xattr]>, Errno> {
        self.inodes.with(ino, |n| Arc::clone(&n.xattrs)).ok_or(Errno::ENOENT)
    }

    /// Kind and permission bits of `ino`, for `access`.
    pub(crate) fn mode_now(&self, ino: u64) -> Result<(NodeKind, u32), Errno> {
        self.inodes.with(ino, |n| (n.attr.kind, n.attr.mode)).ok_or(Errno::ENOENT)
    }

    /// Opens directory `ino` from memory when its listing is fresh.
    pub(crate) fn opendir_now(&self, ino: u64) -> Option<(u64, bool)> {
        let listing = self.inodes.listing(ino, self.tuning.volatile_ttl)?;
        Some(self.add_dir_handle(ino, listing))
    }

    /// Opens directory `ino`, listing it if needed. Returns the handle and whether the kernel
    /// may cache the listing.
    pub(crate) fn opendir(&self, ino: u64) -> Result<(u64, bool), Errno> {
        let listing = self.listing(ino)?;
        Ok(self.add_dir_handle(ino, listing))
    }

    fn add_dir_handle(&self, ino: u64, listing: Arc<Listing>) -> (u64, bool) {
        let (parent, volatile) =
            self.inodes.with(ino, |n| (n.parent, n.attr.is_volatile())).unwrap_or((ROOT_INO, true));
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let dir = Arc::new(OpenDir { ino, parent, listing });
        lock(&self.dirs).insert(fh, dir);
        (fh, !volatile)
    }

    pub(crate) fn dir_handle(&self, fh: u64) -> Result<Arc<OpenDir>, Errno> {
        lock(&self.dirs).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub(crate) fn release_dir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    /// One entry of an open directory listing: `.`, `..`, then the children. Returns the
    /// inode, name and attributes, or `None` past the end.
    pub(crate) fn dir_entry(&self, dir: &OpenDir, index: usize) -> Option<(u64, Arc<[u8]>, FileAttr, Duration)> {
        let (ino, name) = match index {
            0 => (dir.ino, Arc::from(&b"."[..])),
            1 => (dir.parent, Arc::from(&b".."[..])),
            i => {
                let (name, ino) = dir.listing.entries.get(i - 2)?;
                (*ino, Arc::clone(name))
            }
        };
        let (attr, ttl) = self.attr_now(ino).ok()?;
        Some((ino, name, attr, ttl))
    }

    /// Opens regular file `ino`: fetches its block list (or reuses a recent one). Returns the
    /// handle and whether the kernel may keep its page cache.
    pub(crate) fn open(&self, ino: u64) -> Result<(u64, bool), Errno> {
        let (node, kind, volatile) =
            self.inodes.with(ino, |n| (n.source.clone(), n.attr.kind, n.attr.is_volatile())).ok_or(Errno::ENOENT)?;
        if kind != NodeKind::File {
            // Devices and fifos are never opened through FUSE (the mount is nodev and the
            // kernel handles fifos), so this is a directory or symlink.
            return Err(Errno::EISDIR);
        }
        let cached = (!volatile).then(|| lock(&self.block_maps).get(&ino).cloned()).flatten();
        let map = match cached {
            Some(map) => map,
            None => {
                let blocks = self.source.blocks(&node).map_err(|e| self.fail("open", ino, &e))?;
                let map = Arc::new(BlockMap::new(&blocks));
                lock(&self.block_maps).put(ino, Arc::clone(&map));
                map
            }
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(OpenFile { ino, map, next_block: AtomicUsize::new(0) });
        lock(&self.files).insert(fh, file);
        Ok((fh, !volatile))
    }

    pub(crate) fn file_handle(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        lock(&self.files).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub(crate) fn release_file(&self, fh: u64) {
        lock(&self.files).remove(&fh);
    }

    /// Reads `size` bytes at `offset`: all blocks it touches are fetched in parallel; when the
    /// reader goes sequentially, the following blocks are prefetched too.
    pub(crate) fn read(self: &Arc<Self>, file: &OpenFile, offset: u64, size: u32) -> Result<ReadData, Errno> {
        let segments = file.map.segments(offset, u64::from(size));
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return Ok(ReadData::Joined(Vec::new()));
        };
        let previous = file.next_block.swap(last.block + 1, Ordering::Relaxed);
        // The kernel's readahead runs several reads at once, so "sequential" allows the read to
        // start in the block before the one the last read ended in.
        if first.block + 1 >= previous && first.block <= previous {
            self.prefetch(&file.map, last.block + 1);
        }
        let pending: Vec<Lookup> = segments.iter().map(|s| self.block(&file.map, s.block)).collect();
        let mut parts = Vec::with_capacity(segments.len());
        for (segment, lookup) in segments.iter().zip(pending) {
            let data = match lookup {
                Lookup::Ready(data) => data,
                Lookup::Pending(pending) => {
                    pending.wait(self.tuning.read_timeout).map_err(|e| self.fail("read", file.ino, &e))?
                }
            };
            if data.get(segment.start..segment.end).is_none() {
                let e = SourceError::corrupt(format!(
                    "block {} is shorter than listed",
                    key_hex(file.map.key(segment.block))
                ));
                return Err(self.fail("read", file.ino, &e));
            }
            parts.push((data, segment.start..segment.end));
        }
        if parts.len() == 1 {
            if let Some((data, range)) = parts.pop() {
                return Ok(ReadData::Block(data, range));
            }
        }
        let mut joined = Vec::with_capacity(size as usize);
        for (data, range) in &parts {
            joined.extend_from_slice(&data[range.clone()]);
        }
        Ok(ReadData::Joined(joined))
    }

    /// Starts fetches of up to `prefetch_blocks` blocks from `from`, within a quarter of the
    /// cache so prefetching never evicts what is being read.
    fn prefetch(self: &Arc<Self>, map: &Arc<BlockMap>, from: usize) {
        let budget = self.cache.capacity() / 4;
        let mut bytes = 0;
        for i in from..map.len().min(from.saturating_add(self.tuning.prefetch_blocks)) {
            bytes += map.block_len(i);
            if bytes > budget {
                break;
            }
            drop(self.block(map, i));
        }
    }

    /// The cached block `i` of `map`, or its pending fetch (started on the fetch pool).
    fn block(self: &Arc<Self>, map: &BlockMap, i: usize) -> Lookup {
        let expected = map.block_len(i);
        self.cache.lookup(map.key(i), |ticket| {
            let state = Arc::clone(self);
            self.fetches.spawn(move || {
                let cache = &state.cache;
                // Companions get at most an eighth of the cache, like prefetch a quarter: they
                // never push out what is being read.
                let fetched = state.source.read_block_with_companions(ticket.key(), cache.capacity() / 8, &|k| {
                    k != ticket.key() && cache.knows(k)
                });
                let result = fetched.map(|(data, companions)| {
                    for (key, block) in companions {
                        cache.insert_companion(&key, block);
                    }
                    data
                });
                let result = result.and_then(|data| {
                    if data.len() as u64 == expected {
                        Ok(data)
                    } else {
                        Err(SourceError::corrupt(format!(
                            "block {} has {} bytes, {expected} expected",
                            key_hex(ticket.key()),
                            data.len()
                        )))
                    }
                });
                ticket.complete(result);
            });
        })
    }

    /// Totals for `statfs`.
    pub(crate) fn usage(&self) -> Usage {
        self.source.usage().unwrap_or(Usage { bytes: 0, files: self.inodes.len() })
    }

    /// Logs a source failure with the path it concerns, and returns its errno.
    fn fail(&self, op: &str, ino: u64, error: &SourceError) -> Errno {
        match error.kind() {
            crate::ErrorKind::NotFound => log::debug!("{op} {}: {error}", self.inodes.path(ino)),
            _ => log::error!("{op} {}: {error}", self.inodes.path(ino)),
        }
        error.errno()
    }
}

/// The kernel's view of a node's attributes.
pub(crate) fn file_attr(ino: u64, attr: &Attributes) -> FileAttr {
    let time = system_time(attr.mtime);
    FileAttr {
        ino: INodeNo(ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink.max(1),
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        // Tools size their buffers by this (cp uses at least 128 KiB anyway).
        blksize: 128 * 1024,
        flags: 0,
    }
}

pub(crate) fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Directory => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let time = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    time.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_attributes() {
        let mut a = Attributes::new(NodeKind::File, 0o104755);
        a.size = 513;
        a.mtime = Timestamp::new(-1, 500);
        a.nlink = 0;
        let f = file_attr(9, &a);
        assert_eq!(f.perm, 0o4755);
        assert_eq!(f.blocks, 2);
        assert_eq!(f.nlink, 1);
        assert_eq!(f.mtime, UNIX_EPOCH - Duration::from_secs(1) + Duration::from_nanos(500));
        assert_eq!(f.kind, FileType::RegularFile);
    }
}
