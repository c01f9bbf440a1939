//! `plans/<id>`: prune's durable decisions (docs/design.md, "Prune protocol"), signed by the
//! repository key so that nobody who can only write to the store can condemn a pack.
//!
//! Layout: `"CFPLAN01" | postcard(PlanRecord) | Ed25519 signature (64)` by the repository
//! signing key over `"coffer v1 prune plan" | repo id | magic | body`.

use serde::{Deserialize, Serialize};

use super::{decode_signed, encode_signed, FormatError};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFPLAN01";
const CONTEXT: &[u8] = b"coffer v1 prune plan";
const WHAT: &str = "prune plan";

/// One backup's lock session and the newest marker seen for it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockSeen {
    pub session: Id,
    pub seq: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum PlanRecord {
    /// Phase 1: these packs are to be deleted and these index files are superseded by newer
    /// ones. Written before the lock listing that decides when deletion is safe.
    Condemn {
        /// Random, so two prunes never write the same object.
        nonce: [u8; 16],
        created_unix: i64,
        packs: Vec<Id>,
        superseded_index: Vec<Id>,
    },
    /// The backups that may have started without seeing the plan `plan`: every lock listed
    /// after it was stored. `listed_unix` is the pruning machine's clock at that listing.
    Wait { plan: Id, listed_unix: i64, locks: Vec<LockSeen> },
    /// Snapshots a `forget` removed on purpose, so that a prune on another machine, whose
    /// local database saw them, knows their absence is no short listing. Kept for good
    /// (a few bytes per snapshot).
    Forgotten { nonce: [u8; 16], snapshots: Vec<Id> },
}

pub(crate) fn signed_message(repo_id: &Id, signed: &[u8]) -> Vec<u8> {
    [CONTEXT, &repo_id.0[..], signed].concat()
}

impl PlanRecord {
    pub fn encode(&self, repo_id: &Id, repo_signer: &SigningKey) -> Vec<u8> {
        encode_signed(self, MAGIC, CONTEXT, repo_id, repo_signer)
    }

    pub fn decode(bytes: &[u8], repo_id: &Id, repo_verify: &VerifyingKey) -> Result<PlanRecord, FormatError> {
        decode_signed(bytes, MAGIC, CONTEXT, WHAT, repo_id, repo_verify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_needs_the_repository_key() {
        let repo = SigningKey::random();
        let record = PlanRecord::Condemn {
            nonce: [1; 16],
            created_unix: 7,
            packs: vec![Id([2; 32])],
            superseded_index: vec![Id([3; 32])],
        };
        let bytes = record.encode(&Id([1; 32]), &repo);
        assert_eq!(PlanRecord::decode(&bytes, &Id([1; 32]), &repo.verifying_key()).unwrap(), record);
        assert!(PlanRecord::decode(&bytes, &Id([2; 32]), &repo.verifying_key()).is_err());
        let other = SigningKey::random();
        assert!(PlanRecord::decode(&record.encode(&Id([1; 32]), &other), &Id([1; 32]), &repo.verifying_key()).is_err());
    }
}
