//! Anchored trust (issue 15): what decides trust — which `signers/` objects exist (so which keys
//! are registered and which revoked) and which snapshots exist — is vouched for by signed
//! snapshots, so that a store deleting or withholding an object is *detected*, also by a
//! machine whose local database is new, rather than believed.
//!
//! Every snapshot records, inside its signed body:
//! - `coffer.signers-seen`: the ids of every valid `signers/` object its writer saw (postcard
//!   `Vec<Id>`); a reader that finds one missing from `signers/` knows the store withholds a
//!   registration or a revocation;
//! - `coffer.previous`: the id of the last snapshot the same client wrote (32 bytes), a chain
//!   per machine; a reader that finds a named snapshot missing, with no signed `Forgotten` plan
//!   record naming it, knows the store hides it.
//!
//! What this cannot see: a store that rolls back *every* object written after some point (the
//! newest snapshots included). Only a machine that remembers what it saw (its local database)
//! notices that, as before.

use std::collections::HashSet;

use serde_bytes::ByteBuf;

use super::{RepoError, Repository, SnapshotEntry};
use crate::format::plan::PlanRecord;
use crate::id::Id;

pub use crate::format::snapshot::{PREVIOUS, SIGNERS_SEEN};
/// The local note naming the last snapshot this client wrote.
const LAST_WRITTEN_NOTE: &str = "last-snapshot-written";

/// What a listing found withheld or hidden.
#[derive(Debug, Default)]
pub struct AnchorProblems {
    /// `signers/` objects a trusted snapshot saw that the store no longer lists.
    pub withheld_signers: Vec<(Id, Id)>,
    /// Snapshots a trusted snapshot names as its predecessor that are neither listed nor
    /// recorded as forgotten: (missing snapshot, the snapshot naming it).
    pub hidden_snapshots: Vec<(Id, Id)>,
}

impl AnchorProblems {
    pub fn is_empty(&self) -> bool {
        self.withheld_signers.is_empty() && self.hidden_snapshots.is_empty()
    }

    /// One line per problem, for `check` and prune's refusal.
    pub fn describe(&self) -> Vec<String> {
        let signers = self.withheld_signers.iter().map(|(object, by)| {
            format!(
                "signers/{} is missing, but snapshot {} was written when it existed: the store deleted or \
                 withholds a key registration or revocation",
                object.to_hex(),
                by.short()
            )
        });
        let snapshots = self.hidden_snapshots.iter().map(|(missing, by)| {
            format!(
                "snapshot {} is missing, but snapshot {} was written after it and no `forget` removed it: the \
                 store deleted or hides it",
                missing.short(),
                by.short()
            )
        });
        signers.chain(snapshots).collect()
    }
}

impl Repository {
    /// The anchoring extensions for a snapshot this client is about to write.
    pub fn anchor_extensions(&self) -> Result<Vec<(String, ByteBuf)>, RepoError> {
        let mut seen: Vec<Id> = self.signers_at_open()?.valid_objects.iter().copied().collect();
        seen.sort();
        // A repository with thousands of keys is not one this check is for: the snapshot stays small.
        seen.truncate(crate::format::snapshot::MAX_SIGNERS_SEEN);
        let mut out = vec![(SIGNERS_SEEN.to_string(), ByteBuf::from(crate::format::to_postcard(&seen)))];
        if let Some(previous) = self.db().note(LAST_WRITTEN_NOTE)?.as_deref().and_then(Id::from_hex) {
            out.push((PREVIOUS.to_string(), ByteBuf::from(previous.0.to_vec())));
        }
        Ok(out)
    }

    /// Remembers the snapshot just written, for the next one's `coffer.previous`.
    pub(super) fn remember_written(&self, id: &Id) -> Result<(), RepoError> {
        self.db().set_note(LAST_WRITTEN_NOTE, Some(&id.to_hex()))?;
        Ok(())
    }

    /// Writes the signed record that `snapshots` were removed on purpose (before they are
    /// deleted), so neither prune nor the anchor check takes them for hidden ones.
    pub fn record_forgotten(&self, snapshots: &[Id]) -> Result<(), RepoError> {
        let record = PlanRecord::Forgotten { nonce: crate::crypto::random_bytes(), snapshots: snapshots.to_vec() };
        let full = self.keys.full_key().ok_or(RepoError::WriteOnly { what: "removing snapshots" })?;
        let bytes = record.encode(&self.id(), &full.signing);
        self.store.write(&crate::layout::in_dir(crate::layout::PLANS, &Id::of_bytes(&bytes)), bytes)?;
        Ok(())
    }

    /// Compares what the trusted snapshots vouch for with what the store lists.
    pub fn check_anchors(&self, snapshots: &[SnapshotEntry]) -> Result<AnchorProblems, RepoError> {
        let mut problems = AnchorProblems::default();
        use crate::layout::{SIGNERS, SNAPSHOTS};
        // Listed together: a round trip each on a remote store.
        let [signer_objects, snapshot_objects] = self.store.list_ids_together([SIGNERS, SNAPSHOTS])?;
        let listed_signers: HashSet<Id> = signer_objects.into_iter().map(|(id, _)| id).collect();
        let listed_snapshots: HashSet<Id> = snapshot_objects.into_iter().map(|(id, _)| id).collect();
        let mut forgotten: Option<HashSet<Id>> = None;
        let mut reported = HashSet::new();
        for entry in snapshots {
            for object in entry.snapshot.signers_seen() {
                if !listed_signers.contains(&object) && reported.insert(object) {
                    problems.withheld_signers.push((object, entry.id));
                }
            }
            let Some(before) = entry.snapshot.previous() else { continue };
            if listed_snapshots.contains(&before) {
                continue;
            }
            // Read the signed records of forgotten snapshots only when something is missing.
            if forgotten.is_none() {
                forgotten = Some(
                    self.plan_records()?
                        .into_iter()
                        .filter_map(|(_, record)| match record {
                            PlanRecord::Forgotten { snapshots, .. } => Some(snapshots),
                            _ => None,
                        })
                        .flatten()
                        .collect(),
                );
            }
            if !forgotten.as_ref().is_some_and(|f| f.contains(&before)) && reported.insert(before) {
                problems.hidden_snapshots.push((before, entry.id));
            }
        }
        Ok(problems)
    }
}
