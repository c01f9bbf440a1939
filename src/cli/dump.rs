//! `coffer dump`: a file of a snapshot to stdout, or a folder as a tar stream.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::exit;
use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use coffer::commands::dump;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Archive {
    Tar,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  coffer dump latest /etc/fstab\n  \
                        coffer dump latest~1 /home/me/projects > projects.tar\n  \
                        coffer dump 1a2b3c4d /var/lib/db | tar -x -C /tmp/db")]
pub struct DumpArgs {
    /// Snapshot: `latest`, `latest~N` or an id prefix.
    #[arg(value_name = "SNAP")]
    pub snapshot: String,
    /// Absolute path in the snapshot: a file is written as it is, a folder as an archive.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Archive format for a folder.
    #[arg(long, value_enum, default_value = "tar")]
    pub archive: Archive,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

pub fn run(global: &GlobalArgs, args: DumpArgs) -> Result<u8> {
    if global.json {
        // stdout carries the file or archive itself: a JSON report there would corrupt it.
        bail!("dump writes the file itself to stdout and has no --json form");
    }
    let repo = super::open_repo(global)?;
    repo.require_full_key("dump")?;
    let entry = repo.find_snapshot(&args.snapshot, &super::filter(&args.filter))?;
    let path = args.path.as_os_str().as_encoded_bytes();
    let node = coffer::commands::ls::find_node(&repo, &entry.snapshot.tree, path)?;
    let is_dir = matches!(node.map(|n| n.kind), Some(coffer::format::tree::NodeKind::Dir { .. }));
    if is_dir && std::io::stdout().is_terminal() {
        bail!("dump of a folder writes a tar archive: redirect it to a file or a pipe, not the terminal");
    }
    let Archive::Tar = args.archive;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let report = dump::dump(&repo, &entry.snapshot.tree, path, false, &mut out)
        .with_context(|| format!("dumping {} of snapshot {}", args.path.display(), entry.id.short()))?;
    out.flush().context("writing the output")?;
    log::info!("dumped {} entries, {} bytes", report.entries, report.bytes);
    Ok(exit::OK)
}
