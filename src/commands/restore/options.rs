//! What a restore is asked (`RestoreOptions`) and what it answers (`RestoreReport`): the types
//! the command line and the tests name, kept apart from the machinery in the sibling files so
//! that reading them needs none of it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::commands::restore_policy::Overwrite;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub progress: Arc<crate::progress::Counters>,
    /// When restoring as root, leave out what grants privileges: set-user/group-id bits,
    /// device nodes, and `security.*` / `trusted.*` xattrs (file capabilities). For snapshots
    /// a write-only key wrote: its holder (a thief, perhaps) chose those bytes (issue 15).
    pub confine_special: bool,
    /// Like `includes`/`excludes`, ignoring case (restic's `--iinclude`, `--iexclude`).
    pub iincludes: Vec<String>,
    pub iexcludes: Vec<String>,
    /// Walk and decide, count and list what would be written; write nothing.
    pub dry_run: bool,
    /// What to do with an entry already at the target.
    pub overwrite: Overwrite,
    /// Read every file of the selection back afterwards and compare with the snapshot.
    pub verify: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason (and the damaged object).
    pub errors: Vec<(String, String)>,
    /// Set-id bits, device nodes and privileged xattrs left out (`confine_special`).
    pub special_left_out: u64,
    /// Entries already at the target and kept (`--overwrite`).
    pub skipped: u64,
    /// Files read back and found equal to the snapshot (`--verify`).
    pub verified: u64,
    /// Files whose content differs from the snapshot's (`--verify`); also in `errors`.
    pub verify_failed: u64,
    /// A dry run: nothing was written; `planned` lists what would have been.
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}
