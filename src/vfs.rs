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

use crate::format::tree::{Metadata, Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::BlobLocation;
use crate::repo::{plan_regions, RepoError, Repository, SnapshotEntry, AROUND_MAX, REGION_GAP};
use crate::safetext::mount_name;

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

/// What the mount needs from a repository, and nothing more: the snapshot list, trees, and
/// blocks by id (alone, or with the blocks stored around them). [`Repository`] is the one real
/// implementation; the unit tests below give a `HashMap` one, so the namespace, the refresh
/// rule and the companion choice are tested without storage.
pub trait MountedRepo: Send + Sync + 'static {
    /// The ids (and sizes) of the snapshot objects in storage: one listing.
    fn snapshot_ids(&self) -> Result<Vec<(Id, u64)>, RepoError>;
    /// The snapshots `listed` names, verified, oldest first; the index is brought up to date
    /// first so that their trees and blocks can be found.
    fn snapshots(&self, listed: Vec<(Id, u64)>) -> Result<Vec<SnapshotEntry>, RepoError>;
    fn tree(&self, id: &Id) -> Result<Tree, RepoError>;
    fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError>;
    /// A block's plaintext, verified.
    fn block(&self, id: &Id) -> Result<Vec<u8>, RepoError>;
    /// Where the block `id` is stored and the blocks around it (itself included) worth
    /// reading with it, or `None` where a request costs no round trip (a local folder, which
    /// reads the block alone and need not locate it twice).
    fn around(&self, id: &Id) -> Result<Option<(BlobLocation, Vec<BlobLocation>)>, RepoError>;
    /// Reads `run` (neighbours in one pack) with one request; `each` gets every block's
    /// plaintext or failure by its index in `run`.
    fn read_run(&self, run: &[BlobLocation], each: &mut dyn FnMut(usize, Result<&[u8], RepoError>));
}

impl MountedRepo for Repository {
    fn snapshot_ids(&self) -> Result<Vec<(Id, u64)>, RepoError> {
        Ok(self.list_snapshot_ids()?)
    }

    fn snapshots(&self, listed: Vec<(Id, u64)>) -> Result<Vec<SnapshotEntry>, RepoError> {
        self.sync_index()?;
        // Snapshots that do not verify are left out of the mount, as out of `snapshots`.
        let (snapshots, _rejected) = self.load_snapshots_listed(listed)?;
        Ok(snapshots)
    }

    fn tree(&self, id: &Id) -> Result<Tree, RepoError> {
        self.load_tree(id)
    }

    fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError> {
        Repository::locate(self, id)
    }

    fn block(&self, id: &Id) -> Result<Vec<u8>, RepoError> {
        self.load_blob(id)
    }

    fn around(&self, id: &Id) -> Result<Option<(BlobLocation, Vec<BlobLocation>)>, RepoError> {
        if self.is_local() {
            return Ok(None);
        }
        let location = Repository::locate(self, id)?;
        Ok(Some((location, self.region_around(&location)?)))
    }

    fn read_run(&self, run: &[BlobLocation], each: &mut dyn FnMut(usize, Result<&[u8], RepoError>)) {
        self.read_region(run, &mut Vec::new(), &mut Vec::new(), each);
    }
}

pub struct RepoSource<R: MountedRepo = Repository> {
    repo: Arc<R>,
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

impl RepoSource<Repository> {
    pub fn new(repo: Arc<Repository>) -> Result<RepoSource, RepoError> {
        repo.require_full_key("mount")?;
        Ok(RepoSource::over(repo))
    }
}

impl<R: MountedRepo> RepoSource<R> {
    fn over(repo: Arc<R>) -> RepoSource<R> {
        RepoSource { repo, listing: Mutex::new(Listing { named: Vec::new(), ids: HashSet::new(), refreshed: None }) }
    }

    /// The named snapshots, re-read when stale and the set of snapshot files changed.
    fn snapshots(&self) -> Result<Vec<(String, SnapshotEntry)>, RepoError> {
        let mut listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if listing.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(listing.named.clone());
        }
        // One listing of `snapshots/`: compared with the last, and handed on when it changed.
        let listed = self.repo.snapshot_ids()?;
        let ids: HashSet<Id> = listed.iter().map(|(id, _)| *id).collect();
        if ids != listing.ids || listing.refreshed.is_none() {
            listing.named = name_snapshots(self.repo.snapshots(listed)?);
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
        let tree = self.repo.tree(tree)?;
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

impl<R: MountedRepo> Source for RepoSource<R> {
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
        self.repo.block(&Id(*key)).map(Arc::new).map_err(to_source_error)
    }

    /// Over a network a miss reads the run of the pack around the block: the files next to a
    /// file in the backup are next to it in the pack, so a folder copied in order is fetched a
    /// region (≤ `AROUND_MAX`, and ≤ `budget` of companions) per request. Companions the mount
    /// already has are left out, and only the run that one read covers (gaps ≤ `REGION_GAP`)
    /// is fetched. A local folder has no round trip to save: one read per block.
    fn read_block_with_companions(
        &self,
        key: &BlockKey,
        budget: u64,
        known: &dyn Fn(&BlockKey) -> bool,
    ) -> Result<(BlockData, Vec<(BlockKey, BlockData)>), SourceError> {
        let Some((location, around)) = self.repo.around(&Id(*key)).map_err(to_source_error)? else {
            return Ok((self.read_block(key)?, Vec::new()));
        };
        let run = companion_run(&location, around, budget, |l| known(&l.entry.id.0));
        if run.len() <= 1 {
            return Ok((self.read_block(key)?, Vec::new()));
        }
        let mut wanted = None;
        let mut companions = Vec::new();
        self.repo.read_run(&run, &mut |i, result| match result {
            Ok(bytes) if run[i] == location => wanted = Some(Ok(Arc::new(bytes.to_vec()))),
            Err(e) if run[i] == location => wanted = Some(Err(to_source_error(e))),
            Ok(bytes) => companions.push((run[i].entry.id.0, Arc::new(bytes.to_vec()))),
            // A companion that does not open is left out; a read of it reports the failure.
            Err(_) => {}
        });
        let data = wanted.unwrap_or_else(|| self.read_block(key))?;
        Ok((data, companions))
    }
}

/// The blocks to read with `location`: those around it not `known`, in the run one ranged
/// read covers (gaps ≤ `REGION_GAP`), within `budget` bytes of plaintext besides it: nearest
/// after it first, then before (readers go forward), each side stopping at the first that does
/// not fit, so the run stays one range.
fn companion_run(
    location: &BlobLocation,
    around: Vec<BlobLocation>,
    budget: u64,
    known: impl Fn(&BlobLocation) -> bool,
) -> Vec<BlobLocation> {
    let candidates = around.into_iter().filter(|l| l == location || !known(l)).map(|l| (l, ())).collect();
    let Some(run) = plan_regions(candidates, REGION_GAP, AROUND_MAX)
        .into_iter()
        .find(|region| region.iter().any(|(l, _)| l == location))
    else {
        return vec![*location];
    };
    let run: Vec<BlobLocation> = run.into_iter().map(|(l, ())| l).collect();
    let Some(at) = run.iter().position(|l| l == location) else { return vec![*location] };
    let mut spent = 0u64;
    let mut fits = |l: &&BlobLocation| {
        spent += l.entry.raw_len as u64;
        spent <= budget
    };
    let after = run[at + 1..].iter().take_while(&mut fits).count();
    let before = run[..at].iter().rev().take_while(&mut fits).count();
    run[at - before..=at + after].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobKind, PackEntry};
    use crate::format::snapshot::Snapshot;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A repository in memory: what the mount sees, and counters for what it asked.
    #[derive(Default)]
    struct FakeRepo {
        snapshots: Mutex<Vec<SnapshotEntry>>,
        trees: HashMap<Id, Tree>,
        /// Blocks by id, each at a location in one pack (offsets in insertion order).
        blocks: HashMap<Id, (BlobLocation, Vec<u8>)>,
        /// Whether storage is a round trip away (companions are read) or local.
        remote: bool,
        loads: AtomicUsize,
        runs: Mutex<Vec<usize>>,
    }

    impl MountedRepo for FakeRepo {
        fn snapshot_ids(&self) -> Result<Vec<(Id, u64)>, RepoError> {
            Ok(self.snapshots.lock().unwrap().iter().map(|e| (e.id, 1)).collect())
        }
        fn snapshots(&self, listed: Vec<(Id, u64)>) -> Result<Vec<SnapshotEntry>, RepoError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let all = self.snapshots.lock().unwrap();
            Ok(all.iter().filter(|e| listed.iter().any(|(id, _)| id == &e.id)).cloned().collect())
        }
        fn tree(&self, id: &Id) -> Result<Tree, RepoError> {
            self.trees.get(id).cloned().ok_or(RepoError::MissingBlob(*id))
        }
        fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError> {
            self.blocks.get(id).map(|(l, _)| *l).ok_or(RepoError::MissingBlob(*id))
        }
        fn block(&self, id: &Id) -> Result<Vec<u8>, RepoError> {
            self.blocks.get(id).map(|(_, b)| b.clone()).ok_or(RepoError::MissingBlob(*id))
        }
        fn around(&self, id: &Id) -> Result<Option<(BlobLocation, Vec<BlobLocation>)>, RepoError> {
            if !self.remote {
                return Ok(None);
            }
            let location = self.locate(id)?;
            Ok(Some((location, self.blocks.values().map(|(l, _)| *l).filter(|l| l.pack == location.pack).collect())))
        }
        fn read_run(&self, run: &[BlobLocation], each: &mut dyn FnMut(usize, Result<&[u8], RepoError>)) {
            self.runs.lock().unwrap().push(run.len());
            for (i, l) in run.iter().enumerate() {
                each(
                    i,
                    self.blocks.get(&l.entry.id).map(|(_, b)| b.as_slice()).ok_or(RepoError::MissingBlob(l.entry.id)),
                );
            }
        }
    }

    fn entry(n: u8, time_unix: i64, host: &str, tags: &[&str], tree: Id) -> SnapshotEntry {
        SnapshotEntry {
            id: Id([n; 32]),
            snapshot: Snapshot {
                time_unix,
                hostname: host.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree,
                ..Snapshot::default()
            },
            signer: Id([200; 32]),
            signed_by: "laptop/backup key".into(),
        }
    }

    /// A snapshot tree: `file` (two blocks), `link` -> `file`, and a hard-linked pair.
    fn repo(remote: bool) -> FakeRepo {
        let mut fake = FakeRepo { remote, ..FakeRepo::default() };
        let mut offset = 100;
        for n in 1..=6u8 {
            let location = blob(n, offset, 1000);
            offset += 1000;
            fake.blocks.insert(Id([n; 32]), (location, vec![n; 1000]));
        }
        let meta = |mode, nlink, inode| Metadata { mode, nlink, inode, dev: 9, mtime: 7, ..Metadata::default() };
        let file = |name: &str, content: Vec<Id>, nlink, inode| Node {
            name: name.as_bytes().to_vec().into(),
            kind: NodeKind::File { size: content.len() as u64 * 1000, content },
            meta: meta(0o644, nlink, inode),
        };
        let root = Tree {
            nodes: vec![
                file("file", vec![Id([1; 32]), Id([2; 32])], 1, 1),
                Node {
                    name: b"link".to_vec().into(),
                    kind: NodeKind::Symlink { target: b"file".to_vec().into() },
                    meta: meta(0o777, 1, 2),
                },
                file("one", vec![Id([3; 32])], 2, 3),
                file("two", vec![Id([3; 32])], 2, 3),
            ],
        };
        fake.trees.insert(Id([100; 32]), root);
        *fake.snapshots.lock().unwrap() = vec![
            entry(1, 1_700_000_000, "laptop", &["daily"], Id([100; 32])),
            entry(2, 1_700_000_000, "laptop", &[], Id([100; 32])),
            entry(3, 1_700_000_100, "server", &["daily", "db"], Id([100; 32])),
        ];
        fake
    }

    fn names(entries: &[Entry<VfsNode>]) -> Vec<String> {
        entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect()
    }

    #[test]
    fn the_namespace_groups_snapshots_by_time_host_tag_signer_and_id() {
        let source = RepoSource::over(Arc::new(repo(false)));
        let root = source.list(&VfsNode::Root).unwrap();
        assert_eq!(names(&root), ["snapshots", "hosts", "tags", "signers", "ids", "latest"]);
        let snapshots = names(&source.list(&VfsNode::Snapshots).unwrap());
        // Two snapshots in one second get `.1`; `latest` points at the newest.
        assert_eq!(snapshots.len(), 3);
        assert_eq!(snapshots[1], format!("{}.1", snapshots[0]));
        assert_eq!(root[5].link_target, format!("snapshots/{}", snapshots[2]).into_bytes());
        assert_eq!(names(&source.list(&VfsNode::Hosts).unwrap()), ["laptop", "server"]);
        assert_eq!(names(&source.list(&VfsNode::Tags).unwrap()), ["daily", "db"]);
        assert_eq!(source.list(&VfsNode::Tag("daily".into())).unwrap().len(), 2);
        assert_eq!(source.list(&VfsNode::Host("server".into())).unwrap().len(), 1);
        // A signer's label may hold `/`; its folder name cannot.
        assert_eq!(names(&source.list(&VfsNode::Signers).unwrap()), ["laptop∕backup key"]);
        assert_eq!(source.list(&VfsNode::Signer(Id([200; 32]))).unwrap().len(), 3);
        assert_eq!(names(&source.list(&VfsNode::Ids).unwrap())[0], Id([1; 32]).short());
    }

    #[test]
    fn the_snapshot_list_is_loaded_again_only_when_storage_lists_a_change() {
        let fake = Arc::new(repo(false));
        let source = RepoSource::over(Arc::clone(&fake));
        source.list(&VfsNode::Snapshots).unwrap();
        source.list(&VfsNode::Hosts).unwrap();
        assert_eq!(fake.loads.load(Ordering::SeqCst), 1, "within REFRESH: no listing, no load");
        source.listing.lock().unwrap().refreshed = Some(Instant::now() - REFRESH * 2);
        source.list(&VfsNode::Snapshots).unwrap();
        assert_eq!(fake.loads.load(Ordering::SeqCst), 1, "stale but unchanged: listed, not loaded");
        fake.snapshots.lock().unwrap().push(entry(4, 1_700_000_200, "laptop", &[], Id([100; 32])));
        source.listing.lock().unwrap().refreshed = Some(Instant::now() - REFRESH * 2);
        assert_eq!(source.list(&VfsNode::Snapshots).unwrap().len(), 4);
        assert_eq!(fake.loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_snapshot_tree_shows_files_links_and_hardlinks_with_their_blocks() {
        let source = RepoSource::over(Arc::new(repo(false)));
        let entries = source.list(&VfsNode::Tree { snapshot: Id([1; 32]), tree: Id([100; 32]) }).unwrap();
        assert_eq!(names(&entries), ["file", "link", "one", "two"]);
        let (file, link, one, two) = (&entries[0], &entries[1], &entries[2], &entries[3]);
        assert_eq!((file.attr.kind, file.attr.size, file.attr.mode), (MountKind::File, 2000, 0o644));
        assert_eq!(file.attr.hardlink_key, None);
        assert_eq!(
            (link.attr.kind, link.attr.size, link.link_target.as_slice()),
            (MountKind::Symlink, 4, &b"file"[..])
        );
        assert!(one.attr.hardlink_key.is_some());
        assert_eq!(one.attr.hardlink_key, two.attr.hardlink_key, "one inode, one key");
        let blocks = source.blocks(&file.node).unwrap();
        assert_eq!(blocks.iter().map(|b| (b.key[0], b.len)).collect::<Vec<_>>(), [(1, 1000), (2, 1000)]);
        assert_eq!(*source.read_block(&blocks[1].key).unwrap(), vec![2u8; 1000]);
        assert!(source.list(&file.node).is_err(), "a file is not a folder");
        assert!(source.blocks(&VfsNode::Root).is_err(), "a folder has no blocks");
    }

    #[test]
    fn a_miss_brings_its_unknown_neighbours_only_when_storage_is_remote() {
        let local = RepoSource::over(Arc::new(repo(false)));
        let (data, companions) = local.read_block_with_companions(&[3; 32], u64::MAX, &|_| false).unwrap();
        assert_eq!(*data, vec![3u8; 1000]);
        assert!(companions.is_empty(), "a local folder reads the block alone");

        let fake = Arc::new(repo(true));
        let remote = RepoSource::over(Arc::clone(&fake));
        let (data, companions) = remote.read_block_with_companions(&[3; 32], 2500, &|k| k[0] == 4).unwrap();
        assert_eq!(*data, vec![3u8; 1000]);
        let mut got: Vec<u8> = companions
            .iter()
            .map(|(k, d)| {
                assert_eq!(**d, vec![k[0]; 1000]);
                k[0]
            })
            .collect();
        got.sort();
        // 4 is known (it is skipped, its gap bridged); the budget (2,500 bytes) is spent after
        // the block first, where a reader goes: 5 and 6, then nothing before fits. One read.
        assert_eq!(got, [5, 6]);
        assert_eq!(*fake.runs.lock().unwrap(), [3]);
    }

    fn blob(n: u8, offset: u32, len: u32) -> BlobLocation {
        BlobLocation {
            pack: Id([7; 32]),
            entry: PackEntry { id: Id([n; 32]), kind: BlobKind::Data, offset, length: len, raw_len: len },
            domain: Id([0; 32]),
        }
    }

    #[test]
    fn companions_are_unknown_neighbours_within_budget_in_one_run() {
        let around: Vec<BlobLocation> =
            (0..10).map(|n| blob(n, 100 + n as u32 * 1000, 1000)).chain([blob(10, 5_000_000, 1000)]).collect();
        let me = around[3];
        // 4, 6 and 9 are known; budget for four companions: 5, 7, 8 after, then 2 before.
        let run = companion_run(&me, around.clone(), 4000, |l| [4, 6, 9].contains(&l.entry.id.0[0]));
        let ids: Vec<u8> = run.iter().map(|l| l.entry.id.0[0]).collect();
        assert_eq!(ids, vec![2, 3, 5, 7, 8]);
        // The far blob (a gap over REGION_GAP) never joins the run, whatever the budget.
        let far = around[9];
        let run = companion_run(&far, around, u64::MAX, |_| false);
        assert!(run.iter().all(|l| l.entry.id.0[0] != 10), "{run:?}");
        assert!(run.len() > 1);
    }
}
