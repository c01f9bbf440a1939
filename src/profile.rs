//! Profiles: one TOML file per backup job in `$XDG_CONFIG_HOME/coffer/profiles/NAME.toml`
//! (else `~/.config/coffer/profiles/NAME.toml`). A profile names the repository, what to back
//! up, the retention policy, and *where* its secrets are — never a secret itself:
//!
//! ```toml
//! repository = "/srv/backup/home"        # or a store URL
//! password = "keychain:home-repo"        # or key = "keychain:home-laptop" (write-only)
//! sources = ["/home/me"]
//! excludes = ["*.tmp", ".cache"]
//! tags = ["home"]
//! host = "laptop"
//! append_only = false
//!
//! [options]                              # store options; secrets only as references
//! access_key_id = "AKIA..."
//! secret_access_key = "keychain:s3-home"
//!
//! [retention]
//! keep_daily = 7
//! keep_weekly = 4
//! keep_within = "30d"
//! keep_tags = ["keep"]
//! ```
//!
//! `password`, `key`, and options whose name says secret (`*secret*`, `*password*`,
//! `*passphrase*`, `*token*`, `*_key`, `key`) must be secret references (see [`crate::secrets`]);
//! a literal there is refused. A profile file must be private to its owner (no group or other
//! permission bits) and its folder not writable by others: whoever can change a profile can
//! point `password = "command:…"` at their own program.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secrets::{self, SecretError, SecretRef};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {name:?} not found: no {path}")]
    NotFound { name: String, path: PathBuf },
    #[error("profile name {0:?} is not allowed: use letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("profile {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("profile {path}: {detail}; `chmod {mode:o} {path}` fixes it")]
    Permissions { path: PathBuf, detail: String, mode: u32 },
    #[error("profile {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("profile option {name:?}: {source}")]
    Secret { name: String, source: SecretError },
}

/// The `[retention]` table: the policy `forget --profile` applies.
pub type Retention = crate::retention::RetentionPolicy;

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Repository location: a local path or a store URL.
    pub repository: Option<String>,
    /// Store options (endpoint, bucket, credentials as secret references, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Where the repository passphrase is (a secret reference).
    pub password: Option<String>,
    /// Where the write-only key is (a secret reference).
    pub key: Option<String>,
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub append_only: bool,
    #[serde(default)]
    pub retention: Retention,
}

/// A span of time as `keep_within` writes it, in its units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

/// Parses `30d`, `2w`, `1y6m`, `12h`: numbers each followed by one of y, m, w, d, h.
pub fn parse_span(text: &str) -> Result<Span, String> {
    let mut span = Span::default();
    let mut number = String::new();
    let bad = || format!("{text:?} is not a span like 30d, 2w, 1y6m or 12h");
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u32 = number.parse().map_err(|_| bad())?;
        number.clear();
        let slot = match c {
            'y' => &mut span.years,
            'm' => &mut span.months,
            'w' => {
                span.days = span.days.checked_add(n.checked_mul(7).ok_or_else(bad)?).ok_or_else(bad)?;
                continue;
            }
            'd' => &mut span.days,
            'h' => &mut span.hours,
            _ => return Err(bad()),
        };
        *slot = slot.checked_add(n).ok_or_else(bad)?;
    }
    if !number.is_empty() || span == Span::default() {
        return Err(bad());
    }
    Ok(span)
}

/// Whether an option's name says its value is a secret.
pub fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "password", "passphrase", "token"].iter().any(|w| name.contains(w))
        || name == "key"
        || name.ends_with("_key")
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName(name.to_string()))
    }
}

/// The user's config folder for Coffer (`directories`): `$XDG_CONFIG_HOME/coffer`, else
/// `~/.config/coffer` on Linux; `/.config/coffer` when no home folder is known.
pub fn config_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "coffer")
        .map(|dirs| dirs.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/.config/coffer"))
}

pub fn profile_path(name: &str) -> Result<PathBuf, ProfileError> {
    check_name(name)?;
    Ok(config_dir().join("profiles").join(format!("{name}.toml")))
}

/// Refuses a profile others may read or change, or one in a folder others may write to.
fn check_permissions(path: &Path, meta: &std::fs::Metadata) -> Result<(), ProfileError> {
    if meta.mode() & 0o077 != 0 {
        return Err(ProfileError::Permissions {
            path: path.to_path_buf(),
            detail: format!("its mode {:o} lets other users read or change it", meta.mode() & 0o777),
            mode: 0o600,
        });
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(ProfileError::Invalid { path: path.to_path_buf(), detail: "it belongs to another user".into() });
    }
    for dir in path.ancestors().skip(1).take(3) {
        let Ok(dir_meta) = std::fs::metadata(dir) else { continue };
        if dir_meta.mode() & 0o022 != 0 && dir_meta.mode() & 0o1000 == 0 {
            return Err(ProfileError::Permissions {
                path: dir.to_path_buf(),
                detail: "other users may change files in this folder".into(),
                mode: 0o700,
            });
        }
    }
    Ok(())
}

impl Profile {
    /// Loads and checks `NAME.toml`.
    pub fn load(name: &str) -> Result<Profile, ProfileError> {
        let path = profile_path(name)?;
        let profile = Profile::load_unchecked(name, &path)?;
        profile.validate().map_err(|detail| ProfileError::Invalid { path, detail })?;
        Ok(profile)
    }

    /// Reads a profile, checking permissions and syntax but not that secrets are references
    /// (for `profile show`, which masks them instead).
    pub fn load_unchecked(name: &str, path: &Path) -> Result<Profile, ProfileError> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProfileError::NotFound { name: name.to_string(), path: path.to_path_buf() })
            }
            Err(source) => return Err(ProfileError::Io { path: path.to_path_buf(), source }),
        };
        check_permissions(path, &meta)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ProfileError::Io { path: path.to_path_buf(), source })?,
        );
        // toml's messages quote the offending line, which may hold a secret: give position only.
        toml::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: path.to_path_buf(),
            detail: match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("invalid TOML near line {line}: {}", e.message())
                }
                None => format!("invalid TOML: {}", e.message()),
            },
        })
    }

    /// Checks that secrets are references and values are in range.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [("password", &self.password), ("key", &self.key)] {
            if let Some(value) = value {
                if SecretRef::parse(value).is_none() {
                    return Err(format!(
                        "`{field}` must be a reference like \"keychain:NAME\" or \"command:CMD\", never the secret itself"
                    ));
                }
            }
        }
        for (name, value) in &self.options {
            if is_secret_option(name) && SecretRef::parse(value).is_none() {
                return Err(format!(
                    "option `{name}` holds a literal secret; store it with `coffer secret set NAME` and write \"keychain:NAME\""
                ));
            }
        }
        if let Some(within) = &self.retention.keep_within {
            parse_span(within).map_err(|e| format!("retention.keep_within: {e}"))?;
        }
        Ok(())
    }

    /// The value of a store option, resolving a secret reference.
    pub fn option(&self, name: &str) -> Result<Option<Zeroizing<String>>, ProfileError> {
        let Some(value) = self.options.get(name) else { return Ok(None) };
        match SecretRef::parse(value) {
            Some(reference) if is_secret_option(name) || value.starts_with("keychain:") => secrets::resolve(&reference)
                .map(Some)
                .map_err(|source| ProfileError::Secret { name: name.to_string(), source }),
            _ => Ok(Some(Zeroizing::new(value.clone()))),
        }
    }

    /// Every store option with secret references resolved, for a store to consume.
    pub fn resolved_options(&self) -> Result<BTreeMap<String, Zeroizing<String>>, ProfileError> {
        let mut out = BTreeMap::new();
        for name in self.options.keys() {
            if let Some(value) = self.option(name)? {
                out.insert(name.clone(), value);
            }
        }
        Ok(out)
    }

    /// The profile for display: references shown (they are not secret), literal secrets masked.
    pub fn masked(&self) -> Profile {
        let mask = |value: &String| {
            if SecretRef::parse(value).is_some() {
                value.clone()
            } else {
                "******** (a literal secret: move it to the keychain)".to_string()
            }
        };
        let mut shown = self.clone();
        shown.password = self.password.as_ref().map(mask);
        shown.key = self.key.as_ref().map(mask);
        for (name, value) in shown.options.iter_mut() {
            if is_secret_option(name) {
                *value = mask(value);
            }
        }
        shown
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot show this profile: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
repository = "/srv/backup"
password = "keychain:home-repo"
sources = ["/home/me", "/etc"]
excludes = ["*.tmp"]
tags = ["home"]
host = "laptop"
append_only = true

[options]
endpoint = "http://127.0.0.1:9000"
secret_access_key = "keychain:s3-home"

[retention]
keep_daily = 7
keep_within = "1y6m"
keep_tags = ["keep"]
"#;

    #[test]
    fn parses_every_field() {
        let profile: Profile = toml::from_str(SAMPLE).unwrap();
        profile.validate().unwrap();
        assert_eq!(profile.repository.as_deref(), Some("/srv/backup"));
        assert_eq!(profile.sources, vec![PathBuf::from("/home/me"), PathBuf::from("/etc")]);
        assert!(profile.append_only);
        assert_eq!(profile.retention.keep_daily, Some(7));
        assert_eq!(profile.retention.keep_tags, vec!["keep".to_string()]);
        assert_eq!(profile.option("endpoint").unwrap().unwrap().as_str(), "http://127.0.0.1:9000");
        let round: Profile = toml::from_str(&profile.to_toml()).unwrap();
        assert_eq!(round, profile);
        assert!(toml::from_str::<Profile>("repositry = \"x\"").is_err(), "a typo must not be ignored");
    }

    #[test]
    fn literal_secrets_are_refused_and_masked() {
        let profile: Profile = toml::from_str("password = \"hunter2\"").unwrap();
        assert!(profile.validate().unwrap_err().contains("password"));
        let profile: Profile = toml::from_str("[options]\nsecret_access_key = \"abc123xyz\"").unwrap();
        assert!(profile.validate().is_err());
        let shown = profile.masked().to_toml();
        assert!(!shown.contains("abc123xyz") && shown.contains("********"), "{shown}");
        let profile: Profile = toml::from_str("[options]\naccess_key_id = \"AKIA\"\nregion = \"x\"").unwrap();
        assert!(profile.validate().is_ok());
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("30d"), Ok(Span { days: 30, ..Span::default() }));
        assert_eq!(parse_span("2w"), Ok(Span { days: 14, ..Span::default() }));
        assert_eq!(parse_span("1y6m12h"), Ok(Span { years: 1, months: 6, hours: 12, ..Span::default() }));
        for bad in ["", "30", "d", "3x", "-1d", "99999999999d"] {
            assert!(parse_span(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn permissions_and_names() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, SAMPLE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Profile::load_unchecked("p", &path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Profile::load_unchecked("p", &path).is_ok());
        assert!(matches!(profile_path("../etc/passwd"), Err(ProfileError::BadName(_))));
    }
}
