//! 32-byte identifiers: blob ids (keyed BLAKE3 of plaintext) and object names (BLAKE3 of the
//! stored bytes). One type for both so that hex, short prefixes and ordering are written once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// A 32-byte id. Displayed as 64 lowercase hex digits; `short()` gives the 8-digit prefix
/// users type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// Unkeyed BLAKE3 of stored bytes: the name of packs, index files, snapshots and key files.
    pub fn of_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_bytes(b"hello");
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 8);
        assert!(id.to_hex().starts_with(&id.short()));
        assert_eq!(Id::from_hex("zz"), None);
        assert_eq!(Id::from_hex(&"0".repeat(63)), None);
    }
}
