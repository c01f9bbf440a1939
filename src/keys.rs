//! The keys a client holds, and what each can do (DESIGN §2).
//!
//! Full key = X25519 secret + `id_key` + `index_key` + the repository Ed25519 signing key;
//! it reads and writes everything. A write-only key (issue 3/6) replaces the X25519 secret by
//! the public key and carries its own signing key: it can deduplicate (ids, index) and add
//! packs and snapshots, but never decrypt a blob or snapshot. Both reduce to [`RepoKeys`].
//!
//! Full key material, as sealed in key files: `"CFFULK01" | x25519 secret (32) | id_key (32)
//! | index_key (32) | signing seed (32)`.

use zeroize::Zeroizing;

use crate::crypto::{IdKey, PublicKey, SecretKey, SigningKey, SymKey, VerifyingKey};
use crate::format::FormatError;

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

/// The keys of an open repository, whichever kind of key opened it.
#[derive(Clone)]
pub struct RepoKeys {
    pub public: PublicKey,
    /// Present only with the full key: needed to read any blob or snapshot.
    pub secret: Option<SecretKey>,
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
            secret: Some(key.secret),
            id_key: key.id_key,
            index_key: key.index_key,
            signer: key.signing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
