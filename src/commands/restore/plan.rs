//! Planning reads by pack (remote stores): the walk gathers chunks into a [`Batch`], which is
//! sent region by region in pack order (see `repo::plan_regions` and docs/design.md, "The read
//! path across a network (issue 16)"), so a batch costs a request per pack region instead of
//! one per chunk. The files of at most two batches are open at once; a walk that stops removes
//! the files of the batch it did not send.

use std::path::PathBuf;

use crate::repo::BlobLocation;
use crate::repo::{plan_regions, REGION_GAP, REGION_MAX};

use super::write::{deliver, ChunkJob};
use super::{RestoreError, RestoreWalk};

/// Chunks gathered before they are read: grouped by pack region, a batch costs a request per
/// region (see `repo::plan_regions`) instead of one per chunk. Its files are open meanwhile, so
/// a batch closes at `max_files` files (bounded by the open-file limit) or [`BATCH_BYTES`].
pub(super) struct Batch {
    pub(super) jobs: Vec<(BlobLocation, ChunkJob)>,
    pub(super) files: usize,
    pub(super) bytes: u64,
    pub(super) max_files: usize,
}

/// Plaintext bytes a batch may plan at once: enough for many regions of large files, while the
/// workers start on the first batch early.
const BATCH_BYTES: u64 = 256 << 20;

impl Batch {
    pub(super) fn new(open_file_limit: usize) -> Batch {
        // A quarter of the limit per batch: one being gathered, one being written, and room
        // for the process's other descriptors.
        Batch { jobs: Vec::new(), files: 0, bytes: 0, max_files: (open_file_limit / 4).clamp(16, 4096) }
    }

    pub(super) fn full(&self) -> bool {
        self.files >= self.max_files || self.bytes >= BATCH_BYTES
    }
}

impl RestoreWalk<'_, '_> {
    pub(super) fn send(&self, jobs: Vec<ChunkJob>) -> std::io::Result<()> {
        self.jobs.send(jobs).map_err(|_| std::io::Error::other("restore workers stopped"))
    }

    /// Sends the gathered chunks, region by region in pack order.
    pub(super) fn flush(&mut self) -> Result<(), RestoreError> {
        let Some(batch) = self.batch.as_mut() else { return Ok(()) };
        let jobs = std::mem::take(&mut batch.jobs);
        (batch.files, batch.bytes) = (0, 0);
        for region in plan_regions(jobs, REGION_GAP, REGION_MAX) {
            self.send(region.into_iter().map(|(_, job)| job).collect())
                .map_err(|source| RestoreError::Target { path: PathBuf::from("(restore)"), source })?;
        }
        Ok(())
    }

    /// After a failed walk: the chunks not sent yet will not be read, so their files are
    /// removed and reported rather than left at full size with holes for content.
    pub(super) fn abandon(&mut self) {
        let Some(batch) = self.batch.as_mut() else { return };
        for (_, job) in std::mem::take(&mut batch.jobs) {
            deliver(self.shared, &job, Err("the restore stopped before it was read".into()));
        }
    }
}

/// This process's soft limit on open files (the binary raises it to the hard limit at start):
/// restore over a network keeps a batch of files open, see `Batch`.
pub(super) fn open_file_limit() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
}
