//! Every cryptographic operation Coffer performs, as pure functions over bytes: AEAD sealing,
//! wrapping a symmetric key to an X25519 public key, Ed25519 signatures, Argon2id passphrase
//! keys and keyed BLAKE3 blob ids. No I/O, no formats beyond the few bytes each operation adds.
//! Primitives come from RustCrypto, `ring` (AES-256-GCM, for its speed) and `blake3`; nothing
//! here implements a primitive.
//!
//! Sealed box layout (`SymKey::seal`): `nonce (12) | ciphertext | tag (16)`, random nonce.
//! Wrapped key layout (`wrap_key`): `ephemeral X25519 public (32) | sealed 32-byte key (60)`,
//! where the sealing key is HKDF-SHA256(ikm = X25519(ephemeral, recipient),
//! salt = ephemeral public || recipient public, info = "coffer v1 wrap").

use ed25519_dalek::Signer;
use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::{Zeroize, Zeroizing};

use crate::id::Id;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a key wrapped to a public key.
pub const WRAPPED_KEY_LEN: usize = 32 + 32 + SEAL_OVERHEAD;
pub const SIGNATURE_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed: the data was modified or the key is wrong")]
    Authentication,
    #[error("sealed data is too short ({0} bytes)")]
    TooShort(usize),
    #[error("signature is invalid")]
    BadSignature,
    #[error("invalid key material")]
    BadKey,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Fills a fresh array from the OS random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// A 256-bit AES-GCM key, zeroized on drop.
#[derive(Clone)]
pub struct SymKey(Zeroizing<[u8; 32]>);

impl SymKey {
    pub fn random() -> SymKey {
        SymKey(Zeroizing::new(random_bytes()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> SymKey {
        SymKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> LessSafeKey {
        // A 32-byte key is always valid for AES-256.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &*self.0).expect("AES-256 takes a 32-byte key"))
    }

    /// Encrypts and authenticates `plaintext`, binding `aad` (which is not stored).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_parts_into(&[plaintext], aad, &mut out);
        out
    }

    /// [`seal`](Self::seal) of the concatenated `parts` into `out`, replacing what it held:
    /// a caller sealing many blobs reuses one buffer instead of faulting in fresh memory for
    /// each, and needs no copy to join a prefix to its payload.
    pub fn seal_parts_into(&self, parts: &[&[u8]], aad: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve_exact(parts.iter().map(|p| p.len()).sum::<usize>() + SEAL_OVERHEAD);
        out.resize(NONCE_LEN, 0);
        parts.iter().for_each(|p| out.extend_from_slice(p));
        self.seal_in_place(out, aad);
    }

    /// Seals `buffer[NONCE_LEN..]` where it lies: fills in the nonce its first `NONCE_LEN`
    /// bytes were left for, encrypts the rest in place and appends the tag. A writer that
    /// builds the plaintext straight into the buffer saves a copy of every blob.
    pub fn seal_in_place(&self, buffer: &mut Vec<u8>, aad: &[u8]) {
        assert!(buffer.len() >= NONCE_LEN, "seal_in_place needs room for the nonce");
        let nonce = random_bytes::<NONCE_LEN>();
        buffer[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher()
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buffer[NONCE_LEN..])
            .expect("AES-GCM encryption fails only past 64 GiB in one message");
        buffer.extend_from_slice(tag.as_ref());
    }

    /// [`open`](Self::open) in place: decrypts within `sealed` and returns the plaintext's
    /// part of it, so a reader of many blobs reuses one buffer.
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8], aad: &[u8]) -> Result<&'a [u8], CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::TooShort(sealed.len()));
        }
        let (nonce, ct_and_tag) = sealed.split_at_mut(NONCE_LEN);
        let len = self.open_after_nonce(nonce, ct_and_tag, aad)?;
        Ok(&ct_and_tag[..len])
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::TooShort(sealed.len()));
        }
        let (nonce, ct_and_tag) = sealed.split_at(NONCE_LEN);
        let mut plain = ct_and_tag.to_vec();
        let len = self.open_after_nonce(nonce, &mut plain, aad)?;
        plain.truncate(len);
        Ok(plain)
    }

    /// Decrypts `ct_and_tag` in place under `nonce`; the plaintext's length.
    fn open_after_nonce(&self, nonce: &[u8], ct_and_tag: &mut [u8], aad: &[u8]) -> Result<usize, CryptoError> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::TooShort(NONCE_LEN))?;
        let plain =
            self.cipher().open_in_place(nonce, Aad::from(aad), ct_and_tag).map_err(|_| CryptoError::Authentication)?;
        Ok(plain.len())
    }
}

/// The keyed-BLAKE3 key that names blobs and seeds the chunker.
#[derive(Clone)]
pub struct IdKey(Zeroizing<[u8; 32]>);

impl IdKey {
    pub fn random() -> IdKey {
        IdKey(Zeroizing::new(random_bytes()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> IdKey {
        IdKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Id of a blob: keyed BLAKE3 of its plaintext, so the storage owner cannot confirm content.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.0, plaintext).as_bytes())
    }

    /// Seed for the chunker's gear table, derived so chunk boundaries reveal nothing without
    /// the key.
    pub fn chunker_seed(&self) -> u64 {
        let derived = blake3::derive_key("coffer v1 chunker seed", &self.0[..]);
        u64::from_le_bytes(derived[..8].try_into().expect("8 bytes"))
    }

    /// A whole gear table for the chunker (format v2), every entry drawn from a keyed PRF (the
    /// BLAKE3 XOF in key-derivation mode): unlike one seed XORed into a public table, it leaves
    /// no structure for chunk sizes to reveal.
    pub fn chunker_gear(&self) -> Box<[u64; 256]> {
        let mut bytes = [0u8; 256 * 8];
        let mut hasher = blake3::Hasher::new_derive_key("coffer v2 chunker gear table");
        hasher.update(&self.0[..]);
        hasher.finalize_xof().fill(&mut bytes);
        let mut table = Box::new([0u64; 256]);
        for (entry, chunk) in table.iter_mut().zip(bytes.chunks_exact(8)) {
            *entry = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        table
    }
}

/// X25519 secret key of a repository: only the full key holds it.
#[derive(Clone)]
pub struct SecretKey(x25519_dalek::StaticSecret);

/// X25519 public key of a repository: what packs and snapshots are encrypted to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey(pub [u8; 32]);

impl SecretKey {
    pub fn random() -> SecretKey {
        SecretKey(x25519_dalek::StaticSecret::from(random_bytes::<32>()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
}

fn wrap_kek(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> SymKey {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), shared);
    let mut okm = [0u8; 32];
    hk.expand(b"coffer v1 wrap", &mut okm).expect("32 bytes is a valid HKDF-SHA256 output length");
    let key = SymKey::from_bytes(okm);
    okm.zeroize();
    key
}

/// Wraps `key` so that only the holder of the secret key for `recipient` can unwrap it.
pub fn wrap_key(recipient: &PublicKey, key: &SymKey, aad: &[u8]) -> [u8; WRAPPED_KEY_LEN] {
    let ephemeral = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.0));
    let kek = wrap_kek(shared.as_bytes(), &ephemeral_public, &recipient.0);
    let sealed = kek.seal(key.as_bytes(), aad);
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..32].copy_from_slice(&ephemeral_public);
    out[32..].copy_from_slice(&sealed);
    out
}

pub fn unwrap_key(secret: &SecretKey, wrapped: &[u8], aad: &[u8]) -> Result<SymKey, CryptoError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::TooShort(wrapped.len()));
    }
    let ephemeral: [u8; 32] = wrapped[..32].try_into().expect("32 bytes");
    let shared = secret.0.diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral));
    if !shared.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let kek = wrap_kek(shared.as_bytes(), &ephemeral, &secret.public().0);
    let opened = Zeroizing::new(kek.open(&wrapped[32..], aad)?);
    let bytes: [u8; 32] = opened.as_slice().try_into().map_err(|_| CryptoError::BadKey)?;
    Ok(SymKey::from_bytes(bytes))
}

/// Ed25519 key that signs snapshots (and, for the repository key, config and signer records).
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VerifyingKey(pub [u8; 32]);

impl SigningKey {
    pub fn random() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&random_bytes()))
    }

    pub fn from_bytes(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

impl VerifyingKey {
    /// The id a signer is known by: BLAKE3 of its public key.
    pub fn id(&self) -> Id {
        Id::of_bytes(&self.0)
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::BadKey)?;
        let signature: [u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| CryptoError::BadSignature)?;
        // Strict: rejects weak keys and malleable signatures.
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature))
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// Argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// 32 MiB, 6 passes: the same memory-time product as 64 MiB × 3 (about 0.15 s here, well
    /// above OWASP's minimum for Argon2id) while the unlock's memory peak stays small: a
    /// backup run from cron should not need more memory to unlock than to back up.
    pub const DEFAULT: KdfParams = KdfParams { memory_kib: 32 * 1024, iterations: 6, parallelism: 1 };

    /// Refuse parameters a hostile key file could use to exhaust memory or time: anyone who
    /// can write to the store can plant a key file, and every unlock tries each one. At most
    /// 1 GiB and 4 GiB-passes of work (30x the default), about 15 s on a slow machine.
    pub fn is_sane(&self) -> bool {
        (8..=1024 * 1024).contains(&self.memory_kib)
            && (1..=64).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism)
            && u64::from(self.memory_kib) * u64::from(self.iterations) <= 4 * 1024 * 1024
    }
}

/// Derives the key that wraps a full key from a passphrase.
pub fn passphrase_key(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<SymKey, CryptoError> {
    if !params.is_sane() {
        return Err(CryptoError::Kdf("cost parameters out of range".into()));
    }
    let argon_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, &mut out[..]).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(SymKey::from_bytes(*out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = SymKey::random();
        let sealed = key.seal(b"hello", b"aad");
        assert_eq!(key.open(&sealed, b"aad").unwrap(), b"hello");
        assert_eq!(key.open(&sealed, b"other"), Err(CryptoError::Authentication));
        let mut bad = sealed.clone();
        bad[NONCE_LEN] ^= 1;
        assert_eq!(key.open(&bad, b"aad"), Err(CryptoError::Authentication));
        assert_eq!(SymKey::random().open(&sealed, b"aad"), Err(CryptoError::Authentication));
        assert!(matches!(key.open(&sealed[..10], b"aad"), Err(CryptoError::TooShort(10))));
    }

    #[test]
    fn opens_the_gcm_specification_test_vector() {
        // Test case 16 of McGrew and Viega's GCM specification: AES-256, 96-bit IV, with AAD.
        let hex = |s: &str| hex::decode(s).unwrap();
        let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308").try_into().unwrap();
        let sealed = [
            hex("cafebabefacedbaddecaf888"),
            hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"),
            hex("76fc6ece0f4e1768cddf8853bb2d551b"),
        ]
        .concat();
        let plaintext = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        assert_eq!(SymKey::from_bytes(key).open(&sealed, &aad).unwrap(), plaintext);
    }

    #[test]
    fn seal_in_place_matches_seal() {
        let key = SymKey::random();
        let mut buffer = vec![0xAA; NONCE_LEN];
        buffer.extend_from_slice(b"payload built in place");
        key.seal_in_place(&mut buffer, b"aad");
        assert_eq!(buffer.len(), NONCE_LEN + 22 + TAG_LEN);
        assert_eq!(key.open(&buffer, b"aad").unwrap(), b"payload built in place");
        assert_eq!(key.open_in_place(&mut buffer.clone(), b"aad").unwrap(), b"payload built in place");
    }

    #[test]
    fn wrap_unwrap() {
        let secret = SecretKey::random();
        let key = SymKey::random();
        let wrapped = wrap_key(&secret.public(), &key, b"ctx");
        assert_eq!(unwrap_key(&secret, &wrapped, b"ctx").unwrap().as_bytes(), key.as_bytes());
        assert!(unwrap_key(&SecretKey::random(), &wrapped, b"ctx").is_err());
        assert!(unwrap_key(&secret, &wrapped, b"other").is_err());
        assert!(unwrap_key(&secret, &wrapped[1..], b"ctx").is_err());
    }

    #[test]
    fn signatures() {
        let key = SigningKey::random();
        let sig = key.sign(b"msg");
        let vk = key.verifying_key();
        assert!(vk.verify(b"msg", &sig).is_ok());
        assert!(vk.verify(b"msh", &sig).is_err());
        assert!(SigningKey::random().verifying_key().verify(b"msg", &sig).is_err());
        assert!(vk.verify(b"msg", &sig[1..]).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = IdKey::random();
        let b = IdKey::random();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.chunker_seed(), b.chunker_seed());
    }

    #[test]
    fn passphrase_kdf_depends_on_salt_and_passphrase() {
        let p = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let k1 = passphrase_key(b"pw", &[1; 16], p).unwrap();
        assert_eq!(k1.as_bytes(), passphrase_key(b"pw", &[1; 16], p).unwrap().as_bytes());
        assert_ne!(k1.as_bytes(), passphrase_key(b"pw", &[2; 16], p).unwrap().as_bytes());
        assert_ne!(k1.as_bytes(), passphrase_key(b"px", &[1; 16], p).unwrap().as_bytes());
        assert!(passphrase_key(b"pw", &[1; 16], KdfParams { memory_kib: 1 << 30, ..p }).is_err());
    }

    #[test]
    fn hostile_kdf_costs_are_refused() {
        assert!(KdfParams::DEFAULT.is_sane());
        let huge = KdfParams { memory_kib: 4 * 1024 * 1024, iterations: 1, parallelism: 1 };
        assert!(!huge.is_sane());
        let long = KdfParams { memory_kib: 1024 * 1024, iterations: 64, parallelism: 1 };
        assert!(!long.is_sane());
        assert!(passphrase_key(b"pw", &[0; 32], huge).is_err());
    }
}
