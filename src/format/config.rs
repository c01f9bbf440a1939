//! `config`: the repository's public, signed description. Not secret; authenticated.
//!
//! Layout: `"CFCONF01" | postcard(Config) | Ed25519 signature (64)`; the signature is by the
//! repository signing key over `"coffer v1 config" | magic | body`. A client verifies it with the
//! verifying key it holds in its own key, and takes the X25519 public key from its own key too,
//! so a swapped `config` can neither be accepted nor redirect new backups to another key.

use serde::{Deserialize, Serialize};

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::{SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFCONF01";
const CONTEXT: &[u8] = b"coffer v1 config";
const WHAT: &str = "repository config";

/// FastCDC bounds in bytes; fixed at `init` because they decide chunk boundaries (and so dedup).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    pub const DEFAULT: ChunkerParams = ChunkerParams { min: 512 * 1024, avg: 2 * 1024 * 1024, max: 4 * 1024 * 1024 };

    /// The ranges FastCDC v2020 accepts (it asserts on others).
    pub fn is_valid(&self) -> bool {
        (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    pub repo_id: Id,
    pub created_unix: i64,
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target: u32,
    pub compression_level: i32,
    /// X25519 key that pack keys and snapshots are wrapped to.
    pub public_key: [u8; 32],
    /// Verifying half of the repository signing key.
    pub verify_key: [u8; 32],
}

pub(crate) fn signed_message(body_with_magic: &[u8]) -> Vec<u8> {
    [CONTEXT, body_with_magic].concat()
}

impl Config {
    pub fn encode(&self, signer: &SigningKey) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&to_postcard(self));
        let signature = signer.sign(&signed_message(&out));
        out.extend_from_slice(&signature);
        out
    }

    /// Decodes without checking the signature: only to learn the repository id before a key
    /// is unlocked. Nothing from an unverified config may be trusted beyond that.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Config, FormatError> {
        let rest = strip_magic(bytes, MAGIC, WHAT)?;
        if rest.len() < SIGNATURE_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        let config: Config = from_postcard(&rest[..rest.len() - SIGNATURE_LEN], WHAT)?;
        if config.version != 1 {
            return Err(FormatError::Malformed {
                what: WHAT,
                detail: format!("format version {} is not supported by this Coffer", config.version),
            });
        }
        if !config.chunker.is_valid() {
            return Err(FormatError::Malformed { what: WHAT, detail: "chunker sizes out of range".into() });
        }
        if !(1 << 16..=1 << 28).contains(&config.pack_target) || !(-7..=22).contains(&config.compression_level) {
            return Err(FormatError::Malformed { what: WHAT, detail: "pack size or compression out of range".into() });
        }
        Ok(config)
    }

    pub fn decode(bytes: &[u8], verify_key: &VerifyingKey) -> Result<Config, FormatError> {
        let config = Config::decode_unverified(bytes)?;
        let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        verify_key.verify(&signed_message(signed), signature).map_err(FormatError::crypto(WHAT))?;
        if config.verify_key != verify_key.0 {
            return Err(FormatError::Malformed { what: WHAT, detail: "signed by a different repository key".into() });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(signer: &SigningKey) -> Config {
        Config {
            version: 1,
            repo_id: Id([7; 32]),
            created_unix: 1_700_000_000,
            chunker: ChunkerParams::DEFAULT,
            pack_target: 16 << 20,
            compression_level: 3,
            public_key: [9; 32],
            verify_key: signer.verifying_key().0,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let signer = SigningKey::random();
        let config = sample(&signer);
        let bytes = config.encode(&signer);
        assert_eq!(Config::decode(&bytes, &signer.verifying_key()).unwrap(), config);
        assert!(Config::decode(&bytes, &SigningKey::random().verifying_key()).is_err());
        for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(Config::decode(&bad, &signer.verifying_key()).is_err(), "flip at {i}");
        }
        for len in 0..bytes.len() {
            assert!(Config::decode(&bytes[..len], &signer.verifying_key()).is_err());
        }
    }
}
