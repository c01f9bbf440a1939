//! An in-memory [`Source`], for this crate's tests and the engine's.
//!
//! Build a tree with [`MemorySource::dir`], [`file`](MemorySource::file) (content split into
//! blocks keyed by a hash of their bytes, so equal blocks dedup as in a repository),
//! [`symlink`](MemorySource::symlink), [`special`](MemorySource::special),
//! [`hardlink`](MemorySource::hardlink) and [`set_xattr`](MemorySource::set_xattr); inject a
//! failing or slow block with [`set_fault`](MemorySource::set_fault); count source calls to
//! prove what the mount serves from memory. Clones share one tree, so a test can keep a clone
//! and change the tree while it is mounted (mark the changed directory volatile to see it).
//!
//! The builders panic on misuse (a parent that is not a directory): they are test fixtures.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::Duration;

use crate::errors::{ErrorKind, SourceError};
use crate::source::{Attributes, BlockKey, BlockRef, Entry, NodeKind, Source, Timestamp, Volatility, Xattr};

/// A node of a [`MemorySource`].
pub type NodeId = usize;

/// What a faulty block does when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this kind of error.
    Fail(ErrorKind),
    /// Deliver the bytes after this delay.
    Delay(Duration),
}

/// Ownership, mode and time of a new node; unset fields take defaults (mode 0755 for
/// directories, 0644 for files, 0777 for symlinks; owner 0:0; mtime 2026-01-01).
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    mode: Option<u32>,
    uid: u32,
    gid: u32,
    mtime: Option<Timestamp>,
}

impl Meta {
    /// Defaults for everything.
    pub fn new() -> Self {
        Meta::default()
    }

    /// Permission bits (`0o7777` range).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Owner and group.
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Modification time.
    pub fn mtime(mut self, secs: i64, nanos: u32) -> Self {
        self.mtime = Some(Timestamp::new(secs, nanos));
        self
    }
}

const DEFAULT_MTIME: Timestamp = Timestamp::new(1_767_225_600, 0);

enum Content {
    Dir(Vec<(Vec<u8>, NodeId)>),
    File(Vec<BlockRef>),
    Symlink(Vec<u8>),
    Special,
}

struct Node {
    attr: Attributes,
    content: Content,
    xattrs: Vec<Xattr>,
    /// Names this node has (hardlinks).
    links: u32,
}

struct Block {
    data: crate::source::BlockData,
    fault: Option<Fault>,
}

#[derive(Default)]
struct Inner {
    nodes: Vec<Node>,
    blocks: HashMap<BlockKey, Block>,
}

#[derive(Default)]
struct Counters {
    lists: AtomicU64,
    block_reads: Mutex<HashMap<BlockKey, u64>>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct MemorySource {
    inner: Arc<RwLock<Inner>>,
    counters: Arc<Counters>,
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySource {
    /// A tree holding only an empty root directory (mode 0755, owner 0:0, immutable).
    pub fn new() -> Self {
        let root = Node {
            attr: attributes(NodeKind::Directory, Meta::new(), 0),
            content: Content::Dir(Vec::new()),
            xattrs: Vec::new(),
            links: 1,
        };
        MemorySource {
            inner: Arc::new(RwLock::new(Inner { nodes: vec![root], blocks: HashMap::new() })),
            counters: Arc::default(),
        }
    }

    /// The root directory.
    pub fn root_id(&self) -> NodeId {
        0
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, parent: NodeId, name: &[u8], node: Node) -> NodeId {
        let mut inner = self.write();
        let id = inner.nodes.len();
        inner.nodes.push(node);
        inner.link(parent, name, id);
        id
    }

    /// Adds directory `name` under `parent`.
    pub fn dir(&self, parent: NodeId, name: impl AsRef<[u8]>, meta: Meta) -> NodeId {
        let node = Node {
            attr: attributes(NodeKind::Directory, meta, 0),
            content: Content::Dir(Vec::new()),
            xattrs: Vec::new(),
            links: 1,
        };
        self.add(parent, name.as_ref(), node)
    }

    /// Adds regular file `name` holding `content`, split into blocks of `block_size` bytes
    /// (the last one shorter; an empty file has no block).
    pub fn file(
        &self,
        parent: NodeId,
        name: impl AsRef<[u8]>,
        content: &[u8],
        block_size: usize,
        meta: Meta,
    ) -> NodeId {
        let mut blocks = Vec::new();
        {
            let mut inner = self.write();
            for chunk in content.chunks(block_size.max(1)) {
                let key = content_key(chunk);
                inner.blocks.entry(key).or_insert_with(|| Block { data: Arc::new(chunk.to_vec()), fault: None });
                blocks.push(BlockRef { key, len: chunk.len() as u64 });
            }
        }
        let node = Node {
            attr: attributes(NodeKind::File, meta, content.len() as u64),
            content: Content::File(blocks),
            xattrs: Vec::new(),
            links: 1,
        };
        self.add(parent, name.as_ref(), node)
    }

    /// Adds symlink `name` pointing at `target`.
    pub fn symlink(&self, parent: NodeId, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>, meta: Meta) -> NodeId {
        let target = target.as_ref().to_vec();
        let node = Node {
            attr: attributes(NodeKind::Symlink, meta, target.len() as u64),
            content: Content::Symlink(target),
            xattrs: Vec::new(),
            links: 1,
        };
        self.add(parent, name.as_ref(), node)
    }

    /// Adds a fifo, socket or device node (`rdev` for devices).
    pub fn special(&self, parent: NodeId, name: impl AsRef<[u8]>, kind: NodeKind, rdev: u32, meta: Meta) -> NodeId {
        let mut attr = attributes(kind, meta, 0);
        attr.rdev = rdev;
        let node = Node { attr, content: Content::Special, xattrs: Vec::new(), links: 1 };
        self.add(parent, name.as_ref(), node)
    }

    /// Gives existing non-directory `target` another name `name` under `parent`.
    pub fn hardlink(&self, parent: NodeId, name: impl AsRef<[u8]>, target: NodeId) {
        let mut inner = self.write();
        let node = &mut inner.nodes[target];
        assert!(node.attr.kind != NodeKind::Directory, "directories cannot be hardlinked");
        node.links += 1;
        inner.link(parent, name.as_ref(), target);
    }

    /// Sets extended attribute `name` of `node` (replacing an existing value).
    pub fn set_xattr(&self, node: NodeId, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let mut inner = self.write();
        let xattrs = &mut inner.nodes[node].xattrs;
        let (name, value) = (name.as_ref().to_vec(), value.as_ref().to_vec());
        match xattrs.iter_mut().find(|x| x.name == name) {
            Some(x) => x.value = value,
            None => xattrs.push(Xattr { name, value }),
        }
    }

    /// Marks `node` volatile (re-listed after the short TTL) or immutable.
    pub fn set_volatile(&self, node: NodeId, volatile: bool) {
        self.write().nodes[node].attr.volatility = if volatile { Volatility::Volatile } else { Volatility::Immutable };
    }

    /// Removes the entry `name` from directory `parent` (the node itself stays readable).
    pub fn remove(&self, parent: NodeId, name: impl AsRef<[u8]>) {
        let mut inner = self.write();
        if let Content::Dir(children) = &mut inner.nodes[parent].content {
            children.retain(|(n, _)| n != name.as_ref());
        }
    }

    /// The block keys of file `node`, in order.
    pub fn file_blocks(&self, node: NodeId) -> Vec<BlockKey> {
        match &self.read().nodes[node].content {
            Content::File(blocks) => blocks.iter().map(|b| b.key).collect(),
            _ => Vec::new(),
        }
    }

    /// Makes reads of block `key` fail or stall (`None` heals it).
    pub fn set_fault(&self, key: &BlockKey, fault: Option<Fault>) {
        if let Some(block) = self.write().blocks.get_mut(key) {
            block.fault = fault;
        }
    }

    /// How many times [`Source::list`] was called.
    pub fn list_calls(&self) -> u64 {
        self.counters.lists.load(Ordering::SeqCst)
    }

    /// How many times block `key` was read.
    pub fn block_reads(&self, key: &BlockKey) -> u64 {
        let reads = self.counters.block_reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.get(key).copied().unwrap_or(0)
    }

    /// How many block reads there were in all.
    pub fn total_block_reads(&self) -> u64 {
        let reads = self.counters.block_reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.values().sum()
    }
}

impl Inner {
    fn link(&mut self, parent: NodeId, name: &[u8], child: NodeId) {
        assert!(!name.is_empty() && !name.contains(&b'/') && !name.contains(&0), "invalid name {name:?}");
        match &mut self.nodes[parent].content {
            Content::Dir(children) => children.push((name.to_vec(), child)),
            _ => panic!("node {parent} is not a directory"),
        }
    }

    fn entry_attr(&self, id: NodeId) -> Attributes {
        let node = &self.nodes[id];
        let mut attr = node.attr.clone();
        match &node.content {
            Content::Dir(children) => {
                let subdirs =
                    children.iter().filter(|(_, c)| matches!(self.nodes[*c].content, Content::Dir(_))).count();
                attr.nlink = 2 + subdirs as u32;
            }
            _ => {
                attr.nlink = node.links;
                attr.hardlink_key = (node.links > 1).then_some(id as u64);
            }
        }
        attr
    }
}

fn attributes(kind: NodeKind, meta: Meta, size: u64) -> Attributes {
    let default_mode = match kind {
        NodeKind::Directory => 0o755,
        NodeKind::Symlink => 0o777,
        _ => 0o644,
    };
    let mut attr = Attributes::new(kind, meta.mode.unwrap_or(default_mode));
    attr.size = size;
    attr.uid = meta.uid;
    attr.gid = meta.gid;
    attr.mtime = meta.mtime.unwrap_or(DEFAULT_MTIME);
    attr
}

/// A 32-byte key derived from the bytes alone, so equal blocks share a key.
fn content_key(data: &[u8]) -> BlockKey {
    let mut key = [0u8; 32];
    for (i, part) in key.chunks_mut(8).enumerate() {
        let mut hasher = DefaultHasher::new();
        i.hash(&mut hasher);
        data.hash(&mut hasher);
        part.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    key
}

impl Source for MemorySource {
    type Node = NodeId;

    fn root(&self) -> Result<(NodeId, Attributes), SourceError> {
        Ok((0, self.read().entry_attr(0)))
    }

    fn list(&self, dir: &NodeId) -> Result<Vec<Entry<NodeId>>, SourceError> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        let inner = self.read();
        let Some(Content::Dir(children)) = inner.nodes.get(*dir).map(|n| &n.content) else {
            return Err(SourceError::not_found(format!("directory node {dir}")));
        };
        Ok(children
            .iter()
            .map(|(name, id)| {
                let node = &inner.nodes[*id];
                Entry {
                    name: name.clone(),
                    node: *id,
                    attr: inner.entry_attr(*id),
                    link_target: match &node.content {
                        Content::Symlink(target) => target.clone(),
                        _ => Vec::new(),
                    },
                    xattrs: node.xattrs.clone(),
                }
            })
            .collect())
    }

    fn blocks(&self, file: &NodeId) -> Result<Vec<BlockRef>, SourceError> {
        match self.read().nodes.get(*file).map(|n| &n.content) {
            Some(Content::File(blocks)) => Ok(blocks.clone()),
            _ => Err(SourceError::not_found(format!("file node {file}"))),
        }
    }

    fn read_block(&self, key: &BlockKey) -> Result<crate::source::BlockData, SourceError> {
        {
            let mut reads = self.counters.block_reads.lock().unwrap_or_else(|e| e.into_inner());
            *reads.entry(*key).or_default() += 1;
        }
        let (data, fault) = {
            let inner = self.read();
            let block = inner.blocks.get(key).ok_or_else(|| SourceError::not_found("no such block"))?;
            (Arc::clone(&block.data), block.fault)
        };
        match fault {
            None => Ok(data),
            Some(Fault::Delay(delay)) => {
                thread::sleep(delay);
                Ok(data)
            }
            Some(Fault::Fail(kind)) => Err(SourceError::new(kind, "injected fault")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_tree_that_lists_reads_and_faults() {
        let m = MemorySource::new();
        let d = m.dir(m.root_id(), "d", Meta::new().mode(0o700));
        let f = m.file(d, "f", b"hello world", 4, Meta::new());
        m.hardlink(m.root_id(), "f2", f);
        m.symlink(d, "l", "../f2", Meta::new());
        m.set_xattr(f, "user.k", "v");
        let root = m.list(&0).expect("root");
        assert_eq!(root.len(), 2);
        assert_eq!(root[0].attr.nlink, 2, "a directory without subdirectories");
        assert_eq!(m.root().expect("root").1.nlink, 3, "one subdirectory");
        let inside = m.list(&d).expect("dir");
        assert_eq!(inside[0].attr.hardlink_key, Some(f as u64));
        assert_eq!(inside[0].attr.nlink, 2);
        assert_eq!(inside[0].xattrs[0].value, b"v");
        assert_eq!(inside[1].link_target, b"../f2");
        let blocks = m.blocks(&f).expect("file");
        assert_eq!(blocks.iter().map(|b| b.len).collect::<Vec<_>>(), [4, 4, 3]);
        let joined: Vec<u8> = blocks.iter().flat_map(|b| m.read_block(&b.key).expect("block").to_vec()).collect();
        assert_eq!(joined, b"hello world");
        m.set_fault(&blocks[1].key, Some(Fault::Fail(ErrorKind::Corrupt)));
        assert_eq!(m.read_block(&blocks[1].key).expect_err("fault").kind(), ErrorKind::Corrupt);
        assert_eq!(m.block_reads(&blocks[1].key), 2);
        assert_eq!(m.list_calls(), 2);
    }
}
