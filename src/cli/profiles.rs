//! `--profile NAME`: the profile this run uses, loaded once; and `coffer profile show`.

use std::sync::OnceLock;

use anyhow::Result;
use clap::Subcommand;
use coffer::profile::{profile_path, Profile};

use super::exit;
use super::shared_args::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Print a profile (secret values masked).
    Show {
        /// Profile name (default: --profile).
        name: Option<String>,
    },
}

/// The profile `--profile` names, if any (loaded and checked on first use).
pub fn active(global: &GlobalArgs) -> Result<Option<&'static Profile>> {
    static PROFILE: OnceLock<Option<Profile>> = OnceLock::new();
    let Some(name) = &global.profile else { return Ok(None) };
    if let Some(loaded) = PROFILE.get() {
        return Ok(loaded.as_ref());
    }
    let profile = Profile::load(name)?;
    Ok(PROFILE.get_or_init(|| Some(profile)).as_ref())
}

pub fn run(global: &GlobalArgs, command: ProfileCommand) -> Result<u8> {
    match command {
        ProfileCommand::Show { name } => {
            let Some(name) = name.or_else(|| global.profile.clone()) else {
                anyhow::bail!("which profile? `coffer profile show NAME` or --profile NAME");
            };
            let path = profile_path(&name)?;
            let profile = Profile::load_unchecked(&name, &path)?;
            let problem = profile.validate().err();
            let shown = profile.masked();
            if global.json {
                let mut value = serde_json::to_value(&shown)?;
                value["path"] = serde_json::Value::String(path.display().to_string());
                value["problem"] = problem.clone().map(serde_json::Value::String).unwrap_or_default();
                super::json::line(&value)?;
            } else {
                println!("# {}", path.display());
                print!("{}", shown.to_toml());
            }
            if let Some(problem) = problem {
                anyhow::bail!("profile {name}: {problem}");
            }
            Ok(exit::OK)
        }
    }
}
