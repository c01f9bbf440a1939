//! Walks the source paths depth-first in name order over what the scanner read of each
//! directory, decides per regular file whether the files cache makes reading unnecessary, and
//! emits builder events. Everything here is metadata; file contents are read by the reader pool.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use serde_bytes::ByteBuf;

use super::builder::Event;
use super::meta::{metadata, NameCache};
use super::reader::{unchanged, FileJob};
use super::save::{FilesCache, SaveBlobs};
use super::scan::{describe, ScannedEntry, Scanner};
use crate::format::tree::{Node, NodeKind};
use crate::repo::CachedFile;

pub struct Walker<'a> {
    pub files: &'a dyn FilesCache,
    pub sink: &'a dyn SaveBlobs,
    pub scanner: &'a Scanner,
    pub events: Sender<Vec<Event>>,
    /// Events not yet sent: they go in batches, since waking the builder for every file
    /// costs more than the builder's work on it.
    pub batch: Vec<Event>,
    pub jobs: Sender<FileJob>,
    pub names: NameCache,
    pub interrupted: &'a AtomicBool,
    /// Errors met while walking (the builder reports those met while reading).
    pub errors: Vec<(std::path::PathBuf, String)>,
    pub files_unmodified: u64,
    /// Files the cache knew but that changed; the rest of those read are new.
    pub files_changed: u64,
    pub other_nodes: u64,
    pub progress: &'a crate::progress::Counters,
}

const EVENT_BATCH: usize = 256;

/// The walk stopped because the user interrupted it or the builder went away.
pub struct Stopped;

impl Walker<'_> {
    fn emit(&mut self, event: Event) -> Result<(), Stopped> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(Stopped);
        }
        self.batch.push(event);
        if self.batch.len() >= EVENT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the events gathered so far to the builder.
    pub fn flush(&mut self) -> Result<(), Stopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(EVENT_BATCH));
        self.events.send(batch).map_err(|_| Stopped)
    }

    /// Emits the events for a source path.
    pub fn visit_source(&mut self, path: &Path, name: &OsStr) -> Result<(), Stopped> {
        let found = std::fs::symlink_metadata(path).map_err(|e| e.to_string()).and_then(|meta| describe(path, meta));
        let mut entry = ScannedEntry { name: name.to_os_string(), path: path.to_path_buf(), found };
        if let Ok(found) = &mut entry.found {
            if found.meta.is_file() {
                found.cached = self.files.cached_file(path.as_os_str().as_bytes());
            }
            found.read_xattrs(path);
        }
        self.visit(entry)
    }

    /// Emits the events for one entry (a source, or one found while walking).
    fn visit(&mut self, entry: ScannedEntry) -> Result<(), Stopped> {
        let ScannedEntry { name, path, found } = entry;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.errors.push((path, e));
                return Ok(());
            }
        };
        if let Some(e) = found.xattr_error {
            self.errors.push((path.clone(), e));
        }
        let meta = metadata(&found.meta, found.xattrs, &mut self.names);
        let name = ByteBuf::from(name.into_vec());
        if let Some(kind) = found.special {
            self.other_nodes += 1;
            return self.emit(Event::Node(Node { name, kind, meta }));
        }
        if found.meta.is_dir() {
            self.emit(Event::EnterDir { name, meta })?;
            self.walk_dir(&path)?;
            return self.emit(Event::LeaveDir);
        }
        self.visit_file(path, name, meta, found.meta, found.cached)
    }

    fn walk_dir(&mut self, dir: &Path) -> Result<(), Stopped> {
        let mut cursor = self.scanner.open(dir);
        for e in std::mem::take(&mut cursor.errors) {
            self.errors.push((dir.to_path_buf(), e));
        }
        while let Some(entries) = self.scanner.next_chunk(&mut cursor) {
            for entry in entries {
                self.visit(entry)?;
            }
        }
        Ok(())
    }

    fn visit_file(
        &mut self,
        path: PathBuf,
        name: ByteBuf,
        meta: crate::format::tree::Metadata,
        fs_meta: std::fs::Metadata,
        cached: Option<CachedFile>,
    ) -> Result<(), Stopped> {
        if let Some(cached) = cached {
            if unchanged(&cached, &fs_meta) && self.sink.contains_all(&cached.content) {
                self.files_unmodified += 1;
                let kind = NodeKind::File { size: cached.size, content: cached.content };
                return self.emit(Event::Node(Node { name, kind, meta }));
            }
            self.files_changed += 1;
            self.progress.file_changed(crate::progress::FileChange::Changed, &path);
        } else {
            self.progress.file_changed(crate::progress::FileChange::New, &path);
        }
        let (reply, outcome) = super::oneshot::pair();
        let job = FileJob { path: path.clone(), meta: fs_meta, reply };
        let job = match self.jobs.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job)) => Some(job),
            Err(TrySendError::Disconnected(_)) => return Err(Stopped),
        };
        if let Some(job) = job {
            self.scanner.reading();
            self.jobs.send(job).map_err(|_| Stopped)?;
        }
        self.emit(Event::File { name, meta, path, outcome })
    }
}
