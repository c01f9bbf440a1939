//! Restore options beyond the selection by pattern: a dry run, what to do with what is already
//! there, reading back, and case-insensitive patterns (restic's names and meanings).

use clap::Args;
use coffer::commands::restore_policy::Overwrite;

#[derive(Args, Debug, Clone, Default)]
pub struct RestoreExtraArgs {
    /// Show what would be written (new folders end in `/`), write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Read every restored file back and compare it with the snapshot; exit 1 if one differs.
    #[arg(long)]
    pub verify: bool,
    /// What to do with a file already at the target: always (replace, restic's default too),
    /// if-changed (keep one of the same size and modification time), if-newer (replace only
    /// an older one), never (keep it).
    #[arg(long, value_name = "WHEN", default_value = "always", value_parser = Overwrite::parse)]
    pub overwrite: Overwrite,
    /// Like --include, ignoring case (repeatable).
    #[arg(long = "iinclude", value_name = "PATTERN")]
    pub iincludes: Vec<String>,
    /// Like --exclude, ignoring case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
}
