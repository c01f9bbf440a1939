//! The inode table: which inode number stands for which source node, and the cached listings.
//!
//! Inode numbers are handed out in increasing order and never reused, so the kernel can never
//! confuse a new entry with an old one (generation is always 0). Within a directory a name keeps
//! its inode across re-listings (unless its kind changes); entries that share a
//! [`hardlink_key`](crate::Attributes::hardlink_key) share one inode.
//!
//! A directory's listing is installed whole after one [`Source::list`](crate::Source::list)
//! call; from then on lookups — including of names that do not exist, like `.Trash` or
//! `autorun.inf` — are answered from memory. An immutable directory's listing stays valid
//! for the life of the mount; a volatile one for the volatile TTL.
//!
//! Memory: one record per entry ever seen (the kernel's `forget` is not used to drop records,
//! which keeps numbering stable). This owns no I/O.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::source::{Attributes, Entry, Xattr};

/// The root directory's inode number, fixed by FUSE.
pub(crate) const ROOT_INO: u64 = 1;

/// One known node.
#[derive(Debug)]
pub(crate) struct Node<N> {
    pub(crate) source: N,
    pub(crate) attr: Attributes,
    pub(crate) link_target: Arc<[u8]>,
    pub(crate) xattrs: Arc<[Xattr]>,
    /// The directory it was first seen in (for `..` and for log paths).
    pub(crate) parent: u64,
    /// Its name there.
    pub(crate) name: Arc<[u8]>,
    listing: Option<Arc<Listing>>,
}

/// A directory's entries, in source order, with a name index.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<(Arc<[u8]>, u64)>,
    by_name: HashMap<Arc<[u8]>, u64>,
    listed_at: Instant,
}

impl Listing {
    /// The inode of `name`, if the directory has it.
    pub(crate) fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).copied()
    }
}

#[derive(Debug)]
struct Inner<N> {
    /// Node of inode `i` at index `i - 1`.
    nodes: Vec<Node<N>>,
    by_hardlink: HashMap<u64, u64>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct InodeTable<N> {
    inner: RwLock<Inner<N>>,
}

impl<N: Clone> InodeTable<N> {
    /// A table holding only the root.
    pub(crate) fn new(root: N, attr: Attributes) -> Self {
        let root = Node {
            source: root,
            attr,
            link_target: Arc::from(Vec::new()),
            xattrs: Arc::from(Vec::new()),
            parent: ROOT_INO,
            name: Arc::from(Vec::new()),
            listing: None,
        };
        InodeTable { inner: RwLock::new(Inner { nodes: vec![root], by_hardlink: HashMap::new() }) }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<N>> {
        // A panic while holding the lock leaves the table consistent (every write is a
        // sequence of complete inserts), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<N>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on inode `ino`'s node, if it exists.
    pub(crate) fn with<R>(&self, ino: u64, f: impl FnOnce(&Node<N>) -> R) -> Option<R> {
        let inner = self.read();
        index(ino).and_then(|i| inner.nodes.get(i)).map(f)
    }

    /// The number of inodes handed out.
    pub(crate) fn len(&self) -> u64 {
        self.read().nodes.len() as u64
    }

    /// The listing of directory `dir` if one is installed and still valid: always for an
    /// immutable directory, for `volatile_ttl` after listing for a volatile one.
    pub(crate) fn listing(&self, dir: u64, volatile_ttl: Duration) -> Option<Arc<Listing>> {
        self.with(dir, |node| {
            let listing = node.listing.as_ref()?;
            let fresh = !node.attr.is_volatile() || listing.listed_at.elapsed() < volatile_ttl;
            fresh.then(|| Arc::clone(listing))
        })
        .flatten()
    }

    /// Installs a fresh listing of `dir`, assigning inodes to its entries, and returns it.
    /// Returns `None` if `dir` is not a known inode.
    pub(crate) fn install(&self, dir: u64, entries: Vec<Entry<N>>) -> Option<Arc<Listing>> {
        let mut inner = self.write();
        let previous = inner.nodes.get(index(dir)?)?.listing.clone();
        let mut listing = Listing {
            entries: Vec::with_capacity(entries.len()),
            by_name: HashMap::with_capacity(entries.len()),
            listed_at: Instant::now(),
        };
        for entry in entries {
            let name: Arc<[u8]> = Arc::from(entry.name.as_slice());
            if listing.by_name.contains_key(&name) {
                continue; // a source bug; the first of duplicate names wins
            }
            let previous_ino = previous.as_ref().and_then(|l| l.get(&name));
            let ino = inner.place(dir, &name, previous_ino, entry);
            listing.by_name.insert(Arc::clone(&name), ino);
            listing.entries.push((name, ino));
        }
        let listing = Arc::new(listing);
        inner.nodes[index(dir)?].listing = Some(Arc::clone(&listing));
        Some(listing)
    }

    /// A readable path of `ino` for log lines (names are decoded lossily).
    pub(crate) fn path(&self, ino: u64) -> String {
        let inner = self.read();
        let mut parts = Vec::new();
        let mut current = ino;
        // Bounded walk: parents always have smaller numbers, so this ends at the root.
        while current != ROOT_INO {
            let Some(node) = index(current).and_then(|i| inner.nodes.get(i)) else {
                break;
            };
            parts.push(String::from_utf8_lossy(&node.name).into_owned());
            if node.parent >= current {
                break;
            }
            current = node.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

impl<N> Inner<N> {
    /// The inode for `entry` named `name` in `dir`: its hardlink set's, the one it had in the
    /// previous listing (same kind), or a new one. Existing nodes take the new attributes.
    fn place(&mut self, dir: u64, name: &Arc<[u8]>, previous: Option<u64>, entry: Entry<N>) -> u64 {
        let linked = entry.attr.hardlink_key.and_then(|key| self.by_hardlink.get(&key).copied());
        let reusable = linked.or(previous).filter(|&ino| {
            index(ino).and_then(|i| self.nodes.get(i)).is_some_and(|node| node.attr.kind == entry.attr.kind)
        });
        if let Some(ino) = reusable {
            if let Some(node) = index(ino).and_then(|i| self.nodes.get_mut(i)) {
                node.source = entry.node;
                node.attr = entry.attr;
                node.link_target = Arc::from(entry.link_target);
                node.xattrs = Arc::from(entry.xattrs);
            }
            return ino;
        }
        let ino = self.nodes.len() as u64 + 1;
        if let Some(key) = entry.attr.hardlink_key {
            self.by_hardlink.insert(key, ino);
        }
        self.nodes.push(Node {
            source: entry.node,
            attr: entry.attr,
            link_target: Arc::from(entry.link_target),
            xattrs: Arc::from(entry.xattrs),
            parent: dir,
            name: Arc::clone(name),
            listing: None,
        });
        ino
    }
}

fn index(ino: u64) -> Option<usize> {
    usize::try_from(ino.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{NodeKind, Volatility};

    fn entry(name: &str, node: u32, kind: NodeKind) -> Entry<u32> {
        Entry {
            name: name.as_bytes().to_vec(),
            node,
            attr: Attributes::new(kind, 0o644),
            link_target: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    fn linked(name: &str, node: u32, key: u64) -> Entry<u32> {
        let mut e = entry(name, node, NodeKind::File);
        e.attr.hardlink_key = Some(key);
        e.attr.nlink = 2;
        e
    }

    fn table(volatility: Volatility) -> InodeTable<u32> {
        let mut attr = Attributes::new(NodeKind::Directory, 0o755);
        attr.volatility = volatility;
        InodeTable::new(0, attr)
    }

    #[test]
    fn assigns_increasing_numbers_and_finds_names() {
        let t = table(Volatility::Immutable);
        let l = t
            .install(ROOT_INO, vec![entry("a", 1, NodeKind::File), entry("d", 2, NodeKind::Directory)])
            .expect("root exists");
        assert_eq!(l.get(b"a"), Some(2));
        assert_eq!(l.get(b"d"), Some(3));
        assert_eq!(l.get(b".Trash"), None);
        let inner = t.install(3, vec![entry("a", 3, NodeKind::File)]).expect("dir");
        assert_eq!(inner.get(b"a"), Some(4), "same name in another dir is another inode");
        assert_eq!(t.path(4), "/d/a");
        assert_eq!(t.with(4, |n| n.source), Some(3));
        assert!(t.install(99, Vec::new()).is_none());
        assert!(t.with(0, |_| ()).is_none());
    }

    #[test]
    fn hardlinks_share_an_inode() {
        let t = table(Volatility::Immutable);
        t.install(ROOT_INO, vec![linked("x", 1, 7), entry("y", 2, NodeKind::File), linked("z", 1, 7)]);
        let l = t.listing(ROOT_INO, Duration::ZERO).expect("immutable stays fresh");
        assert_eq!(l.get(b"x"), l.get(b"z"));
        assert_ne!(l.get(b"x"), l.get(b"y"));
        assert_eq!(t.len(), 3);
        let names: Vec<&[u8]> = l.entries.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, [&b"x"[..], b"y", b"z"]);
    }

    #[test]
    fn relisting_keeps_numbers_never_reuses_them() {
        let t = table(Volatility::Volatile);
        let first = t.install(ROOT_INO, vec![entry("a", 1, NodeKind::File)]).expect("root");
        assert!(t.listing(ROOT_INO, Duration::ZERO).is_none(), "volatile goes stale");
        assert!(t.listing(ROOT_INO, Duration::from_secs(60)).is_some());
        let second =
            t.install(ROOT_INO, vec![entry("b", 2, NodeKind::File), entry("a", 1, NodeKind::File)]).expect("root");
        assert_eq!(first.get(b"a"), second.get(b"a"));
        assert_eq!(second.get(b"b"), Some(3));
        // "a" turns into a directory: the kernel must see a new inode.
        let third = t.install(ROOT_INO, vec![entry("a", 5, NodeKind::Directory)]).expect("root");
        assert_eq!(third.get(b"a"), Some(4));
        assert_eq!(third.get(b"b"), None, "removed names vanish");
        // Old inodes stay valid for handles the kernel still holds.
        assert_eq!(t.with(2, |n| n.attr.kind), Some(NodeKind::File));
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let t = table(Volatility::Immutable);
        let l = t.install(ROOT_INO, vec![entry("a", 1, NodeKind::File), entry("a", 2, NodeKind::File)]).expect("root");
        assert_eq!(l.entries.len(), 1);
        assert_eq!(t.with(2, |n| n.source), Some(1));
    }
}
