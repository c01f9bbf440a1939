//! `coffer tag`: add, remove or set tags of snapshots.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::exit;
use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use coffer::commands::tag::{self, TagChange};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  coffer tag --add keep latest\n  \
                        coffer tag --set monthly --host web 1a2b3c4d\n  \
                        coffer tag --remove daily --tag daily,old     every snapshot tagged daily and old")]
pub struct TagArgs {
    /// Add these tags (repeatable; `a,b` is two tags).
    #[arg(long = "add", value_name = "TAG[,TAG…]")]
    pub add: Vec<String>,
    /// Remove these tags (repeatable; `a,b` is two tags).
    #[arg(long = "remove", value_name = "TAG[,TAG…]")]
    pub remove: Vec<String>,
    /// Replace the tags by these (repeatable; `--set ""` removes all).
    #[arg(long = "set", value_name = "TAG[,TAG…]")]
    pub set: Vec<String>,
    /// Snapshots to change (`latest`, `latest~N` or id prefixes); without any, every snapshot
    /// that passes the filters.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

pub fn run(global: &GlobalArgs, args: TagArgs) -> Result<u8> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        bail!("nothing to change: give --add, --remove or --set");
    }
    // Each change retires the snapshot it replaces.
    super::retention::refuse_if_append_only(global, "tag")?;
    let change = TagChange {
        set: (!args.set.is_empty()).then(|| super::select::split_tags(&args.set)),
        add: super::select::split_tags(&args.add),
        remove: super::select::split_tags(&args.remove),
    };
    let repo = super::open_repo(global)?;
    repo.require_full_key("changing tags")?;
    let filter = super::filter(&args.filter);
    let selected = super::select_snapshots(&repo, &args.snapshots, &filter)?;
    let report = tag::tag(&repo, &selected, &change)?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let changed: Vec<_> =
            report.changed.iter().map(|(old, new)| json!({ "old": old.to_hex(), "new": new.to_hex() })).collect();
        let unchanged: Vec<_> = report.unchanged.iter().map(|id| id.to_hex()).collect();
        super::json::line(&json!({ "changed": changed, "unchanged": unchanged }))?;
    } else if !global.quiet {
        for (old, new) in &report.changed {
            writeln!(out, "snapshot {} is now {}", old.short(), new.short())?;
        }
        writeln!(
            out,
            "{} changed, {} already as asked",
            super::output::plural(report.changed.len() as u64, "snapshot"),
            report.unchanged.len()
        )?;
    }
    Ok(exit::OK)
}
