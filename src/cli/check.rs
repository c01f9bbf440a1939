//! `coffer check`: the structure always, with `--read-data[-subset]` the bytes; its steps as
//! counters on a terminal, as lines in a log.

use anyhow::{bail, Result};
use coffer::commands::check::{self, CheckOptions, ReadData};

use super::shared_args::GlobalArgs;
use super::{exit, is_terminal, open_repo, output};

pub fn run(global: &GlobalArgs, read_data: bool, read_data_subset: Option<String>) -> Result<u8> {
    let repo = open_repo(global)?;
    let read_data = match (read_data, read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(spec)) => ReadData::parse_subset(&spec).map_err(|e| anyhow::anyhow!(e.0))?,
        (false, None) => ReadData::None,
    };
    let quiet = global.quiet || global.json;
    let terminal = is_terminal();
    let report = check::check(&repo, &CheckOptions { read_data }, |step| {
        // Counters ("read 5/900 packs") overwrite each other on a terminal and are left
        // out of logs: a summary follows.
        let counter = step.starts_with("read ") || step.starts_with("checking trees of snapshot");
        match (quiet, counter, terminal) {
            (true, _, _) | (false, true, false) => {}
            (false, true, true) => eprint!("\r{step}\x1b[K"),
            (false, false, true) => eprintln!("\r{step}\x1b[K"),
            (false, false, false) => eprintln!("{step}"),
        }
    })?;
    if terminal && !quiet {
        eprint!("\r\x1b[K");
    }
    output::check(global, &report)?;
    if report.is_ok() {
        Ok(exit::OK)
    } else {
        bail!("the repository has {} errors (listed above)", report.errors.len())
    }
}
