//! What opens the repository: a passphrase (the full key) or a write-only key. The first of
//! these that is given wins:
//!
//! 1. `--key-file FILE` (mode 0600) or `--key REF`: a write-only key;
//! 2. `--password-file FILE`, 3. `--password-command CMD`, 4. `COFFER_PASSWORD`: a passphrase;
//! 5. the profile's `key = "REF"` (write-only key), 6. the profile's `password = "REF"`;
//! 7. the systemd credential `coffer-key` (`$CREDENTIALS_DIRECTORY/coffer-key`): a write-only key;
//! 8. a prompt, when a terminal is attached;
//! 9. otherwise the command fails at once instead of waiting for input.
//!
//! References (`REF`) go through [`coffer::secrets`]: `keychain:NAME`, `credential:NAME`,
//! `file:PATH`, `command:CMD`, `env:VAR`. Where a write-only key is expected (1, 5, 7), anything
//! else — a passphrase — is refused unless `--allow-full-key-file` is given: a file any process
//! of the user (or a backup of the disk) can read should hold only the power to add backups.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use coffer::keys::WriteOnlyKey;
use coffer::profile::Profile;
use coffer::secrets::{self, SecretRef};
use zeroize::Zeroizing;

use super::shared_args::GlobalArgs;

/// What opens the repository.
pub enum Credential {
    Password(Zeroizing<String>),
    WriteOnly(Box<WriteOnlyKey>),
}

fn first_line(bytes: &[u8]) -> Result<Zeroizing<String>> {
    let text = std::str::from_utf8(bytes).context("the password is not valid UTF-8")?;
    Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_string()))
}

/// Like a write-only key file, a password file must be the user's own and private (no group or
/// other bits): the passphrase is the stronger secret of the two.
fn from_file(path: &Path) -> Result<Zeroizing<String>> {
    // The secret's own error names the file.
    let bytes = secrets::read_private_file(path).context("reading the password file")?;
    first_line(&bytes)
}

fn from_command(command: &str) -> Result<Zeroizing<String>> {
    secrets::resolve(&SecretRef::Command(command.to_string())).context("running --password-command")
}

/// Reads a write-only key (or, when allowed, a passphrase) from what `source` holds.
fn key_from(bytes: &[u8], source: &str, allow_full: bool) -> Result<Credential> {
    if WriteOnlyKey::looks_like(bytes) {
        let key =
            WriteOnlyKey::from_text(bytes).with_context(|| format!("reading the write-only key from {source}"))?;
        return Ok(Credential::WriteOnly(Box::new(key)));
    }
    if allow_full {
        let password = first_line(bytes)?;
        if password.is_empty() {
            bail!("{source} is empty");
        }
        return Ok(Credential::Password(password));
    }
    bail!(
        "{source} does not hold a write-only key; a passphrase or full key there is refused, since whoever reads it \
         could read and delete every backup. Create a write-only key with `coffer key write-only`, or pass \
         --allow-full-key-file if you really mean it"
    )
}

fn key_from_reference(text: &str, source: &str, allow_full: bool) -> Result<Credential> {
    let reference = SecretRef::parse(text).ok_or_else(|| {
        anyhow!(
            "{source} must be a reference such as keychain:NAME, credential:NAME or file:PATH, never the key itself"
        )
    })?;
    let secret = match &reference {
        // Files get the ownership and mode check.
        SecretRef::File(path) => secrets::read_private_file(path)?,
        _ => Zeroizing::new(secrets::resolve(&reference)?.as_bytes().to_vec()),
    };
    key_from(&secret, &format!("{source} ({reference})"), allow_full)
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    Ok(Zeroizing::new(rpassword::prompt_password(text)?))
}

/// What opens an existing repository, in the order of the module documentation.
pub fn for_open(global: &GlobalArgs, profile: Option<&Profile>) -> Result<Credential> {
    let allow = global.allow_full_key_file;
    if let Some(path) = &global.key_file {
        let bytes = secrets::read_private_file(path)?;
        return key_from(&bytes, &format!("key file {}", path.display()), allow);
    }
    if let Some(reference) = &global.key {
        return key_from_reference(reference, "--key", allow);
    }
    if global.password_file.is_some() || global.password_command.is_some() || super::env_secrets::password().is_some() {
        return Ok(Credential::Password(read(global, false)?));
    }
    if let Some(profile) = profile {
        if let Some(reference) = &profile.key {
            return key_from_reference(reference, "the profile's `key`", allow);
        }
        if let Some(reference) = &profile.password {
            let reference = SecretRef::parse(reference)
                .ok_or_else(|| anyhow!("the profile's `password` must be a reference such as keychain:NAME"))?;
            let password =
                secrets::resolve(&reference).with_context(|| format!("reading the password from {reference}"))?;
            return Ok(Credential::Password(password));
        }
    }
    if let Ok(path) = secrets::credential_path(secrets::DEFAULT_CREDENTIAL) {
        if path.exists() {
            let bytes =
                Zeroizing::new(std::fs::read(&path).with_context(|| format!("reading credential {}", path.display()))?);
            return key_from(&bytes, &format!("systemd credential {}", secrets::DEFAULT_CREDENTIAL), allow);
        }
    }
    Ok(Credential::Password(read(global, false)?))
}

/// The passphrase of a new repository: explicit flags first, then the profile's `password`
/// (so `coffer secret set home-repo` then `coffer init --profile home` needs no typing), then a
/// prompt asked twice.
pub fn for_init(global: &GlobalArgs, profile: Option<&Profile>) -> Result<Zeroizing<String>> {
    let explicit =
        global.password_file.is_some() || global.password_command.is_some() || super::env_secrets::password().is_some();
    if let Some(reference) = profile.and_then(|p| p.password.as_ref()).filter(|_| !explicit) {
        let reference = SecretRef::parse(reference)
            .ok_or_else(|| anyhow!("the profile's `password` must be a reference such as keychain:NAME"))?;
        let password =
            secrets::resolve(&reference).with_context(|| format!("reading the password from {reference}"))?;
        return Ok(password);
    }
    read(global, true)
}

/// The password for an existing repository, or (with `confirm`) a new one asked twice.
pub fn read(global: &GlobalArgs, confirm: bool) -> Result<Zeroizing<String>> {
    let password = if let Some(path) = &global.password_file {
        from_file(path)?
    } else if let Some(command) = &global.password_command {
        from_command(command)?
    } else if let Some(value) = super::env_secrets::password() {
        value
    } else if std::io::stdin().is_terminal() {
        let first = prompt(if confirm { "new repository password: " } else { "repository password: " })?;
        if confirm {
            let second = prompt("repeat the password: ")?;
            if *first != *second {
                bail!("the passwords do not match");
            }
        }
        first
    } else {
        bail!(
            "no password or key given: use --password-file, --password-command, COFFER_PASSWORD, --key, --key-file \
             or a profile (no terminal to ask on)"
        );
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// A new passphrase (`key add`, `key passwd`): from `file`, else asked twice on a terminal.
pub fn read_new(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let password = match file {
        Some(path) => {
            let bytes = secrets::read_private_file(path)?;
            first_line(&bytes)?
        }
        None if std::io::stdin().is_terminal() => {
            let first = prompt("new passphrase: ")?;
            if *first != *prompt("repeat the new passphrase: ")? {
                bail!("the passphrases do not match");
            }
            first
        }
        None => bail!("no new passphrase: give --new-password-file (no terminal to ask on)"),
    };
    if password.is_empty() {
        bail!("the new passphrase is empty");
    }
    Ok(password)
}

/// A secret for the keychain: asked twice on a terminal, else the first line of stdin.
pub fn read_secret_input(name: &str) -> Result<Zeroizing<String>> {
    let secret = if std::io::stdin().is_terminal() {
        let first = prompt(&format!("secret for keychain:{name}: "))?;
        if *first != *prompt("repeat it: ")? {
            bail!("the two entries do not match");
        }
        first
    } else {
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin().lock().read_to_end(&mut bytes).context("reading the secret from stdin")?;
        first_line(&bytes)?
    };
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok(secret)
}
