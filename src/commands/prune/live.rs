//! What the snapshots still need: every (domain, blob) they reference, and which stored copy of
//! a blob to keep when several claim its id.

use std::collections::{HashMap, HashSet};

use crate::format::plan::PlanRecord;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::layout;
use crate::repo::walk::{self, Visitor};
use crate::repo::{BlobLocation, Repository, SnapshotEntry};

use super::PruneError;

/// Every snapshot, trusted and complete, and the lock sessions they name. Aborts when one
/// cannot be read or trusted, or one seen before is missing from the listing.
pub(super) fn all_snapshots(repo: &Repository) -> Result<(Vec<SnapshotEntry>, HashSet<Id>), PruneError> {
    // What this database saw *before* the listing: a backup sharing it may record a new
    // snapshot after the listing, and that one is not missing.
    let seen_before = repo.seen_snapshots()?;
    let (snapshots, rejected) = repo.load_snapshots_from_store()?;
    // A snapshot no trusted key wrote protects nothing (issue 15: a write-only key's holder
    // must not be able to stall prune, nor make it keep or drop anything). One whose bytes no
    // longer match its name may be a real snapshot damaged in storage: deleting its data on
    // the strength of that would be wrong.
    let damaged: Vec<_> = rejected.iter().filter(|r| r.damaged).collect();
    if let Some(first) = damaged.first() {
        return Err(PruneError::UntrustedSnapshots {
            count: damaged.len(),
            first: layout::in_dir(layout::SNAPSHOTS, &first.id),
            reason: first.reason.clone(),
        });
    }
    // A store that withholds a revocation or hides a snapshot must not steer what is deleted.
    let anchors = repo.check_anchors(&snapshots)?;
    if let Some(first) = anchors.describe().into_iter().next() {
        return Err(PruneError::Anchors(first));
    }
    let listed: HashSet<Id> = snapshots.iter().map(|e| e.id).collect();
    let vanished: Vec<Id> = seen_before.into_iter().map(|(id, _)| id).filter(|id| !listed.contains(id)).collect();
    if !vanished.is_empty() {
        // Forgotten elsewhere (a signed record says so), or lost: only the latter stops prune.
        let forgotten: HashSet<Id> = repo
            .plan_records()?
            .into_iter()
            .filter_map(|(_, r)| match r {
                PlanRecord::Forgotten { snapshots, .. } => Some(snapshots),
                _ => None,
            })
            .flatten()
            .collect();
        if let Some(lost) = vanished.iter().find(|id| !forgotten.contains(id)) {
            return Err(PruneError::VanishedSnapshot(layout::in_dir(layout::SNAPSHOTS, lost)));
        }
        repo.forget_local_snapshots(&vanished)?;
    }
    let sessions = snapshots.iter().filter_map(|e| crate::repo::locks::lock_session(&e.snapshot)).collect();
    Ok((snapshots, sessions))
}

/// A blob as prune tracks it: (domain, blob id). Every blob under a snapshot's root tree is in
/// the root tree's domain, and only that domain's index files can vouch for where it is: an
/// index file of another key naming the same id is junk (issue 15).
pub(super) type DomainBlob = (Id, Id);

/// Every blob (trees and data) the snapshots reference, with its domain. Blobs are located
/// through the local index, else through `extra` (tables of condemned packs no index lists
/// any more).
pub(super) fn referenced_blobs(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    extra: &HashMap<DomainBlob, BlobLocation>,
) -> Result<HashSet<DomainBlob>, PruneError> {
    let mut live = Live { repo, extra, seen: HashSet::new(), domain: None, snapshot: Id([0; 32]) };
    // Walked last first, as the stack this walk replaced took them.
    for entry in snapshots.iter().rev() {
        // A root tree's domain is the one whose copy of it verifies; its children share it.
        live.domain = None;
        live.snapshot = entry.id;
        walk::walk(repo, &format!("snapshot {}", entry.id.short()), &entry.snapshot.tree, b"/", (), &mut live)?;
    }
    Ok(live.seen)
}

/// The walk of one snapshot after another, gathering what they reference.
struct Live<'a> {
    repo: &'a Repository,
    extra: &'a HashMap<DomainBlob, BlobLocation>,
    /// Trees and data blobs found so far: each tree is walked once per domain.
    seen: HashSet<DomainBlob>,
    /// The domain of the snapshot being walked, once its root tree is loaded.
    domain: Option<Id>,
    snapshot: Id,
}

impl Live<'_> {
    fn unreachable(&self, what: String) -> PruneError {
        PruneError::Unreachable(format!("{what} of snapshot {}", self.snapshot.short()))
    }
}

impl Visitor for Live<'_> {
    type Error = PruneError;
    type Dir = ();

    /// The tree in the snapshot's domain (the first copy that verifies, for the root); `None`
    /// for one walked before in that domain.
    fn tree(&mut self, repo: &Repository, _: &mut (), id: &Id, _: &[u8]) -> Result<Option<Tree>, PruneError> {
        if self.domain.is_some_and(|d| self.seen.contains(&(d, *id))) {
            return Ok(None);
        }
        // Once the domain is known a condemned copy is one lookup; only a root tree, whose
        // domain its copies decide, looks through all of them.
        let extra: Vec<BlobLocation> = match self.domain {
            Some(domain) => self.extra.get(&(domain, *id)).copied().into_iter().collect(),
            None => self.extra.iter().filter(|((_, blob), _)| blob == id).map(|(_, location)| *location).collect(),
        };
        let Some((domain, tree)) = repo.load_tree_in(id, self.domain, &extra)? else {
            return Err(self.unreachable(format!("tree {id}")));
        };
        self.domain = Some(domain);
        Ok(self.seen.insert((domain, *id)).then_some(tree))
    }

    fn entry(&mut self, _: &mut (), _: &[u8], node: &Node) -> Result<Option<()>, PruneError> {
        let Some(domain) = self.domain else { return Ok(None) };
        match &node.kind {
            NodeKind::Dir { .. } => return Ok(Some(())),
            NodeKind::File { content, .. } => {
                for blob in content {
                    let found = (domain, *blob);
                    if self.seen.insert(found)
                        && !self.extra.contains_key(&found)
                        && self.repo.blob_packs(&domain, blob)?.is_empty()
                    {
                        return Err(self.unreachable(format!("data blob {blob}")));
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

/// The storage listing of `data/`, cross-checked against what the index says is stored.
pub(super) fn listed_packs(repo: &Repository, indexed: &HashMap<Id, u64>) -> Result<HashMap<Id, u64>, PruneError> {
    let listed: HashMap<Id, u64> = repo.list_object_ids(layout::DATA)?.into_iter().collect();
    for (pack, size) in indexed {
        match listed.get(pack) {
            None => {
                return Err(PruneError::ListingShort { pack: layout::pack(pack), problem: "missing".into() });
            }
            Some(listed_size) if listed_size != size => {
                return Err(PruneError::ListingShort {
                    pack: layout::pack(pack),
                    problem: format!("{listed_size} bytes instead of {size}"),
                });
            }
            Some(_) => {}
        }
    }
    Ok(listed)
}

/// Where each referenced blob is used: the lowest pack holding it in its domain, as reads
/// pick. When several copies exist, the one kept is the first that reads back and verifies
/// (a holder of a domain's keys, such as a thief of a revoked key, may have stored junk under
/// a real id); if none does, all are kept.
pub(super) fn choose_copies(
    repo: &Repository,
    contents: &HashMap<(Id, Id), (u64, Vec<crate::format::pack::PackEntry>)>,
    referenced: &HashSet<DomainBlob>,
) -> HashMap<DomainBlob, Vec<Id>> {
    let mut copies: HashMap<DomainBlob, Vec<BlobLocation>> = HashMap::new();
    for ((pack, domain), (_, entries)) in contents {
        for entry in entries {
            if referenced.contains(&(*domain, entry.id)) {
                copies.entry((*domain, entry.id)).or_default().push(BlobLocation {
                    pack: *pack,
                    entry: *entry,
                    domain: *domain,
                });
            }
        }
    }
    copies
        .into_iter()
        .map(|(blob, mut locations)| {
            locations.sort_by_key(|l| l.pack);
            let packs = if locations.len() == 1 {
                vec![locations[0].pack]
            } else {
                match locations.iter().find(|l| repo.read_blob(l, crate::repo::Copies::Exactly).is_ok()) {
                    Some(good) => vec![good.pack],
                    None => {
                        log::warn!("no copy of blob {} verifies; prune keeps every copy", blob.1);
                        locations.iter().map(|l| l.pack).collect()
                    }
                }
            };
            (blob, packs)
        })
        .collect()
}
