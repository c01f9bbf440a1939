//! `coffer generate`: shell completions and man pages, both from the clap definitions, so
//! they never drift from what the binary accepts.

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::{Cli, GenerateArgs};
use super::exit;
use super::shared_args::GlobalArgs;

pub fn run(global: &GlobalArgs, args: GenerateArgs) -> Result<u8> {
    if global.json {
        // The completion script is the output; a JSON report beside it would break it.
        anyhow::bail!("generate writes completion scripts and man pages, and has no --json form");
    }
    if let Some(shell) = args.completions {
        let mut out = std::io::stdout().lock();
        clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut out);
    }
    if let Some(dir) = args.man {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        clap_mangen::generate_to(Cli::command(), &dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?;
    }
    Ok(exit::OK)
}
