//! `signers/<id>`: a registered write-only key's verifying key, vouched for by the repository.
//!
//! Layout: `"CFSIGN01" | postcard(SignerRecord) | Ed25519 signature (64)` by the repository
//! signing key over `"coffer v1 signer" | repo id | magic | body`. Binding the repository id
//! means a record copied from another repository is rejected.
//!
//! Version 2 (issue 15): `"CFSIGN02" | postcard(SignerRecord) | signature` over
//! `"coffer v2 signer" | repo id | magic | body`. It adds the host names the key may claim
//! (a snapshot of it that names another host is not trusted) and the key's deduplication domain
//! secret wrapped to the repository's public key (`crypto::wrap_key`, aad = `"CFSIGN02" | repo id
//! | verifying key`), so the full key can verify and locate that key's blobs. Version-1 records
//! decode with no hosts (unbound) and no domain (the key shares the repository's).
//!
//! A revocation (`coffer key remove` of a write-only key) is another object in `signers/`:
//! `"CFRVOK01" | postcard(Revocation) | Ed25519 signature (64)` by the repository signing key over
//! `"coffer v1 revocation" | repo id | magic | body`. It names the revoked verifying key and the
//! snapshots of that key that stay trusted (those in the repository when it was removed); every
//! other snapshot signed by that key is untrusted, whatever time it claims. Records are never
//! rewritten: a revocation overrides the registration it refers to.

use serde::{Deserialize, Serialize};

use serde_bytes::ByteBuf;

use super::{decode_signed, encode_signed, FormatError};
use crate::crypto::{unwrap_key, wrap_key, PublicKey, SecretKey, SigningKey, SymKey, VerifyingKey, WRAPPED_KEY_LEN};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFSIGN01";
const CONTEXT: &[u8] = b"coffer v1 signer";
pub const MAGIC_V2: &[u8; 8] = b"CFSIGN02";
const CONTEXT_V2: &[u8] = b"coffer v2 signer";
/// Bounds on what a registration may bind, so a record stays small.
pub const MAX_HOSTS: usize = 64;
pub const MAX_HOST_LEN: usize = 253;
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
        } else if bytes.starts_with(MAGIC_V2) {
            SignerRecord::decode_v2(bytes, repo_id, repo_verify).map(SignerObject::Registration)
        } else {
            SignerRecord::decode(bytes, repo_id, repo_verify).map(SignerObject::Registration)
        }
    }
}

/// A version-1 registration, as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct SignerRecordV1 {
    verify_key: [u8; 32],
    label: String,
    created_unix: i64,
}

/// A registered write-only key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignerRecord {
    pub verify_key: [u8; 32],
    pub label: String,
    pub created_unix: i64,
    /// Host names the key may claim; empty only in version-1 records (unbound).
    pub hosts: Vec<String>,
    /// The key's domain secret wrapped to the repository public key; `None` in version-1
    /// records, whose key shares the repository's domain.
    pub wrapped_domain: Option<ByteBuf>,
}

pub(crate) fn signed_message(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [CONTEXT, &repo_id.0[..], signed].concat()
}

pub(crate) fn signed_message_v2(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [CONTEXT_V2, &repo_id.0[..], signed].concat()
}

/// Whether `host` may be bound to a key or claimed by a snapshot: a name that is safe as one
/// folder of the mount and in a terminal.
pub fn valid_host(host: &str) -> bool {
    host.len() <= MAX_HOST_LEN && host != "." && host != ".." && crate::safetext::check_label("host", host).is_none()
}

/// `text` with control characters escaped, for a terminal or a log line: labels and host names
/// come from the repository, which another key's holder may have written.
pub fn printable(text: &str) -> String {
    crate::safetext::terminal(text).into_owned()
}

fn domain_aad(repo_id: &Id, verify_key: &[u8; 32]) -> Vec<u8> {
    [MAGIC_V2.as_slice(), &repo_id.0[..], &verify_key[..]].concat()
}

impl SignerRecord {
    /// A version-2 registration, with the domain secret wrapped to the repository.
    pub fn new(
        verify_key: &VerifyingKey,
        label: &str,
        created_unix: i64,
        hosts: Vec<String>,
        domain_secret: &SymKey,
        repo_id: &Id,
        repo_public: &PublicKey,
    ) -> SignerRecord {
        let wrapped = wrap_key(repo_public, domain_secret, &domain_aad(repo_id, &verify_key.0));
        SignerRecord {
            verify_key: verify_key.0,
            label: label.to_string(),
            created_unix,
            hosts,
            wrapped_domain: Some(ByteBuf::from(wrapped.to_vec())),
        }
    }

    /// The key's domain secret (full key only); `None` for a version-1 key.
    pub fn domain_secret(&self, secret: &SecretKey, repo_id: &Id) -> Result<Option<SymKey>, FormatError> {
        let Some(wrapped) = &self.wrapped_domain else { return Ok(None) };
        unwrap_key(secret, wrapped, &domain_aad(repo_id, &self.verify_key)).map(Some).map_err(FormatError::crypto(WHAT))
    }

    /// Whether snapshots of this key may name `host`.
    pub fn may_claim(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == host)
    }

    pub fn encode(&self, repo_id: &Id, repo_signer: &SigningKey) -> Vec<u8> {
        encode_signed(self, MAGIC_V2, CONTEXT_V2, repo_id, repo_signer)
    }

    /// Decodes either version.
    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<SignerRecord, FormatError> {
        if bytes.starts_with(MAGIC_V2) {
            return SignerRecord::decode_v2(bytes, repo_id, repo_verify);
        }
        let v1: SignerRecordV1 = decode_signed(bytes, MAGIC, CONTEXT, WHAT, repo_id, repo_verify)?;
        Ok(SignerRecord {
            verify_key: v1.verify_key,
            label: v1.label,
            created_unix: v1.created_unix,
            hosts: Vec::new(),
            wrapped_domain: None,
        })
    }

    fn decode_v2(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<SignerRecord, FormatError> {
        let record: SignerRecord = decode_signed(bytes, MAGIC_V2, CONTEXT_V2, WHAT, repo_id, repo_verify)?;
        let malformed = |detail: &str| FormatError::Malformed { what: WHAT, detail: detail.into() };
        if record.hosts.is_empty() || record.hosts.len() > MAX_HOSTS {
            return Err(malformed("a version-2 key must be bound to 1 to 64 host names"));
        }
        if !record.hosts.iter().all(|h| valid_host(h)) {
            return Err(malformed("a bound host name is empty, too long, or holds '/' or a control character"));
        }
        if record.wrapped_domain.as_ref().map(|w| w.len()) != Some(WRAPPED_KEY_LEN) {
            return Err(malformed("its wrapped domain key has the wrong length"));
        }
        Ok(record)
    }

    /// Encodes as version 1 (tests of repositories made before version 2).
    pub fn encode_v1(&self, repo_id: &Id, repo_signer: &SigningKey) -> Vec<u8> {
        let v1 =
            SignerRecordV1 { verify_key: self.verify_key, label: self.label.clone(), created_unix: self.created_unix };
        encode_signed(&v1, MAGIC, CONTEXT, repo_id, repo_signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binds_repository() {
        let repo = SigningKey::random();
        let record = SignerRecord {
            verify_key: [3; 32],
            label: "laptop".into(),
            created_unix: 5,
            hosts: vec![],
            wrapped_domain: None,
        };
        let bytes = record.encode_v1(&Id([1; 32]), &repo);
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
        let record = SignerRecord {
            verify_key: [4; 32],
            label: "x".into(),
            created_unix: 1,
            hosts: vec![],
            wrapped_domain: None,
        };
        let mut swapped = record.encode_v1(&Id([1; 32]), &repo);
        swapped[..8].copy_from_slice(REVOCATION_MAGIC);
        assert!(SignerObject::decode(&swapped, &Id([1; 32]), &repo.verifying_key()).is_err());
        for i in (0..bytes.len()).step_by(5) {
            let mut bad = bytes.clone();
            bad[i] ^= 2;
            assert!(SignerObject::decode(&bad, &Id([1; 32]), &repo.verifying_key()).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn version_two_binds_hosts_and_wraps_the_domain_to_the_repository() {
        let repo = SigningKey::random();
        let secret = SecretKey::random();
        let domain = SymKey::random();
        let key = SigningKey::random().verifying_key();
        let record = SignerRecord::new(&key, "nas", 7, vec!["nas".into()], &domain, &Id([1; 32]), &secret.public());
        let bytes = record.encode(&Id([1; 32]), &repo);
        let decoded = SignerRecord::decode(&bytes, &Id([1; 32]), &repo.verifying_key()).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.may_claim("nas") && !decoded.may_claim("office-laptop"));
        let opened = decoded.domain_secret(&secret, &Id([1; 32])).unwrap().unwrap();
        assert_eq!(opened.as_bytes(), domain.as_bytes());
        assert!(decoded.domain_secret(&SecretKey::random(), &Id([1; 32])).is_err());
        // A v2 body under the v1 magic (or the reverse) fails its signature.
        let mut swapped = bytes.clone();
        swapped[..8].copy_from_slice(MAGIC);
        assert!(SignerRecord::decode(&swapped, &Id([1; 32]), &repo.verifying_key()).is_err());
        for bad in [vec![], vec!["a/b".to_string()], vec!["\x1b[31m".to_string()], vec![".".to_string()]] {
            let record = SignerRecord { hosts: bad, ..record.clone() };
            let bytes = record.encode(&Id([1; 32]), &repo);
            assert!(SignerRecord::decode(&bytes, &Id([1; 32]), &repo.verifying_key()).is_err());
        }
    }
}
