//! `keys/<id>`: the full repository key, wrapped by a passphrase.
//!
//! Layout: `"CFKEYF01" | postcard(KeyFile)`. `sealed_key` is AES-256-GCM (sealed box, see
//! `crypto`) under Argon2id(passphrase, salt, kdf) with associated data `magic | repo id`, over
//! the key material (`keys::FullKey` encoding). Changing a passphrase rewrites only this file;
//! several files may wrap the same key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::{passphrase_key, random_bytes, KdfParams};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFKEYF01";
const WHAT: &str = "key file";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub repo_id: Id,
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub created_unix: i64,
    pub hostname: String,
    pub username: String,
    #[serde(with = "serde_bytes")]
    pub sealed_key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("wrong passphrase for this key")]
    WrongPassphrase,
}

fn aad(repo_id: &Id) -> Vec<u8> {
    [MAGIC.as_slice(), &repo_id.0[..]].concat()
}

impl KeyFile {
    /// Wraps `material` under `passphrase`.
    pub fn seal(
        repo_id: Id,
        material: &[u8],
        passphrase: &[u8],
        kdf: KdfParams,
        created_unix: i64,
        hostname: String,
        username: String,
    ) -> Result<KeyFile, FormatError> {
        let salt = random_bytes::<16>();
        let key = passphrase_key(passphrase, &salt, kdf).map_err(FormatError::crypto(WHAT))?;
        Ok(KeyFile {
            repo_id,
            kdf,
            salt,
            created_unix,
            hostname,
            username,
            sealed_key: key.seal(material, &aad(&repo_id)),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        [MAGIC.as_slice(), &to_postcard(self)].concat()
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, FormatError> {
        let file: KeyFile = from_postcard(strip_magic(bytes, MAGIC, WHAT)?, WHAT)?;
        if !file.kdf.is_sane() {
            return Err(FormatError::Malformed { what: WHAT, detail: "KDF parameters out of range".into() });
        }
        Ok(file)
    }

    /// Unwraps the key material. A wrong passphrase and a modified file are indistinguishable
    /// to AES-GCM; both say "wrong passphrase" since that is by far the likelier cause.
    pub fn open(&self, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        let key = passphrase_key(passphrase, &self.salt, self.kdf).map_err(FormatError::crypto(WHAT))?;
        key.open(&self.sealed_key, &aad(&self.repo_id)).map(Zeroizing::new).map_err(|_| KeyFileError::WrongPassphrase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    #[test]
    fn wrong_passphrase_and_other_repo_fail() {
        let file = KeyFile::seal(Id([1; 32]), b"material", b"pw", FAST, 0, "h".into(), "u".into()).unwrap();
        let decoded = KeyFile::decode(&file.encode()).unwrap();
        assert_eq!(decoded, file);
        assert_eq!(decoded.open(b"pw").unwrap().as_slice(), b"material");
        assert!(matches!(decoded.open(b"px"), Err(KeyFileError::WrongPassphrase)));
        let moved = KeyFile { repo_id: Id([2; 32]), ..decoded };
        assert!(moved.open(b"pw").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(material in proptest::collection::vec(any::<u8>(), 0..200), host in ".{0,20}") {
            let file = KeyFile::seal(Id([4; 32]), &material, b"secret", FAST, 42, host, "me".into()).unwrap();
            let decoded = KeyFile::decode(&file.encode()).unwrap();
            let opened = decoded.open(b"secret").unwrap();
            prop_assert_eq!(opened.as_slice(), material.as_slice());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyFile::decode(&bytes);
            let _ = KeyFile::decode(&[MAGIC.as_slice(), &bytes].concat());
        }
    }
}
