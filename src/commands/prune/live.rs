//! What the snapshots still need: every (domain, blob) they reference, and which stored copy of
//! a blob to keep when several claim its id.

use std::collections::{HashMap, HashSet};

use crate::format::plan::PlanRecord;
use crate::format::tree::{NodeKind, Tree};
use crate::id::Id;
use crate::layout;
use crate::repo::{BlobLocation, RepoError, Repository, SnapshotEntry};

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
    let locatable = |blob: &DomainBlob| -> Result<bool, PruneError> {
        Ok(extra.contains_key(blob) || !repo.blob_packs(&blob.0, &blob.1)?.is_empty())
    };
    let mut seen: HashSet<DomainBlob> = HashSet::new();
    // A root tree's domain is the one whose copy of it verifies; its children share it.
    let mut pending: Vec<(Id, Option<Id>, Id)> = snapshots.iter().map(|e| (e.snapshot.tree, None, e.id)).collect();
    while let Some((tree_id, domain, snapshot)) = pending.pop() {
        if domain.is_some_and(|d| seen.contains(&(d, tree_id))) {
            continue;
        }
        let missing = || PruneError::Unreachable(format!("tree {tree_id} of snapshot {}", snapshot.short()));
        let (domain, tree) = load_tree_in(repo, &tree_id, domain, extra)?.ok_or_else(missing)?;
        if !seen.insert((domain, tree_id)) {
            continue;
        }
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { subtree } => pending.push((subtree, Some(domain), snapshot)),
                NodeKind::File { content, .. } => {
                    for blob in content {
                        if seen.insert((domain, blob)) && !locatable(&(domain, blob))? {
                            return Err(PruneError::Unreachable(format!(
                                "data blob {blob} of snapshot {}",
                                snapshot.short()
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(seen)
}

/// A tree and the domain it verifies in (`domain`, when known): from the local cache, else the
/// first stored copy that verifies. `None` when no index lists it.
fn load_tree_in(
    repo: &Repository,
    id: &Id,
    domain: Option<Id>,
    extra: &HashMap<DomainBlob, BlobLocation>,
) -> Result<Option<(Id, Tree)>, PruneError> {
    let decode = |bytes: &[u8]| Tree::decode(bytes).map_err(RepoError::format(format!("tree {id}")));
    if let Some(bytes) = repo.cached_tree(id)? {
        if let Some(found) = repo.domain_naming(&bytes, id).filter(|d| domain.is_none_or(|want| want == *d)) {
            return Ok(Some((found, decode(&bytes)?)));
        }
    }
    let mut copies = repo.blob_locations(id)?;
    copies.extend(extra.iter().filter(|((_, blob), _)| blob == id).map(|(_, location)| *location));
    copies.retain(|c| domain.is_none_or(|want| want == c.domain));
    let mut failure = None;
    for copy in &copies {
        match repo.read_blob(copy, crate::repo::Copies::Exactly) {
            Ok(bytes) => return Ok(Some((copy.domain, decode(&bytes)?))),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(None),
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
