//! The snapshot namespace a mount shows (DESIGN §6), as the mount crate's `Source` over a
//! repository:
//!
//! ```text
//! snapshots/<local time>/…   hosts/<host>/<time>/…   tags/<tag>/<time>/…   ids/<short id>/…
//! signers/<label (key id)>/<time>/…
//! latest -> snapshots/<newest>
//! ```
//! The top-level folders are volatile: the snapshot list is re-read (one storage listing,
//! plus loading only new snapshots) at most every [`REFRESH`], so new backups appear without
//! a remount. Everything inside a snapshot is immutable and comes from tree blobs, cached in
//! the local database, so browsing a tree seen before reads nothing from storage.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_mount::{
    Attributes, BlockData, BlockKey, BlockRef, Entry, NodeKind as MountKind, Source, SourceError, Timestamp, Volatility,
};

use crate::format::tree::{Metadata, Node, NodeKind};
use crate::id::Id;
use crate::repo::{RepoError, Repository, SnapshotEntry};
use crate::safetext::mount_name;
use crate::store::paths;

/// How stale the snapshot list may get before a listing re-reads it.
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub enum VfsNode {
    Root,
    Snapshots,
    Hosts,
    Host(String),
    Tags,
    Tag(String),
    /// `signers/<who signed>/<time>`: snapshots by the key that signed them.
    Signers,
    Signer(Id),
    Ids,
    /// A folder inside a snapshot (its root included).
    Tree {
        snapshot: Id,
        tree: Id,
    },
    File {
        content: Arc<Vec<Id>>,
    },
    /// Symlinks, FIFOs, devices: everything the mount answers from the entry alone.
    Leaf,
}

struct Listing {
    /// (folder name, snapshot), oldest first; names are unique.
    named: Vec<(String, SnapshotEntry)>,
    ids: HashSet<Id>,
    refreshed: Option<Instant>,
}

pub struct RepoSource {
    repo: Arc<Repository>,
    listing: Mutex<Listing>,
}

fn to_source_error(error: RepoError) -> SourceError {
    match &error {
        RepoError::Format { .. } | RepoError::Corrupt { .. } => SourceError::corrupt(error.to_string()),
        _ => SourceError::io(error.to_string()),
    }
}

/// Folder names: local time to the second, with `.1`, `.2`… for snapshots in the same second.
fn name_snapshots(snapshots: Vec<SnapshotEntry>) -> Vec<(String, SnapshotEntry)> {
    let mut used: HashSet<String> = HashSet::new();
    snapshots
        .into_iter()
        .map(|entry| {
            let base = chrono::DateTime::from_timestamp(entry.snapshot.time_unix, entry.snapshot.time_nsec)
                .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_else(|| entry.id.short());
            let mut name = base.clone();
            let mut n = 1;
            while !used.insert(name.clone()) {
                name = format!("{base}.{n}");
                n += 1;
            }
            (name, entry)
        })
        .collect()
}

/// A signer's description as one folder name: a label written by the key's maker may hold
/// `/` (a host name and tag cannot: they are validated).
fn signer_folder(signed_by: &str) -> String {
    signed_by.replace('/', "∕")
}

fn virtual_dir() -> Attributes {
    let mut attr = Attributes::new(MountKind::Directory, 0o555);
    let now = chrono::Utc::now();
    attr.mtime = Timestamp::new(now.timestamp(), now.timestamp_subsec_nanos());
    attr.volatility = Volatility::Volatile;
    attr.uid = nix::unistd::getuid().as_raw();
    attr.gid = nix::unistd::getgid().as_raw();
    attr
}

fn dir_entry(name: impl Into<Vec<u8>>, node: VfsNode) -> Entry<VfsNode> {
    Entry { name: name.into(), node, attr: virtual_dir(), link_target: Vec::new(), xattrs: Vec::new() }
}

impl RepoSource {
    pub fn new(repo: Arc<Repository>) -> Result<RepoSource, RepoError> {
        repo.require_full_key("mount")?;
        Ok(RepoSource {
            repo,
            listing: Mutex::new(Listing { named: Vec::new(), ids: HashSet::new(), refreshed: None }),
        })
    }

    /// The named snapshots, re-read when stale and the set of snapshot files changed.
    fn snapshots(&self) -> Result<Vec<(String, SnapshotEntry)>, RepoError> {
        let mut listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if listing.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(listing.named.clone());
        }
        let ids: HashSet<Id> = self.repo.store.list_ids(paths::SNAPSHOTS)?.into_iter().map(|(id, _)| id).collect();
        if ids != listing.ids || listing.refreshed.is_none() {
            self.repo.sync_index()?;
            let (snapshots, _rejected) = self.repo.load_snapshots()?;
            listing.named = name_snapshots(snapshots);
            listing.ids = ids;
        }
        listing.refreshed = Some(Instant::now());
        Ok(listing.named.clone())
    }

    fn snapshot_dirs<'a>(&self, snapshots: impl Iterator<Item = &'a (String, SnapshotEntry)>) -> Vec<Entry<VfsNode>> {
        snapshots
            .map(|(name, entry)| {
                let mut e = dir_entry(name.as_bytes(), VfsNode::Tree { snapshot: entry.id, tree: entry.snapshot.tree });
                e.attr.mtime = Timestamp::new(entry.snapshot.time_unix, entry.snapshot.time_nsec);
                e
            })
            .collect()
    }

    fn list_tree(&self, snapshot: &Id, tree: &Id) -> Result<Vec<Entry<VfsNode>>, RepoError> {
        let tree = self.repo.load_tree(tree)?;
        Ok(tree.nodes.into_iter().map(|node| tree_entry(snapshot, node)).collect())
    }
}

fn hardlink_key(snapshot: &Id, meta: &Metadata) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&snapshot.0);
    hasher.update(&meta.dev.to_le_bytes());
    hasher.update(&meta.inode.to_le_bytes());
    u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

fn tree_entry(snapshot: &Id, node: Node) -> Entry<VfsNode> {
    let meta = &node.meta;
    let (kind, vfs, size, rdev, target) = match &node.kind {
        NodeKind::Dir { subtree } => {
            (MountKind::Directory, VfsNode::Tree { snapshot: *snapshot, tree: *subtree }, 0, 0, vec![])
        }
        NodeKind::File { size, content } => {
            (MountKind::File, VfsNode::File { content: Arc::new(content.clone()) }, *size, 0, vec![])
        }
        NodeKind::Symlink { target } => (MountKind::Symlink, VfsNode::Leaf, target.len() as u64, 0, target.to_vec()),
        NodeKind::Fifo => (MountKind::Fifo, VfsNode::Leaf, 0, 0, vec![]),
        NodeKind::CharDevice { rdev } => (MountKind::CharDevice, VfsNode::Leaf, 0, *rdev as u32, vec![]),
        NodeKind::BlockDevice { rdev } => (MountKind::BlockDevice, VfsNode::Leaf, 0, *rdev as u32, vec![]),
        NodeKind::Socket => (MountKind::Socket, VfsNode::Leaf, 0, 0, vec![]),
    };
    let mut attr = Attributes::new(kind, meta.mode & 0o7777);
    attr.size = size;
    attr.uid = meta.uid;
    attr.gid = meta.gid;
    attr.mtime = Timestamp::new(meta.mtime, meta.mtime_nsec);
    attr.nlink = meta.nlink.clamp(1, u32::MAX as u64) as u32;
    attr.rdev = rdev;
    if kind != MountKind::Directory && meta.nlink > 1 {
        attr.hardlink_key = Some(hardlink_key(snapshot, meta));
    }
    let xattrs =
        meta.xattrs.iter().map(|x| coffer_mount::Xattr { name: x.name.to_vec(), value: x.value.to_vec() }).collect();
    Entry { name: node.name.into_vec(), node: vfs, attr, link_target: target, xattrs }
}

impl Source for RepoSource {
    type Node = VfsNode;

    fn root(&self) -> Result<(VfsNode, Attributes), SourceError> {
        Ok((VfsNode::Root, virtual_dir()))
    }

    fn list(&self, dir: &VfsNode) -> Result<Vec<Entry<VfsNode>>, SourceError> {
        let snapshots = || self.snapshots().map_err(to_source_error);
        Ok(match dir {
            VfsNode::Root => {
                let mut entries = vec![
                    dir_entry("snapshots", VfsNode::Snapshots),
                    dir_entry("hosts", VfsNode::Hosts),
                    dir_entry("tags", VfsNode::Tags),
                    dir_entry("signers", VfsNode::Signers),
                    dir_entry("ids", VfsNode::Ids),
                ];
                if let Some((name, newest)) = snapshots()?.last() {
                    let target = format!("snapshots/{name}").into_bytes();
                    let mut attr = Attributes::new(MountKind::Symlink, 0o777);
                    attr.mtime = Timestamp::new(newest.snapshot.time_unix, newest.snapshot.time_nsec);
                    attr.size = target.len() as u64;
                    attr.volatility = Volatility::Volatile;
                    entries.push(Entry {
                        name: b"latest".to_vec(),
                        node: VfsNode::Leaf,
                        attr,
                        link_target: target,
                        xattrs: vec![],
                    });
                }
                entries
            }
            VfsNode::Snapshots => self.snapshot_dirs(snapshots()?.iter()),
            VfsNode::Hosts => {
                let hosts: BTreeMap<String, ()> =
                    snapshots()?.into_iter().map(|(_, e)| (e.snapshot.hostname, ())).collect();
                // Host names and tags come from snapshots: one safe component each, whatever they hold.
                hosts.into_keys().map(|h| dir_entry(mount_name(&h), VfsNode::Host(h))).collect()
            }
            VfsNode::Tags => {
                let tags: BTreeMap<String, ()> =
                    snapshots()?.into_iter().flat_map(|(_, e)| e.snapshot.tags).map(|t| (t, ())).collect();
                tags.into_keys().map(|t| dir_entry(mount_name(&t), VfsNode::Tag(t))).collect()
            }
            VfsNode::Signers => {
                let signers: BTreeMap<String, Id> =
                    snapshots()?.into_iter().map(|(_, e)| (signer_folder(&e.signed_by), e.signer)).collect();
                signers.into_iter().map(|(name, id)| dir_entry(name.into_bytes(), VfsNode::Signer(id))).collect()
            }
            VfsNode::Signer(signer) => {
                let all = snapshots()?;
                self.snapshot_dirs(all.iter().filter(|(_, e)| &e.signer == signer))
            }
            VfsNode::Host(host) => {
                let all = snapshots()?;
                self.snapshot_dirs(all.iter().filter(|(_, e)| &e.snapshot.hostname == host))
            }
            VfsNode::Tag(tag) => {
                let all = snapshots()?;
                self.snapshot_dirs(all.iter().filter(|(_, e)| e.snapshot.tags.contains(tag)))
            }
            VfsNode::Ids => snapshots()?
                .into_iter()
                .map(|(_, e)| {
                    dir_entry(e.id.short().as_bytes(), VfsNode::Tree { snapshot: e.id, tree: e.snapshot.tree })
                })
                .collect(),
            VfsNode::Tree { snapshot, tree } => self.list_tree(snapshot, tree).map_err(to_source_error)?,
            VfsNode::File { .. } | VfsNode::Leaf => return Err(SourceError::not_found("not a folder")),
        })
    }

    fn blocks(&self, file: &VfsNode) -> Result<Vec<BlockRef>, SourceError> {
        let VfsNode::File { content } = file else {
            return Err(SourceError::not_found("not a file"));
        };
        content
            .iter()
            .map(|id| {
                let location = self.repo.locate(id).map_err(to_source_error)?;
                Ok(BlockRef { key: id.0, len: location.entry.raw_len as u64 })
            })
            .collect()
    }

    fn read_block(&self, key: &BlockKey) -> Result<BlockData, SourceError> {
        self.repo.load_blob(&Id(*key)).map(Arc::new).map_err(to_source_error)
    }
}
