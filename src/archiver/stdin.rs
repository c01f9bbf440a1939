//! `coffer backup --stdin`: one stream (a database dump piped in from cron) stored as one file
//! of a snapshot, under a name the caller gives, as restic does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::RUNNING_NOTE;
use super::{conclude, meta, store_prefix_trees, BackupError, BackupOptions, BackupOutcome, Concluding};
use crate::chunker::Chunker;
use crate::format::snapshot::Summary;
use crate::format::tree::{Metadata, Node, NodeKind};
use crate::repo::{Packer, Repository};

/// The mode the file gets: a dump often holds what only its owner should read.
const STDIN_MODE: u32 = 0o600;

/// Backs up everything `input` yields as the file `name` (absolute, one level: `/db.sql`).
pub fn backup_stdin(
    repo: &Arc<Repository>,
    options: &BackupOptions,
    name: &Path,
    input: impl Read,
    interrupted: &AtomicBool,
) -> Result<BackupOutcome, BackupError> {
    let Some(file_name) = name.file_name().filter(|_| name.parent() == Some(Path::new("/"))) else {
        return Err(BackupError::Label(format!("{} is not a file name at the snapshot's root", name.display())));
    };
    options.check_labels()?;
    let start = chrono::Utc::now();
    let host = options.hostname.clone().unwrap_or_else(crate::repo::hostname);
    repo.check_may_claim(&host)?;
    let dry_run = options.dry_run;
    let lock = if dry_run { None } else { Some(crate::repo::locks::BackupLock::acquire(repo)?) };
    repo.sync_index()?;
    let condemned = repo.condemned_packs()?;
    if !dry_run {
        repo.set_local_note(RUNNING_NOTE, Some(&start.to_rfc3339()))?;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sink = Packer::with_dry_run(Arc::clone(repo), cores, &condemned, dry_run)?;
    let stop = |sink: Packer<'static>, error: BackupError| -> Result<BackupOutcome, BackupError> {
        // What was uploaded is indexed, so the next run reuses it.
        sink.finish()?;
        if !dry_run {
            repo.set_local_note(RUNNING_NOTE, None)?;
        }
        Err(error)
    };
    let gear = crate::chunker::Gear::new(repo.config().chunker, repo.config().gear, &repo.keys().id_key);
    let mut chunker = Chunker::new(input, &gear);
    let (mut content, mut size) = (Vec::new(), 0u64);
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return stop(sink, BackupError::Interrupted);
        }
        let mut chunk = Vec::new();
        match chunker.next_chunk_into(&mut chunk) {
            Ok(true) => {
                size += chunk.len() as u64;
                options.progress.add_bytes(chunk.len() as u64);
                let id = repo.keys().id_key.blob_id(&chunk);
                sink.add_data(id, chunk)?;
                content.push(id);
            }
            Ok(false) => break,
            Err(source) => return stop(sink, BackupError::Source { path: PathBuf::from("standard input"), source }),
        }
    }
    options.progress.add_file();
    let mut names = meta::NameCache::default();
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    let node = Node {
        name: ByteBuf::from(file_name.as_encoded_bytes().to_vec()),
        kind: NodeKind::File { size, content },
        meta: Metadata {
            mode: STDIN_MODE,
            uid,
            gid,
            user: names.user(uid),
            group: names.group(gid),
            mtime: start.timestamp(),
            mtime_nsec: start.timestamp_subsec_nanos(),
            ctime: start.timestamp(),
            ctime_nsec: start.timestamp_subsec_nanos(),
            nlink: 1,
            ..Metadata::default()
        },
    };
    let paths = [name.to_path_buf()];
    let root = store_prefix_trees(&sink, &paths, vec![node])?;
    let totals = sink.finish()?;
    let summary = Summary {
        files_new: 1,
        bytes_read: size,
        total_bytes: size,
        raw_added: totals.raw_added,
        bytes_added: totals.bytes_added,
        packs_added: totals.packs_added,
        ..Summary::default()
    };
    let concluding = Concluding { repo, options, interrupted, lock, start, paths: &paths, root, summary };
    conclude(concluding, Vec::new(), Vec::new())
}
