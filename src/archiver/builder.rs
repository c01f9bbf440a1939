//! Assembles trees from the walker's events, on its own thread, so the walker can run ahead
//! while files are still being read. Events arrive in depth-first order with each directory's
//! entries sorted; a directory's tree is stored when it is left, after its files' outcomes are
//! in, and becomes a node of its parent.

use std::path::PathBuf;

use crossbeam_channel::Receiver;

use super::oneshot;
use serde_bytes::ByteBuf;

use super::reader::FileOutcome;
use super::save::{FilesCache, SaveBlobs};
use crate::format::tree::{Metadata, Node, NodeKind, Tree};
use crate::repo::{CachedFile, RepoError};

pub enum Event {
    EnterDir {
        name: ByteBuf,
        meta: Metadata,
    },
    LeaveDir,
    /// A node whose content is known (special files, unchanged files).
    Node(Node),
    /// A regular file being read by the pool.
    File {
        name: ByteBuf,
        meta: Metadata,
        path: PathBuf,
        outcome: oneshot::Receiver<FileOutcome>,
    },
}

enum Pending {
    Ready(Node),
    File { name: ByteBuf, meta: Metadata, path: PathBuf, outcome: oneshot::Receiver<FileOutcome> },
}

/// Entries per block of a directory's pending entries. A folder of tens of thousands of files
/// then needs no single huge allocation (nor the slack of doubling one), and each block is
/// freed as soon as its entries are resolved, while the folder's nodes are gathered.
const ENTRY_BLOCK: usize = 1024;

struct Frame {
    name: ByteBuf,
    meta: Metadata,
    entries: Vec<Vec<Pending>>,
}

impl Frame {
    fn new(name: ByteBuf, meta: Metadata) -> Frame {
        Frame { name, meta, entries: Vec::new() }
    }

    fn push(&mut self, entry: Pending) {
        match self.entries.last_mut() {
            Some(block) if block.len() < ENTRY_BLOCK => block.push(entry),
            // The first block grows as usual, since most folders hold a few entries.
            None => self.entries.push(vec![entry]),
            Some(_) => {
                let mut block = Vec::with_capacity(ENTRY_BLOCK);
                block.push(entry);
                self.entries.push(block);
            }
        }
    }
}

#[derive(Default)]
pub struct BuildReport {
    /// The nodes at the top level: one per source path.
    pub roots: Vec<Node>,
    pub files_read: u64,
    /// Sum of the sizes of every file in the snapshot, read or unchanged.
    pub total_bytes: u64,
    pub bytes_read: u64,
    pub dirs: u64,
    pub errors: Vec<(PathBuf, String)>,
    pub warnings: Vec<(PathBuf, String)>,
    pub cache_records: Vec<(Vec<u8>, CachedFile)>,
}

/// Files-cache rows are written in batches of this many, keeping memory flat.
const CACHE_BATCH: usize = 1024;

pub fn build(
    sink: &dyn SaveBlobs,
    files: &dyn FilesCache,
    batches: Receiver<Vec<Event>>,
) -> Result<BuildReport, RepoError> {
    let mut report = BuildReport::default();
    let mut stack = vec![Frame::new(ByteBuf::new(), Metadata::default())];
    for event in batches.into_iter().flatten() {
        match event {
            Event::EnterDir { name, meta } => stack.push(Frame::new(name, meta)),
            Event::Node(node) => top(&mut stack).push(Pending::Ready(node)),
            Event::File { name, meta, path, outcome } => {
                top(&mut stack).push(Pending::File { name, meta, path, outcome })
            }
            Event::LeaveDir => {
                let frame = stack.pop().expect("LeaveDir follows EnterDir");
                let tree = Tree { nodes: resolve(frame.entries, files, &mut report)? };
                let subtree = sink.add_tree(tree.encode())?;
                report.dirs += 1;
                top(&mut stack).push(Pending::Ready(Node {
                    name: frame.name,
                    kind: NodeKind::Dir { subtree },
                    meta: frame.meta,
                }));
            }
        }
    }
    let root = stack.pop().expect("the top frame is never popped by events");
    report.roots = resolve(root.entries, files, &mut report)?;
    Ok(report)
}

fn top(stack: &mut [Frame]) -> &mut Frame {
    stack.last_mut().expect("the top frame is never popped by events")
}

/// Waits for each file's outcome, in order, dropping the files that could not be read.
/// Stores the files-cache records gathered whenever a batch is full.
fn resolve(
    blocks: Vec<Vec<Pending>>,
    files: &dyn FilesCache,
    report: &mut BuildReport,
) -> Result<Vec<Node>, RepoError> {
    let mut nodes = Vec::with_capacity(blocks.iter().map(Vec::len).sum());
    for entry in blocks.into_iter().flatten() {
        if report.cache_records.len() >= CACHE_BATCH {
            files.cache_files(&std::mem::take(&mut report.cache_records))?;
        }
        match entry {
            Pending::Ready(node) => {
                if let NodeKind::File { size, .. } = &node.kind {
                    report.total_bytes += size;
                }
                nodes.push(node)
            }
            Pending::File { name, meta, path, outcome } => {
                let outcome = outcome.recv().unwrap_or_else(|_| {
                    FileOutcome::Unreadable(std::io::Error::other("reader stopped before this file"))
                });
                match outcome {
                    FileOutcome::Read { content, size, cache, changed_while_reading } => {
                        report.files_read += 1;
                        report.bytes_read += size;
                        report.total_bytes += size;
                        if changed_while_reading {
                            report.warnings.push((path.clone(), "file changed while it was read".into()));
                        }
                        if let Some(mut cache) = cache {
                            cache.xattrs = meta.xattrs.clone();
                            report
                                .cache_records
                                .push((std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec(), cache));
                        }
                        nodes.push(Node { name, kind: NodeKind::File { size, content }, meta });
                    }
                    FileOutcome::Unreadable(e) => report.errors.push((path, e.to_string())),
                    FileOutcome::Fatal(e) => return Err(e),
                }
            }
        }
    }
    Ok(nodes)
}

/// The builder against an in-memory saver and files cache: no repository behind it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::save::fakes::{MemoryBlobs, MemoryFilesCache};
    use crate::format::pack::BlobKind;
    use crate::format::tree::Xattr;
    use crate::id::Id;

    fn name(text: &str) -> ByteBuf {
        ByteBuf::from(text.as_bytes().to_vec())
    }

    fn cached(content: Vec<Id>, size: u64) -> CachedFile {
        CachedFile { dev: 1, ino: 2, size, mtime_ns: 3, ctime_ns: 4, content, xattrs: Vec::new() }
    }

    fn outcome(sent: FileOutcome) -> oneshot::Receiver<FileOutcome> {
        let (tx, rx) = oneshot::pair();
        tx.send(sent);
        rx
    }

    fn file(text: &str, meta: Metadata, sent: FileOutcome) -> Event {
        Event::File { name: name(text), meta, path: PathBuf::from("/src").join(text), outcome: outcome(sent) }
    }

    fn read(content: Vec<Id>, size: u64, cache: Option<CachedFile>) -> FileOutcome {
        FileOutcome::Read { content, size, cache, changed_while_reading: false }
    }

    fn run(events: Vec<Event>, blobs: &MemoryBlobs, files: &MemoryFilesCache) -> Result<BuildReport, RepoError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        // Two batches, as the walker sends them.
        let mut first = events;
        let second = first.split_off(first.len() / 2);
        tx.send(first).unwrap();
        tx.send(second).unwrap();
        drop(tx);
        build(blobs, files, rx)
    }

    fn tree(blobs: &MemoryBlobs, id: &Id) -> Tree {
        let (kind, bytes) = blobs.get(id).expect("tree saved");
        assert_eq!(kind, BlobKind::Tree);
        Tree::decode(&bytes).expect("tree decodes")
    }

    fn names(tree: &Tree) -> Vec<&[u8]> {
        tree.nodes.iter().map(|n| n.name.as_slice()).collect()
    }

    #[test]
    fn a_folder_becomes_a_tree_of_its_entries_in_event_order() {
        let (blobs, files) = (MemoryBlobs::default(), MemoryFilesCache::default());
        let chunk = Id::of_bytes(b"chunk of b");
        let xattr = Xattr { name: name("user.note"), value: name("kept") };
        let b_meta = Metadata { mode: 0o100644, xattrs: vec![xattr.clone()], ..Metadata::default() };
        let unchanged = Node {
            name: name("a"),
            kind: NodeKind::File { size: 3, content: vec![Id::of_bytes(b"old")] },
            meta: Metadata::default(),
        };
        let events = vec![
            Event::EnterDir { name: name("src"), meta: Metadata::default() },
            Event::Node(unchanged),
            file("b", b_meta, read(vec![chunk], 5, Some(cached(vec![chunk], 5)))),
            file("c", Metadata::default(), FileOutcome::Unreadable(std::io::Error::other("gone"))),
            Event::EnterDir { name: name("empty"), meta: Metadata::default() },
            Event::LeaveDir,
            Event::LeaveDir,
        ];
        let report = run(events, &blobs, &files).expect("built");

        assert_eq!(report.roots.len(), 1);
        assert_eq!(report.roots[0].name.as_slice(), b"src");
        let NodeKind::Dir { subtree } = &report.roots[0].kind else { panic!("the source is a folder") };
        let src = tree(&blobs, subtree);
        assert_eq!(names(&src), [&b"a"[..], b"b", b"empty"], "the unreadable file is left out");
        assert!(matches!(&src.nodes[1].kind, NodeKind::File { size: 5, content } if content == &[chunk]));
        let NodeKind::Dir { subtree: empty } = &src.nodes[2].kind else { panic!("a folder") };
        assert!(tree(&blobs, empty).nodes.is_empty());
        assert_eq!(blobs.len(), 2, "two trees, no data: the readers save data, not the builder");

        assert_eq!((report.dirs, report.files_read, report.bytes_read, report.total_bytes), (2, 1, 5, 8));
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].0, PathBuf::from("/src/c"));
        // The cache record of the file read carries the xattrs the walker saw; it waits for
        // the end of the backup (fewer than a batch).
        assert_eq!(report.cache_records.len(), 1);
        assert_eq!(report.cache_records[0].0, b"/src/b");
        assert_eq!(report.cache_records[0].1.xattrs, vec![xattr]);
        assert!(files.stored.lock().unwrap().is_empty());
    }

    #[test]
    fn files_cache_records_are_stored_in_batches() {
        let (blobs, files) = (MemoryBlobs::default(), MemoryFilesCache::default());
        let mut events = vec![Event::EnterDir { name: name("many"), meta: Metadata::default() }];
        let count = CACHE_BATCH + 2;
        for i in 0..count {
            let chunk = Id::of_bytes(&i.to_le_bytes());
            events.push(file(
                &format!("f{i:05}"),
                Metadata::default(),
                read(vec![chunk], 1, Some(cached(vec![chunk], 1))),
            ));
        }
        events.push(Event::LeaveDir);
        let report = run(events, &blobs, &files).expect("built");
        assert_eq!(files.stored.lock().unwrap().len(), CACHE_BATCH);
        assert_eq!(report.cache_records.len(), count - CACHE_BATCH);
        assert_eq!(report.files_read, count as u64);
    }

    #[test]
    fn a_failed_save_stops_the_build() {
        let (blobs, files) = (MemoryBlobs::default(), MemoryFilesCache::default());
        let failed = RepoError::Internal { worker: "pack writer thread", detail: "test".into() };
        let events = vec![
            Event::EnterDir { name: name("src"), meta: Metadata::default() },
            file("a", Metadata::default(), FileOutcome::Fatal(failed)),
            Event::LeaveDir,
        ];
        assert!(matches!(run(events, &blobs, &files), Err(RepoError::Internal { .. })));
        assert_eq!(blobs.len(), 0, "no tree names a file whose data was not saved");
    }

    #[test]
    fn a_reader_that_went_away_makes_the_file_unreadable_not_the_backup_fail() {
        let (blobs, files) = (MemoryBlobs::default(), MemoryFilesCache::default());
        let (tx, rx) = oneshot::pair::<FileOutcome>();
        drop(tx);
        let events =
            vec![Event::File { name: name("lost"), meta: Metadata::default(), path: "/lost".into(), outcome: rx }];
        let report = run(events, &blobs, &files).expect("built");
        assert!(report.roots.is_empty());
        assert_eq!(report.errors.len(), 1);
    }
}
