//! `coffer key …` and `coffer secret …`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use coffer::commands::keys::{self, KeyKind, Removed};
use coffer::repo::Repository;
use coffer::secrets;
use serde_json::json;

use super::args::{KeyCommand, SecretCommand};
use super::shared_args::GlobalArgs;
use super::{exit, open_options, open_repo, output, password};

fn say(global: &GlobalArgs, text: std::fmt::Arguments<'_>) {
    if !global.quiet && !global.json {
        eprintln!("{text}");
    }
}

pub fn run_key(global: &GlobalArgs, command: KeyCommand) -> Result<u8> {
    let repo = open_repo(global)?;
    let kdf = open_options(global).kdf;
    match command {
        KeyCommand::List => list_keys(global, &repo)?,
        KeyCommand::Add { new_password_file } => {
            repo.require_full_key("adding a passphrase")?;
            let passphrase = password::read_new(new_password_file.as_deref())?;
            let id = keys::add_passphrase(&repo, passphrase.as_bytes(), kdf)?;
            report(global, "added", &id.to_hex())?;
        }
        KeyCommand::Passwd { new_password_file } => {
            repo.require_full_key("changing a passphrase")?;
            let passphrase = password::read_new(new_password_file.as_deref())?;
            let id = keys::change_passphrase(&repo, passphrase.as_bytes(), kdf)?;
            report(global, "changed", &id.to_hex())?;
        }
        KeyCommand::Remove { id } => remove_key(global, &repo, &id)?,
        KeyCommand::WriteOnly { save_to_keychain, output, label, hosts } => {
            create_write_only(global, &repo, save_to_keychain, output, label, hosts)?
        }
    }
    Ok(exit::OK)
}

/// `key list`: every key with its kind, label, creation time and state.
fn list_keys(global: &GlobalArgs, repo: &Repository) -> Result<()> {
    let list = keys::list(repo)?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let list: Vec<_> = list
            .iter()
            .map(|k| {
                json!({
                    "id": k.id.to_hex(),
                    "kind": k.kind,
                    "label": k.label,
                    "created": super::json::time(k.created_unix, 0),
                    "current": k.current,
                    "revoked": k.revoked,
                })
            })
            .collect();
        super::json::line(&list)?;
    } else {
        for key in list {
            let kind = match key.kind {
                KeyKind::Passphrase => "passphrase",
                KeyKind::WriteOnly => "write-only",
            };
            let status = match (key.current, key.revoked) {
                (_, true) => "removed",
                (true, _) => "current",
                _ => "",
            };
            writeln!(
                out,
                "{}  {kind:<10}  {}  {}  {status}",
                key.id.short(),
                output::time(key.created_unix, 0),
                key.label
            )?;
        }
    }
    Ok(())
}

/// `key remove`: a passphrase key is removed, a write-only key revoked (its snapshots so far
/// stay trusted).
fn remove_key(global: &GlobalArgs, repo: &Repository, id: &str) -> Result<()> {
    match keys::remove(repo, id)? {
        Removed::Passphrase(id) => report(global, "removed", &id.to_hex())?,
        Removed::WriteOnly { id, kept_snapshots } => {
            if global.json {
                super::json::line(&json!({
                    "action": "revoked",
                    "id": id.to_hex(),
                    "kind": KeyKind::WriteOnly,
                    "kept_snapshots": kept_snapshots,
                }))?;
            } else {
                say(
                    global,
                    format_args!(
                        "revoked write-only key {}: its {kept_snapshots} snapshots now in the repository stay \
                         trusted, any later one is ignored",
                        id.short()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// `key write-only`: a new write-only key, saved where the user asked, then registered.
fn create_write_only(
    global: &GlobalArgs,
    repo: &Repository,
    save_to_keychain: Option<String>,
    output: Option<PathBuf>,
    label: Option<String>,
    hosts: Vec<String>,
) -> Result<()> {
    if global.json && save_to_keychain.is_none() && output.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        anyhow::bail!("--output - writes the key to stdout, where --json writes its report: give a file");
    }
    let hosts = if hosts.is_empty() { vec![coffer::repo::hostname()] } else { hosts };
    keys::check_bound_hosts(&hosts)?;
    let key = keys::new_write_only(repo)?;
    let text = key.to_text();
    // Saved before it is registered: a key that could not be saved must not linger as
    // a trusted signer nobody holds.
    let label = save_write_only_key(&text, save_to_keychain.as_deref(), output.as_deref(), label)?;
    let id = keys::register_write_only(repo, &key, &label, &hosts)?;
    if global.json {
        super::json::line(&json!({
            "action": "created",
            "id": id.to_hex(),
            "kind": KeyKind::WriteOnly,
            "label": label,
            "hosts": hosts,
        }))?;
    } else {
        let place = match (&save_to_keychain, &output) {
            (Some(name), _) => format!("--key keychain:{name}"),
            (None, Some(path)) => format!("--key-file {}", path.display()),
            _ => String::new(),
        };
        say(
            global,
            format_args!(
                "created write-only key {} ({label}), bound to host {}; back up with `coffer backup {place} …`",
                id.short(),
                hosts.join(", ")
            ),
        );
    }
    Ok(())
}

/// Saves a new write-only key's text to the keychain, a new file or stdout; returns its label
/// (the one given, else the keychain or file name).
fn save_write_only_key(
    text: &str,
    save_to_keychain: Option<&str>,
    output: Option<&Path>,
    label: Option<String>,
) -> Result<String> {
    let label = match (save_to_keychain, output) {
        (Some(name), _) => {
            secrets::write_keychain(name, text.as_bytes())
                .with_context(|| format!("saving the write-only key as keychain:{name}"))?;
            label.unwrap_or_else(|| name.to_string())
        }
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|_| out.write_all(b"\n")).context("writing the key")?;
            label.unwrap_or_else(|| "write-only".to_string())
        }
        (None, Some(path)) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
            file.write_all(text.as_bytes())
                .and_then(|_| file.write_all(b"\n"))
                .and_then(|_| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            label.unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        }
        (None, None) => anyhow::bail!("give --save-to-keychain NAME or --output FILE"),
    };
    Ok(label)
}

/// A passphrase key added, changed or removed: `{action, id, kind}` with `--json`.
fn report(global: &GlobalArgs, what: &str, id: &str) -> Result<()> {
    if global.json {
        super::json::line(&json!({ "action": what, "id": id, "kind": KeyKind::Passphrase }))?;
    } else {
        say(global, format_args!("{what} key {}", &id[..8.min(id.len())]));
    }
    Ok(())
}

/// The keychain as `COFFER_KEYCHAIN` names it (the JSON value; people read `kind`'s Display).
fn keychain_name(kind: secrets::KeychainKind) -> &'static str {
    match kind {
        secrets::KeychainKind::SecretService => "secret-service",
        secrets::KeychainKind::Keyutils => "keyutils",
    }
}

pub fn run_secret(global: &GlobalArgs, command: SecretCommand) -> Result<u8> {
    let kind = secrets::keychain_kind()?;
    match command {
        SecretCommand::Set { name } => {
            let secret = password::read_secret_input(&name)?;
            secrets::write_keychain(&name, secret.as_bytes())?;
            say(global, format_args!("stored keychain:{name} in {kind}"));
            if global.json {
                super::json::line(&json!({ "action": "stored", "name": name, "keychain": keychain_name(kind) }))?;
            }
        }
        SecretCommand::Delete { name } => {
            secrets::delete_keychain(&name)?;
            say(global, format_args!("deleted keychain:{name} from {kind}"));
            if global.json {
                super::json::line(&json!({ "action": "deleted", "name": name, "keychain": keychain_name(kind) }))?;
            }
        }
    }
    Ok(exit::OK)
}
