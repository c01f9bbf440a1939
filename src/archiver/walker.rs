//! Walks the source paths depth-first in name order, reads each entry's metadata, decides per
//! regular file whether the files cache makes reading unnecessary, and emits builder events.
//! Everything here is metadata; file contents are read by the reader pool.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{bounded, Sender};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_bytes::ByteBuf;

use super::builder::Event;
use super::meta::{metadata, read_xattrs, special_kind, NameCache};
use super::reader::{unchanged, FileJob};
use super::sink::BlobSink;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repository;

/// Exclude patterns as restic reads them: a pattern without `/` matches a name at any depth,
/// one with `/` matches the whole path.
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern.trim_end_matches('/'))?;
            if pattern.trim_end_matches('/').contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        Ok(Excludes { names: names.build()?, paths: paths.build()? })
    }

    pub fn matches(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

pub struct Walker<'a> {
    pub repo: &'a Repository,
    pub sink: &'a BlobSink,
    pub excludes: &'a Excludes,
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

    /// Emits the events for one path (a source, or an entry found while walking).
    pub fn visit(&mut self, path: &Path, name: &OsStr) -> Result<(), Stopped> {
        let fs_meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                self.errors.push((path.to_path_buf(), e.to_string()));
                return Ok(());
            }
        };
        let xattrs = read_xattrs(path).unwrap_or_else(|e| {
            self.errors.push((path.to_path_buf(), format!("reading extended attributes: {e}")));
            Vec::new()
        });
        let meta = metadata(&fs_meta, xattrs, &mut self.names);
        let name = ByteBuf::from(name.as_bytes().to_vec());
        if fs_meta.is_dir() {
            self.emit(Event::EnterDir { name, meta })?;
            self.walk_dir(path)?;
            return self.emit(Event::LeaveDir);
        }
        if fs_meta.is_file() {
            return self.visit_file(path, name, meta, fs_meta);
        }
        match special_kind(path, &fs_meta) {
            Ok(Some(kind)) => {
                self.other_nodes += 1;
                self.emit(Event::Node(Node { name, kind, meta }))
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.errors.push((path.to_path_buf(), e.to_string()));
                Ok(())
            }
        }
    }

    fn walk_dir(&mut self, dir: &Path) -> Result<(), Stopped> {
        let mut names: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|entry| match entry {
                    Ok(entry) => Some(entry.file_name()),
                    Err(e) => {
                        self.errors.push((dir.to_path_buf(), e.to_string()));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                self.errors.push((dir.to_path_buf(), format!("listing directory: {e}")));
                return Ok(());
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            if self.excludes.matches(&path) {
                continue;
            }
            self.visit(&path, &name)?;
        }
        Ok(())
    }

    fn visit_file(
        &mut self,
        path: &Path,
        name: ByteBuf,
        meta: crate::format::tree::Metadata,
        fs_meta: std::fs::Metadata,
    ) -> Result<(), Stopped> {
        let cached = self.repo.db().cached_file(path.as_os_str().as_bytes()).ok().flatten();
        if let Some(cached) = cached {
            if unchanged(&cached, &fs_meta) && cached.content.iter().all(|id| self.sink.contains(id)) {
                self.files_unmodified += 1;
                let kind = NodeKind::File { size: cached.size, content: cached.content };
                return self.emit(Event::Node(Node { name, kind, meta }));
            }
            self.files_changed += 1;
        }
        let (reply, outcome) = bounded(1);
        let job = FileJob { path: path.to_path_buf(), meta: fs_meta, reply };
        self.jobs.send(job).map_err(|_| Stopped)?;
        self.emit(Event::File { name, meta, path: path.to_path_buf(), outcome })
    }
}
