//! coffer-mount: a read-only FUSE filesystem over a small trait, with a byte-bounded block cache.
//!
//! The engine implements [`Source`] (root, list a directory, a file's block list, read a block)
//! and calls [`mount_foreground`] (or [`spawn`] in tests). This crate knows nothing of crypto,
//! storage or snapshots; [`memory::MemorySource`] is an in-memory `Source` for tests.
//!
//! How a request flows:
//! - **FUSE callbacks never block on the source.** `getattr`, `readlink`, `getxattr`,
//!   `listxattr`, `access`, `readdir(plus)` and lookups in a listed directory answer from
//!   memory on the FUSE thread; anything that needs the source runs on a pool of worker
//!   threads, which sends the reply (`fs`, `pool`).
//! - **Inodes** come from a table, `(parent, name) → ino`, never reused; hardlinks share one
//!   (`inodes`). Listings are cached whole: names that don't exist (`.Trash`, `autorun.inf`)
//!   answer ENOENT from memory, and the kernel caches that negative entry in immutable dirs.
//! - **Reads**: offset → block by binary search over prefix sums (`blockmap`) → block cache, an
//!   LRU bounded in bytes with one fetch per block however many readers miss it (`cache`) →
//!   on a miss, [`Source::read_block`] on a separate fetch pool, waited for at most
//!   [`MountOptions::read_timeout`] (then EIO; the mount stays up). Sequential readers get the
//!   next [`MountOptions::prefetch_blocks`] blocks fetched in parallel (`state`).
//! - **Kernel caching**: immutable nodes get a long entry/attr TTL, `FOPEN_KEEP_CACHE` and
//!   `FOPEN_CACHE_DIR`; volatile ones ([`Volatility::Volatile`]: `snapshots/`, `latest`, …) a
//!   short TTL and are re-listed when older than it, so new snapshots appear without a remount.
//!   READDIRPLUS is always on; the bdi readahead is raised to 1 MiB after mounting.
//! - **Read-only**: mounted `ro` (the kernel answers EROFS itself); write-like callbacks and
//!   open-for-write answer EROFS too. No error maps to ENOSYS (see [`ErrorKind`]).
//! - **Lifetime** (`session`): mountpoint checks with clear errors; SIGINT/SIGTERM/SIGHUP
//!   unmount, a busy mountpoint is detached lazily; `fusermount3 -u` ends it too.
//!
//! Memory: the block cache's byte budget, plus blocks in flight (at most one per worker),
//! plus one small record per directory entry seen.

mod blockmap;
mod cache;
mod errors;
mod fs;
mod inodes;
pub mod memory;
mod pool;
mod session;
mod source;
mod state;

pub use errors::{ErrorKind, MountError, SourceError};
pub use session::{mount_foreground, spawn, MountHandle, MountOptions};
pub use source::{
    Attributes, BlockData, BlockKey, BlockRef, Entry, NodeKind, Source, Timestamp, Usage, Volatility, Xattr,
};
