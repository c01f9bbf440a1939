//! The adversaries of the confinement tests (issue 15): each holds exactly what one party holds
//! and writes objects into a local repository folder directly, bypassing the CLI's refusals.
//!
//! - [`KeyThief`]: the bytes of one write-only key file (registered, revoked or never
//!   registered) and storage credentials that can create objects: it makes packs, index files
//!   and snapshots with that key, and reads whatever that key opens.
//! - [`StorageOwner`]: the folder itself: deletes or withholds any object, and knows nothing
//!   else.
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
use coffer::repo::{OpenOptions, Repository};
use coffer::store::{paths, Store};

/// Writes `bytes` as object `name` of the repository folder, as a storage writer can.
pub fn put_object(repo: &Path, name: &str, bytes: &[u8]) {
    let path = repo.join(name);
    std::fs::create_dir_all(path.parent().expect("object path has a parent")).expect("create object folder");
    std::fs::write(&path, bytes).expect("write object");
}

pub struct KeyThief {
    pub repo: PathBuf,
    pub key: WriteOnlyKey,
}

impl KeyThief {
    pub fn from_key_file(repo: &Path, key_file: &Path) -> KeyThief {
        let text = std::fs::read(key_file).expect("read the stolen key file");
        KeyThief { repo: repo.to_path_buf(), key: WriteOnlyKey::from_text(&text).expect("a write-only key") }
    }

    fn repo_id(&self) -> Id {
        self.key.repo_id
    }

    /// Every index file of the repository this key opens, and how many it could not.
    pub fn read_index(&self) -> (Vec<IndexFile>, usize) {
        let domain = self.key.domain_keys();
        let (mut opened, mut refused) = (Vec::new(), 0);
        for entry in std::fs::read_dir(self.repo.join("index")).expect("list index/") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read index file");
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
            put_object(&self.repo, &paths::pack(&pack.id), &pack.out);
            let index = IndexFile { packs: vec![IndexPack { id: pack.id, size: pack.size, blobs: pack.entries }] };
            let bytes = index.encode(&domain.index_key, &self.repo_id());
            put_object(&self.repo, &paths::in_dir(paths::INDEX, &Id::of_bytes(&bytes)), &bytes);
            return pack.id;
        }
        panic!("could not grind a pack id below {below:?}");
    }

    /// Signs and stores a snapshot of the thief's making.
    pub fn forge_snapshot(&self, snapshot: &Snapshot) -> Id {
        let bytes = snapshot.encode(&self.repo_id(), &self.key.public, &self.key.signing);
        let id = Id::of_bytes(&bytes);
        put_object(&self.repo, &paths::in_dir(paths::SNAPSHOTS, &id), &bytes);
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
        put_object(&self.repo, &paths::pack(&pack.id), &pack.out);
        let index = IndexFile { packs: vec![IndexPack { id: pack.id, size: pack.size, blobs: pack.entries }] };
        let bytes = index.encode(&domain.index_key, &self.repo_id());
        put_object(&self.repo, &paths::in_dir(paths::INDEX, &Id::of_bytes(&bytes)), &bytes);
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
    pub repo: PathBuf,
}

impl StorageOwner {
    pub fn delete(&self, object: &str) {
        std::fs::remove_file(self.repo.join(object)).expect("delete object");
    }

    /// The objects of one folder of the repository (`signers/`, `snapshots/`, …).
    pub fn objects(&self, dir: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.repo.join(dir))
            .map(|rd| rd.flatten().map(|e| format!("{dir}{}", e.file_name().to_string_lossy())).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Every (blob id, kind, pack) of the repository, read with the full key: the oracle for
/// "a thief who learned the ids anyway".
pub fn owner_blob_ids(repo: &Path, password: &str) -> Vec<(Id, BlobKind, Id)> {
    let cache = super::tempdir();
    let options = OpenOptions {
        cache_dir: cache.path().to_path_buf(),
        kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 },
    };
    let store = Store::open_local(repo, false).expect("open the repository folder");
    let opened = Repository::open(store, password.as_bytes(), &options).expect("open with the full key");
    let mut out = Vec::new();
    opened
        .db()
        .for_each_blob(None, |id, location| out.push((*id, location.entry.kind, location.pack)))
        .expect("read the index");
    out
}
