//! Phase 1, *condemn*: repack the live blobs of partly used packs, index every kept blob, then
//! store a signed plan naming what phase 2 deletes.

use std::collections::{HashMap, HashSet};

use crate::crashpoint;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::PackEntry;
use crate::format::plan::PlanRecord;
use crate::id::Id;
use crate::repo::Packer;
use crate::repo::{now_unix, plan_regions, BlobLocation, Copies, Repository, REGION_GAP, REGION_MAX};

use super::delete::delete_phase;
use super::live::{all_snapshots, choose_copies, listed_packs, referenced_blobs};
use super::{domain_keys, write_record, PruneError, PruneOptions, PruneReport};

pub(super) fn condemn_phase(
    repo: &Repository,
    options: &PruneOptions,
    report: &mut PruneReport,
    progress: &impl Fn(&str),
) -> Result<(), PruneError> {
    // Snapshots first, then the index, then the packs: each is stored after what it needs,
    // so whatever a listed snapshot references is in the index read after it.
    progress("reading snapshots");
    let (snapshots, _) = all_snapshots(repo)?;
    repo.sync_index()?;
    // Exactly the index files the local index holds now: the new index replaces these.
    let mut index_files: Vec<Id> = repo.local_index_files()?.into_iter().collect();
    index_files.sort();
    // By (pack, domain): a pack another key's index file also claims appears twice.
    let contents = repo.pack_contents()?;
    let indexed_sizes: HashMap<Id, u64> = contents.iter().map(|((id, _), (size, _))| (*id, *size)).collect();
    let listed = listed_packs(repo, &indexed_sizes)?;
    progress(&format!("finding the data {} snapshots use", snapshots.len()));
    let referenced = referenced_blobs(repo, &snapshots, &HashMap::new())?;
    let used_at = choose_copies(repo, &contents, &referenced);
    let is_used = |pack: &Id, domain: &Id, blob: &Id| used_at.get(&(*domain, *blob)).is_some_and(|p| p.contains(pack));

    let Choice { unused, repack, orphans } = choose_packs(&contents, &listed, &indexed_sizes, is_used, options, report);
    if unused.is_empty() && repack.is_empty() && orphans.is_empty() {
        progress("nothing to prune");
        return Ok(());
    }
    if options.dry_run {
        return Ok(());
    }

    progress(&format!("repacking {} packs", repack.len()));
    let repack_set: HashSet<Id> = repack.iter().copied().collect();
    // Live blobs stay in their own domain: new packs and index files per domain.
    let mut writers: HashMap<Id, Packer> = HashMap::new();
    let mut groups: Vec<&(Id, Id)> = contents.keys().filter(|(pack, _)| repack_set.contains(pack)).collect();
    groups.sort();
    let (mut sealed, mut plain) = (Vec::new(), Vec::new());
    for key @ (pack, domain) in groups {
        let (_, entries) = &contents[key];
        let live: Vec<(BlobLocation, ())> = entries
            .iter()
            .filter(|e| is_used(pack, domain, &e.id))
            .map(|entry| (BlobLocation { pack: *pack, entry: *entry, domain: *domain }, ()))
            .collect();
        if live.is_empty() {
            continue;
        }
        let writer = match writers.entry(*domain) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Packer::in_domain(repo, domain_keys(repo, domain)?, "prune-after-new-pack"))
            }
        };
        // Neighbouring live blobs with one ranged read: a read per blob cost ~2,800 round trips
        // (106 s at 15 ms each way) to repack the packs of half of /usr/share/doc. Each copy is
        // read exactly: a blob that does not verify there stops prune, as it did.
        for region in plan_regions(live, REGION_GAP, REGION_MAX) {
            let locations: Vec<BlobLocation> = region.into_iter().map(|(location, ())| location).collect();
            let mut failed = None;
            repo.read_region_of(&locations, Copies::Exactly, &mut sealed, &mut plain, |i, read| {
                let entry = &locations[i].entry;
                if failed.is_none() {
                    failed = read.and_then(|bytes| writer.add(entry.kind, entry.id, bytes.to_vec())).err();
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
    }
    let mut indexes: HashMap<Id, IndexFile> = HashMap::new();
    for (domain, writer) in writers {
        let new_packs = writer.finish_unindexed()?;
        report.packs_written += new_packs.len() as u64;
        report.bytes_freed -= new_packs.iter().map(|p| p.size as i64).sum::<i64>();
        indexes.entry(domain).or_default().packs.extend(new_packs);
    }
    report.bytes_freed += report.bytes_repacked as i64;

    // Every kept pack whole (unused blobs in it included: they stay stored), under each domain
    // that uses it, plus the new ones. A domain's claim on a kept pack that no snapshot uses
    // there (another key's index naming the pack) is dropped.
    let condemned: HashSet<Id> = unused.iter().chain(&repack).chain(&orphans).copied().collect();
    for ((pack, domain), (size, entries)) in &contents {
        if !condemned.contains(pack) && entries.iter().any(|e| is_used(pack, domain, &e.id)) {
            indexes.entry(*domain).or_default().packs.push(IndexPack {
                id: *pack,
                size: *size,
                blobs: entries.clone(),
            });
        }
    }
    let mut domains: Vec<Id> = indexes.keys().copied().collect();
    domains.sort();
    for domain in domains {
        let mut index = indexes.remove(&domain).unwrap_or_default();
        index.packs.sort_by_key(|p| p.id);
        if !index.packs.is_empty() {
            repo.save_index_in(&domain_keys(repo, &domain)?, &index)?;
        }
    }
    crashpoint::hit("prune-after-index");
    debug_assert!(repack_set.iter().all(|p| condemned.contains(p)));

    let mut packs: Vec<Id> = condemned.into_iter().collect();
    packs.sort();
    let record = PlanRecord::Condemn {
        nonce: crate::crypto::random_bytes(),
        created_unix: now_unix(),
        packs,
        superseded_index: index_files,
    };
    let plan_id = write_record(repo, &record)?;
    crashpoint::hit("prune-after-plan");
    // Another prune condemned at the same time: withdraw (our new packs and index only
    // duplicate what is kept). If both withdraw, the next run starts afresh.
    let rivals = repo
        .plan_records()?
        .into_iter()
        .filter(|(id, r)| *id != plan_id && matches!(r, PlanRecord::Condemn { .. }))
        .count();
    if rivals > 0 {
        repo.delete_plan_record(&plan_id)?;
        return Err(PruneError::ConcurrentPrune);
    }
    delete_phase(repo, options, plan_id, &record, None, report, progress)
}

/// What phase 1 condemns: packs no snapshot uses, partly used packs to repack, and packs no
/// index file lists.
struct Choice {
    unused: Vec<Id>,
    repack: Vec<Id>,
    orphans: Vec<Id>,
}

/// Chooses the packs to condemn (the most wasteful partly used ones first, until the waste
/// left is within `max_unused_percent`) and fills in the report's sizes and counts.
fn choose_packs(
    contents: &HashMap<(Id, Id), (u64, Vec<PackEntry>)>,
    listed: &HashMap<Id, u64>,
    indexed_sizes: &HashMap<Id, u64>,
    is_used: impl Fn(&Id, &Id, &Id) -> bool,
    options: &PruneOptions,
    report: &mut PruneReport,
) -> Choice {
    struct PackUse {
        id: Id,
        size: u64,
        used: u64,
    }
    let mut by_pack: HashMap<Id, PackUse> = HashMap::new();
    for ((pack, domain), (size, entries)) in contents {
        let used: u64 = entries.iter().filter(|e| is_used(pack, domain, &e.id)).map(|e| u64::from(e.length)).sum();
        by_pack.entry(*pack).or_insert(PackUse { id: *pack, size: *size, used: 0 }).used += used;
    }
    let mut uses: Vec<PackUse> = by_pack.into_values().collect();
    uses.sort_by_key(|u| u.id);
    report.total_pack_bytes = listed.values().sum();
    let unused: Vec<Id> = uses.iter().filter(|u| u.used == 0).map(|u| u.id).collect();
    let orphans: Vec<Id> = listed.keys().filter(|id| !indexed_sizes.contains_key(id)).copied().collect();
    let kept_total: u64 = uses.iter().filter(|u| u.used > 0).map(|u| u.size).sum();
    let mut partly: Vec<&PackUse> = uses.iter().filter(|u| u.used > 0 && u.used < u.size).collect();
    // Most wasteful first, until the waste left is within the limit.
    partly.sort_by(|a, b| (b.size - b.used).saturating_mul(a.size).cmp(&(a.size - a.used).saturating_mul(b.size)));
    let limit = (kept_total as f64 * options.max_unused_percent / 100.0) as u64;
    let mut waste: u64 = partly.iter().map(|u| u.size - u.used).sum();
    let mut repack: Vec<Id> = Vec::new();
    for u in &partly {
        // Pack overhead (header, table) is not waste a repack could recover; ignore small gaps.
        if waste <= limit || u.size - u.used < 4096 {
            break;
        }
        waste -= u.size - u.used;
        repack.push(u.id);
    }
    report.unused_bytes_left = waste;
    report.packs_unused = unused.len() as u64;
    report.packs_to_repack = repack.len() as u64;
    report.orphan_packs = orphans.len() as u64;
    let size_of = |id: &Id| listed.get(id).copied().unwrap_or(0);
    let condemned_bytes: u64 = unused.iter().chain(&repack).chain(&orphans).map(size_of).sum();
    report.bytes_repacked = uses.iter().filter(|u| repack.contains(&u.id)).map(|u| u.used).sum();
    report.bytes_freed = condemned_bytes as i64 - report.bytes_repacked as i64;
    Choice { unused, repack, orphans }
}
