//! Key management: passphrases (`keys/<id>`, each wrapping the same full key) and write-only
//! keys (`signers/`, registered by the full key).
//!
//! - Adding a passphrase writes one more key file; changing one writes a new file and deletes
//!   the old one; removing one deletes its file. None of this changes the full key itself, so a
//!   copy of an old key file taken before its removal still opens the repository with the old
//!   passphrase: rotating the master key means a new repository (README, "Rotating the master
//!   key").
//! - A write-only key is derived from the full key with a fresh signing key and registered; its
//!   removal is a signed revocation that keeps the snapshots it wrote so far (see
//!   `repo::snapshots`).

use crate::crypto::{KdfParams, VerifyingKey};
use crate::format::keyfile::KeyFile;
use crate::id::Id;
use crate::keys::WriteOnlyKey;
use crate::layout;
use crate::repo::{hostname, now_unix, username, RepoError, Repository};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    Passphrase,
    WriteOnly,
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Passphrase keys: the key file's id; write-only keys: the id of their verifying key.
    pub id: Id,
    pub kind: KeyKind,
    /// `user@host` that made a passphrase key, or a write-only key's label.
    pub label: String,
    pub created_unix: i64,
    /// The passphrase this command was opened with.
    pub current: bool,
    pub revoked: bool,
}

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Passphrase(Id),
    /// A write-only key was revoked; this many of its snapshots stay trusted.
    WriteOnly {
        id: Id,
        kept_snapshots: usize,
    },
}

fn full_key(repo: &Repository, what: &'static str) -> Result<crate::keys::FullKey, RepoError> {
    repo.keys().full_key().ok_or(RepoError::WriteOnly { what })
}

/// Every passphrase key and write-only key, passphrases first, each oldest first.
pub fn list(repo: &Repository) -> Result<Vec<KeyInfo>, RepoError> {
    let mut out = Vec::new();
    for id in repo.key_file_ids()? {
        let file = match KeyFile::decode(&repo.read_key_file(&id)?) {
            Ok(file) if file.repo_id == repo.id() => file,
            Ok(_) => continue,
            Err(e) => {
                log::warn!("skipping unreadable key file {}: {e}", layout::in_dir(layout::KEYS, &id));
                continue;
            }
        };
        out.push(KeyInfo {
            id,
            kind: KeyKind::Passphrase,
            label: format!("{}@{}", file.username, file.hostname),
            created_unix: file.created_unix,
            current: repo.key_file() == Some(id),
            revoked: false,
        });
    }
    let signers = repo.signers()?;
    for (_, record) in &signers.registrations {
        let key = VerifyingKey(record.verify_key);
        out.push(KeyInfo {
            id: key.id(),
            kind: KeyKind::WriteOnly,
            label: record.label.clone(),
            created_unix: record.created_unix,
            current: repo.keys().signer.verifying_key() == key,
            revoked: signers.revoked.contains_key(&key.id()),
        });
    }
    out.sort_by_key(|k| (k.kind == KeyKind::WriteOnly, k.created_unix, k.id));
    Ok(out)
}

fn write_key_file(repo: &Repository, passphrase: &[u8], kdf: KdfParams) -> Result<Id, RepoError> {
    let full = full_key(repo, "adding a passphrase")?;
    let bytes = KeyFile::seal(repo.id(), &full.encode(), passphrase, kdf, now_unix(), hostname(), username())
        .map_err(|e| RepoError::Format { object: "new key file".into(), source: e })?
        .encode();
    Ok(repo.write_key_file(bytes)?)
}

/// Adds a passphrase that opens the repository; returns its key file's id.
pub fn add_passphrase(repo: &Repository, passphrase: &[u8], kdf: KdfParams) -> Result<Id, RepoError> {
    write_key_file(repo, passphrase, kdf)
}

/// Replaces the passphrase that opened the repository: writes a new key file, then deletes the
/// old one (only that file changes). Returns the new key file's id.
pub fn change_passphrase(repo: &Repository, passphrase: &[u8], kdf: KdfParams) -> Result<Id, RepoError> {
    let old = repo.key_file().ok_or(RepoError::WriteOnly { what: "changing a passphrase" })?;
    let new = write_key_file(repo, passphrase, kdf)?;
    repo.delete_key_file(&old)?;
    Ok(new)
}

/// Removes the passphrase key or revokes the write-only key whose id starts with `prefix`.
pub fn remove(repo: &Repository, prefix: &str) -> Result<Removed, RepoError> {
    full_key(repo, "removing a key")?;
    let prefix = prefix.to_ascii_lowercase();
    let keys = list(repo)?;
    let mut matching: Vec<&KeyInfo> =
        keys.iter().filter(|k| !prefix.is_empty() && k.id.to_hex().starts_with(&prefix)).collect();
    let key = match matching.len() {
        0 => return Err(RepoError::NoKey(prefix)),
        1 => matching.remove(0),
        _ => return Err(RepoError::AmbiguousKey(prefix)),
    };
    match key.kind {
        KeyKind::Passphrase => {
            if key.current {
                return Err(RepoError::KeyInUse {
                    detail: "it is the passphrase this command was opened with; open with another passphrase to \
                             remove it, or use `coffer key passwd` to change it"
                        .into(),
                });
            }
            if keys.iter().filter(|k| k.kind == KeyKind::Passphrase).count() < 2 {
                return Err(RepoError::KeyInUse { detail: "it is the last passphrase".into() });
            }
            repo.delete_key_file(&key.id)?;
            Ok(Removed::Passphrase(key.id))
        }
        KeyKind::WriteOnly if key.revoked => Err(RepoError::NoKey(format!("{prefix} (already removed)"))),
        KeyKind::WriteOnly => {
            let kept_snapshots = repo.revoke_signer(&key.id)?;
            Ok(Removed::WriteOnly { id: key.id, kept_snapshots })
        }
    }
}

/// Derives a new write-only key; nothing is written until [`register_write_only`].
pub fn new_write_only(repo: &Repository) -> Result<WriteOnlyKey, RepoError> {
    let full = full_key(repo, "creating a write-only key")?;
    Ok(WriteOnlyKey::derive(&full, repo.id()))
}

/// Registers a write-only key so that its snapshots are trusted, bound to the host names it
/// may claim.
pub fn register_write_only(
    repo: &Repository,
    key: &WriteOnlyKey,
    label: &str,
    hosts: &[String],
) -> Result<Id, RepoError> {
    check_bound_hosts(hosts)?;
    repo.register_signer(key, label, hosts.to_vec())?;
    Ok(key.signing.verifying_key().id())
}

/// Refuses host names a key cannot be bound to, before anything is created.
pub fn check_bound_hosts(hosts: &[String]) -> Result<(), RepoError> {
    if hosts.is_empty() {
        return Err(RepoError::KeyNotTrusted { detail: "must be bound to at least one host name (--host)".into() });
    }
    if let Some(bad) = hosts.iter().find(|h| !crate::format::signer::valid_host(h)) {
        return Err(RepoError::KeyNotTrusted {
            detail: format!(
                "cannot be bound to host {:?}: a host name is 1 to 253 characters, without '/' or control characters",
                crate::format::signer::printable(bad)
            ),
        });
    }
    if hosts.len() > crate::format::signer::MAX_HOSTS {
        return Err(RepoError::KeyNotTrusted { detail: "can be bound to at most 64 host names".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::archiver::{backup as run_backup, BackupOptions};
    use crate::commands::check::{check, CheckOptions};
    use crate::crypto::SigningKey;
    use crate::format::snapshot::Snapshot;
    use crate::repo::OpenOptions;
    use crate::test_kit::{fixture, kdf, Fixture};

    fn open_write_only(
        fx: &Fixture,
        key: &WriteOnlyKey,
        cache: &tempfile::TempDir,
    ) -> Result<Arc<Repository>, RepoError> {
        let options = OpenOptions { data_dir: cache.path().to_path_buf(), kdf: kdf() };
        Repository::open_write_only(fx.repo.store_for_tests(), key.clone(), &options).map(Arc::new)
    }

    /// The fixture's repository opened again, as the next command would: `check` reads
    /// `signers/` as it was at open, and `fx.repo` was opened before the test changed it.
    fn reopened(fx: &Fixture) -> Repository {
        let options = OpenOptions { data_dir: fx._cache.path().to_path_buf(), kdf: kdf() };
        Repository::open(fx.repo.store_for_tests(), b"pw", &options).unwrap()
    }

    fn back_up_with(repo: &Arc<Repository>, fx: &Fixture) -> Id {
        let options = BackupOptions { paths: vec![fx.src.path().to_path_buf()], ..Default::default() };
        run_backup(repo, &options, &AtomicBool::new(false)).unwrap().id
    }

    fn ids(repo: &Repository) -> (Vec<Id>, Vec<(Id, String)>) {
        let (good, rejected) = repo.load_snapshots().unwrap();
        (good.into_iter().map(|e| e.id).collect(), rejected.into_iter().map(|r| (r.id, r.reason)).collect())
    }

    #[test]
    fn write_only_key_backs_up_reads_nothing_and_is_revoked_for_later_snapshots() {
        let fx = fixture();
        let key = new_write_only(&fx.repo).unwrap();
        let cache = tempfile::tempdir().unwrap();
        assert!(
            matches!(open_write_only(&fx, &key, &cache), Err(RepoError::KeyNotTrusted { .. })),
            "an unregistered key must not back up"
        );
        let signer = register_write_only(&fx.repo, &key, "laptop", &[crate::repo::hostname()]).unwrap();
        let write_only = open_write_only(&fx, &key, &cache).unwrap();
        assert!(matches!(write_only.load_snapshots(), Err(RepoError::WriteOnly { .. })));
        let first = back_up_with(&write_only, &fx);
        assert_eq!(ids(&fx.repo).0, vec![first]);

        let listed = list(&fx.repo).unwrap();
        let entry = listed.iter().find(|k| k.id == signer).unwrap();
        assert!(entry.kind == KeyKind::WriteOnly && !entry.revoked && entry.label == "laptop");

        assert_eq!(
            remove(&fx.repo, &signer.to_hex()[..10]).unwrap(),
            Removed::WriteOnly { id: signer, kept_snapshots: 1 }
        );
        assert!(list(&fx.repo).unwrap().iter().any(|k| k.id == signer && k.revoked));
        // A thief holding the key (and a client that ignores the revocation) writes another.
        let later = write_only.save_snapshot(&Snapshot { time_unix: 1, ..Snapshot::default() }).unwrap();
        let (good, rejected) = ids(&fx.repo);
        assert_eq!(good, vec![first], "the snapshot from before the removal stays trusted");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, later);
        assert!(rejected[0].1.contains("after it was removed"), "{}", rejected[0].1);
        let report = check(&fx.repo, &CheckOptions::default(), |_| {}).unwrap();
        assert!(report.errors.iter().any(|p| p.object.ends_with(&later.to_hex())), "{:?}", report.errors);
        let fresh = tempfile::tempdir().unwrap();
        assert!(matches!(open_write_only(&fx, &key, &fresh), Err(RepoError::KeyNotTrusted { .. })));

        // The storage owner deletes the revocation: this machine remembers it.
        for (id, _) in fx.repo.list_object_ids(layout::SIGNERS).unwrap() {
            let path = layout::in_dir(layout::SIGNERS, &id);
            if fx.repo.read_object(&path).unwrap().starts_with(crate::format::signer::REVOCATION_MAGIC) {
                fx.repo.delete_object(&path).unwrap();
            }
        }
        assert_eq!(ids(&fx.repo).0, vec![first]);
        let report = check(&reopened(&fx), &CheckOptions::default(), |_| {}).unwrap();
        assert!(report.errors.iter().any(|p| p.message.contains("revocation")), "{:?}", report.errors);
    }

    #[test]
    fn forged_replayed_and_foreign_snapshots_are_ignored_and_reported() {
        let fx = fixture();
        let good = crate::test_kit::backup(&fx).id;
        let snapshot = Snapshot { tree: Id([9; 32]), time_unix: 2, ..Snapshot::default() };
        // Someone with storage access only: signs with a key of their own.
        let forged = snapshot.encode(&fx.repo.id(), &fx.repo.keys().public, &SigningKey::random());
        // A snapshot really signed by this repository's key, but for another repository id.
        let replayed = snapshot.encode(&Id([7; 32]), &fx.repo.keys().public, &fx.repo.keys().signer);
        let mut planted = Vec::new();
        for bytes in [forged, replayed] {
            let id = Id::of_bytes(&bytes);
            fx.repo.write_object(&layout::in_dir(layout::SNAPSHOTS, &id), bytes).unwrap();
            planted.push(id);
        }
        // A signer record copied from another repository registers nothing here.
        let other = fixture();
        let other_key = new_write_only(&other.repo).unwrap();
        register_write_only(&other.repo, &other_key, "elsewhere", &[crate::repo::hostname()]).unwrap();
        for (id, _) in other.repo.list_object_ids(layout::SIGNERS).unwrap() {
            let path = layout::in_dir(layout::SIGNERS, &id);
            fx.repo.write_object(&path, other.repo.read_object(&path).unwrap()).unwrap();
        }
        let (trusted, rejected) = ids(&fx.repo);
        assert_eq!(trusted, vec![good]);
        let mut rejected_ids: Vec<Id> = rejected.iter().map(|r| r.0).collect();
        rejected_ids.sort();
        planted.sort();
        assert_eq!(rejected_ids, planted);
        assert!(!fx.repo.signers().unwrap().active.contains_key(&other_key.signing.verifying_key().id()));
        let report = check(&reopened(&fx), &CheckOptions::default(), |_| {}).unwrap();
        for id in &planted {
            assert!(report.errors.iter().any(|p| p.object.ends_with(&id.to_hex())), "{id:?} not reported");
        }
        assert!(report.errors.iter().any(|p| p.object.starts_with(layout::SIGNERS)), "{:?}", report.errors);
    }

    #[test]
    fn passphrases_add_change_remove() {
        let fx = fixture();
        let options = OpenOptions { data_dir: fx._cache.path().to_path_buf(), kdf: kdf() };
        let first = fx.repo.key_file().unwrap();
        let second = add_passphrase(&fx.repo, b"second", kdf()).unwrap();
        let by_second = Repository::open(fx.repo.store_for_tests(), b"second", &options).unwrap();
        assert_eq!(by_second.key_file(), Some(second));
        assert!(matches!(remove(&fx.repo, &first.to_hex()), Err(RepoError::KeyInUse { .. })));
        assert_eq!(remove(&by_second, &first.to_hex()).unwrap(), Removed::Passphrase(first));
        assert!(matches!(Repository::open(fx.repo.store_for_tests(), b"pw", &options), Err(RepoError::WrongPassword)));
        let third = change_passphrase(&by_second, b"third", kdf()).unwrap();
        assert_eq!(
            fx.repo.list_object_ids(layout::KEYS).unwrap().into_iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![third]
        );
        assert!(Repository::open(fx.repo.store_for_tests(), b"second", &options).is_err());
        let by_third = Repository::open(fx.repo.store_for_tests(), b"third", &options).unwrap();
        assert!(matches!(remove(&by_third, &third.to_hex()), Err(RepoError::KeyInUse { .. })));
    }
}
