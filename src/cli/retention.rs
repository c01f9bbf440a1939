//! `coffer forget` and `coffer prune`: arguments, the engine calls, and what they print.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::exit;
use super::output::bytes;
use super::shared_args::GlobalArgs;
use coffer::commands::forget::{self, ForgetOptions, ForgetReport};
use coffer::commands::prune::{self, PruneOptions, PruneReport};
use coffer::profile::Profile;
use coffer::repo::{now_unix, Repository, SnapshotFilter};
use coffer::retention::{GroupBy, RetentionPolicy};

#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots (per group).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the group's newest, e.g. 30d, 1y6m, 12h.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots carrying all these tags (`a,b`); repeatable, any entry suffices.
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Only consider snapshots of this host (repeatable); others are left alone.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only consider snapshots with these tags: `a,b` needs both; repeated, any one suffices.
    #[arg(long = "tag", value_name = "TAG[,TAG…]")]
    pub tags: Vec<String>,
    /// Apply the policy per group of snapshots with the same host, paths, tags and/or signing
    /// key (`host,paths,signer` by default; `""` for one group).
    #[arg(long, value_name = "FIELDS", default_value = "host,paths,signer", value_parser = GroupBy::parse)]
    pub group_by: GroupBy,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Prune afterwards: free the space of the removed snapshots.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: unused space tolerated in partly used packs.
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Unused space tolerated in partly used packs before they are repacked, e.g. 5% or 0%.
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Show what would be deleted, repacked and freed; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a percentage between 0% and 100%")),
    }
}

impl ForgetArgs {
    /// The policy the command line gives; without any `--keep-*`, the profile's `[retention]`.
    fn policy(&self, profile: Option<&Profile>) -> RetentionPolicy {
        let given = RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.clone(),
            keep_tags: self.keep_tags.clone(),
        };
        match profile {
            Some(profile) if given == RetentionPolicy::default() => profile.retention.clone(),
            _ => given,
        }
    }
}

pub fn forget(global: &GlobalArgs, repo: &Arc<Repository>, args: ForgetArgs) -> Result<u8> {
    let profile = super::profiles::active(global)?;
    let options = ForgetOptions {
        policy: args.policy(profile),
        group_by: args.group_by,
        filter: SnapshotFilter { hosts: args.hosts.clone(), tags: args.tags.clone(), ..Default::default() },
        dry_run: args.dry_run,
        append_only: append_only(global)?,
        now_unix: now_unix(),
    };
    let report = forget::forget(repo, &options)?;
    if global.json && args.prune && !args.dry_run {
        // One JSON line: the prune's report inside forget's. A prune that fails leaves it null:
        // what forget removed is still said before the error.
        let pruned = prune_report(global, repo, args.max_unused, false);
        print_forget(global, &report, pruned.as_ref().ok())?;
        return Ok(prune_exit(&pruned?));
    }
    print_forget(global, &report, None)?;
    if args.prune && !args.dry_run {
        return run_prune(global, repo, args.max_unused, false);
    }
    Ok(exit::OK)
}

pub fn prune(global: &GlobalArgs, repo: &Arc<Repository>, args: PruneArgs) -> Result<u8> {
    run_prune(global, repo, args.max_unused, args.dry_run)
}

/// Whether the active profile forbids deleting anything (`append_only = true`).
fn append_only(global: &GlobalArgs) -> Result<bool> {
    Ok(super::profiles::active(global)?.is_some_and(|p| p.append_only))
}

/// Refuses a deleting command under an append-only profile before the store is even opened.
pub fn refuse_if_append_only(global: &GlobalArgs, command: &str) -> Result<()> {
    if append_only(global)? {
        anyhow::bail!(
            "`{command}` deletes from the repository, and this profile is append-only (`append_only = true`); \
             run it from a machine whose profile may delete"
        );
    }
    Ok(())
}

fn run_prune(global: &GlobalArgs, repo: &Repository, max_unused: f64, dry_run: bool) -> Result<u8> {
    let report = prune_report(global, repo, max_unused, dry_run)?;
    print_prune(global, &report)?;
    Ok(prune_exit(&report))
}

/// Waiting for backups means the prune is not done: scripts must not take it for success.
fn prune_exit(report: &PruneReport) -> u8 {
    if report.waiting_for.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    }
}

fn prune_report(global: &GlobalArgs, repo: &Repository, max_unused: f64, dry_run: bool) -> Result<PruneReport> {
    let options = PruneOptions {
        max_unused_percent: max_unused,
        dry_run,
        append_only: append_only(global)?,
        ..Default::default()
    };
    let quiet = global.quiet || global.json;
    Ok(prune::prune(repo, &options, |step| {
        if !quiet {
            eprintln!("{step}");
        }
    })?)
}

/// Forget's report; with `--json`, `prune` holds the report of `--prune` (null without it).
fn print_forget(global: &GlobalArgs, report: &ForgetReport, pruned: Option<&PruneReport>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (id, reason) in &report.untrusted {
        eprintln!("warning: snapshot {} is not considered (and not removed): {reason}", id.short());
    }
    for id in &report.future {
        eprintln!("warning: snapshot {} is dated in the future; kept, and it takes no rule's place", id.short());
    }
    if global.json {
        let groups: Vec<_> = report
            .groups
            .iter()
            .map(|g| {
                json!({
                    "group_key": super::json::group_key(&g.group),
                    "snapshots": g.snapshots.iter().map(|s| json!({
                        "id": s.id.to_hex(),
                        "short_id": s.id.short(),
                        "time": super::json::time(s.time_unix, s.time_nsec),
                        "hostname": s.host,
                        "tags": s.tags,
                        "signed_by": s.signed_by,
                        "keep": s.keep,
                        "reasons": s.reasons,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = json!({
            "dry_run": report.dry_run,
            "groups": groups,
            "removed": report.removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "future": report.future.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "untrusted": report.untrusted.iter().map(|(id, r)| json!({"id": id.to_hex(), "reason": r})).collect::<Vec<_>>(),
            "prune": pruned,
        });
        return super::json::line(&value);
    }
    if global.quiet {
        return Ok(());
    }
    for group in &report.groups {
        let mut label = Vec::new();
        if let Some(host) = &group.group.host {
            label.push(format!("host {host}"));
        }
        if !group.group.paths.is_empty() {
            label.push(format!("paths {}", group.group.paths.join(", ")));
        }
        if !group.group.tags.is_empty() {
            label.push(format!("tags {}", group.group.tags.join(", ")));
        }
        let label = if label.is_empty() { "all snapshots".to_string() } else { label.join("; ") };
        writeln!(out, "{label}:")?;
        for s in &group.snapshots {
            let verdict = if s.keep { "keep  " } else { "remove" };
            let why = if s.keep { s.reasons.join(", ") } else { "no rule keeps it".into() };
            writeln!(out, "  {verdict} {}  {}  {}  {}  ({why})", s.id.short(), s.time, s.host, s.signed_by)?;
        }
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    writeln!(out, "{verb} {}", super::output::plural(report.removed.len() as u64, "snapshot"))?;
    Ok(())
}

fn print_prune(global: &GlobalArgs, r: &PruneReport) -> Result<()> {
    let Some(mut out) = super::output::json_or_text(global, r)? else { return Ok(()) };
    let freed =
        if r.bytes_freed >= 0 { bytes(r.bytes_freed as u64) } else { format!("-{}", bytes((-r.bytes_freed) as u64)) };
    if r.dry_run {
        writeln!(
            out,
            "would delete {} unused packs and {} orphan packs, repack {} packs ({} of live data), free about {freed}; \
             {} unused would remain",
            r.packs_unused,
            r.orphan_packs,
            r.packs_to_repack,
            bytes(r.bytes_repacked),
            bytes(r.unused_bytes_left)
        )?;
        return Ok(());
    }
    if !r.waiting_for.is_empty() {
        writeln!(
            out,
            "condemned {} packs; deletion waits for {} running backup(s) ({}); run prune again later",
            r.packs_unused + r.packs_to_repack + r.orphan_packs,
            r.waiting_for.len(),
            r.waiting_for.join(", ")
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "deleted {} packs and {} index files, wrote {} new packs ({} repacked), kept {} still-needed packs, freed \
         {freed}",
        r.packs_deleted,
        r.index_files_removed,
        r.packs_written,
        bytes(r.bytes_repacked),
        r.packs_rescued
    )?;
    Ok(())
}
