//! `snapshots/<id>`: one backup's description, encrypted to the repository's public key (so a
//! write-only key can write but not read it) and signed by the key that wrote it.
//!
//! Layout:
//! ```text
//! "CFSNAP01" (8) | signer id (32, BLAKE3 of the Ed25519 verifying key)
//! | wrapped body key (92, crypto::wrap_key, aad = magic)
//! | sealed box of postcard(Snapshot) under the body key, aad = magic | repo id | signer id
//! | Ed25519 signature (64) over "coffer v1 snapshot" | repo id | every byte before it
//! ```
//! Binding the repository id means a snapshot replayed from another repository is rejected;
//! the signature is checked before anything is decrypted.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::{
    unwrap_key, wrap_key, PublicKey, SecretKey, SigningKey, SymKey, VerifyingKey, SIGNATURE_LEN, WRAPPED_KEY_LEN,
};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFSNAP01";
const CONTEXT: &[u8] = b"coffer v1 snapshot";
const WHAT: &str = "snapshot";
pub(crate) const BODY_START: usize = 8 + 32 + WRAPPED_KEY_LEN;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub other_nodes: u64,
    pub bytes_read: u64,
    /// Sum of the sizes of all files in the snapshot.
    pub total_bytes: u64,
    /// Plaintext bytes of the blobs this backup added.
    pub raw_added: u64,
    /// The same blobs as stored (compressed and encrypted).
    pub bytes_added: u64,
    pub packs_added: u64,
    pub errors: u64,
    pub start_unix: i64,
    pub end_unix: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub time_unix: i64,
    pub time_nsec: u32,
    pub hostname: String,
    pub username: String,
    /// Absolute source paths as backed up (raw bytes: paths need not be UTF-8).
    pub paths: Vec<ByteBuf>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    /// Root tree: holds the source paths' components down to each source.
    pub tree: Id,
    /// True when some files could not be read.
    pub incomplete: bool,
    pub program: String,
    pub summary: Summary,
    /// Named additions of later versions that this version passes over (forward room
    /// without a new magic; v1 writes none).
    pub extensions: Vec<(String, ByteBuf)>,
}

/// Extension: the ids of the `signers/` objects the writer saw (postcard `Vec<Id>`); see
/// `repo::anchors`.
pub const SIGNERS_SEEN: &str = "coffer.signers-seen";
/// Extension: the id of the snapshot the same client wrote before (32 bytes).
pub const PREVIOUS: &str = "coffer.previous";
/// Extension of a copy: the key that signed the original in its repository and how that
/// repository named it (postcard `(Id, String)`).
pub const COPIED_SIGNER: &str = "coffer.copied-signer";
/// Extension of a snapshot `coffer tag` rewrote: the id of the snapshot it replaced (32 bytes).
pub const RETAGGED_FROM: &str = "coffer.retagged-from";
/// A snapshot naming more `signers/` objects than this is not believed about any of them.
pub const MAX_SIGNERS_SEEN: usize = 4096;

pub(crate) fn signed_message(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [CONTEXT, &repo_id.0[..], signed].concat()
}

pub(crate) fn body_aad(repo_id: &Id, signer: &[u8]) -> Vec<u8> {
    [MAGIC.as_slice(), &repo_id.0[..], signer].concat()
}

impl Snapshot {
    fn extension(&self, name: &str) -> Option<&[u8]> {
        self.extensions.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_slice())
    }

    /// The `signers/` objects this snapshot says existed when it was written (empty when it
    /// names none, or the record is malformed or oversized).
    pub fn signers_seen(&self) -> Vec<Id> {
        self.extension(SIGNERS_SEEN)
            .and_then(|bytes| from_postcard::<Vec<Id>>(bytes, "signers-seen record").ok())
            .filter(|ids| ids.len() <= MAX_SIGNERS_SEEN)
            .unwrap_or_default()
    }

    /// For a copy, who signed the original (key id, and how its repository named the key).
    pub fn copied_signer(&self) -> Option<(Id, String)> {
        self.extension(COPIED_SIGNER).and_then(|bytes| from_postcard::<(Id, String)>(bytes, "copied signer").ok())
    }

    /// The snapshot its writer wrote before it, if it named one.
    pub fn previous(&self) -> Option<Id> {
        self.extension(PREVIOUS).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id)
    }

    pub fn encode(&self, repo_id: &Id, recipient: &PublicKey, signer: &SigningKey) -> Vec<u8> {
        let signer_id = signer.verifying_key().id();
        let key = SymKey::random();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&signer_id.0);
        out.extend_from_slice(&wrap_key(recipient, &key, MAGIC));
        out.extend_from_slice(&key.seal(&to_postcard(self), &body_aad(repo_id, &signer_id.0)));
        let signature = signer.sign(&signed_message(repo_id, &out));
        out.extend_from_slice(&signature);
        out
    }

    /// The id of the key that claims to have signed `bytes` (unverified).
    pub fn signer_id(bytes: &[u8]) -> Result<Id, FormatError> {
        let rest = strip_magic(bytes, MAGIC, WHAT)?;
        if bytes.len() < BODY_START + SIGNATURE_LEN {
            return Err(FormatError::Truncated { what: WHAT });
        }
        Ok(Id(rest[..32].try_into().expect("32 bytes")))
    }

    /// Checks the signature with the claimed signer's verifying key.
    pub fn verify(bytes: &[u8], repo_id: &Id, signer: &VerifyingKey) -> Result<(), FormatError> {
        if Snapshot::signer_id(bytes)? != signer.id() {
            return Err(FormatError::Malformed { what: WHAT, detail: "signed by another key".into() });
        }
        let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        signer.verify(&signed_message(repo_id, signed), signature).map_err(FormatError::crypto(WHAT))
    }

    /// Verifies, then decrypts. Needs the repository's secret key.
    pub fn open(
        bytes: &[u8],
        repo_id: &Id,
        signer: &VerifyingKey,
        secret: &SecretKey,
    ) -> Result<Snapshot, FormatError> {
        Snapshot::verify(bytes, repo_id, signer)?;
        let key = unwrap_key(secret, &bytes[40..BODY_START], MAGIC).map_err(FormatError::crypto(WHAT))?;
        let sealed = &bytes[BODY_START..bytes.len() - SIGNATURE_LEN];
        let plain = key.open(sealed, &body_aad(repo_id, &bytes[8..40])).map_err(FormatError::crypto(WHAT))?;
        from_postcard(&plain, WHAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Snapshot {
        Snapshot {
            time_unix: 1_764_230_400,
            time_nsec: 5,
            hostname: "host".into(),
            paths: vec![ByteBuf::from(b"/home/\xffme".to_vec())],
            tags: vec!["daily".into()],
            tree: Id([3; 32]),
            ..Snapshot::default()
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let secret = SecretKey::random();
        let signer = SigningKey::random();
        let repo = Id([1; 32]);
        let bytes = sample().encode(&repo, &secret.public(), &signer);
        let vk = signer.verifying_key();
        assert_eq!(Snapshot::signer_id(&bytes).unwrap(), vk.id());
        assert_eq!(Snapshot::open(&bytes, &repo, &vk, &secret).unwrap(), sample());
        // Replayed into another repository.
        assert!(Snapshot::open(&bytes, &Id([2; 32]), &vk, &secret).is_err());
        // Forged by someone with storage access only: their own key is not the claimed signer.
        let forger = SigningKey::random();
        let forged = sample().encode(&repo, &secret.public(), &forger);
        assert!(Snapshot::verify(&forged, &repo, &vk).is_err());
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(Snapshot::open(&bad, &repo, &vk, &secret).is_err(), "flip at {i}");
        }
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let secret = SecretKey::random();
            let vk = SigningKey::random().verifying_key();
            let _ = Snapshot::open(&bytes, &Id([0; 32]), &vk, &secret);
            let _ = Snapshot::open(&[MAGIC.as_slice(), &bytes].concat(), &Id([0; 32]), &vk, &secret);
        }
    }
}
