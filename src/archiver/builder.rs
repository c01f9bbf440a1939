//! Assembles trees from the walker's events, on its own thread, so the walker can run ahead
//! while files are still being read. Events arrive in depth-first order with each directory's
//! entries sorted; a directory's tree is stored when it is left, after its files' outcomes are
//! in, and becomes a node of its parent.

use std::path::PathBuf;

use crossbeam_channel::Receiver;

use super::oneshot;
use serde_bytes::ByteBuf;

use super::reader::FileOutcome;
use super::sink::BlobSink;
use crate::format::tree::{Metadata, Node, NodeKind, Tree};
use crate::repo::{CachedFile, RepoError, Repository};

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

pub fn build(sink: &BlobSink, repo: &Repository, batches: Receiver<Vec<Event>>) -> Result<BuildReport, RepoError> {
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
                let tree = Tree { nodes: resolve(frame.entries, repo, &mut report)? };
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
    report.roots = resolve(root.entries, repo, &mut report)?;
    Ok(report)
}

fn top(stack: &mut [Frame]) -> &mut Frame {
    stack.last_mut().expect("the top frame is never popped by events")
}

/// Waits for each file's outcome, in order, dropping the files that could not be read.
/// Stores the files-cache records gathered whenever a batch is full.
fn resolve(blocks: Vec<Vec<Pending>>, repo: &Repository, report: &mut BuildReport) -> Result<Vec<Node>, RepoError> {
    let mut nodes = Vec::with_capacity(blocks.iter().map(Vec::len).sum());
    for entry in blocks.into_iter().flatten() {
        if report.cache_records.len() >= CACHE_BATCH {
            repo.cache_files(&std::mem::take(&mut report.cache_records))?;
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
