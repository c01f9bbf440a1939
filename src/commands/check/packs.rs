//! `check --read-data`: whole packs downloaded, one per worker at a time (memory stays bounded
//! by a few packs), each verified against its name (BLAKE3 of its bytes), its pack key, the
//! index's entries for it, and every blob against its id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::index::{CheckIndex, IndexedPack};
use super::{CheckProblem, CheckReport, ReadData, READ_WORKERS};
use crate::crypto::SecretKey;
use crate::format::pack::{self, PackEntry};
use crate::id::Id;
use crate::layout;
use crate::repo::Repository;

/// What verifying one pack found.
#[derive(Default)]
struct PackResult {
    errors: Vec<CheckProblem>,
    warnings: Vec<CheckProblem>,
    blobs_checked: u64,
    bytes_read: u64,
}

pub(super) fn read_packs(
    repo: &Repository,
    secret: &SecretKey,
    index: &CheckIndex,
    missing: &HashSet<Id>,
    read_data: ReadData,
    report: &mut CheckReport,
    progress: &dyn Fn(&str),
) {
    let mut selected: Vec<&IndexedPack> =
        index.packs.iter().filter(|p| read_data.selects(&p.id) && !missing.contains(&p.id)).collect();
    selected.sort_by_key(|p| p.id);
    let total = selected.len();
    let next = AtomicUsize::new(0);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<PackResult>(READ_WORKERS);
        for _ in 0..READ_WORKERS.min(total) {
            let tx = tx.clone();
            let (next, selected) = (&next, &selected);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pack) = selected.get(i) else { break };
                if tx.send(verify_pack(repo, secret, pack)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (done, result) in rx.iter().enumerate() {
            report.packs_read += 1;
            report.blobs_checked += result.blobs_checked;
            report.bytes_read += result.bytes_read;
            errors.extend(result.errors);
            warnings.extend(result.warnings);
            progress(&format!("read {}/{total} packs", done + 1));
        }
    });
    // Workers finish in any order; report in a stable one.
    errors.sort_by(|a, b| a.object.cmp(&b.object));
    warnings.sort_by(|a, b| a.object.cmp(&b.object));
    report.errors.extend(errors);
    report.warnings.extend(warnings);
}

/// Downloads one pack and verifies all of it against its name and the index.
fn verify_pack(repo: &Repository, secret: &SecretKey, pack: &IndexedPack) -> PackResult {
    let mut out = PackResult::default();
    let path = layout::pack(&pack.id);
    let mut error = |message: String| out.errors.push(CheckProblem { object: path.clone(), message });
    let bytes = match repo.read_object_named(&path, &pack.id) {
        Ok(bytes) => bytes,
        Err(e) => {
            error(format!("cannot be read: {e}"));
            return out;
        }
    };
    let bytes_read = bytes.len() as u64;
    if Id::of_bytes(&bytes) != pack.id {
        error("content does not match its name (BLAKE3 of its bytes differs): modified or damaged".into());
    }
    let key = match pack::open_pack_key(secret, &bytes) {
        Ok(key) => key,
        Err(e) => {
            error(format!("pack key cannot be opened: {e}"));
            out.bytes_read = bytes_read;
            return out;
        }
    };

    let Some(domain) = repo.domain(&pack.domain) else {
        error(format!(
            "listed by an index file of domain {}, which no key of this repository opens",
            pack.domain.short()
        ));
        out.bytes_read = bytes_read;
        return out;
    };
    let indexed: HashSet<Id> = pack.entries.iter().map(|e| e.id).collect();
    let mut extra = Vec::new();
    match pack::read_table(&domain.index_key, &bytes) {
        Ok(table) => {
            let by_id: HashMap<Id, &PackEntry> = table.iter().map(|e| (e.id, e)).collect();
            for entry in &pack.entries {
                match by_id.get(&entry.id) {
                    None => error(format!("blob {}: in the index but not in the pack's blob table", entry.id)),
                    Some(stored) if **stored != *entry => {
                        error(format!("blob {}: index says {entry:?}, the pack's blob table says {stored:?}", entry.id))
                    }
                    Some(_) => {}
                }
            }
            extra.extend(table.iter().filter(|e| !indexed.contains(&e.id)).map(|e| e.id));
        }
        Err(e) => error(format!("blob table: {e}")),
    }

    let mut blobs_checked = 0;
    for entry in &pack.entries {
        let start = entry.offset as usize;
        let sealed = start.checked_add(entry.length as usize).and_then(|end| bytes.get(start..end));
        let Some(sealed) = sealed else {
            error(format!("blob {}: lies outside the pack ({} bytes)", entry.id, bytes.len()));
            continue;
        };
        match pack::open_blob(&key, &domain.id_key, entry, sealed) {
            Ok(_) => blobs_checked += 1,
            Err(e) => error(format!("blob {}: {e}", entry.id)),
        }
    }
    for id in extra {
        out.warnings.push(CheckProblem {
            object: path.clone(),
            message: format!("blob {id} is in the pack but in no index file; it is not used"),
        });
    }
    out.blobs_checked = blobs_checked;
    out.bytes_read = bytes_read;
    out
}
