//! Creating a repository and opening one with a passphrase or a write-only key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{RepoError, Repository};
use crate::crypto::{random_bytes, KdfParams};
use crate::db::Db;
use crate::format::config::{ChunkerParams, Config, GearKeying};
use crate::format::keyfile::{KeyFile, KeyFileError};
use crate::id::Id;
use crate::keys::{FullKey, RepoKeys, WriteOnlyKey};
use crate::layout;
use crate::store::{Store, StoreError};

pub struct OpenOptions {
    /// Folder holding one SQLite database per repository.
    pub data_dir: PathBuf,
    pub kdf: KdfParams,
}

/// The user's data folder for Coffer (`directories`): `$XDG_DATA_HOME/coffer`, else
/// `~/.local/share/coffer` on Linux; `/.local/share/coffer` when no home folder is known.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "coffer")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/.local/share/coffer"))
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into())
}

pub fn username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// Names this machine for the files cache: host name and, where systemd or dbus recorded
/// one, the machine id (two clones of one disk share a host name but should not share it).
pub fn machine_identity() -> String {
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    match id {
        Some(id) => format!("{} ({})", hostname(), &id[..id.len().min(12)]),
        None => hostname(),
    }
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Repository {
    pub fn init(store: Store, passphrase: &[u8], options: &OpenOptions) -> Result<Repository, RepoError> {
        if store.size(layout::CONFIG)?.is_some() || !store.list(layout::KEYS)?.is_empty() {
            return Err(RepoError::AlreadyExists { location: store.location().to_string() });
        }
        let key = FullKey::generate();
        let config = Config {
            version: 1,
            repo_id: Id(random_bytes()),
            created_unix: now_unix(),
            chunker: ChunkerParams::DEFAULT,
            pack_target: 8 << 20,
            compression_level: 3,
            public_key: key.secret.public().0,
            verify_key: key.signing.verifying_key().0,
            gear: GearKeying::KeyedTable,
        };
        let keyfile = KeyFile::seal(
            config.repo_id,
            &key.encode(),
            passphrase,
            options.kdf,
            config.created_unix,
            hostname(),
            username(),
        )
        .map_err(RepoError::format("new key file"))?
        .encode();
        // The key first, the config last: a repository exists once its config does, and by
        // then it can be opened.
        let key_file = Id::of_bytes(&keyfile);
        store.write(&layout::in_dir(layout::KEYS, &key_file), keyfile)?;
        store.write(layout::CONFIG, config.encode(&key.signing))?;
        let mut repo = Repository::with_keys(store, config, key.into(), options)?;
        repo.key_file = Some(key_file);
        Ok(repo)
    }

    pub fn open(store: Store, passphrase: &[u8], options: &OpenOptions) -> Result<Repository, RepoError> {
        Located::read(store)?.open(passphrase, options)
    }

    pub fn open_write_only(store: Store, key: WriteOnlyKey, options: &OpenOptions) -> Result<Repository, RepoError> {
        Located::read(store)?.open_write_only(key, options)
    }

    pub(crate) fn with_keys(
        store: Store,
        config: Config,
        keys: RepoKeys,
        options: &OpenOptions,
    ) -> Result<Repository, RepoError> {
        Repository::with_keys_prefetched(store, config, keys, options, None)
    }

    /// Like [`Repository::with_keys`], with what opening reads after the key already read
    /// when `prefetched` holds it.
    fn with_keys_prefetched(
        store: Store,
        config: Config,
        keys: RepoKeys,
        options: &OpenOptions,
        prefetched: Option<Prefetched>,
    ) -> Result<Repository, RepoError> {
        let db = Db::open(&db_path(options, &config.repo_id), &config.repo_id)?;
        let own = keys.write_domain();
        let mut repo = Repository {
            store,
            config,
            keys,
            db: Mutex::new(db),
            pack_keys: Mutex::new(HashMap::new()),
            domains: HashMap::from([(own.id, own)]),
            signers_at_open: Mutex::new(None),
            key_file: None,
        };
        let Prefetched { index, signers } = match prefetched {
            Some(prefetched) => prefetched,
            None => Prefetched::read(&repo.store),
        };
        let signers = repo.signers_from(signers?)?;
        *repo.signers_at_open.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(signers));
        repo.load_domains()?;
        repo.sync_index_listed(index?)?;
        Ok(repo)
    }
}

/// What opening reads after the key, none of which needs the key: `index/` listed and
/// `signers/` read at the same time (a round trip or more each on a remote store). With a
/// passphrase it is read while Argon2 runs (see [`Located::open`]).
struct Prefetched {
    index: Result<Vec<(Id, u64)>, StoreError>,
    signers: Result<Vec<(Id, Vec<u8>)>, RepoError>,
}

impl Prefetched {
    fn read(store: &Store) -> Prefetched {
        std::thread::scope(|scope| {
            let signers = scope.spawn(|| super::snapshots::fetch_signer_objects(store));
            let index = store.list_ids(layout::INDEX);
            let signers = signers.join().unwrap_or_else(|_| Err(StoreError::thread_panicked(layout::SIGNERS).into()));
            Prefetched { index, signers }
        })
    }
}

/// A repository whose config has been read but not yet verified by a key. It already names
/// the repository's local database, so work that needs only local state (the scan of a
/// backup's sources) can start while the key is derived from the passphrase.
pub struct Located {
    store: Store,
    config_bytes: Vec<u8>,
    unverified: Config,
    /// `keys/`, listed while the config was read (a round trip saved on a remote store);
    /// only a passphrase needs it.
    keys: Result<Vec<(Id, u64)>, StoreError>,
}

impl Located {
    /// Reads the config: the first step of opening a repository.
    pub fn read(store: Store) -> Result<Located, RepoError> {
        let not_a_repo = |detail: String| RepoError::NotARepository { location: store.location().to_string(), detail };
        let (config, keys) = std::thread::scope(|scope| {
            let keys = scope.spawn(|| store.list_ids(layout::KEYS));
            let config = store.read(layout::CONFIG);
            (config, keys.join().unwrap_or_else(|_| Err(StoreError::thread_panicked(layout::KEYS))))
        });
        let config_bytes = match config {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Err(not_a_repo("it has no config".into())),
            Err(e) => return Err(e.into()),
        };
        let unverified = Config::decode_unverified(&config_bytes).map_err(|e| not_a_repo(e.to_string()))?;
        Ok(Located { store, config_bytes, unverified, keys })
    }

    /// The repository id as the config claims it, before any key has verified it.
    pub fn unverified_id(&self) -> Id {
        self.unverified.repo_id
    }

    /// The local database that the repository, once opened, will use.
    pub fn db_path(&self, options: &OpenOptions) -> PathBuf {
        db_path(options, &self.unverified.repo_id)
    }

    /// A reader of this machine's files cache in the local database the repository will use,
    /// if there is one: a backup scans its sources with it while the key is derived.
    pub fn files_cache_reader(&self, options: &OpenOptions) -> Option<crate::db::FilesCacheReader> {
        crate::db::FilesCacheReader::open(&self.db_path(options), &self.unverified_id(), &machine_identity())
    }

    pub fn open(self, passphrase: &[u8], options: &OpenOptions) -> Result<Repository, RepoError> {
        let Located { store, config_bytes, unverified, keys } = self;
        let remembered = remembered_key(options, &unverified.repo_id);
        // What opening reads next needs no key: it goes out while Argon2 runs (two or three
        // round trips in a row on a remote store, against a derivation of ~0.4 s).
        let (unlocked, prefetched) = std::thread::scope(|scope| {
            let prefetch = scope.spawn(|| Prefetched::read(&store));
            let unlocked = unlock(&store, keys?, &unverified.repo_id, passphrase, remembered);
            let prefetched = prefetch.join().map_err(|_| RepoError::Internal {
                worker: "repository open",
                detail: "a listing thread panicked".into(),
            });
            Ok::<_, RepoError>((unlocked, prefetched))
        })?;
        let (key_file, key) = unlocked?;
        let config =
            Config::decode(&config_bytes, &key.signing.verifying_key()).map_err(RepoError::format("config"))?;
        if config.public_key != key.secret.public().0 {
            return Err(RepoError::Corrupt {
                object: "config".into(),
                detail: "its public key does not match the repository key".into(),
            });
        }
        let mut repo = Repository::with_keys_prefetched(store, config, key.into(), options, Some(prefetched?))?;
        remember_key(options, &repo.config.repo_id, &key_file);
        repo.key_file = Some(key_file);
        Ok(repo)
    }

    /// Opens a repository with a write-only key: it can back up (with full dedup) and check
    /// structure, nothing that needs plaintext. The repository's public key comes from the key
    /// itself, never from the store; the config must be signed by the repository key the
    /// write-only key names, and the key must be registered and not revoked.
    pub fn open_write_only(self, key: WriteOnlyKey, options: &OpenOptions) -> Result<Repository, RepoError> {
        let Located { store, config_bytes, unverified, keys: _ } = self;
        if unverified.repo_id != key.repo_id {
            return Err(RepoError::KeyNotTrusted {
                detail: format!(
                    "belongs to repository {}, not to {} ({})",
                    key.repo_id.short(),
                    unverified.repo_id.short(),
                    store.location()
                ),
            });
        }
        let config = Config::decode(&config_bytes, &key.repo_verify).map_err(RepoError::format("config"))?;
        if config.public_key != key.public.0 {
            return Err(RepoError::Corrupt {
                object: "config".into(),
                detail: "its public key does not match the one in the write-only key".into(),
            });
        }
        let signer = key.signing.verifying_key().id();
        let repo = Repository::with_keys(store, config, key.into(), options)?;
        let signers = repo.signers_at_open()?;
        if signers.revoked.contains_key(&signer) {
            return Err(RepoError::KeyNotTrusted {
                detail: format!("{} was removed from the repository (`coffer key remove`)", signer.short()),
            });
        }
        if !signers.active.contains_key(&signer) {
            return Err(RepoError::KeyNotTrusted {
                detail: format!("{} is not registered in the repository's signers/", signer.short()),
            });
        }
        Ok(repo)
    }
}

fn db_path(options: &OpenOptions, repo_id: &Id) -> PathBuf {
    // Its own 0700 folder per repository: the shared data folder is often 0755.
    options.data_dir.join(repo_id.to_hex()).join("state.db")
}

/// At most this many key files get a passphrase attempt per unlock: anyone who can write to
/// the store can plant key files, and each attempt costs an Argon2 run.
pub const MAX_KEY_ATTEMPTS: usize = 16;

/// A key file larger than this is not read (a real one is about 300 bytes).
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

/// The Argon2 cost an unlock accepts: four times the memory and the memory-time product of
/// [`KdfParams::DEFAULT`], which is what every key Coffer makes uses. `KdfParams::is_sane`
/// (what a key file may say at all) allows 30 times the default; at unlock, a planted file
/// asking that much would cost seconds and a gigabyte per attempt.
pub fn within_unlock_budget(kdf: &KdfParams) -> bool {
    let default = KdfParams::DEFAULT;
    let budget = 4 * u64::from(default.memory_kib) * u64::from(default.iterations);
    kdf.is_sane()
        && kdf.memory_kib <= 4 * default.memory_kib
        && kdf.parallelism <= 4
        && u64::from(kdf.memory_kib) * u64::from(kdf.iterations) <= budget
}

/// The file in the repository's local folder naming the key file that opened it last.
fn remembered_key_path(options: &OpenOptions, repo_id: &Id) -> PathBuf {
    options.data_dir.join(repo_id.to_hex()).join("key-file")
}

fn remembered_key(options: &OpenOptions, repo_id: &Id) -> Option<Id> {
    Id::from_hex(std::fs::read_to_string(remembered_key_path(options, repo_id)).ok()?.trim())
}

/// Remembers which key file opened the repository, so the next unlock tries it first. Only a
/// convenience (the key file's name is public): failing to write it is not an error.
fn remember_key(options: &OpenOptions, repo_id: &Id, key_file: &Id) {
    if remembered_key(options, repo_id) == Some(*key_file) {
        return;
    }
    if let Err(e) = std::fs::write(remembered_key_path(options, repo_id), key_file.to_hex()) {
        log::debug!("could not remember the key file that opened the repository: {e}");
    }
}

/// Tries the passphrase on the repository's key files and returns the one it opened: first
/// the one that opened it last on this machine, then the others oldest first (the key made
/// by `init` is the oldest), at most [`MAX_KEY_ATTEMPTS`] of them, and only those whose
/// Argon2 cost is [`within_unlock_budget`].
fn unlock(
    store: &Store,
    key_files: Vec<(Id, u64)>,
    repo_id: &Id,
    passphrase: &[u8],
    remembered: Option<Id>,
) -> Result<(Id, FullKey), RepoError> {
    if key_files.is_empty() {
        return Err(RepoError::NotARepository {
            location: store.location().to_string(),
            detail: "it has no keys".into(),
        });
    }
    let total = key_files.len();
    let mut any_readable = false;
    let mut candidates = Vec::new();
    for (id, size) in key_files {
        let path = layout::in_dir(layout::KEYS, &id);
        if size > MAX_KEY_FILE_SIZE {
            log::warn!("skipping key file {path}: {size} bytes is too large for a key file");
            continue;
        }
        let Ok(file) = KeyFile::decode(&store.read_named(&path, &id)?) else {
            log::warn!("skipping unreadable key file {path}");
            continue;
        };
        any_readable = true;
        if file.repo_id != *repo_id {
            continue;
        }
        if !within_unlock_budget(&file.kdf) {
            log::warn!(
                "skipping key file {path}: its Argon2 cost ({} KiB, {} passes) is above what an unlock accepts",
                file.kdf.memory_kib,
                file.kdf.iterations
            );
            continue;
        }
        candidates.push((Some(id) != remembered, file.created_unix, id, path, file));
    }
    if any_readable && candidates.is_empty() {
        // Not a password problem: no key belongs to the repository the config names.
        return Err(RepoError::Corrupt {
            object: layout::CONFIG.into(),
            detail: "its repository id matches no usable key file: it was damaged or replaced".into(),
        });
    }
    candidates.sort_by_key(|(not_remembered, created, id, _, _)| (*not_remembered, *created, *id));
    let skipped = candidates.len().saturating_sub(MAX_KEY_ATTEMPTS);
    for (_, _, id, path, file) in candidates.into_iter().take(MAX_KEY_ATTEMPTS) {
        match file.open(passphrase) {
            Ok(material) => return Ok((id, FullKey::decode(&material).map_err(RepoError::format(path))?)),
            Err(KeyFileError::WrongPassphrase) => continue,
            Err(KeyFileError::Format(e)) => log::warn!("skipping key file {path}: {e}"),
        }
    }
    if skipped > 0 {
        return Err(RepoError::TooManyKeyFiles { tried: MAX_KEY_ATTEMPTS, total });
    }
    Err(RepoError::WrongPassword)
}
