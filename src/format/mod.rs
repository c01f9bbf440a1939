//! Byte layouts of everything Coffer stores: pack files, index files, tree blobs, snapshots,
//! key files, signer records and the repository config. Pure encode/decode over bytes, no I/O;
//! every decoder accepts hostile input and returns `FormatError`, never panics (fuzzed).
//!
//! Structured bodies are encoded with postcard 1.x (a stable, documented wire format: varint
//! integers, length-prefixed byte strings, enums as a varint tag). Each object starts with an
//! 8-byte ASCII magic whose last two digits are the format version, so a later version can tell
//! which layout it reads. All multi-byte fixed-width integers outside postcard are little-endian.

pub mod config;
pub mod index;
pub mod keyfile;
pub mod pack;
pub mod plan;
pub mod signer;
pub mod snapshot;
pub mod tree;

use crate::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a Coffer {what}: wrong magic bytes")]
    BadMagic { what: &'static str },
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("{what} failed authentication: it was modified, or belongs to another repository or key")]
    Crypto { what: &'static str, source: CryptoError },
    #[error("{what} failed authentication: content does not match its id")]
    IdMismatch { what: &'static str },
}

impl FormatError {
    pub(crate) fn crypto(what: &'static str) -> impl FnOnce(CryptoError) -> FormatError {
        move |source| FormatError::Crypto { what, source }
    }
}

/// Splits `bytes` into an expected magic and the rest.
pub(crate) fn strip_magic<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &'static str) -> Result<&'a [u8], FormatError> {
    match bytes.strip_prefix(magic.as_slice()) {
        Some(rest) => Ok(rest),
        None if bytes.len() < magic.len() => Err(FormatError::Truncated { what }),
        None => Err(FormatError::BadMagic { what }),
    }
}

pub(crate) fn to_postcard<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard encoding of in-memory values cannot fail")
}

/// Decodes a postcard body, requiring that it uses every byte (trailing junk is corruption).
pub(crate) fn from_postcard<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, FormatError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| FormatError::Malformed { what, detail: e.to_string() })?;
    if !rest.is_empty() {
        return Err(FormatError::Malformed { what, detail: format!("{} trailing bytes", rest.len()) });
    }
    Ok(value)
}

/// A small record signed by the repository key: `magic || postcard body || Ed25519 signature`
/// over `context || repo id || magic || body` (signer registrations and revocations, prune
/// plans). The repository id in the signed message stops replay from another repository.
pub(crate) fn encode_signed<T: serde::Serialize>(
    value: &T,
    magic: &[u8; 8],
    context: &[u8],
    repo_id: &crate::id::Id,
    repo_signer: &crate::crypto::SigningKey,
) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&to_postcard(value));
    let signature = repo_signer.sign(&[context, &repo_id.0[..], &out].concat());
    out.extend_from_slice(&signature);
    out
}

/// Verifies and decodes what [`encode_signed`] wrote.
pub(crate) fn decode_signed<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    magic: &[u8; 8],
    context: &[u8],
    what: &'static str,
    repo_id: &crate::id::Id,
    repo_verify: &crate::crypto::VerifyingKey,
) -> Result<T, FormatError> {
    use crate::crypto::SIGNATURE_LEN;
    let rest = strip_magic(bytes, magic, what)?;
    if rest.len() < SIGNATURE_LEN {
        return Err(FormatError::Truncated { what });
    }
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    repo_verify.verify(&[context, &repo_id.0[..], signed].concat(), signature).map_err(FormatError::crypto(what))?;
    from_postcard(&rest[..rest.len() - SIGNATURE_LEN], what)
}
