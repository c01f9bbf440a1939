//! Entry points for fuzzing every decoder of bytes that come from storage, shared by the
//! cargo-fuzz targets in `fuzz/` and the regression test that replays their corpora in CI
//! (`tests/fuzz_corpus.rs`), so both exercise the same code.
//!
//! Most objects are authenticated before they are parsed, so random bytes alone never get past
//! the AEAD or signature check. Each entry point therefore feeds its input twice: once as the
//! stored object (the checks must reject it cleanly), and once wrapped in a *valid* envelope
//! made with fixed test keys, so the fuzzer reaches the parsers and validation behind the
//! cryptography (postcard bodies, blob tables, codecs, tree rules). Nothing here may panic,
//! abort or allocate without bound on any input: each function returns nothing, a panic is
//! the finding.
//!
//! It sits beside `format`, not inside it: it builds envelopes with `crypto` and parses
//! write-only keys with `keys`, which depend on `format` themselves (inside, it made a cycle).

use std::sync::OnceLock;

use crate::crypto::{wrap_key, IdKey, SecretKey, SigningKey, SymKey};
use crate::format::config::Config;
use crate::format::index::IndexFile;
use crate::format::keyfile::KeyFile;
use crate::format::pack::{self, BlobKind, PackEntry};
use crate::format::plan::{self, PlanRecord};
use crate::format::signer::SignerRecord;
use crate::format::snapshot::{self, Snapshot};
use crate::format::tree::Tree;
use crate::format::{config, index, signer};
use crate::id::Id;

/// A fuzz target's body: takes any bytes, must return normally.
pub type Target = fn(&[u8]);

/// Every target by name: the folder names under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("pack", pack),
    ("blob", blob),
    ("index", index),
    ("tree", tree),
    ("snapshot", snapshot),
    ("keyfile", keyfile),
    ("config", config),
    ("signer", signer),
    ("plan", plan),
    ("writeonlykey", write_only_key),
    ("anchors", anchors),
];

/// Plaintext sizes the wrapped blob target may claim: the real bound (`MAX_BLOB_LEN`) makes
/// zstd reserve up to 256 MiB per call, which is correct but would slow the fuzzer a thousandfold.
const FUZZ_MAX_RAW_LEN: u32 = 4 << 20;

struct Keys {
    secret: SecretKey,
    index_key: SymKey,
    id_key: IdKey,
    signing: SigningKey,
    repo_id: Id,
    pack_key: SymKey,
    pack_header: [u8; pack::HEADER_LEN],
    snapshot_key: SymKey,
    snapshot_wrapped: [u8; crate::crypto::WRAPPED_KEY_LEN],
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = SecretKey::from_bytes([1; 32]);
        let pack_key = SymKey::from_bytes([4; 32]);
        let mut pack_header = [0u8; pack::HEADER_LEN];
        pack_header[..8].copy_from_slice(pack::MAGIC);
        pack_header[8..].copy_from_slice(&wrap_key(&secret.public(), &pack_key, pack::MAGIC));
        let snapshot_key = SymKey::from_bytes([6; 32]);
        let snapshot_wrapped = wrap_key(&secret.public(), &snapshot_key, snapshot::MAGIC);
        Keys {
            secret,
            index_key: SymKey::from_bytes([2; 32]),
            id_key: IdKey::from_bytes([3; 32]),
            signing: SigningKey::from_bytes([5; 32]),
            repo_id: Id([7; 32]),
            pack_key,
            pack_header,
            snapshot_key,
            snapshot_wrapped,
        }
    })
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(bytes)
}

/// A whole pack file: header, trailer and blob table. Wrapped: the input (after two bytes
/// giving the size of the blob area) is the plaintext of the sealed table.
pub fn pack(data: &[u8]) {
    let k = keys();
    let _ = pack::open_pack_key(&k.secret, data);
    let _ = pack::table_len(data);
    let _ = pack::read_table(&k.index_key, data);

    let blob_area = u16::from_le_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]);
    let table_plain = data.get(2..).unwrap_or_default();
    let mut bytes = k.pack_header.to_vec();
    bytes.resize(bytes.len() + blob_area as usize, 0);
    let sealed = k.index_key.seal(table_plain, &pack::table_aad(&k.pack_header));
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    bytes.extend_from_slice(pack::END_MAGIC);
    if let Ok(entries) = pack::read_table(&k.index_key, &bytes) {
        for entry in entries {
            let end = entry.offset as usize + entry.length as usize;
            let _ = pack::open_blob(&k.pack_key, &k.id_key, &entry, &bytes[entry.offset as usize..end]);
        }
    }
}

/// One blob read from a pack: decrypt, decompress, verify. Input: kind (1) | raw length (4) |
/// sealed box (raw) or blob plaintext = codec | payload (wrapped).
pub fn blob(data: &[u8]) {
    let k = keys();
    let kind = if data.first().copied().unwrap_or(0) & 1 == 0 { BlobKind::Data } else { BlobKind::Tree };
    let body = data.get(5..).unwrap_or_default();

    let raw =
        PackEntry { id: k.id_key.blob_id(body), kind, offset: 0, length: body.len() as u32, raw_len: u32_at(data, 1) };
    let _ = pack::open_blob(&k.pack_key, &k.id_key, &raw, body);

    let payload = body.get(1..).unwrap_or_default();
    let id = k.id_key.blob_id(payload);
    let sealed = k.pack_key.seal(body, &pack::blob_aad(&id, kind));
    let raw_len = u32_at(data, 1) % (FUZZ_MAX_RAW_LEN + 1);
    let entry = PackEntry { id, kind, offset: 0, length: sealed.len() as u32, raw_len };
    if let Ok(plain) = pack::open_blob(&k.pack_key, &k.id_key, &entry, &sealed) {
        if kind == BlobKind::Tree {
            let _ = Tree::decode(&plain);
        }
    }
}

/// `index/<id>`. Wrapped: the input is the sealed postcard body.
pub fn index(data: &[u8]) {
    let k = keys();
    let _ = IndexFile::decode(data, &k.index_key, &k.repo_id);
    let wrapped = [index::MAGIC.as_slice(), &k.index_key.seal(data, &index::aad(&k.repo_id))].concat();
    let _ = IndexFile::decode(&wrapped, &k.index_key, &k.repo_id);
}

/// A tree blob's plaintext, with and without its magic.
pub fn tree(data: &[u8]) {
    let _ = Tree::decode(data);
    if let Ok(tree) = Tree::decode(&[crate::format::tree::MAGIC.as_slice(), data].concat()) {
        for node in &tree.nodes {
            let _ = tree.find(&node.name);
        }
    }
}

/// `snapshots/<id>`. Wrapped: the input is the encrypted body, in a correctly signed snapshot.
pub fn snapshot(data: &[u8]) {
    let k = keys();
    let verifying = k.signing.verifying_key();
    let _ = Snapshot::signer_id(data);
    let _ = Snapshot::open(data, &k.repo_id, &verifying, &k.secret);

    let signer_id = verifying.id();
    let mut bytes = snapshot::MAGIC.to_vec();
    bytes.extend_from_slice(&signer_id.0);
    bytes.extend_from_slice(&k.snapshot_wrapped);
    bytes.extend_from_slice(&k.snapshot_key.seal(data, &snapshot::body_aad(&k.repo_id, &signer_id.0)));
    let signature = k.signing.sign(&snapshot::signed_message(&k.repo_id, &bytes));
    bytes.extend_from_slice(&signature);
    let _ = Snapshot::open(&bytes, &k.repo_id, &verifying, &k.secret);
}

/// `keys/<id>`, with and without its magic; opened when its KDF cost is small enough to try.
pub fn keyfile(data: &[u8]) {
    let _ = KeyFile::decode(data);
    if let Ok(file) = KeyFile::decode(&[crate::format::keyfile::MAGIC.as_slice(), data].concat()) {
        if file.kdf.memory_kib <= 64 && file.kdf.iterations <= 2 {
            let _ = file.open(b"fuzz");
        }
    }
}

/// A write-only key's text or bytes (from a key file, a keychain entry or a credential).
pub fn write_only_key(data: &[u8]) {
    let _ = crate::keys::WriteOnlyKey::from_text(data);
    let _ = crate::keys::WriteOnlyKey::looks_like(data);
    // With valid check bytes, so the decoder gets past them.
    for magic in [b"CFWOKY01", b"CFWOKY02"] {
        let mut bytes = [magic.as_slice(), data].concat();
        bytes.extend_from_slice(&blake3::hash(&bytes).as_bytes()[..8]);
        if let Ok(key) = crate::keys::WriteOnlyKey::decode(&bytes) {
            let _ = key.domain_keys();
        }
    }
}

/// The anchoring extensions of a snapshot body (`coffer.signers-seen`, `coffer.previous`).
pub fn anchors(data: &[u8]) {
    use serde_bytes::ByteBuf;
    for name in [crate::format::snapshot::SIGNERS_SEEN, crate::format::snapshot::PREVIOUS] {
        let snapshot =
            Snapshot { extensions: vec![(name.to_string(), ByteBuf::from(data.to_vec()))], ..Snapshot::default() };
        let _ = snapshot.signers_seen();
        let _ = snapshot.previous();
    }
}

/// `config`. Wrapped: the input is the body, correctly signed by the repository key.
pub fn config(data: &[u8]) {
    let k = keys();
    let verifying = k.signing.verifying_key();
    let _ = Config::decode_unverified(data);
    let _ = Config::decode(data, &verifying);
    for magic in [config::MAGIC, config::MAGIC_V1] {
        let mut bytes = [magic.as_slice(), data].concat();
        let signature = k.signing.sign(&config::signed_message(&bytes));
        bytes.extend_from_slice(&signature);
        let _ = Config::decode(&bytes, &verifying);
    }
}

/// `signers/<id>`: registrations and revocations. Wrapped: the input is the body of each,
/// correctly signed by the repository key.
pub fn signer(data: &[u8]) {
    let k = keys();
    let verifying = k.signing.verifying_key();
    let _ = SignerRecord::decode(data, &k.repo_id, &verifying);
    let _ = signer::SignerObject::decode(data, &k.repo_id, &verifying);
    let mut bytes = [signer::MAGIC.as_slice(), data].concat();
    let signature = k.signing.sign(&signer::signed_message(&k.repo_id, &bytes));
    bytes.extend_from_slice(&signature);
    let _ = SignerRecord::decode(&bytes, &k.repo_id, &verifying);
    let _ = signer::SignerObject::decode(&bytes, &k.repo_id, &verifying);
    let mut bytes = [signer::MAGIC_V2.as_slice(), data].concat();
    let signature = k.signing.sign(&signer::signed_message_v2(&k.repo_id, &bytes));
    bytes.extend_from_slice(&signature);
    if let Ok(record) = SignerRecord::decode(&bytes, &k.repo_id, &verifying) {
        let _ = record.domain_secret(&k.secret, &k.repo_id);
    }
    let _ = signer::SignerObject::decode(&bytes, &k.repo_id, &verifying);
    let mut bytes = [signer::REVOCATION_MAGIC.as_slice(), data].concat();
    let signature = k.signing.sign(&signer::revocation_signed_message(&k.repo_id, &bytes));
    bytes.extend_from_slice(&signature);
    let _ = signer::Revocation::decode(&bytes, &k.repo_id, &verifying);
    let _ = signer::SignerObject::decode(&bytes, &k.repo_id, &verifying);
}

/// `plans/<id>` (prune's decisions). Wrapped: the input is the body, correctly signed by the
/// repository key.
pub fn plan(data: &[u8]) {
    let k = keys();
    let verifying = k.signing.verifying_key();
    let _ = PlanRecord::decode(data, &k.repo_id, &verifying);
    let mut bytes = [plan::MAGIC.as_slice(), data].concat();
    let signature = k.signing.sign(&plan::signed_message(&k.repo_id, &bytes));
    bytes.extend_from_slice(&signature);
    let _ = PlanRecord::decode(&bytes, &k.repo_id, &verifying);
}

/// Valid inputs for each target (the shapes real objects have), to start the fuzzers from.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::format::config::ChunkerParams;
    use crate::format::index::IndexPack;
    use crate::format::to_postcard;
    use crate::format::tree::{Metadata, Node, NodeKind, Xattr};
    use serde_bytes::ByteBuf;

    let k = keys();
    let mut out = Vec::new();

    let entries = vec![
        PackEntry { id: Id([9; 32]), kind: BlobKind::Data, offset: pack::HEADER_LEN as u32, length: 40, raw_len: 12 },
        PackEntry {
            id: Id([8; 32]),
            kind: BlobKind::Tree,
            offset: pack::HEADER_LEN as u32 + 40,
            length: 60,
            raw_len: 500,
        },
    ];
    out.push(("pack", [&100u16.to_le_bytes()[..], &to_postcard(&entries)].concat()));

    for (kind, plain) in [(0u8, b"file content file content file content".to_vec()), (1u8, Tree::default().encode())] {
        for level in [3, -7] {
            let mut seed = vec![kind];
            seed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            seed.extend_from_slice(&pack::compress(&plain, level));
            out.push(("blob", seed));
        }
    }

    let file = IndexFile { packs: vec![IndexPack { id: Id([1; 32]), size: 4096, blobs: entries }] };
    out.push(("index", to_postcard(&file)));

    let meta = Metadata {
        mode: 0o644,
        uid: 1000,
        user: "me".into(),
        mtime: 1_700_000_000,
        nlink: 2,
        xattrs: vec![Xattr { name: ByteBuf::from(b"user.a".to_vec()), value: ByteBuf::from(b"v".to_vec()) }],
        ..Metadata::default()
    };
    let kinds = [
        NodeKind::Dir { subtree: Id([2; 32]) },
        NodeKind::File { size: 5, content: vec![Id([3; 32]), Id([4; 32])] },
        NodeKind::Symlink { target: ByteBuf::from(b"../x".to_vec()) },
        NodeKind::Fifo,
        NodeKind::CharDevice { rdev: 259 },
        NodeKind::BlockDevice { rdev: 2049 },
        NodeKind::Socket,
    ];
    let nodes = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Node { name: ByteBuf::from(vec![b'a' + i as u8]), kind, meta: meta.clone() })
        .collect();
    out.push(("tree", to_postcard(&Tree { nodes })));

    let snap = Snapshot {
        time_unix: 1_764_230_400,
        hostname: "host".into(),
        paths: vec![ByteBuf::from(b"/home/me".to_vec())],
        tags: vec!["daily".into()],
        tree: Id([3; 32]),
        ..Snapshot::default()
    };
    out.push(("snapshot", to_postcard(&snap)));

    let fast = crate::crypto::KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };
    if let Ok(file) = KeyFile::seal(k.repo_id, &[0; 64], b"fuzz", fast, 0, "h".into(), "u".into()) {
        out.push(("keyfile", to_postcard(&file)));
    }

    let conf = Config {
        version: 1,
        repo_id: k.repo_id,
        created_unix: 1_700_000_000,
        chunker: ChunkerParams::DEFAULT,
        pack_target: 8 << 20,
        compression_level: 3,
        public_key: k.secret.public().0,
        verify_key: k.signing.verifying_key().0,
        gear: crate::format::config::GearKeying::KeyedTable,
    };
    out.push(("config", to_postcard(&conf)));

    let record = SignerRecord::new(
        &crate::crypto::VerifyingKey([3; 32]),
        "laptop",
        5,
        vec!["laptop".into()],
        &crate::crypto::SymKey::from_bytes([4; 32]),
        &k.repo_id,
        &k.secret.public(),
    );
    out.push(("signer", to_postcard(&record)));
    let revocation = signer::Revocation { verify_key: [3; 32], revoked_unix: 9, kept_snapshots: vec![Id([5; 32])] };
    out.push(("signer", to_postcard(&revocation)));
    let condemn = PlanRecord::Condemn {
        nonce: [7; 16],
        created_unix: 11,
        packs: vec![Id([1; 32]), Id([2; 32])],
        superseded_index: vec![Id([3; 32])],
    };
    out.push(("plan", to_postcard(&condemn)));
    let wait = PlanRecord::Wait {
        plan: Id([4; 32]),
        listed_unix: 12,
        locks: vec![plan::LockSeen { session: Id([6; 32]), seq: 3 }],
    };
    out.push(("plan", to_postcard(&wait)));
    let key = crate::keys::WriteOnlyKey {
        repo_id: k.repo_id,
        public: k.secret.public(),
        repo_verify: k.signing.verifying_key(),
        domain: crate::keys::WriteDomain::Own(crate::crypto::SymKey::from_bytes([9; 32])),
        signing: crate::crypto::SigningKey::from_bytes([8; 32]),
    };
    out.push(("writeonlykey", key.to_text().as_bytes().to_vec()));
    out.push(("writeonlykey", key.encode()[8..key.encode().len() - 8].to_vec()));
    out.push(("anchors", to_postcard(&vec![Id([1; 32]), Id([2; 32])])));
    out.push(("anchors", vec![7; 32]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_empty_and_short_input() {
        for (name, target) in TARGETS {
            for len in 0..40 {
                target(&vec![0xa5; len]);
            }
            let _ = name;
        }
    }

    #[test]
    fn seeds_cover_every_target_and_decode() {
        let seeds = seeds();
        for (name, _) in TARGETS {
            assert!(seeds.iter().any(|(n, _)| n == name), "no seed for {name}");
        }
        for (name, seed) in &seeds {
            let (_, target) = TARGETS.iter().find(|(n, _)| n == name).unwrap();
            target(seed);
        }
        let tree_seed = &seeds.iter().find(|(n, _)| *n == "tree").unwrap().1;
        assert!(Tree::decode(&[crate::format::tree::MAGIC.as_slice(), tree_seed].concat()).is_ok());
    }
}
