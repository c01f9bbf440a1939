//! `data/<xx>/<id>`: pack files, the unit of upload. A pack holds blobs of one kind (data or
//! tree), each compressed and then encrypted under a random per-pack key that is wrapped to the
//! repository's X25519 public key: a write-only key can make packs but never read one.
//!
//! Layout:
//! ```text
//! header   "CFPACK01" (8) | wrapped pack key (92, crypto::wrap_key, aad = magic)
//! blobs    sealed box per blob (nonce 12 | ciphertext | tag 16) under the pack key,
//!          aad = "coffer v1 blob" | blob id (32) | kind (1);
//!          plaintext = codec (1: 0 stored, 1 zstd) | payload
//! trailer  sealed box of postcard(Vec<PackEntry>) under the index key,
//!          aad = magic | "table" | header (100)
//!          | table length (u32 LE) | "CFPKEND1" (8)
//! ```
//! The table is sealed with the `index_key` (which write-only keys hold), not the pack key, so
//! any client can rebuild the index entries of a pack whose index file was never written (a
//! backup killed between upload and index) without being able to read its blobs. It reveals
//! what index files reveal anyway; binding the header ties it to its pack.
//! The pack id is BLAKE3 of all its bytes. Blob offsets and lengths in `PackEntry` address
//! the sealed box, so a reader fetches one blob with one ranged read (plus the header once per
//! pack). Every decoded blob is checked against its keyed-BLAKE3 id.

use serde::{Deserialize, Serialize};

use super::{from_postcard, FormatError};
use crate::crypto::{
    unwrap_key, wrap_key, IdKey, PublicKey, SecretKey, SymKey, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN, WRAPPED_KEY_LEN,
};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFPACK01";
pub const END_MAGIC: &[u8; 8] = b"CFPKEND1";
pub const HEADER_LEN: usize = 8 + WRAPPED_KEY_LEN;
/// Table length plus end magic.
pub const TRAILER_FIXED_LEN: usize = 4 + 8;
/// No blob's plaintext may exceed this; bounds memory when decoding hostile input.
pub const MAX_BLOB_LEN: u32 = 256 << 20;
const WHAT: &str = "pack";
const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    fn tag(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// Where a blob sits in its pack.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    /// Offset of the sealed box from the start of the pack.
    pub offset: u32,
    /// Length of the sealed box.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

pub(crate) fn blob_aad(id: &Id, kind: BlobKind) -> [u8; 14 + 32 + 1] {
    let mut aad = [0u8; 47];
    aad[..14].copy_from_slice(b"coffer v1 blob");
    aad[14..46].copy_from_slice(&id.0);
    aad[46] = kind.tag();
    aad
}

pub(crate) fn table_aad(header: &[u8]) -> Vec<u8> {
    [MAGIC.as_slice(), b"table", header].concat()
}

/// Inputs below this share one compression context per thread, larger ones another.
const SMALL_INPUT: usize = 128 << 10;

type CompressorSlot = Option<(i32, zstd::bulk::Compressor<'static>)>;

/// Capacity of the sealing buffer that small blobs keep.
const KEPT_SEALED: usize = 1 << 20;

thread_local! {
    // The sealed box of the blob being added, kept between blobs and packs: a fresh buffer
    // per blob or pack cost a page fault per 4 KiB.
    static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    // Creating a zstd context costs more than compressing a small file: keep them per thread.
    // zstd sizes a context's tables to its input and frees tables that stayed oversized for
    // 128 inputs, so one context alternating between small files and large chunks kept
    // dropping and faulting in megabytes; one per size class keeps each warm.
    static COMPRESSORS: std::cell::RefCell<[CompressorSlot; 2]> = const { std::cell::RefCell::new([None, None]) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses into `out`'s spare capacity, which must hold zstd's bound; the compressed length.
fn zstd_compress<C: zstd::zstd_safe::WriteBuf + ?Sized>(plaintext: &[u8], level: i32, out: &mut C) -> Option<usize> {
    COMPRESSORS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let slot = &mut slots[usize::from(plaintext.len() >= SMALL_INPUT)];
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress_to_buffer(plaintext, out).ok()
    })
}

/// Decompresses into `out`'s spare capacity (at most `capacity` bytes): only the pages the
/// output fills become resident.
fn zstd_decompress_into(payload: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.reserve_exact(capacity);
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor.decompress_to_buffer(payload, out).map(|_| ()),
            None => Err(std::io::Error::other("no zstd decompressor")),
        }
    })
}

/// Compresses a blob's plaintext, keeping it stored when zstd does not make it smaller
/// (already-compressed media), so reads of such blobs skip decompression.
pub fn compress(plaintext: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(plaintext, level, &mut out);
    out
}

/// Appends a blob's plaintext as packs store it, a codec byte and then the payload, to `out`.
/// zstd writes straight into `out`, so a writer that seals the result in place copies the
/// compressed bytes nowhere.
fn encode_into(plaintext: &[u8], level: i32, out: &mut Vec<u8>) {
    let start = out.len();
    // Capacity, not length: zstd writes into it, so only the pages it fills become resident.
    out.reserve_exact(1 + zstd::zstd_safe::compress_bound(plaintext.len()) + TAG_LEN);
    out.push(CODEC_ZSTD);
    let mut payload = std::io::Cursor::new(&mut *out);
    payload.set_position(start as u64 + 1);
    match zstd_compress(plaintext, level, &mut payload) {
        Some(len) if len + 1 < plaintext.len() => {}
        _ => {
            out.truncate(start);
            out.push(CODEC_STORED);
            out.extend_from_slice(plaintext);
        }
    }
}

/// An open pack being written to `out` (a spool file while backing up, a `Vec` in tests),
/// hashing as it goes so the pack's name is known at the end without reading it back.
/// Not thread-safe by design: each pipeline worker owns one.
pub struct PackWriter<W: std::io::Write> {
    key: SymKey,
    index_key: SymKey,
    kind: BlobKind,
    out: W,
    hasher: blake3::Hasher,
    header: [u8; HEADER_LEN],
    len: u64,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to store under `data/<id>`.
pub struct FinishedPack<W> {
    pub id: Id,
    pub kind: BlobKind,
    pub size: u64,
    pub entries: Vec<PackEntry>,
    pub out: W,
}

impl<W: std::io::Write> PackWriter<W> {
    pub fn new(recipient: &PublicKey, index_key: &SymKey, kind: BlobKind, out: W) -> std::io::Result<PackWriter<W>> {
        let key = SymKey::random();
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&wrap_key(recipient, &key, MAGIC));
        let mut writer = PackWriter {
            key,
            index_key: index_key.clone(),
            kind,
            out,
            hasher: blake3::Hasher::new(),
            header,
            len: 0,
            entries: Vec::new(),
        };
        writer.write(&header)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Adds a blob whose plaintext was already passed through [`compress`].
    pub fn add(&mut self, id: Id, compressed: &[u8], raw_len: u32) -> std::io::Result<()> {
        self.add_with(id, raw_len, |sealed| sealed.extend_from_slice(compressed)).map(|_| ())
    }

    /// Compresses (see [`compress`]), seals and adds a blob; returns the bytes it takes in
    /// the pack.
    pub fn add_blob(&mut self, id: Id, plaintext: &[u8], level: i32) -> std::io::Result<u32> {
        let raw_len = u32::try_from(plaintext.len()).map_err(|_| std::io::Error::other("blob larger than 4 GiB"))?;
        self.add_with(id, raw_len, |sealed| encode_into(plaintext, level, sealed))
    }

    /// Adds a blob whose encoded plaintext `encode` appends to the buffer it is sealed in.
    fn add_with(&mut self, id: Id, raw_len: u32, encode: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<u32> {
        let offset = u32::try_from(self.len).map_err(|_| std::io::Error::other("pack larger than 4 GiB"))?;
        let length = SEALED.with(|sealed| {
            let mut sealed = sealed.borrow_mut();
            // Small blobs after a large one (small files after a large file) would keep the
            // large buffer resident for the rest of the backup; a run of large blobs keeps it.
            if sealed.capacity() > KEPT_SEALED && sealed.capacity() / 4 > raw_len as usize {
                *sealed = Vec::new();
            }
            sealed.clear();
            sealed.resize(NONCE_LEN, 0);
            encode(&mut sealed);
            self.key.seal_in_place(&mut sealed, &blob_aad(&id, self.kind));
            self.write(&sealed).map(|()| sealed.len() as u32)
        })?;
        self.entries.push(PackEntry { id, kind: self.kind, offset, length, raw_len });
        Ok(length)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self) -> std::io::Result<FinishedPack<W>> {
        let table = self.index_key.seal(&super::to_postcard(&self.entries), &table_aad(&self.header));
        self.write(&table)?;
        self.write(&(table.len() as u32).to_le_bytes())?;
        self.write(END_MAGIC)?;
        self.out.flush()?;
        let id = Id(*self.hasher.finalize().as_bytes());
        Ok(FinishedPack { id, kind: self.kind, size: self.len, entries: self.entries, out: self.out })
    }
}

/// Unwraps a pack's key from its first [`HEADER_LEN`] bytes.
pub fn open_pack_key(secret: &SecretKey, header: &[u8]) -> Result<SymKey, FormatError> {
    if header.len() < HEADER_LEN {
        return Err(FormatError::Truncated { what: WHAT });
    }
    if &header[..8] != MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    unwrap_key(secret, &header[8..HEADER_LEN], MAGIC).map_err(FormatError::crypto(WHAT))
}

/// Decrypts, decompresses and verifies one blob against its id.
pub fn open_blob(pack_key: &SymKey, id_key: &IdKey, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    open_blob_into(pack_key, id_key, entry, &mut sealed.to_vec(), &mut out)?;
    Ok(out)
}

/// [`open_blob`] into `out` (replacing what it held), decrypting within `sealed`: a reader of
/// many blobs reuses both buffers instead of faulting in fresh memory for each.
pub fn open_blob_into(
    pack_key: &SymKey,
    id_key: &IdKey,
    entry: &PackEntry,
    sealed: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    const WHAT_BLOB: &str = "blob";
    if entry.raw_len > MAX_BLOB_LEN || sealed.len() != entry.length as usize {
        return Err(FormatError::Truncated { what: WHAT_BLOB });
    }
    let plain =
        pack_key.open_in_place(sealed, &blob_aad(&entry.id, entry.kind)).map_err(FormatError::crypto(WHAT_BLOB))?;
    out.clear();
    match plain.split_first() {
        Some((&CODEC_STORED, payload)) => out.extend_from_slice(payload),
        Some((&CODEC_ZSTD, payload)) => zstd_decompress_into(payload, entry.raw_len as usize, out)
            .map_err(|e| FormatError::Malformed { what: WHAT_BLOB, detail: e.to_string() })?,
        _ => return Err(FormatError::Malformed { what: WHAT_BLOB, detail: "unknown codec".into() }),
    }
    if out.len() != entry.raw_len as usize || id_key.blob_id(out) != entry.id {
        return Err(FormatError::IdMismatch { what: WHAT_BLOB });
    }
    Ok(())
}

/// Reads the table length from the last [`TRAILER_FIXED_LEN`] bytes of a pack; used to tell a
/// whole pack from a partial one and to fetch the table.
pub fn table_len(tail: &[u8]) -> Result<u32, FormatError> {
    if tail.len() < TRAILER_FIXED_LEN {
        return Err(FormatError::Truncated { what: WHAT });
    }
    let tail = &tail[tail.len() - TRAILER_FIXED_LEN..];
    if &tail[4..] != END_MAGIC {
        return Err(FormatError::Truncated { what: WHAT });
    }
    Ok(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")))
}

/// Decodes the blob table of a whole pack, checking that entries lie inside the blob area.
pub fn read_table(index_key: &SymKey, pack: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    let table_len = table_len(pack)? as usize;
    let table_start = pack
        .len()
        .checked_sub(TRAILER_FIXED_LEN + table_len)
        .filter(|start| *start >= HEADER_LEN)
        .ok_or(FormatError::Truncated { what: WHAT })?;
    decode_table(index_key, &pack[..HEADER_LEN], &pack[table_start..table_start + table_len], table_start as u64)
}

/// Decodes a pack's blob table from its header and sealed table, as fetched by ranged reads;
/// `table_start` is the table's offset, where the blob area ends.
pub fn decode_table(
    index_key: &SymKey,
    header: &[u8],
    sealed_table: &[u8],
    table_start: u64,
) -> Result<Vec<PackEntry>, FormatError> {
    if header.len() != HEADER_LEN {
        return Err(FormatError::Truncated { what: WHAT });
    }
    let table = index_key.open(sealed_table, &table_aad(header)).map_err(FormatError::crypto(WHAT))?;
    let entries: Vec<PackEntry> = from_postcard(&table, WHAT)?;
    for entry in &entries {
        let end = entry.offset as u64 + entry.length as u64;
        if (entry.offset as usize) < HEADER_LEN || end > table_start || (entry.length as usize) < SEAL_OVERHEAD + 1 {
            return Err(FormatError::Malformed { what: WHAT, detail: "blob outside the pack".into() });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index_key() -> SymKey {
        SymKey::from_bytes([5; 32])
    }

    struct Built {
        id: Id,
        bytes: Vec<u8>,
        entries: Vec<PackEntry>,
    }

    fn build(blobs: &[Vec<u8>], secret: &SecretKey, id_key: &IdKey) -> Built {
        let mut writer = PackWriter::new(&secret.public(), &index_key(), BlobKind::Data, Vec::new()).unwrap();
        // Both ways in: compressed beforehand, and compressed into the sealing buffer.
        for (i, blob) in blobs.iter().enumerate() {
            if i % 2 == 0 {
                writer.add(id_key.blob_id(blob), &compress(blob, 3), blob.len() as u32).unwrap();
            } else {
                writer.add_blob(id_key.blob_id(blob), blob, 3).unwrap();
            }
        }
        let pack = writer.finish().unwrap();
        assert_eq!(pack.size, pack.out.len() as u64);
        Built { id: pack.id, bytes: pack.out, entries: pack.entries }
    }

    proptest! {
        #[test]
        fn round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..8), zeros in 0usize..5000) {
            let mut blobs = blobs;
            blobs.push(vec![0; zeros]);
            let secret = SecretKey::random();
            let id_key = IdKey::random();
            let pack = build(&blobs, &secret, &id_key);
            prop_assert_eq!(pack.id, Id::of_bytes(&pack.bytes));
            let key = open_pack_key(&secret, &pack.bytes).unwrap();
            let table = read_table(&index_key(), &pack.bytes).unwrap();
            prop_assert!(read_table(&SymKey::random(), &pack.bytes).is_err());
            prop_assert_eq!(&table, &pack.entries);
            for (entry, blob) in table.iter().zip(&blobs) {
                let sealed = &pack.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
                prop_assert_eq!(&open_blob(&key, &id_key, entry, sealed).unwrap(), blob);
            }
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let secret = SecretKey::random();
            let _ = open_pack_key(&secret, &bytes);
            let _ = table_len(&bytes);
            let _ = read_table(&SymKey::random(), &bytes);
            let _ = decode_table(&SymKey::random(), &bytes[..bytes.len().min(HEADER_LEN)], &bytes, 1000);
        }
    }

    #[test]
    fn large_blobs_then_small_ones_read_back_stored_or_compressed() {
        let secret = SecretKey::random();
        let id_key = IdKey::random();
        let mut noise = vec![0u8; 3 << 20];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for byte in &mut noise {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let text: Vec<u8> = b"a line of text that zstd shrinks\n".iter().copied().cycle().take(2 << 20).collect();
        // The small blobs after the large ones make the writer drop its large sealing buffer.
        let blobs = vec![text.clone(), noise, b"small".to_vec(), Vec::new(), text[..1000].to_vec(), text];
        let pack = build(&blobs, &secret, &id_key);
        let key = open_pack_key(&secret, &pack.bytes).unwrap();
        for (entry, blob) in pack.entries.iter().zip(&blobs) {
            let sealed = &pack.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
            assert_eq!(&open_blob(&key, &id_key, entry, sealed).unwrap(), blob);
        }
        assert!(pack.entries[1].length as usize > blobs[1].len(), "random bytes are stored as they are");
        assert!((pack.entries[5].length as usize) < blobs[5].len() / 10, "text is compressed");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let secret = SecretKey::random();
        let id_key = IdKey::random();
        let blob = b"some file content that compresses compresses compresses".to_vec();
        let pack = build(&[blob], &secret, &id_key);
        let entry = pack.entries[0];
        for i in 0..pack.bytes.len() {
            let mut bad = pack.bytes.clone();
            bad[i] ^= 0x01;
            let result = open_pack_key(&secret, &bad).and_then(|key| {
                read_table(&index_key(), &bad)?;
                open_blob(&key, &id_key, &entry, &bad[entry.offset as usize..(entry.offset + entry.length) as usize])
            });
            assert!(result.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_id_key_or_secret_fails() {
        let secret = SecretKey::random();
        let id_key = IdKey::random();
        let pack = build(&[b"abc".to_vec()], &secret, &id_key);
        assert!(open_pack_key(&SecretKey::random(), &pack.bytes).is_err());
        let key = open_pack_key(&secret, &pack.bytes).unwrap();
        let e = pack.entries[0];
        let sealed = &pack.bytes[e.offset as usize..(e.offset + e.length) as usize];
        assert!(matches!(open_blob(&key, &IdKey::random(), &e, sealed), Err(FormatError::IdMismatch { .. })));
    }
}
