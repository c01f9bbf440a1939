//! The one seam through which Coffer reads a secret (repository passphrase, write-only key,
//! storage credential). Configuration never holds a secret, only a reference to one:
//!
//! - `keychain:NAME` — an entry in the OS keychain (service `coffer`, user `NAME`);
//! - `command:CMD`   — the first line `sh -c CMD` prints (e.g. `command:pass show coffer/s3`);
//! - `env:VAR`       — an environment variable, for scripts that already hold it;
//! - `file:PATH`     — the first line of a file that only its owner may read.
//!
//! A value without one of these prefixes is a literal, which callers refuse for anything secret.

use std::path::PathBuf;

use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Keychain(String),
    Command(String),
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("keychain entry {name:?} does not exist; store it with `coffer secret set {name}`")]
    NotFound { name: String },
    #[error("the OS keychain is not available ({detail}); unlock it or start a Secret Service, or give the secret another way (see `coffer help secrets`)")]
    KeychainUnavailable { detail: String },
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
        }
    }
}

/// Reads the secret a reference names.
pub fn resolve(reference: &SecretRef) -> Result<Zeroizing<String>, SecretError> {
    let secret = match reference {
        SecretRef::Keychain(_) => {
            return Err(SecretError::KeychainUnavailable { detail: "this build has no keychain support yet".into() })
        }
        SecretRef::Command(command) => from_command(command)?,
        SecretRef::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?),
        SecretRef::File(path) => {
            let bytes = Zeroizing::new(
                std::fs::read(path).map_err(|e| SecretError::File { path: path.clone(), detail: e.to_string() })?,
            );
            first_line(&bytes).ok_or_else(|| SecretError::File { path: path.clone(), detail: "not UTF-8".into() })?
        }
    };
    if secret.is_empty() {
        return Err(SecretError::Empty(reference.to_string()));
    }
    Ok(secret)
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
}
