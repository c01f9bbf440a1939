//! The adversaries of the confinement tests (issue 15): each holds exactly what one party holds
//! and writes objects into a local repository folder directly, bypassing the CLI's refusals.
//!
//! - [`KeyThief`]: the bytes of one write-only key file (registered, revoked or never
//!   registered) and storage credentials that can create objects: it makes packs, index files
//!   and snapshots with that key, and reads whatever that key opens.
//! - [`StorageOwner`]: the store itself: deletes or withholds any object, and knows nothing
//!   else.
//!
//! Both reach the repository as a storage client does ([`Objects`]): a local folder's files, or
//! a remote store (S3 on moto, with Object Lock where the test asks) through OpenDAL.
//!
//! A test also needs an oracle for "what if the thief had learned the owner's blob ids?":
//! [`owner_blob_ids`] opens the repository with the full key in-process (the attack then
//! plays the strongest thief, not a realistic one).

use std::path::{Path, PathBuf};

use coffer::crypto::KdfParams;
use coffer::format::index::{IndexFile, IndexPack};
use coffer::format::pack::{BlobKind, PackWriter};
use coffer::format::snapshot::Snapshot;
use coffer::id::Id;
use coffer::keys::WriteOnlyKey;
use coffer::layout as paths;
use coffer::repo::{OpenOptions, Repository};
use coffer::store::{Location, Store};

use super::{Coffer, RemoteRepo};

/// The repository's objects as a storage client reaches them.
#[derive(Clone)]
pub enum Objects {
    Folder(PathBuf),
    Remote(Store),
}

impl Objects {
    /// The repository of `c`: its folder, or its remote store.
    pub fn of(c: &Coffer) -> Objects {
        match &c.remote {
            None => Objects::Folder(c.repo.clone()),
            Some(remote) => Objects::Remote(remote_store(remote)),
        }
    }

    pub fn put(&self, name: &str, bytes: &[u8]) {
        match self {
            Objects::Folder(repo) => {
                let path = repo.join(name);
                std::fs::create_dir_all(path.parent().expect("object path has a parent")).expect("create folder");
                std::fs::write(&path, bytes).expect("write object");
            }
            Objects::Remote(store) => store.write(name, bytes.to_vec()).expect("put object"),
        }
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        match self {
            Objects::Folder(repo) => std::fs::read(repo.join(name)).expect("read object"),
            Objects::Remote(store) => store.read(name).expect("get object"),
        }
    }

    /// Object names under `dir` (`"index/"`, `"signers/"`, …), sorted.
    pub fn list(&self, dir: &str) -> Vec<String> {
        let mut out: Vec<String> = match self {
            Objects::Folder(repo) => std::fs::read_dir(repo.join(dir))
                .map(|rd| rd.flatten().map(|e| format!("{dir}{}", e.file_name().to_string_lossy())).collect())
                .unwrap_or_default(),
            Objects::Remote(store) => store.list(dir).expect("list objects").into_iter().map(|(p, _)| p).collect(),
        };
        out.sort();
        out
    }

    pub fn delete(&self, name: &str) {
        match self {
            Objects::Folder(repo) => std::fs::remove_file(repo.join(name)).expect("delete object"),
            Objects::Remote(store) => store.delete(name).expect("delete object"),
        }
    }

    fn store(&self) -> Store {
        match self {
            Objects::Folder(repo) => Store::open_local(repo, false).expect("open the repository folder"),
            Objects::Remote(store) => store.clone(),
        }
    }
}

/// Opens a remote repository as the tests' Coffer runs reach it (its secrets come from the
/// environment the runs get).
fn remote_store(remote: &RemoteRepo) -> Store {
    for (name, value) in &remote.env {
        // Every test of a binary sets the same values; nothing reads them concurrently with a
        // different meaning.
        std::env::set_var(name, value);
    }
    let location = Location::parse(&remote.url, &remote.options).expect("parse the remote location");
    Store::open(&location, false).expect("open the remote store")
}

pub struct KeyThief {
    pub objects: Objects,
    pub key: WriteOnlyKey,
}

impl KeyThief {
    pub fn from_key_file(c: &Coffer, key_file: &Path) -> KeyThief {
        let text = std::fs::read(key_file).expect("read the stolen key file");
        KeyThief { objects: Objects::of(c), key: WriteOnlyKey::from_text(&text).expect("a write-only key") }
    }

    /// A write-only key nobody registered, made from what anyone who can read the store learns
    /// from `config` (repository id, public key, verifying key) and secrets of its own: the
    /// strongest key a storage reader can make without the owner.
    pub fn never_registered(c: &Coffer) -> KeyThief {
        use coffer::crypto::{PublicKey, SigningKey, SymKey, VerifyingKey};
        use coffer::format::config::Config;
        let objects = Objects::of(c);
        let config = Config::decode_unverified(&objects.read(paths::CONFIG)).expect("config");
        let key = WriteOnlyKey {
            repo_id: config.repo_id,
            public: PublicKey(config.public_key),
            repo_verify: VerifyingKey(config.verify_key),
            domain: coffer::keys::WriteDomain::Own(SymKey::random()),
            signing: SigningKey::random(),
        };
        KeyThief { objects, key }
    }

    fn repo_id(&self) -> Id {
        self.key.repo_id
    }

    /// Every index file of the repository this key opens, and how many it could not.
    pub fn read_index(&self) -> (Vec<IndexFile>, usize) {
        let domain = self.key.domain_keys();
        let (mut opened, mut refused) = (Vec::new(), 0);
        for name in self.objects.list(paths::INDEX) {
            let bytes = self.objects.read(&name);
            match IndexFile::decode(&bytes, &domain.index_key, &self.repo_id()) {
                Ok(file) => opened.push(file),
                Err(_) => refused += 1,
            }
        }
        (opened, refused)
    }

    /// The id this key would give `plaintext` (what it can compute for content it guesses).
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        self.key.domain_keys().id_key.blob_id(plaintext)
    }

    /// Stores a pack of junk under `ids` (each claimed as `kind`), its id ground to sort below
    /// `below` when given, and an index file listing it in this key's domain. Returns the pack.
    pub fn plant_junk(&self, ids: &[(Id, BlobKind)], below: Option<Id>) -> Id {
        let domain = self.key.domain_keys();
        for attempt in 0u32..100_000 {
            let mut writer =
                PackWriter::new(&self.key.public, &domain.index_key, ids[0].1, Vec::new()).expect("pack in memory");
            for (i, (id, _)) in ids.iter().enumerate() {
                let junk = format!("junk {i} {attempt} of a thief").into_bytes();
                writer.add_blob(*id, &junk, 3).expect("add junk");
            }
            let pack = writer.finish().expect("finish pack");
            if below.is_some_and(|b| pack.id >= b) {
                continue;
            }
            self.objects.put(&paths::pack(&pack.id), &pack.out);
            let index = IndexFile { packs: vec![IndexPack { id: pack.id, size: pack.size, blobs: pack.entries }] };
            let bytes = index.encode(&domain.index_key, &self.repo_id());
            self.objects.put(&paths::in_dir(paths::INDEX, &Id::of_bytes(&bytes)), &bytes);
            return pack.id;
        }
        panic!("could not grind a pack id below {below:?}");
    }

    /// Signs and stores a snapshot of the thief's making.
    pub fn forge_snapshot(&self, snapshot: &Snapshot) -> Id {
        let bytes = snapshot.encode(&self.repo_id(), &self.key.public, &self.key.signing);
        let id = Id::of_bytes(&bytes);
        self.objects.put(&paths::in_dir(paths::SNAPSHOTS, &id), &bytes);
        id
    }

    /// Stores a snapshot whose root is a new tree of one file made of `blobs` (ids the thief
    /// chose), so the snapshot references them.
    pub fn forge_snapshot_of(&self, host: &str, path: &Path, blobs: Vec<Id>) -> Id {
        use coffer::format::tree::{Metadata, Node, NodeKind, Tree};
        let domain = self.key.domain_keys();
        let file = Node {
            name: serde_bytes::ByteBuf::from(b".bashrc".to_vec()),
            kind: NodeKind::File { size: 11, content: blobs },
            meta: Metadata { mode: 0o644, ..Default::default() },
        };
        let tree = Tree { nodes: vec![file] }.encode();
        let tree_id = domain.id_key.blob_id(&tree);
        let mut writer =
            PackWriter::new(&self.key.public, &domain.index_key, BlobKind::Tree, Vec::new()).expect("pack in memory");
        writer.add_blob(tree_id, &tree, 3).expect("add tree");
        let pack = writer.finish().expect("finish pack");
        self.objects.put(&paths::pack(&pack.id), &pack.out);
        let index = IndexFile { packs: vec![IndexPack { id: pack.id, size: pack.size, blobs: pack.entries }] };
        let bytes = index.encode(&domain.index_key, &self.repo_id());
        self.objects.put(&paths::in_dir(paths::INDEX, &Id::of_bytes(&bytes)), &bytes);
        let snapshot = Snapshot {
            time_unix: chrono_now() + 60,
            hostname: host.to_string(),
            username: "root".into(),
            paths: vec![serde_bytes::ByteBuf::from(path.as_os_str().as_encoded_bytes().to_vec())],
            tree: tree_id,
            ..Default::default()
        };
        self.forge_snapshot(&snapshot)
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The storage owner: can delete any object (or withhold it, which looks the same).
pub struct StorageOwner {
    pub objects: Objects,
}

impl StorageOwner {
    pub fn of(c: &Coffer) -> StorageOwner {
        StorageOwner { objects: Objects::of(c) }
    }

    pub fn delete(&self, object: &str) {
        self.objects.delete(object)
    }

    /// The objects of one folder of the repository (`signers/`, `snapshots/`, …).
    pub fn objects(&self, dir: &str) -> Vec<String> {
        self.objects.list(dir)
    }
}

/// Every (blob id, kind, pack) of the repository, read with the full key: the oracle for
/// "a thief who learned the ids anyway".
pub fn owner_blob_ids(c: &Coffer) -> Vec<(Id, BlobKind, Id)> {
    let cache = super::tempdir();
    let options = OpenOptions {
        data_dir: cache.path().to_path_buf(),
        kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 },
    };
    let store = Objects::of(c).store();
    let password = &c.password;
    let opened = Repository::open(store, password.as_bytes(), &options).expect("open with the full key");
    let mut out = Vec::new();
    opened
        .for_each_blob(None, |id, location| out.push((*id, location.entry.kind, location.pack)))
        .expect("read the index");
    out
}
