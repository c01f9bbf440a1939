//! `signers/<id>`: a registered write-only key's verifying key, vouched for by the repository.
//!
//! Layout: `"CFSIGN01" | postcard(SignerRecord) | Ed25519 signature (64)` by the repository
//! signing key over `"coffer v1 signer" | repo id | magic | body`. Binding the repository id
//! means a record copied from another repository is rejected.
//!
//! A revocation (`coffer key remove` of a write-only key) is another object in `signers/`:
//! `"CFRVOK01" | postcard(Revocation) | Ed25519 signature (64)` by the repository signing key over
//! `"coffer v1 revocation" | repo id | magic | body`. It names the revoked verifying key and the
//! snapshots of that key that stay trusted (those in the repository when it was removed); every
//! other snapshot signed by that key is untrusted, whatever time it claims. Records are never
//! rewritten: a revocation overrides the registration it refers to.

use serde::{Deserialize, Serialize};

use super::{decode_signed, encode_signed, FormatError};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFSIGN01";
const CONTEXT: &[u8] = b"coffer v1 signer";
const WHAT: &str = "signer record";
pub const REVOCATION_MAGIC: &[u8; 8] = b"CFRVOK01";
const REVOCATION_CONTEXT: &[u8] = b"coffer v1 revocation";
const REVOCATION_WHAT: &str = "signer revocation";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub verify_key: [u8; 32],
    pub revoked_unix: i64,
    /// Snapshots of this key that remain trusted.
    pub kept_snapshots: Vec<Id>,
}

impl Revocation {
    pub fn encode(&self, repo_id: &Id, repo_signer: &SigningKey) -> Vec<u8> {
        encode_signed(self, REVOCATION_MAGIC, REVOCATION_CONTEXT, repo_id, repo_signer)
    }

    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<Revocation, FormatError> {
        decode_signed(bytes, REVOCATION_MAGIC, REVOCATION_CONTEXT, REVOCATION_WHAT, repo_id, repo_verify)
    }
}

pub(crate) fn revocation_signed_message(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [REVOCATION_CONTEXT, &repo_id.0[..], signed].concat()
}

/// One object of `signers/`.
pub enum SignerObject {
    Registration(SignerRecord),
    Revocation(Revocation),
}

impl SignerObject {
    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<SignerObject, FormatError> {
        if bytes.starts_with(REVOCATION_MAGIC) {
            Revocation::decode(bytes, repo_id, repo_verify).map(SignerObject::Revocation)
        } else {
            SignerRecord::decode(bytes, repo_id, repo_verify).map(SignerObject::Registration)
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignerRecord {
    pub verify_key: [u8; 32],
    pub label: String,
    pub created_unix: i64,
}

pub(crate) fn signed_message(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [CONTEXT, &repo_id.0[..], signed].concat()
}

impl SignerRecord {
    pub fn encode(&self, repo_id: &Id, repo_signer: &SigningKey) -> Vec<u8> {
        encode_signed(self, MAGIC, CONTEXT, repo_id, repo_signer)
    }

    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<SignerRecord, FormatError> {
        decode_signed(bytes, MAGIC, CONTEXT, WHAT, repo_id, repo_verify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binds_repository() {
        let repo = SigningKey::random();
        let record = SignerRecord { verify_key: [3; 32], label: "laptop".into(), created_unix: 5 };
        let bytes = record.encode(&Id([1; 32]), &repo);
        assert_eq!(SignerRecord::decode(&bytes, &Id([1; 32]), &repo.verifying_key()).unwrap(), record);
        assert!(SignerRecord::decode(&bytes, &Id([2; 32]), &repo.verifying_key()).is_err());
        assert!(SignerRecord::decode(&bytes, &Id([1; 32]), &SigningKey::random().verifying_key()).is_err());
    }

    #[test]
    fn revocation_round_trip_binds_repository_and_key() {
        let repo = SigningKey::random();
        let revocation = Revocation { verify_key: [4; 32], revoked_unix: 9, kept_snapshots: vec![Id([6; 32])] };
        let bytes = revocation.encode(&Id([1; 32]), &repo);
        assert!(matches!(
            SignerObject::decode(&bytes, &Id([1; 32]), &repo.verifying_key()),
            Ok(SignerObject::Revocation(r)) if r == revocation
        ));
        assert!(Revocation::decode(&bytes, &Id([2; 32]), &repo.verifying_key()).is_err());
        assert!(Revocation::decode(&bytes, &Id([1; 32]), &SigningKey::random().verifying_key()).is_err());
        // A registration's signature cannot be passed off as a revocation's, nor the reverse.
        let record = SignerRecord { verify_key: [4; 32], label: "x".into(), created_unix: 1 };
        let mut swapped = record.encode(&Id([1; 32]), &repo);
        swapped[..8].copy_from_slice(REVOCATION_MAGIC);
        assert!(SignerObject::decode(&swapped, &Id([1; 32]), &repo.verifying_key()).is_err());
        for i in (0..bytes.len()).step_by(5) {
            let mut bad = bytes.clone();
            bad[i] ^= 2;
            assert!(SignerObject::decode(&bad, &Id([1; 32]), &repo.verifying_key()).is_err(), "flip at {i}");
        }
    }
}
