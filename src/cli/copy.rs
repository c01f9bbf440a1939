//! `coffer copy --from SRC [--to DST]`: the source's password comes from
//! `--from-password-file`, `--from-password-command`, `COFFER_FROM_PASSWORD` or a prompt; the
//! destination's from the usual options (it is the repository `--repo` names, unless `--to`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::json;
use zeroize::Zeroizing;

use super::shared_args::{GlobalArgs, SnapshotFilterArgs};
use coffer::commands::copy;
use coffer::repo::{Location, RepoError, Repository, Store};
use coffer::secrets::{self, SecretRef};

pub struct CopyArgs {
    pub from: PathBuf,
    pub to: Option<PathBuf>,
    pub from_options: Vec<String>,
    pub from_password_file: Option<PathBuf>,
    pub from_password_command: Option<String>,
    pub snapshots: Vec<String>,
    pub filter: SnapshotFilterArgs,
}

fn source_password(args: &CopyArgs) -> Result<Zeroizing<String>> {
    let reference = if let Some(path) = &args.from_password_file {
        SecretRef::File(path.clone())
    } else if let Some(command) = &args.from_password_command {
        SecretRef::Command(command.clone())
    } else if let Some(password) = super::env_secrets::from_password() {
        return Ok(password);
    } else if std::io::stdin().is_terminal() {
        return Ok(Zeroizing::new(rpassword::prompt_password("source repository password: ")?));
    } else {
        bail!(
            "no password for the source repository: use --from-password-file, --from-password-command or \
             COFFER_FROM_PASSWORD (no terminal to ask on)"
        );
    };
    secrets::resolve(&reference).context("reading the source repository's password")
}

fn open_source(global: &GlobalArgs, args: &CopyArgs) -> Result<Repository> {
    let text = args.from.to_str().context("--from must be valid UTF-8")?;
    let location = Location::parse(text, &args.from_options)?;
    let store = Store::open(&location, false)
        .map_err(|e| RepoError::NotARepository { location: location.to_string(), detail: e.to_string() })?;
    let password = source_password(args)?;
    Ok(Repository::open(store, password.as_bytes(), &super::open_options(global))?)
}

pub fn run(global: &GlobalArgs, args: CopyArgs) -> Result<u8> {
    let source = open_source(global, &args).context("opening the source repository")?;
    let mut dest_global = global.clone();
    if let Some(to) = &args.to {
        dest_global.repo = Some(to.clone());
    }
    let dest = super::open_repo(&dest_global).context("opening the destination repository")?;
    if source.id() == dest.id() {
        bail!("--from and the destination are the same repository");
    }
    let filter = super::filter(&args.filter);
    let selected = super::select_snapshots(&source, &args.snapshots, &filter)?;
    let interrupted = super::interrupt_flag()?;
    let report = copy::copy(&source, &Arc::clone(&dest), &selected, &interrupted)?;
    if global.json {
        let copied: Vec<_> = report
            .copied
            .iter()
            .zip(&report.signed_by)
            .map(|((from, to), signed_by)| json!({ "source": from.to_hex(), "copy": to.to_hex(), "signed_by": signed_by }))
            .collect();
        let skipped: Vec<_> = report.skipped.iter().map(|id| id.to_hex()).collect();
        super::json::line(
            &json!({ "copied": copied, "skipped": skipped, "blobs_read": report.blobs_read, "bytes_added": report.bytes_added }),
        )?;
    } else if !global.quiet {
        for ((from, to), signed_by) in report.copied.iter().zip(&report.signed_by) {
            println!("copied snapshot {} (signed by {signed_by}) as {}", from.short(), to.short());
        }
        for id in &report.skipped {
            println!("skipped snapshot {} (copied before)", id.short());
        }
    }
    Ok(super::exit::OK)
}
