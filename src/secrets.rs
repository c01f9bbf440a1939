//! The one seam through which Coffer reads a secret (repository passphrase, write-only key,
//! storage credential). Configuration never holds a secret, only a reference to one:
//!
//! - `keychain:NAME` — an entry in the OS keychain (service `coffer`, user `NAME`);
//! - `command:CMD`   — the first line `sh -c CMD` prints (e.g. `command:pass show coffer/s3`);
//! - `env:VAR`       — an environment variable, for scripts that already hold it;
//! - `file:PATH`     — the first line of a file that only its owner may read.
//!
//! - `credential:NAME` — a systemd credential: `$CREDENTIALS_DIRECTORY/NAME` (`LoadCredential=`,
//!   `LoadCredentialEncrypted=`).
//!
//! A value without one of these prefixes is a literal, which callers refuse for anything secret.
//!
//! The keychain is Secret Service (GNOME Keyring, KWallet; over D-Bus) when a session bus is
//! reachable, else the kernel's keyutils (headless Linux: only inside a session keyring, and
//! forgotten at reboot). `COFFER_KEYCHAIN=secret-service|keyutils|auto` chooses explicitly.
//! Entries are service `coffer`, user `NAME` (`secret-tool lookup service coffer username NAME`).
//! Every keychain call runs on a worker thread with a timeout (`COFFER_KEYCHAIN_TIMEOUT`
//! seconds, default 30): a locked Secret Service collection on a desktop waits forever for an
//! unlock prompt. Failures fail closed with a message naming what to do; nothing ever falls back
//! to a file, and nothing here prompts.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroizing;

/// The keychain service name of every Coffer entry.
pub const KEYCHAIN_SERVICE: &str = "coffer";
/// Name of the systemd credential Coffer looks for when no key or password is given.
pub const DEFAULT_CREDENTIAL: &str = "coffer-key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Keychain(String),
    Command(String),
    Env(String),
    File(PathBuf),
    Credential(String),
}

/// Which OS keychain backs `keychain:` references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeychainKind {
    SecretService,
    Keyutils,
}

impl std::fmt::Display for KeychainKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeychainKind::SecretService => "Secret Service",
            KeychainKind::Keyutils => "kernel keyutils",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("keychain entry {name:?} does not exist; store it with `coffer secret set {name}`")]
    NotFound { name: String },
    #[error("the OS keychain is not available ({detail}); unlock it, start a Secret Service (desktop) or run under a session keyring (`keyctl session`), pick one with COFFER_KEYCHAIN=secret-service|keyutils, or give the secret another way (--password-file, --key-file, systemd credentials; README \"Keys and secrets\")")]
    KeychainUnavailable { detail: String },
    #[error("keychain name {0:?} is not allowed: use letters, digits, '.', '_' and '-'")]
    InvalidName(String),
    #[error("systemd credential {name:?}: {detail}")]
    Credential { name: String, detail: String },
    #[error("secret command {command:?} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("secret file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("the secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// The reference a configuration value names, or `None` when the value is a literal.
    pub fn parse(text: &str) -> Option<SecretRef> {
        let (kind, rest) = text.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        match kind {
            "keychain" => Some(SecretRef::Keychain(rest.to_string())),
            "command" => Some(SecretRef::Command(rest.to_string())),
            "env" => Some(SecretRef::Env(rest.to_string())),
            "file" => Some(SecretRef::File(PathBuf::from(rest))),
            "credential" => Some(SecretRef::Credential(rest.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for SecretRef {
    /// Shows where a secret comes from, never the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Keychain(name) => write!(f, "keychain:{name}"),
            SecretRef::Command(command) => write!(f, "command:{command}"),
            SecretRef::Env(var) => write!(f, "env:{var}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Credential(name) => write!(f, "credential:{name}"),
        }
    }
}

/// Reads the secret a reference names (its first line, except from the keychain, which holds
/// exactly the secret).
pub fn resolve(reference: &SecretRef) -> Result<Zeroizing<String>, SecretError> {
    let secret = match reference {
        SecretRef::Keychain(name) => {
            let bytes = read_keychain(name)?;
            Zeroizing::new(
                std::str::from_utf8(&bytes)
                    .map_err(|_| SecretError::KeychainUnavailable {
                        detail: format!("entry {name:?} is not UTF-8 text"),
                    })?
                    .to_string(),
            )
        }
        SecretRef::Command(command) => from_command(command)?,
        SecretRef::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?),
        SecretRef::File(path) => {
            let bytes = read_private_file(path)?;
            first_line(&bytes).ok_or_else(|| SecretError::File { path: path.clone(), detail: "not UTF-8".into() })?
        }
        SecretRef::Credential(name) => {
            let path = credential_path(name)?;
            let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| SecretError::Credential {
                name: name.clone(),
                detail: format!("{}: {e}", path.display()),
            })?);
            first_line(&bytes)
                .ok_or_else(|| SecretError::Credential { name: name.clone(), detail: "not UTF-8".into() })?
        }
    };
    if secret.is_empty() {
        return Err(SecretError::Empty(reference.to_string()));
    }
    Ok(secret)
}

/// `$CREDENTIALS_DIRECTORY/NAME`, the file systemd decrypted a credential into.
pub fn credential_path(name: &str) -> Result<PathBuf, SecretError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(SecretError::Credential { name: name.to_string(), detail: "not a valid credential name".into() });
    }
    let dir =
        std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).ok_or_else(|| SecretError::Credential {
            name: name.to_string(),
            detail: "$CREDENTIALS_DIRECTORY is not set (not run by systemd with LoadCredential=?)".into(),
        })?;
    Ok(PathBuf::from(dir).join(name))
}

/// Reads a file that only its owner may read: refuses one others can read or write, or
/// that another user owns, since whatever it holds is then no longer secret.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let failed = |detail: String| SecretError::File { path: path.to_path_buf(), detail };
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let meta = file.metadata().map_err(|e| failed(e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(failed(format!(
            "its mode {:o} lets other users read or change it; `chmod 600 {}`",
            meta.mode() & 0o777,
            path.display()
        )));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(failed("it belongs to another user".into()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| failed(e.to_string()))?;
    Ok(bytes)
}

/// The keychain `COFFER_KEYCHAIN` names, else Secret Service when a session bus is reachable,
/// else keyutils.
pub fn keychain_kind() -> Result<KeychainKind, SecretError> {
    match std::env::var("COFFER_KEYCHAIN").as_deref() {
        Ok("secret-service") => Ok(KeychainKind::SecretService),
        Ok("keyutils") => Ok(KeychainKind::Keyutils),
        Ok("") | Ok("auto") | Err(_) => {
            Ok(if session_bus_reachable() { KeychainKind::SecretService } else { KeychainKind::Keyutils })
        }
        Ok(other) => Err(SecretError::KeychainUnavailable {
            detail: format!("COFFER_KEYCHAIN={other:?} is none of secret-service, keyutils, auto"),
        }),
    }
}

/// Whether a D-Bus session bus is there to ask (not whether a Secret Service answers on it).
fn session_bus_reachable() -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty()) {
        return true;
    }
    std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|dir| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(Path::new(&dir).join("bus")).is_ok_and(|m| m.file_type().is_socket())
    })
}

fn keychain_timeout() -> Duration {
    let seconds = std::env::var("COFFER_KEYCHAIN_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok());
    Duration::from_secs(seconds.unwrap_or(30).max(1))
}

/// The one keychain store of this process, opened on first use.
fn keychain_store(kind: KeychainKind) -> Result<Arc<CredentialStore>, SecretError> {
    static STORE: OnceLock<Result<Arc<CredentialStore>, String>> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        let store: Result<Arc<CredentialStore>, keyring_core::Error> = match kind {
            #[cfg(target_os = "linux")]
            KeychainKind::SecretService => zbus_secret_service_keyring_store::Store::new().map(|s| s as _),
            #[cfg(target_os = "linux")]
            KeychainKind::Keyutils => linux_keyutils_keyring_store::Store::new().map(|s| s as _),
            #[cfg(not(target_os = "linux"))]
            _ => Err(keyring_core::Error::NotSupportedByStore("this build has no keychain for this system".into())),
        };
        let store = store.map_err(|e| describe(&e))?;
        keyring_core::set_default_store(Arc::clone(&store));
        Ok(store)
    });
    store.clone().map_err(|detail| SecretError::KeychainUnavailable { detail: format!("{kind}: {detail}") })
}

/// Describes a keychain error without the secret bytes some variants carry.
fn describe(error: &keyring_core::Error) -> String {
    use keyring_core::Error as E;
    match error {
        E::PlatformFailure(e) => format!("it failed: {e}"),
        E::NoStorageAccess(e) => format!("no access: {e}"),
        E::NoEntry => "no such entry".into(),
        E::BadEncoding(_) | E::BadDataFormat(..) => "the stored secret is malformed".into(),
        E::Ambiguous(items) => format!("{} entries match the name", items.len()),
        other => other.to_string(),
    }
}

fn check_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::InvalidName(name.to_string()))
    }
}

/// Runs one keychain operation on a worker thread, giving up after the timeout. A thread
/// stuck in the keychain is left behind; the command fails at once and exits.
fn with_keychain<T: Send + 'static>(
    name: &str,
    operation: impl FnOnce(&Entry) -> Result<T, keyring_core::Error> + Send + 'static,
) -> Result<T, SecretError> {
    check_name(name)?;
    let kind = keychain_kind()?;
    let owned_name = name.to_string();
    let timeout = keychain_timeout();
    let work = move || -> Result<T, SecretError> {
        let store = keychain_store(kind)?;
        let entry = Entry::new_in_store(&store, KEYCHAIN_SERVICE, &owned_name)
            .map_err(|e| SecretError::KeychainUnavailable { detail: format!("{kind}: {}", describe(&e)) })?;
        operation(&entry).map_err(|e| match e {
            keyring_core::Error::NoEntry => SecretError::NotFound { name: owned_name.clone() },
            e => SecretError::KeychainUnavailable { detail: format!("{kind}: {}", describe(&e)) },
        })
    };
    run_with_timeout(work, timeout).unwrap_or_else(|| {
        Err(SecretError::KeychainUnavailable {
            detail: format!(
                "{kind} did not answer within {} s; is it locked and waiting for an unlock prompt?",
                timeout.as_secs()
            ),
        })
    })
}

/// `work()` on its own thread; `None` when it did not finish in time (or panicked).
fn run_with_timeout<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static, timeout: Duration) -> Option<T> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("keychain".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .ok()?;
    receiver.recv_timeout(timeout).ok()
}

/// The secret stored under `keychain:NAME`.
pub fn read_keychain(name: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    with_keychain(name, |entry| entry.get_secret().map(Zeroizing::new))
}

/// Stores (or replaces) the secret under `keychain:NAME`.
pub fn write_keychain(name: &str, secret: &[u8]) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty(format!("keychain:{name}")));
    }
    let secret = Zeroizing::new(secret.to_vec());
    with_keychain(name, move |entry| entry.set_secret(&secret))
}

/// Removes `keychain:NAME`.
pub fn delete_keychain(name: &str) -> Result<(), SecretError> {
    with_keychain(name, |entry| entry.delete_credential())
}

fn first_line(bytes: &[u8]) -> Option<Zeroizing<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(Zeroizing::new(text.lines().next().unwrap_or("").to_string()))
}

fn from_command(command: &str) -> Result<Zeroizing<String>, SecretError> {
    let failed = |detail: String| SecretError::Command { command: command.to_string(), detail };
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(failed(output.status.to_string()));
    }
    first_line(&stdout).ok_or_else(|| failed("its output is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_literals_do_not() {
        assert_eq!(SecretRef::parse("keychain:s3-home"), Some(SecretRef::Keychain("s3-home".into())));
        assert_eq!(SecretRef::parse("command:pass show x"), Some(SecretRef::Command("pass show x".into())));
        assert_eq!(SecretRef::parse("env:X"), Some(SecretRef::Env("X".into())));
        assert_eq!(SecretRef::parse("file:/k"), Some(SecretRef::File("/k".into())));
        assert_eq!(SecretRef::parse("hunter2"), None);
        assert_eq!(SecretRef::parse("keychain:"), None);
        assert_eq!(SecretRef::parse("https://x"), None);
    }

    #[test]
    fn command_and_env_resolve() {
        let secret = resolve(&SecretRef::Command("printf 'abc\\nrest'".into())).unwrap();
        assert_eq!(secret.as_str(), "abc");
        assert!(matches!(resolve(&SecretRef::Command("false".into())), Err(SecretError::Command { .. })));
        assert!(matches!(resolve(&SecretRef::Env("COFFER_TEST_UNSET_VAR".into())), Err(SecretError::EnvMissing(_))));
        assert!(matches!(resolve(&SecretRef::Command("true".into())), Err(SecretError::Empty(_))));
    }

    #[test]
    fn credential_references_and_names() {
        assert_eq!(SecretRef::parse("credential:coffer-key"), Some(SecretRef::Credential("coffer-key".into())));
        assert!(credential_path("../x").is_err());
        assert!(check_name("home-laptop.v2_x").is_ok());
        for bad in ["", "a b", "a/b", "a@b", "ü"] {
            assert!(matches!(check_name(bad), Err(SecretError::InvalidName(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn private_files_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "pw\nmore").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = resolve(&SecretRef::File(path.clone())).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve(&SecretRef::File(path)).unwrap().as_str(), "pw");
    }

    #[test]
    fn a_hanging_call_times_out() {
        let result = run_with_timeout(|| std::thread::sleep(Duration::from_secs(3600)), Duration::from_millis(50));
        assert!(result.is_none());
        assert_eq!(run_with_timeout(|| 7, Duration::from_secs(60)), Some(7));
    }
}
