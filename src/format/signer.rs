//! `signers/<id>`: a registered write-only key's verifying key, vouched for by the repository.
//!
//! Layout: `"CFSIGN01" | postcard(SignerRecord) | Ed25519 signature (64)` by the repository
//! signing key over `"coffer v1 signer" | repo id | magic | body`. Binding the repository id
//! means a record copied from another repository is rejected.

use serde::{Deserialize, Serialize};

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::{SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFSIGN01";
const CONTEXT: &[u8] = b"coffer v1 signer";
const WHAT: &str = "signer record";

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
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&to_postcard(self));
        let signature = repo_signer.sign(&signed_message(repo_id, &out));
        out.extend_from_slice(&signature);
        out
    }

    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<SignerRecord, FormatError> {
        let rest = strip_magic(bytes, MAGIC, WHAT)?;
        if rest.len() < SIGNATURE_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        repo_verify.verify(&signed_message(repo_id, signed), signature).map_err(FormatError::crypto(WHAT))?;
        from_postcard(&rest[..rest.len() - SIGNATURE_LEN], WHAT)
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
}
