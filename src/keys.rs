//! The keys a client holds, and what each can do (DESIGN §2).
//!
//! Full key = X25519 secret + `id_key` + `index_key` + the repository Ed25519 signing key;
//! it reads and writes everything. A write-only key (issue 3/6) replaces the X25519 secret by
//! the public key and carries its own signing key: it can deduplicate (ids, index) and add
//! packs and snapshots, but never decrypt a blob or snapshot. Both reduce to [`RepoKeys`].
//!
//! Full key material, as sealed in key files: `"CFFULK01" | x25519 secret (32) | id_key (32)
//! | index_key (32) | signing seed (32)`.
//!
//! Exported write-only key (`coffer key write-only`), 208 bytes:
//!
//! ```text
//! "CFWOKY01" (8) | repository id (32) | repository X25519 public key (32)
//! | repository Ed25519 verifying key (32) | id_key (32) | index_key (32)
//! | this key's own Ed25519 signing seed (32) | check (8): first 8 bytes of BLAKE3(all before)
//! ```
//!
//! Version 2 (`"CFWOKY02"`, text prefix `coffer-write-only-key-v2:`, issue 15) replaces the
//! repository's `id_key` and `index_key` by a *domain secret* of the key's own (32 bytes, at the
//! place `id_key` had; `index_key`'s place is left zero): the key names blobs and seals index
//! files with keys derived from it ([`DomainKeys`]), so it learns nothing of what other keys
//! wrote and cannot plant blobs under their ids. The repository learns the secret from the key's
//! registration, where it is wrapped to the repository's public key.
//!
//! The public key is what new packs and snapshots are encrypted to: a client takes it from here,
//! never from the store's `config`, so a swapped config cannot redirect backups. The verifying key
//! checks the config and the `signers/` records. The check bytes catch a truncated or mistyped
//! key before it could write blobs under wrong ids. In files and keychain entries it is stored as
//! text: [`WRITE_ONLY_TEXT_PREFIX`] followed by the lowercase hex of those bytes.

use zeroize::Zeroizing;

use crate::crypto::{IdKey, PublicKey, SecretKey, SigningKey, SymKey, VerifyingKey};
use crate::format::FormatError;
use crate::id::Id;

/// The keys of one deduplication domain: who names blobs with `id_key` and seals index files
/// and pack tables with `index_key`. The repository key's domain (`id` = its signer id) holds
/// what it and version-1 write-only keys wrote; each version-2 write-only key has its own
/// (`id` = that key's signer id).
#[derive(Clone)]
pub struct DomainKeys {
    pub id: Id,
    pub id_key: IdKey,
    pub index_key: SymKey,
}

impl DomainKeys {
    /// A version-2 write-only key's domain, from its secret.
    pub fn from_secret(id: Id, secret: &SymKey) -> DomainKeys {
        DomainKeys {
            id,
            id_key: IdKey::from_bytes(blake3::derive_key("coffer v2 domain id key", secret.as_bytes())),
            index_key: SymKey::from_bytes(blake3::derive_key("coffer v2 domain index key", secret.as_bytes())),
        }
    }
}

const FULL_MAGIC: &[u8; 8] = b"CFFULK01";
const FULL_LEN: usize = 8 + 4 * 32;

/// The complete repository key.
#[derive(Clone)]
pub struct FullKey {
    pub secret: SecretKey,
    pub id_key: IdKey,
    pub index_key: SymKey,
    pub signing: SigningKey,
}

impl FullKey {
    pub fn generate() -> FullKey {
        FullKey {
            secret: SecretKey::random(),
            id_key: IdKey::random(),
            index_key: SymKey::random(),
            signing: SigningKey::random(),
        }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(FULL_LEN));
        out.extend_from_slice(FULL_MAGIC);
        out.extend_from_slice(&self.secret.to_bytes()[..]);
        out.extend_from_slice(self.id_key.as_bytes());
        out.extend_from_slice(self.index_key.as_bytes());
        out.extend_from_slice(&self.signing.to_bytes()[..]);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<FullKey, FormatError> {
        const WHAT: &str = "key material";
        if bytes.len() != FULL_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        if &bytes[..8] != FULL_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let part = |i: usize| -> [u8; 32] { bytes[8 + 32 * i..8 + 32 * (i + 1)].try_into().expect("32 bytes") };
        Ok(FullKey {
            secret: SecretKey::from_bytes(part(0)),
            id_key: IdKey::from_bytes(part(1)),
            index_key: SymKey::from_bytes(part(2)),
            signing: SigningKey::from_bytes(part(3)),
        })
    }
}

const WRITE_ONLY_MAGIC: &[u8; 8] = b"CFWOKY01";
const WRITE_ONLY_MAGIC_V2: &[u8; 8] = b"CFWOKY02";
const WRITE_ONLY_BODY: usize = 8 + 6 * 32;
const WRITE_ONLY_LEN: usize = WRITE_ONLY_BODY + 8;
/// How an exported write-only key starts in its text form.
pub const WRITE_ONLY_TEXT_PREFIX: &str = "coffer-write-only-key-v2:";
const WRITE_ONLY_TEXT_PREFIX_V1: &str = "coffer-write-only-key-v1:";

/// How a write-only key names blobs and seals its index.
#[derive(Clone)]
pub enum WriteDomain {
    /// Version 1: the repository's own `id_key` and `index_key`, shared with the full key and
    /// every other version-1 key (see `docs/design.md`, "Confinement", for what that costs).
    Shared { id_key: IdKey, index_key: SymKey },
    /// Version 2: a secret of this key's own.
    Own(SymKey),
}

/// A key that can add snapshots to one repository but read nothing in it.
#[derive(Clone)]
pub struct WriteOnlyKey {
    pub repo_id: Id,
    pub public: PublicKey,
    pub repo_verify: VerifyingKey,
    pub domain: WriteDomain,
    /// This key's own signing key, registered in `signers/`.
    pub signing: SigningKey,
}

impl WriteOnlyKey {
    /// Makes a new write-only key, with a signing key and a deduplication domain of its own.
    pub fn derive(full: &FullKey, repo_id: Id) -> WriteOnlyKey {
        WriteOnlyKey {
            repo_id,
            public: full.secret.public(),
            repo_verify: full.signing.verifying_key(),
            domain: WriteDomain::Own(SymKey::random()),
            signing: SigningKey::random(),
        }
    }

    /// A version-1 key (the repository's shared id and index keys); for tests of old keys.
    pub fn derive_v1(full: &FullKey, repo_id: Id) -> WriteOnlyKey {
        WriteOnlyKey {
            domain: WriteDomain::Shared { id_key: full.id_key.clone(), index_key: full.index_key.clone() },
            ..WriteOnlyKey::derive(full, repo_id)
        }
    }

    /// The domain this key writes in.
    pub fn domain_keys(&self) -> DomainKeys {
        match &self.domain {
            WriteDomain::Shared { id_key, index_key } => {
                DomainKeys { id: self.repo_verify.id(), id_key: id_key.clone(), index_key: index_key.clone() }
            }
            WriteDomain::Own(secret) => DomainKeys::from_secret(self.signing.verifying_key().id(), secret),
        }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(WRITE_ONLY_LEN));
        let (magic, first, second) = match &self.domain {
            WriteDomain::Shared { id_key, index_key } => (WRITE_ONLY_MAGIC, *id_key.as_bytes(), *index_key.as_bytes()),
            WriteDomain::Own(secret) => (WRITE_ONLY_MAGIC_V2, *secret.as_bytes(), [0u8; 32]),
        };
        let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
        out.extend_from_slice(magic);
        out.extend_from_slice(&self.repo_id.0);
        out.extend_from_slice(&self.public.0);
        out.extend_from_slice(&self.repo_verify.0);
        out.extend_from_slice(&first[..]);
        out.extend_from_slice(&second[..]);
        out.extend_from_slice(&self.signing.to_bytes()[..]);
        let check = blake3::hash(&out);
        out.extend_from_slice(&check.as_bytes()[..8]);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<WriteOnlyKey, FormatError> {
        const WHAT: &str = "write-only key";
        if bytes.len() < 8 || (&bytes[..8] != WRITE_ONLY_MAGIC && &bytes[..8] != WRITE_ONLY_MAGIC_V2) {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        if bytes.len() != WRITE_ONLY_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        if blake3::hash(&bytes[..WRITE_ONLY_BODY]).as_bytes()[..8] != bytes[WRITE_ONLY_BODY..] {
            return Err(FormatError::Malformed {
                what: WHAT,
                detail: "its check bytes do not match (damaged?)".into(),
            });
        }
        let part = |i: usize| -> [u8; 32] { bytes[8 + 32 * i..8 + 32 * (i + 1)].try_into().expect("32 bytes") };
        let domain = if &bytes[..8] == WRITE_ONLY_MAGIC {
            WriteDomain::Shared { id_key: IdKey::from_bytes(part(3)), index_key: SymKey::from_bytes(part(4)) }
        } else {
            WriteDomain::Own(SymKey::from_bytes(part(3)))
        };
        Ok(WriteOnlyKey {
            repo_id: Id(part(0)),
            public: PublicKey(part(1)),
            repo_verify: VerifyingKey(part(2)),
            domain,
            signing: SigningKey::from_bytes(part(5)),
        })
    }

    /// The text form kept in files and keychain entries.
    pub fn to_text(&self) -> Zeroizing<String> {
        let bytes = self.encode();
        let prefix = match self.domain {
            WriteDomain::Shared { .. } => WRITE_ONLY_TEXT_PREFIX_V1,
            WriteDomain::Own(_) => WRITE_ONLY_TEXT_PREFIX,
        };
        let mut text = Zeroizing::new(String::with_capacity(prefix.len() + 2 * WRITE_ONLY_LEN));
        text.push_str(prefix);
        text.push_str(&Zeroizing::new(hex::encode(&bytes[..])));
        text
    }

    /// Whether `text` claims to be a write-only key (its prefix), whatever its validity.
    pub fn looks_like(text: &[u8]) -> bool {
        let text_start = text.trim_ascii_start();
        [WRITE_ONLY_TEXT_PREFIX, WRITE_ONLY_TEXT_PREFIX_V1].iter().any(|p| text_start.starts_with(p.as_bytes()))
            || text.starts_with(WRITE_ONLY_MAGIC)
            || text.starts_with(WRITE_ONLY_MAGIC_V2)
    }

    /// Reads the text form, or the raw bytes.
    pub fn from_text(text: &[u8]) -> Result<WriteOnlyKey, FormatError> {
        if text.starts_with(WRITE_ONLY_MAGIC) || text.starts_with(WRITE_ONLY_MAGIC_V2) {
            return WriteOnlyKey::decode(text);
        }
        let text = text.trim_ascii();
        let hex_part = text
            .strip_prefix(WRITE_ONLY_TEXT_PREFIX.as_bytes())
            .or_else(|| text.strip_prefix(WRITE_ONLY_TEXT_PREFIX_V1.as_bytes()))
            .ok_or(FormatError::BadMagic { what: "write-only key" })?;
        let bytes = Zeroizing::new(hex::decode(hex_part).map_err(|_| FormatError::Malformed {
            what: "write-only key",
            detail: "not hexadecimal after its prefix".into(),
        })?);
        WriteOnlyKey::decode(&bytes)
    }
}

impl From<WriteOnlyKey> for RepoKeys {
    fn from(key: WriteOnlyKey) -> RepoKeys {
        let domain = key.domain_keys();
        RepoKeys {
            public: key.public,
            secret: None,
            domain: domain.id,
            id_key: domain.id_key,
            index_key: domain.index_key,
            signer: key.signing,
            repo_verify: key.repo_verify,
        }
    }
}

/// The keys of an open repository, whichever kind of key opened it.
#[derive(Clone)]
pub struct RepoKeys {
    pub public: PublicKey,
    /// Present only with the full key: needed to read any blob or snapshot.
    pub secret: Option<SecretKey>,
    /// The deduplication domain this client writes in, and its keys: new blobs are named with
    /// `id_key`, new index files and pack tables sealed with `index_key`.
    pub domain: Id,
    pub id_key: IdKey,
    pub index_key: SymKey,
    /// Signs the snapshots this client writes.
    pub signer: SigningKey,
    /// The repository's verifying key: vouches for config and write-only signers.
    pub repo_verify: VerifyingKey,
}

impl From<FullKey> for RepoKeys {
    fn from(key: FullKey) -> RepoKeys {
        RepoKeys {
            public: key.secret.public(),
            repo_verify: key.signing.verifying_key(),
            domain: key.signing.verifying_key().id(),
            secret: Some(key.secret),
            id_key: key.id_key,
            index_key: key.index_key,
            signer: key.signing,
        }
    }
}

impl RepoKeys {
    /// The domain this client writes in.
    pub fn write_domain(&self) -> DomainKeys {
        DomainKeys { id: self.domain, id_key: self.id_key.clone(), index_key: self.index_key.clone() }
    }

    /// The full key, when this is one (the signer is then the repository signing key).
    pub fn full_key(&self) -> Option<FullKey> {
        Some(FullKey {
            secret: self.secret.clone()?,
            id_key: self.id_key.clone(),
            index_key: self.index_key.clone(),
            signing: self.signer.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(a: &WriteOnlyKey, b: &WriteOnlyKey) -> bool {
        a.repo_id == b.repo_id
            && a.public == b.public
            && a.repo_verify == b.repo_verify
            && a.domain_keys().id == b.domain_keys().id
            && a.domain_keys().id_key.as_bytes() == b.domain_keys().id_key.as_bytes()
            && a.domain_keys().index_key.as_bytes() == b.domain_keys().index_key.as_bytes()
            && matches!(
                (&a.domain, &b.domain),
                (WriteDomain::Own(_), WriteDomain::Own(_)) | (WriteDomain::Shared { .. }, WriteDomain::Shared { .. })
            )
            && a.signing.verifying_key() == b.signing.verifying_key()
    }

    #[test]
    fn write_only_key_holds_no_secret_key_and_its_own_signer() {
        let full = FullKey::generate();
        let key = WriteOnlyKey::derive(&full, Id([5; 32]));
        assert_eq!(key.public, full.secret.public());
        assert_eq!(key.repo_verify, full.signing.verifying_key());
        assert_ne!(key.signing.verifying_key(), full.signing.verifying_key());
        let encoded = key.encode();
        assert_eq!(encoded.len(), WRITE_ONLY_LEN);
        for secret in [&full.secret.to_bytes()[..], &full.signing.to_bytes()[..]] {
            assert!(!encoded.windows(32).any(|w| w == secret), "a full-key secret is in the write-only key");
        }
        // A version-2 key holds neither of the repository's id and index keys.
        for secret in [full.id_key.as_bytes(), full.index_key.as_bytes()] {
            assert!(!encoded.windows(32).any(|w| w == secret), "a repository domain key is in the write-only key");
        }
        let keys = RepoKeys::from(key.clone());
        assert!(keys.secret.is_none() && keys.full_key().is_none());
        assert_eq!(keys.domain, key.signing.verifying_key().id());
        assert_ne!(keys.id_key.as_bytes(), full.id_key.as_bytes());
        let old = RepoKeys::from(WriteOnlyKey::derive_v1(&full, Id([5; 32])));
        assert_eq!(old.domain, full.signing.verifying_key().id());
        assert_eq!(old.id_key.as_bytes(), full.id_key.as_bytes());
    }

    #[test]
    fn key_material_is_zeroized_on_drop() {
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        // x25519-dalek's `zeroize(drop)` zeroizes in its Drop without the marker trait.
        fn zeroize_with_drop<T: zeroize::Zeroize>() -> bool {
            std::mem::needs_drop::<T>()
        }
        // What SecretKey and SigningKey wrap, and what SymKey and IdKey hold.
        assert!(zeroize_with_drop::<x25519_dalek::StaticSecret>());
        zeroized_on_drop::<ed25519_dalek::SigningKey>();
        zeroized_on_drop::<Zeroizing<[u8; 32]>>();
        zeroized_on_drop::<Zeroizing<Vec<u8>>>();
    }

    proptest! {
        #[test]
        fn write_only_round_trip(parts in proptest::array::uniform6(any::<[u8; 32]>()), own in any::<bool>()) {
            let domain = if own {
                WriteDomain::Own(SymKey::from_bytes(parts[3]))
            } else {
                WriteDomain::Shared { id_key: IdKey::from_bytes(parts[3]), index_key: SymKey::from_bytes(parts[4]) }
            };
            let key = WriteOnlyKey {
                repo_id: Id(parts[0]),
                public: PublicKey(parts[1]),
                repo_verify: VerifyingKey(parts[2]),
                domain,
                signing: SigningKey::from_bytes(parts[5]),
            };
            prop_assert!(same(&WriteOnlyKey::decode(&key.encode()).unwrap(), &key));
            prop_assert!(same(&WriteOnlyKey::from_text(key.to_text().as_bytes()).unwrap(), &key));
            prop_assert!(same(&WriteOnlyKey::from_text(&key.encode()).unwrap(), &key));
            let text = format!("  {}\n", key.to_text().as_str());
            prop_assert!(WriteOnlyKey::looks_like(text.as_bytes()));
            prop_assert!(same(&WriteOnlyKey::from_text(text.as_bytes()).unwrap(), &key));
        }

        #[test]
        fn write_only_damage_is_caught(flip in 0usize..WRITE_ONLY_LEN, bit in 0u8..8, cut in 0usize..WRITE_ONLY_LEN) {
            let key = WriteOnlyKey::derive(&FullKey::generate(), Id([1; 32]));
            let mut bytes = key.encode().to_vec();
            bytes[flip] ^= 1 << bit;
            prop_assert!(WriteOnlyKey::decode(&bytes).is_err());
            prop_assert!(WriteOnlyKey::decode(&key.encode()[..cut]).is_err());
            prop_assert!(WriteOnlyKey::from_text(b"correct horse battery staple").is_err());
            prop_assert!(!WriteOnlyKey::looks_like(b"correct horse battery staple"));
        }
    }

    #[test]
    fn full_key_round_trip() {
        let key = FullKey::generate();
        let decoded = FullKey::decode(&key.encode()).unwrap();
        assert_eq!(decoded.secret.public(), key.secret.public());
        assert_eq!(decoded.id_key.as_bytes(), key.id_key.as_bytes());
        assert_eq!(decoded.index_key.as_bytes(), key.index_key.as_bytes());
        assert_eq!(decoded.signing.verifying_key(), key.signing.verifying_key());
        assert!(FullKey::decode(&key.encode()[1..]).is_err());
    }
}
