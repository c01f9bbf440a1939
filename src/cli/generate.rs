//! `coffer generate`: shell completions and man pages, both from the clap definitions, so
//! they never drift from what the binary accepts.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::args::Cli;
use super::exit;
use super::shared_args::GlobalArgs;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  coffer generate --completions bash > /etc/bash_completion.d/coffer\n  \
                        coffer generate --completions zsh > \"${fpath[1]}/_coffer\"\n  \
                        coffer generate --man /usr/local/share/man/man1")]
#[group(required = true, multiple = true)]
pub struct GenerateArgs {
    /// Print the completion script for this shell to stdout.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<Shell>,
    /// Write man pages (coffer.1 and one per subcommand, coffer-backup.1 …) into this folder.
    #[arg(long, value_name = "DIR")]
    pub man: Option<PathBuf>,
}

pub fn run(_global: &GlobalArgs, args: GenerateArgs) -> Result<u8> {
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
