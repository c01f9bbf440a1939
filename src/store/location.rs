//! Where a repository lives, as a user writes it, and how that becomes an OpenDAL operator.
//!
//! - a plain path or `file:///path`: a local folder (with the local fast paths of [`super::Store`]);
//! - `s3://bucket/prefix?endpoint=https://…&region=…`: S3 and S3-compatible stores;
//! - `sftp://user@host:port/path`: SFTP through the system `ssh` (keys and host keys from the
//!   user's ssh setup, or `key=`/`known_hosts_strategy=` options);
//! - `webdav://host[:port]/path` (https) or `webdav+http://host[:port]/path` (plain http);
//! - `SCHEME://…` for any other OpenDAL service compiled in, configured by options.
//!
//! Options come from the URL's query and from repeated `--option key=value` (the latter win).
//! Option values for secret keys (passwords, secret keys, tokens) must be references
//! (`env:VAR`, `file:PATH`, `command:CMD`, `keychain:NAME`) resolved through [`crate::secrets`];
//! a literal secret is refused, since a command line shows in `ps` and shell history.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::secrets::{self, SecretRef};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("repository location {0:?}: {1}")]
    Invalid(String, String),
    #[error(
        "option {key:?} holds a secret: give a reference instead of the value, e.g. \
         `{key}=env:VAR`, `{key}=file:PATH`, `{key}=command:CMD` or `{key}=keychain:NAME` \
         (a secret on the command line or in a URL shows in `ps` and shell history)"
    )]
    LiteralSecret { key: String },
    #[error("option {0:?} is not of the form key=value")]
    BadOption(String),
    #[error("option {key}: {detail}")]
    Secret { key: String, detail: String },
}

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

/// A repository in an OpenDAL service other than the local folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// OpenDAL's scheme name: `s3`, `sftp`, `webdav`, …
    pub service: String,
    /// For services other than S3, SFTP and WebDAV: `scheme://name/path`, handed to OpenDAL's
    /// URI parser together with the options.
    pub uri: Option<String>,
    /// Non-secret configuration, as OpenDAL's config keys.
    pub options: BTreeMap<String, String>,
    /// Secret configuration: references only, resolved when the store is opened.
    pub secrets: BTreeMap<String, SecretRef>,
    /// What messages show: the location without any secret.
    pub display: String,
}

/// Keys whose values are secrets in some OpenDAL service. A key that contains one of the
/// words below counts as secret too, so new services' keys are safe by default.
const SECRET_KEYS: &[&str] = &[
    "secret_access_key",
    "session_token",
    "password",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "account_key",
    "sas_token",
    "credential",
    "server_side_encryption_customer_key",
    "master_key",
    "private_key",
    "api_key",
];
const SECRET_WORDS: &[&str] = &["secret", "password", "token", "credential", "private", "api_key", "account_key"];

pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str()) || SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// The option that allows `webdav+http://` to a host other than this machine.
pub const ALLOW_INSECURE_HTTP: &str = "allow_insecure_http";

/// Whether `host` (`name[:port]`, `[v6]:port`) is this machine: plain HTTP to it never leaves it.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Location {
    /// Parses a location and merges `extra` options (`key=value`, from `--option`) over those
    /// of the URL.
    pub fn parse(text: &str, extra: &[String]) -> Result<Location, LocationError> {
        let invalid = |why: &str| LocationError::Invalid(text.to_string(), why.to_string());
        let Some((scheme, rest)) = split_scheme(text) else {
            if !extra.is_empty() {
                return Err(invalid("--option applies only to remote repositories (scheme://…)"));
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        if scheme == "file" {
            if !extra.is_empty() {
                return Err(invalid("--option applies only to remote repositories (scheme://…)"));
            }
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(invalid("a file:// location needs an absolute path, e.g. file:///srv/backups"));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut options = merged_options(query, extra)?;
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        if let Some(user) = userinfo {
            if user.contains(':') {
                return Err(LocationError::LiteralSecret { key: "password".into() });
            }
        }
        let root = normalise_root(path);
        let mut uri = None;
        let service = match scheme {
            "s3" => {
                if host.is_empty() {
                    return Err(invalid("name the bucket: s3://bucket/prefix"));
                }
                options.insert("bucket".into(), host.to_string());
                options.insert("root".into(), root);
                // Content-MD5 on every PUT: the store checks the body it received, and
                // buckets with Object Lock accept only checksummed uploads.
                options.entry("checksum_algorithm".into()).or_insert_with(|| "md5".into());
                "s3"
            }
            "sftp" => {
                if host.is_empty() {
                    return Err(invalid("name the host: sftp://user@host:22/path"));
                }
                let user = userinfo.map(str::to_string).or_else(|| options.get("user").cloned());
                let endpoint = match &user {
                    Some(user) => format!("ssh://{user}@{host}"),
                    None => format!("ssh://{host}"),
                };
                options.insert("endpoint".into(), endpoint);
                if let Some(user) = user {
                    options.insert("user".into(), user);
                }
                options.insert("root".into(), root);
                "sftp"
            }
            "webdav" | "webdav+https" | "webdav+http" => {
                if host.is_empty() {
                    return Err(invalid("name the server: webdav://host:port/path"));
                }
                let http = if scheme == "webdav+http" { "http" } else { "https" };
                let allow_http = options.remove(ALLOW_INSECURE_HTTP);
                match allow_http.as_deref() {
                    None | Some("false") => {
                        if http == "http" && !is_loopback_host(host) {
                            return Err(invalid(&format!(
                                "webdav+http sends the WebDAV password and every object unencrypted; use \
                                 webdav:// (https), or add `--option {ALLOW_INSECURE_HTTP}=true` if the network to \
                                 {host} is trusted"
                            )));
                        }
                    }
                    Some("true") => {}
                    Some(other) => {
                        return Err(invalid(&format!("{ALLOW_INSECURE_HTTP}={other:?} is neither true nor false")))
                    }
                }
                options.insert("endpoint".into(), format!("{http}://{host}"));
                if let Some(user) = userinfo {
                    options.insert("username".into(), user.to_string());
                }
                options.insert("root".into(), root);
                "webdav"
            }
            // OpenDAL's own URI mapping knows where each service takes its name and root.
            other => {
                if !other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(invalid("unknown scheme"));
                }
                uri = Some(format!("{other}://{host}{path}"));
                other
            }
        };
        let secrets = take_secrets(&mut options)?;
        let display = display(scheme, authority, path, &options, &secrets);
        Ok(Location::Remote(Remote { service: service.to_string(), uri, options, secrets, display }))
    }
}

/// The options of a location: its URL's query (percent-decoded), then `extra` (`--option
/// key=value`, taken as written) over them.
fn merged_options(query: Option<&str>, extra: &[String]) -> Result<BTreeMap<String, String>, LocationError> {
    let mut options = BTreeMap::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| LocationError::BadOption(pair.to_string()))?;
        options.insert(percent_decode(key), percent_decode(value));
    }
    for pair in extra {
        let (key, value) = pair.split_once('=').ok_or_else(|| LocationError::BadOption(pair.to_string()))?;
        if key.is_empty() {
            return Err(LocationError::BadOption(pair.to_string()));
        }
        options.insert(key.to_string(), value.to_string());
    }
    Ok(options)
}

/// Moves the secret options out of `options`: each must be a reference to where the secret
/// lives (keychain, environment, file), never the secret itself.
fn take_secrets(options: &mut BTreeMap<String, String>) -> Result<BTreeMap<String, SecretRef>, LocationError> {
    let mut secrets = BTreeMap::new();
    for (key, value) in std::mem::take(options) {
        if is_secret_key(&key) {
            let reference = SecretRef::parse(&value).ok_or(LocationError::LiteralSecret { key: key.clone() })?;
            secrets.insert(key, reference);
        } else {
            options.insert(key, value);
        }
    }
    Ok(secrets)
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Remote(remote) => f.write_str(&remote.display),
        }
    }
}

impl Remote {
    /// The OpenDAL configuration with secrets resolved. Lives only as long as building the
    /// operator takes; zeroized after.
    pub fn resolved_options(&self) -> Result<Vec<(String, Zeroizing<String>)>, LocationError> {
        let mut all: Vec<(String, Zeroizing<String>)> =
            self.options.iter().map(|(k, v)| (k.clone(), Zeroizing::new(v.clone()))).collect();
        for (key, reference) in &self.secrets {
            let value = secrets::resolve(reference)
                .map_err(|e| LocationError::Secret { key: key.clone(), detail: e.to_string() })?;
            all.push((key.clone(), value));
        }
        Ok(all)
    }
}

/// `scheme://rest`, with a scheme of letters, digits, `+`, `-`, `.` (RFC 3986).
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// `/a/b/` → `/a/b/`; OpenDAL roots are absolute folders.
fn normalise_root(path: &str) -> String {
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        format!("{trimmed}/")
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn display(
    scheme: &str,
    authority: &str,
    path: &str,
    options: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretRef>,
) -> String {
    let mut text = format!("{scheme}://{authority}{path}");
    let shown: Vec<String> = options
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "endpoint" | "region") && scheme == "s3")
        .map(|(k, v)| format!("{k}={v}"))
        .chain(secrets.iter().map(|(k, r)| format!("{k}={r}")))
        .collect();
    if !shown.is_empty() {
        text.push('?');
        text.push_str(&shown.join("&"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(text: &str, extra: &[&str]) -> Remote {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        match Location::parse(text, &extra).unwrap() {
            Location::Remote(r) => r,
            other => panic!("{text} parsed as {other:?}"),
        }
    }

    fn opt<'a>(r: &'a Remote, key: &str) -> Option<&'a str> {
        r.options.get(key).map(String::as_str)
    }

    #[test]
    fn local_paths() {
        assert_eq!(Location::parse("/srv/b", &[]).unwrap(), Location::Local("/srv/b".into()));
        assert_eq!(Location::parse("rel/dir", &[]).unwrap(), Location::Local("rel/dir".into()));
        assert_eq!(Location::parse("file:///srv/b", &[]).unwrap(), Location::Local("/srv/b".into()));
        assert!(Location::parse("file://relative", &[]).is_err());
        assert!(Location::parse("/srv/b", &["region=x".into()]).is_err());
    }

    #[test]
    fn s3() {
        let r = remote("s3://bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1", &[]);
        assert_eq!(r.service, "s3");
        assert_eq!(opt(&r, "bucket"), Some("bucket"));
        assert_eq!(opt(&r, "root"), Some("/some/prefix/"));
        assert_eq!(opt(&r, "endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(opt(&r, "region"), Some("eu-west-1"));
        assert_eq!(opt(&r, "checksum_algorithm"), Some("md5"));
        let r = remote("s3://bucket", &["region=us-east-1", "access_key_id=AKIA", "secret_access_key=env:S"]);
        assert_eq!(opt(&r, "root"), Some("/"));
        assert_eq!(opt(&r, "access_key_id"), Some("AKIA"));
        assert_eq!(r.secrets.get("secret_access_key"), Some(&SecretRef::Env("S".into())));
        assert!(!r.display.contains("AKIA"));
        assert!(Location::parse("s3:///prefix", &[]).is_err());
    }

    #[test]
    fn command_line_options_win() {
        let r = remote("s3://b/p?region=a", &["region=b"]);
        assert_eq!(opt(&r, "region"), Some("b"));
        assert!(matches!(Location::parse("s3://b", &["novalue".into()]), Err(LocationError::BadOption(_))));
    }

    #[test]
    fn literal_secrets_are_refused() {
        for (url, extra) in [
            ("s3://b/p", "secret_access_key=hunter2"),
            ("s3://b/p", "session_token=abc"),
            ("webdav://h/p", "password=pw"),
            ("azblob://c/p", "account_key=xyz"),
            ("gcs://b/p", "credential=xyz"),
        ] {
            let err = Location::parse(url, &[extra.to_string()]).unwrap_err();
            assert!(matches!(err, LocationError::LiteralSecret { .. }), "{url} {extra}: {err:?}");
            let message = err.to_string();
            assert!(message.contains("env:VAR") && message.contains("keychain:NAME"), "{message}");
            assert!(!message.contains(extra.split_once('=').unwrap().1), "{message}");
        }
        let err = Location::parse("s3://b/p?secret_access_key=hunter2", &[]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(Location::parse("webdav://me:pw@host/p", &[]).is_err());
        assert!(Location::parse("s3://b/p", &["secret_access_key=keychain:s3-home".into()]).is_ok());
    }

    #[test]
    fn sftp() {
        let r = remote("sftp://alice@host.example:2222/srv/backups", &["key=/k/id_ed25519"]);
        assert_eq!(r.service, "sftp");
        assert_eq!(opt(&r, "endpoint"), Some("ssh://alice@host.example:2222"));
        assert_eq!(opt(&r, "user"), Some("alice"));
        assert_eq!(opt(&r, "root"), Some("/srv/backups/"));
        assert_eq!(opt(&r, "key"), Some("/k/id_ed25519"));
        let r = remote("sftp://host/", &[]);
        assert_eq!(opt(&r, "endpoint"), Some("ssh://host"));
    }

    #[test]
    fn webdav() {
        let r = remote("webdav://dav.example/remote.php/backups", &["password=env:PW"]);
        assert_eq!(opt(&r, "endpoint"), Some("https://dav.example"));
        assert_eq!(opt(&r, "root"), Some("/remote.php/backups/"));
        let r = remote("webdav+http://bob@127.0.0.1:8080/dav", &[]);
        assert_eq!(opt(&r, "endpoint"), Some("http://127.0.0.1:8080"));
        assert_eq!(opt(&r, "username"), Some("bob"));
        // Plain HTTP leaves this machine only when asked for.
        for host in ["localhost:8080", "127.0.0.1", "[::1]:80", "127.8.9.10:1"] {
            assert!(Location::parse(&format!("webdav+http://{host}/dav"), &[]).is_ok(), "{host}");
        }
        for host in ["dav.example", "10.0.0.1:8080", "[2001:db8::1]:80", "127.0.0.1.evil.example"] {
            let e = Location::parse(&format!("webdav+http://{host}/dav"), &[]).unwrap_err().to_string();
            assert!(e.contains("allow_insecure_http=true") && e.contains("https"), "{e}");
        }
        let r = remote("webdav+http://dav.example/dav", &["allow_insecure_http=true"]);
        assert_eq!(opt(&r, "endpoint"), Some("http://dav.example"));
        assert_eq!(opt(&r, ALLOW_INSECURE_HTTP), None, "not an OpenDAL option");
        assert!(Location::parse("webdav+http://dav.example/dav", &["allow_insecure_http=yes".into()]).is_err());
        assert!(Location::parse("webdav+http://dav.example/dav", &["allow_insecure_http=false".into()]).is_err());
    }

    #[test]
    fn other_services_take_options() {
        let r = remote("azblob://container/path", &["account_name=me", "account_key=env:K"]);
        assert_eq!(r.service, "azblob");
        assert_eq!(opt(&r, "account_name"), Some("me"));
        assert_eq!(r.uri.as_deref(), Some("azblob://container/path"));
        assert!(r.secrets.contains_key("account_key"));
        assert!(Location::parse("bad scheme://x", &[]).is_ok_and(|l| matches!(l, Location::Local(_))));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
