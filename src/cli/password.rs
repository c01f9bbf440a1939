//! Where the repository password comes from, in this order: `--password-file`,
//! `--password-command`, `COFFER_PASSWORD`, then a prompt when a terminal is attached.
//! Without any of them the command fails at once instead of waiting for input.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use super::args::GlobalArgs;

fn first_line(bytes: Vec<u8>) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(String::from_utf8(bytes).context("the password is not valid UTF-8")?);
    let line = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(line.to_string()))
}

fn from_file(path: &Path) -> Result<Zeroizing<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading password file {}", path.display()))?;
    first_line(bytes)
}

fn from_command(command: &str) -> Result<Zeroizing<String>> {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running --password-command")?;
    if !output.status.success() {
        bail!("--password-command failed ({})", output.status);
    }
    first_line(output.stdout)
}

/// The password for an existing repository, or (with `confirm`) a new one asked twice.
pub fn read(global: &GlobalArgs, confirm: bool) -> Result<Zeroizing<String>> {
    let password = if let Some(path) = &global.password_file {
        from_file(path)?
    } else if let Some(command) = &global.password_command {
        from_command(command)?
    } else if let Ok(value) = std::env::var("COFFER_PASSWORD") {
        Zeroizing::new(value)
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(if confirm {
            "new repository password: "
        } else {
            "repository password: "
        })?);
        if confirm {
            let second = Zeroizing::new(rpassword::prompt_password("repeat the password: ")?);
            if *first != *second {
                bail!("the passwords do not match");
            }
        }
        first
    } else {
        bail!("no password given: use --password-file, --password-command or COFFER_PASSWORD (no terminal to ask on)");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}
