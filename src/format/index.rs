//! `index/<id>`: which pack holds which blob, encrypted with the `index_key` that full and
//! write-only keys share (so a backup-only machine can deduplicate) and the storage owner lacks.
//!
//! Layout: `"CFINDX01" | sealed box (AES-256-GCM, index_key, aad = magic | repo id)` over
//! `postcard(IndexFile)`. An index file is written only after every pack it lists is stored.

use serde::{Deserialize, Serialize};

use super::pack::PackEntry;
use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::crypto::SymKey;
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFINDX01";
const WHAT: &str = "index file";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    pub id: Id,
    /// Size of the whole pack file, so a truncated pack is noticed without reading it.
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

pub(crate) fn aad(repo_id: &Id) -> Vec<u8> {
    [MAGIC.as_slice(), &repo_id.0[..]].concat()
}

impl IndexFile {
    pub fn encode(&self, index_key: &SymKey, repo_id: &Id) -> Vec<u8> {
        let sealed = index_key.seal(&to_postcard(self), &aad(repo_id));
        [MAGIC.as_slice(), &sealed].concat()
    }

    pub fn decode(bytes: &[u8], index_key: &SymKey, repo_id: &Id) -> Result<IndexFile, FormatError> {
        let sealed = strip_magic(bytes, MAGIC, WHAT)?;
        let plain = index_key.open(sealed, &aad(repo_id)).map_err(FormatError::crypto(WHAT))?;
        from_postcard(&plain, WHAT)
    }

    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = PackEntry> {
        (any::<[u8; 32]>(), any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(id, tree, offset, length, raw_len)| PackEntry {
                id: Id(id),
                kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                offset,
                length,
                raw_len,
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip(packs in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec(entry(), 0..20)), 0..5)) {
            let file = IndexFile { packs: packs.into_iter().map(|(id, size, blobs)| IndexPack { id: Id(id), size, blobs }).collect() };
            let key = SymKey::random();
            let bytes = file.encode(&key, &Id([1; 32]));
            prop_assert_eq!(&IndexFile::decode(&bytes, &key, &Id([1; 32])).unwrap(), &file);
            prop_assert!(IndexFile::decode(&bytes, &key, &Id([2; 32])).is_err());
            prop_assert!(IndexFile::decode(&bytes, &SymKey::random(), &Id([1; 32])).is_err());
        }

        #[test]
        fn any_flipped_byte_is_detected(pos in any::<proptest::sample::Index>()) {
            let key = SymKey::random();
            let file = IndexFile { packs: vec![IndexPack { id: Id([5; 32]), size: 9, blobs: vec![] }] };
            let mut bytes = file.encode(&key, &Id([1; 32]));
            let i = pos.index(bytes.len());
            bytes[i] ^= 1;
            prop_assert!(IndexFile::decode(&bytes, &key, &Id([1; 32])).is_err());
        }
    }
}
