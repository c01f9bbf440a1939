//! The trait the engine implements, and the plain data it returns.
//!
//! The mount knows nothing of crypto, storage or snapshots: it asks a [`Source`] for the root,
//! for directory listings, for a file's block list and for a block's plaintext. All calls are
//! blocking and are made from the mount's own worker threads, never from a FUSE callback, so a
//! slow call delays only the request that needs it.
//!
//! What the mount caches, and so what the source does *not* need to be fast at:
//! - listings: a directory is listed once (immutable) or at most once per volatile TTL; lookups,
//!   `getattr`, `readlink` and xattrs are then answered from memory;
//! - block lists: kept per inode while the file is in use;
//! - blocks: in a byte-bounded LRU keyed by [`BlockKey`], so the key must identify the content
//!   (a content hash such as a blob id), never a position.

use std::sync::Arc;

use crate::errors::SourceError;

/// A block's plaintext, shared by the cache and every reader of it. A `Vec` inside (rather
/// than `Arc<[u8]>`) so the source's buffer is shared as it is, without a copy.
pub type BlockData = Arc<Vec<u8>>;

/// Identifies a block's content (e.g. a keyed hash of its plaintext). Equal keys must mean equal
/// bytes: the cache serves one key's bytes to every file that lists it.
pub type BlockKey = [u8; 32];

/// The kind of a node, as `ls -l` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

/// Seconds and nanoseconds since the Unix epoch (seconds may be negative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, below 1e9.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp from its parts.
    pub const fn new(secs: i64, nanos: u32) -> Self {
        Timestamp { secs, nanos }
    }
}

/// How long the kernel and the mount may trust what they were told about an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Volatility {
    /// Never changes (everything inside a snapshot): cached for the long TTL, kernel page cache
    /// kept across opens, directory listings cached by the kernel.
    #[default]
    Immutable,
    /// May change while mounted (`snapshots/`, `hosts/`, `latest`, …): short TTL; a volatile
    /// directory is re-listed when its listing is older than the short TTL.
    Volatile,
}

/// The attributes `stat` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// File type.
    pub kind: NodeKind,
    /// Size in bytes (for a symlink: the target's length).
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`); type bits are ignored.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time; also reported as ctime and atime.
    pub mtime: Timestamp,
    /// Link count as backed up.
    pub nlink: u32,
    /// Device number for character and block devices.
    pub rdev: u32,
    /// Entries with the same key are one hardlinked file and share one inode. Keys must be
    /// unique across the whole mount (e.g. a hash of snapshot id, device and inode).
    pub hardlink_key: Option<u64>,
    /// Whether this entry (and, for a directory, its listing) may change while mounted.
    pub volatility: Volatility,
}

impl Attributes {
    /// Attributes of `kind` with the given permission bits; everything else zero, one link,
    /// immutable. Adjust fields as needed.
    pub fn new(kind: NodeKind, mode: u32) -> Self {
        Attributes {
            kind,
            size: 0,
            mode,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            nlink: 1,
            rdev: 0,
            hardlink_key: None,
            volatility: Volatility::Immutable,
        }
    }

    /// Whether this entry may change while mounted.
    pub fn is_volatile(&self) -> bool {
        self.volatility == Volatility::Volatile
    }
}

/// One extended attribute: raw name (e.g. `user.comment`) and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    /// Full name including the namespace prefix.
    pub name: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// One entry of a directory listing, with everything the mount needs to answer `stat`,
/// `readlink` and `getxattr` from memory.
#[derive(Clone, Debug)]
pub struct Entry<N> {
    /// The name as raw bytes (not necessarily UTF-8; never contains `/` or NUL).
    pub name: Vec<u8>,
    /// The source's handle for this node, passed back to [`Source::list`] and
    /// [`Source::blocks`].
    pub node: N,
    /// Its attributes.
    pub attr: Attributes,
    /// A symlink's target (empty for other kinds).
    pub link_target: Vec<u8>,
    /// Its extended attributes (usually empty).
    pub xattrs: Vec<Xattr>,
}

/// One block of a regular file, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRef {
    /// Content key passed to [`Source::read_block`] and used as the cache key.
    pub key: BlockKey,
    /// Plaintext length in bytes; [`Source::read_block`] must return exactly this many.
    pub len: u64,
}

/// Totals for `statfs`/`df`; optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes the mounted tree represents (or stores).
    pub bytes: u64,
    /// Number of files.
    pub files: u64,
}

/// What the mount serves. Implemented by the engine over a repository, and by
/// [`MemorySource`](crate::memory::MemorySource) for tests.
///
/// All methods block; they run on the mount's worker threads. Each should give up with
/// [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) rather than wait forever on storage:
/// the mount bounds how long a *read* waits, but a stuck `list` holds a worker.
pub trait Source: Send + Sync + 'static {
    /// The source's handle for a node: cheap to clone (an id, an index, an `Arc`).
    type Node: Clone + Send + Sync + 'static;

    /// The root directory's handle and attributes. Called once, at mount time.
    fn root(&self) -> Result<(Self::Node, Attributes), SourceError>;

    /// The entries of directory `dir`, without `.` and `..`, in the order `ls -f` shows.
    fn list(&self, dir: &Self::Node) -> Result<Vec<Entry<Self::Node>>, SourceError>;

    /// A regular file's blocks in order; their lengths add up to the file's size.
    fn blocks(&self, file: &Self::Node) -> Result<Vec<BlockRef>, SourceError>;

    /// The plaintext of one block (verified, decrypted, decompressed).
    fn read_block(&self, key: &BlockKey) -> Result<BlockData, SourceError>;

    /// The block `key` together with blocks likely to be read soon after it, when fetching
    /// them along costs about what fetching it alone does (e.g. they are stored next to it, and
    /// a round trip dominates). The mount caches the companions, so a reader walking a folder
    /// in order (`cp -r`) is served from one fetch instead of one per file.
    ///
    /// The companions must add up to at most `budget` bytes, and should leave out blocks for
    /// which `known` is true (already cached or being fetched). The default fetches the block
    /// alone.
    fn read_block_with_companions(
        &self,
        key: &BlockKey,
        budget: u64,
        known: &dyn Fn(&BlockKey) -> bool,
    ) -> Result<(BlockData, Vec<(BlockKey, BlockData)>), SourceError> {
        let _ = (budget, known);
        Ok((self.read_block(key)?, Vec::new()))
    }

    /// Totals for `statfs`; `None` reports a tiny, full filesystem.
    fn usage(&self) -> Option<Usage> {
        None
    }
}
