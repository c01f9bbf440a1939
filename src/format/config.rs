//! `config`: the repository's public, signed description. Not secret; authenticated.
//!
//! Layout: `"CFCONF02" | postcard(Config) | Ed25519 signature (64)`; the signature is by the
//! repository signing key over `"coffer v1 config" | magic | body`. Format v1 (`"CFCONF01"`) has
//! the same fields but `gear`, and always means [`GearKeying::SeedXor`]; it is still read, and
//! written back unchanged, so existing repositories keep their chunk boundaries (and dedup). A client verifies it with the
//! verifying key it holds in its own key, and takes the X25519 public key from its own key too,
//! so a swapped `config` can neither be accepted nor redirect new backups to another key.

use serde::{Deserialize, Serialize};

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::{SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFCONF02";
pub const MAGIC_V1: &[u8; 8] = b"CFCONF01";
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

/// How the chunker's gear table is keyed; fixed at `init`, like the sizes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GearKeying {
    /// Format v1: fastcdc's public table with one 64-bit seed XORed into every entry.
    SeedXor,
    /// Format v2: all 256 entries drawn from a keyed PRF of the domain's `id_key`.
    KeyedTable,
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
    pub gear: GearKeying,
}

/// The body of a format v1 config: [`Config`] without `gear`.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    version: u32,
    repo_id: Id,
    created_unix: i64,
    chunker: ChunkerParams,
    pack_target: u32,
    compression_level: i32,
    public_key: [u8; 32],
    verify_key: [u8; 32],
}

pub(crate) fn signed_message(body_with_magic: &[u8]) -> Vec<u8> {
    [CONTEXT, body_with_magic].concat()
}

impl Config {
    pub fn encode(&self, signer: &SigningKey) -> Vec<u8> {
        let mut out = match self.gear {
            GearKeying::SeedXor => {
                let v1 = ConfigV1 {
                    version: self.version,
                    repo_id: self.repo_id,
                    created_unix: self.created_unix,
                    chunker: self.chunker,
                    pack_target: self.pack_target,
                    compression_level: self.compression_level,
                    public_key: self.public_key,
                    verify_key: self.verify_key,
                };
                [MAGIC_V1.as_slice(), &to_postcard(&v1)].concat()
            }
            GearKeying::KeyedTable => [MAGIC.as_slice(), &to_postcard(self)].concat(),
        };
        let signature = signer.sign(&signed_message(&out));
        out.extend_from_slice(&signature);
        out
    }

    /// Decodes without checking the signature: only to learn the repository id before a key
    /// is unlocked. Nothing from an unverified config may be trusted beyond that.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Config, FormatError> {
        let v1 = bytes.starts_with(MAGIC_V1);
        let rest = strip_magic(bytes, if v1 { MAGIC_V1 } else { MAGIC }, WHAT)?;
        if rest.len() < SIGNATURE_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        let body = &rest[..rest.len() - SIGNATURE_LEN];
        let config = if v1 {
            let old: ConfigV1 = from_postcard(body, WHAT)?;
            Config {
                version: old.version,
                repo_id: old.repo_id,
                created_unix: old.created_unix,
                chunker: old.chunker,
                pack_target: old.pack_target,
                compression_level: old.compression_level,
                public_key: old.public_key,
                verify_key: old.verify_key,
                gear: GearKeying::SeedXor,
            }
        } else {
            let config: Config = from_postcard(body, WHAT)?;
            if config.gear == GearKeying::SeedXor {
                // One meaning per byte string: a v1 config is only ever spelled as v1.
                return Err(FormatError::Malformed { what: WHAT, detail: "a v2 config with a v1 chunker".into() });
            }
            config
        };
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
            gear: GearKeying::KeyedTable,
        }
    }

    #[test]
    fn v1_configs_keep_their_spelling() {
        let signer = SigningKey::random();
        let config = Config { gear: GearKeying::SeedXor, ..sample(&signer) };
        let bytes = config.encode(&signer);
        assert!(bytes.starts_with(MAGIC_V1));
        assert_eq!(Config::decode(&bytes, &signer.verifying_key()).unwrap(), config);
        assert!(sample(&signer).encode(&signer).starts_with(MAGIC));
    }

    #[test]
    fn round_trip_and_tamper() {
        let signer = SigningKey::random();
        for config in [sample(&signer), Config { gear: GearKeying::SeedXor, ..sample(&signer) }] {
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
}
