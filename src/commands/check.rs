//! `coffer check`: verifies that the repository holds everything its snapshots need, and names
//! every damaged or missing object by its storage path.
//!
//! Always (any key, index files read fresh from storage, not from the local cache):
//! - every index file decrypts, parses, and its content hash equals its name;
//! - every pack an index file lists exists in storage with the size the index records, and
//!   every blob entry lies inside it; packs in no index file are reported as orphans (a
//!   warning: an interrupted backup leaves them, prune removes them);
//! - every snapshot's content hash equals its name and it is signed by a trusted key.
//!
//! With the full key, additionally: every tree reachable from every snapshot is read from
//! storage (not the local tree cache) and verified, and every data blob a file references is
//! in the index with the file's size adding up. With `read_data`, whole packs are downloaded
//! one per worker at a time (memory stays bounded by a few packs): BLAKE3 of the bytes equals
//! the pack's name, the pack key opens, the blob table matches the index, and every blob
//! decrypts and matches its id.
//!
//! The index of the check is held in memory (about 100 bytes per blob), as in restic's check.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::crypto::SecretKey;
use crate::format::index::IndexFile;
use crate::format::pack::{self, BlobKind, PackEntry, HEADER_LEN, TRAILER_FIXED_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::Id;
use crate::layout;
use crate::repo::{plan_regions, BlobLocation, RepoError, Repository, SnapshotEntry, REGION_GAP, REGION_MAX};

use super::ls::join_path;

/// Packs downloaded at once with `read_data`.
const READ_WORKERS: usize = 4;

/// Which packs `check` downloads and verifies in full.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    /// Structure only: no pack is downloaded.
    #[default]
    None,
    /// Every pack.
    All,
    /// The packs whose id, mixed with `seed` and read as a fraction of the id space, is below
    /// `percent`/100. `parse_subset` draws a new seed each run (restic's rule for `x%`): a
    /// nightly 10% check reaches every pack over the nights, not the same tenth each time.
    Percent { percent: f64, seed: u64 },
    /// Part `n` of `m` (1-based): the packs whose id modulo `m` is `n - 1`. Running 1/m, 2/m,
    /// …, m/m (on successive days, say) reads every pack once.
    Subset { n: u32, m: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid read-data subset {0:?}: give a percentage such as 10% or a part such as 1/5")]
pub struct ParseSubsetError(pub String);

impl ReadData {
    /// Parses `10%` (0 < p ≤ 100) or `n/m` (1 ≤ n ≤ m).
    pub fn parse_subset(spec: &str) -> Result<ReadData, ParseSubsetError> {
        let err = || ParseSubsetError(spec.to_string());
        let trimmed = spec.trim();
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent: f64 = number.trim().parse().map_err(|_| err())?;
            // Written so that NaN fails too.
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(err());
            }
            return Ok(if percent == 100.0 {
                ReadData::All
            } else {
                ReadData::Percent { percent, seed: rand::random() }
            });
        }
        let (n, m) = trimmed.split_once('/').ok_or_else(err)?;
        let n: u32 = n.trim().parse().map_err(|_| err())?;
        let m: u32 = m.trim().parse().map_err(|_| err())?;
        if n == 0 || n > m {
            return Err(err());
        }
        Ok(if m == 1 { ReadData::All } else { ReadData::Subset { n, m } })
    }

    /// Whether the pack named `id` is read in full.
    pub fn selects(&self, id: &Id) -> bool {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.0[..8]);
        let x = u64::from_be_bytes(first);
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Percent { percent, seed } => ((x ^ seed) as f64) / 18_446_744_073_709_551_616.0 < percent / 100.0,
            ReadData::Subset { n, m } => m > 0 && x % u64::from(m) == u64::from(n.saturating_sub(1)),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// One finding, about one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    /// Storage path of the object: `data/ab/abcd…`, `index/…`, `snapshots/…`.
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Damage: data that a snapshot needs is missing or wrong, or an object is corrupt.
    pub errors: Vec<CheckProblem>,
    /// Worth knowing but harmless: orphan packs, stray files, what was not checked.
    pub warnings: Vec<CheckProblem>,
    pub index_files_checked: u64,
    /// Packs listed in the index whose presence and size were checked.
    pub packs_checked: u64,
    /// Packs downloaded and verified in full (`read_data`).
    pub packs_read: u64,
    /// Blobs decrypted and verified against their id (trees, and with `read_data` all blobs).
    pub blobs_checked: u64,
    pub snapshots_checked: u64,
    pub trees_checked: u64,
    /// Bytes downloaded for the check.
    pub bytes_read: u64,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CheckProblem { object: object.into(), message: message.into() });
    }

    fn warn(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(CheckProblem { object: object.into(), message: message.into() });
    }
}

/// Checks the repository; see the module documentation for what. Findings go into the report;
/// an `Err` means the check itself could not run (storage unreachable, a write-only key asked
/// to read data).
pub fn check(repo: &Repository, opts: &CheckOptions, progress: impl Fn(&str)) -> Result<CheckReport, RepoError> {
    let full_key = repo.keys().secret.is_some();
    if opts.read_data != ReadData::None && !full_key {
        return Err(RepoError::WriteOnly { what: "check --read-data" });
    }
    let mut report = CheckReport::default();

    // Keep the local cache in step for later commands; the check itself reads index files
    // afresh below, so a failure here (a damaged index file) is reported from there.
    progress("refreshing the local index cache");
    let listing = repo.list_objects(layout::INDEX)?;
    let ids = listing
        .iter()
        .filter_map(|(path, size)| Some((path.strip_prefix(layout::INDEX).and_then(Id::from_hex)?, *size)));
    let synced = repo.sync_index_listed(ids.collect());

    progress("reading index files");
    let index = load_index(repo, listing, &mut report)?;
    if let Err(e) = synced {
        if !report.errors.iter().any(|p| p.object.starts_with(layout::INDEX)) {
            report.warn(layout::INDEX, format!("the local index cache could not be refreshed: {e}"));
        }
    }

    progress("checking packs");
    let missing_packs = check_packs(repo, &index, &mut report)?;

    progress("checking snapshots");
    check_signers(repo, &mut report)?;
    check_vanished_snapshots(repo, &mut report)?;
    if full_key {
        let (snapshots, rejected) = repo.load_snapshots_from_store()?;
        report.snapshots_checked = (snapshots.len() + rejected.len()) as u64;
        for r in rejected {
            report.error(layout::in_dir(layout::SNAPSHOTS, &r.id), format!("snapshot ignored: {}", r.reason));
        }
        for problem in repo.check_anchors(&snapshots)?.describe() {
            report.error("trust anchors", problem);
        }
        progress("checking trees");
        check_trees(repo, &index, &snapshots, &mut report, &progress);
    } else {
        check_snapshot_signatures(repo, &mut report)?;
        report.warn(
            layout::SNAPSHOTS,
            "trees and file contents were not checked: this key can only write; check with the full key",
        );
    }

    if opts.read_data != ReadData::None {
        let secret = repo.require_full_key("check --read-data")?;
        read_packs(repo, secret, &index, &missing_packs, opts.read_data, &mut report, &progress);
    }
    Ok(report)
}

/// Snapshots this machine saw before that are gone: a storage owner hiding history, or a
/// `forget` run elsewhere. Reported as errors, since nothing local can tell the two apart
/// (a `forget` here clears them from the list).
fn check_vanished_snapshots(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    let present: std::collections::HashSet<Id> =
        repo.list_object_ids(layout::SNAPSHOTS)?.into_iter().map(|(id, _)| id).collect();
    for (id, time) in repo.seen_snapshots()? {
        if !present.contains(&id) {
            let when = chrono::DateTime::from_timestamp(time, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
            report.error(
                layout::in_dir(layout::SNAPSHOTS, &id),
                format!("snapshot of {when} was seen here before and is now missing from the repository"),
            );
        }
    }
    Ok(())
}

/// The reason inside a repository error, without the object name the report already gives.
fn describe(e: &RepoError) -> String {
    match e {
        RepoError::Corrupt { detail, .. } => detail.clone(),
        RepoError::Format { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A pack as the index files describe it.
struct IndexedPack {
    id: Id,
    size: u64,
    /// The domain of the index file that lists it (whose keys seal its table and name its blobs).
    domain: Id,
    /// The (first) index file that lists it.
    index_file: Id,
    entries: Vec<PackEntry>,
}

/// The union of all readable index files.
#[derive(Default)]
struct CheckIndex {
    packs: Vec<IndexedPack>,
    /// By pack and domain: an index file of another key that claims a pack is kept apart, so
    /// it cannot stand in for the pack's own entries.
    pack_numbers: HashMap<(Id, Id), usize>,
    /// Blob id → (pack number, entry number); the lowest pack id when several hold it, as in
    /// the local index cache.
    blobs: HashMap<Id, (u32, u32)>,
}

impl CheckIndex {
    fn locate(&self, blob: &Id) -> Option<BlobLocation> {
        let &(pack, entry) = self.blobs.get(blob)?;
        let pack = self.packs.get(pack as usize)?;
        Some(BlobLocation { pack: pack.id, entry: *pack.entries.get(entry as usize)?, domain: pack.domain })
    }

    fn add(&mut self, file_id: Id, domain: Id, file: IndexFile, report: &mut CheckReport) {
        let file_path = layout::in_dir(layout::INDEX, &file_id);
        for listed in file.packs {
            let pack_path = layout::pack(&listed.id);
            for entry in &listed.blobs {
                let end = u64::from(entry.offset) + u64::from(entry.length);
                if (entry.offset as usize) < HEADER_LEN || end + TRAILER_FIXED_LEN as u64 > listed.size {
                    report.error(
                        &file_path,
                        format!("places blob {} outside pack {pack_path} ({} bytes)", entry.id, listed.size),
                    );
                }
            }
            if let Some(&n) = self.pack_numbers.get(&(listed.id, domain)) {
                let known = &self.packs[n];
                if known.size != listed.size {
                    report.error(
                        pack_path,
                        format!(
                            "index files disagree on its size: {} says {} bytes, {file_path} says {}",
                            layout::in_dir(layout::INDEX, &known.index_file),
                            known.size,
                            listed.size
                        ),
                    );
                }
                continue;
            }
            let n = self.packs.len();
            for (i, entry) in listed.blobs.iter().enumerate() {
                let here = (n as u32, i as u32);
                self.blobs
                    .entry(entry.id)
                    .and_modify(|slot| {
                        if self.packs[slot.0 as usize].id > listed.id {
                            *slot = here;
                        }
                    })
                    .or_insert(here);
            }
            self.pack_numbers.insert((listed.id, domain), n);
            self.packs.push(IndexedPack {
                id: listed.id,
                size: listed.size,
                domain,
                index_file: file_id,
                entries: listed.blobs,
            });
        }
    }
}

fn load_index(
    repo: &Repository,
    listing: Vec<(String, u64)>,
    report: &mut CheckReport,
) -> Result<CheckIndex, RepoError> {
    let mut files = Vec::new();
    for (path, size) in listing {
        match path.strip_prefix(layout::INDEX).and_then(Id::from_hex) {
            Some(id) => files.push((id, size)),
            None => report.warn(path, "not an index file (its name is not an id); ignored"),
        }
    }
    files.sort();
    let mut index = CheckIndex::default();
    // Read several at a time (a round trip each on a remote store), added in name order.
    let read = repo.read_index_files(&files);
    for ((id, size), read) in files.into_iter().zip(read) {
        match read {
            Ok((domain, file)) => {
                report.index_files_checked += 1;
                report.bytes_read += size;
                index.add(id, domain, file, report);
            }
            // Removed since the listing, by a concurrent prune.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) => {
                report.index_files_checked += 1;
                report.error(layout::in_dir(layout::INDEX, &id), format!("unreadable index file: {}", describe(&e)));
            }
        }
    }
    Ok(index)
}

/// Compares the index with the packs in storage. Returns the packs that are missing.
fn check_packs(repo: &Repository, index: &CheckIndex, report: &mut CheckReport) -> Result<HashSet<Id>, RepoError> {
    let mut stored: HashMap<Id, (String, u64)> = HashMap::new();
    for (path, size) in repo.list_objects(layout::DATA)? {
        let name = path.rsplit('/').next().unwrap_or_default();
        match Id::from_hex(name) {
            Some(id) if path == layout::pack(&id) => {
                stored.insert(id, (path, size));
            }
            Some(id) => report
                .warn(path, format!("pack stored outside its folder (expected {}); it is not used", layout::pack(&id))),
            None => report.warn(path, "not a pack (its name is not an id); ignored"),
        }
    }

    let mut missing = HashSet::new();
    for pack in &index.packs {
        report.packs_checked += 1;
        let path = layout::pack(&pack.id);
        let listed_by = layout::in_dir(layout::INDEX, &pack.index_file);
        // Some stores list without sizes (or lag behind): ask the object itself before blaming it.
        let size = match stored.remove(&pack.id) {
            Some((_, size)) if size == pack.size => Some(size),
            _ => repo.object_size(&path)?,
        };
        match size {
            None => {
                missing.insert(pack.id);
                report.error(
                    path,
                    format!("missing from storage; {listed_by} lists it with {} blobs", pack.entries.len()),
                );
            }
            Some(size) if size != pack.size => report
                .error(path, format!("size is {size} bytes but {listed_by} says {}: truncated or replaced", pack.size)),
            Some(_) => {}
        }
    }

    let mut orphans: Vec<(String, u64)> = stored.into_values().collect();
    orphans.sort();
    for (path, size) in orphans {
        report.warn(
            path,
            format!(
                "orphan pack ({size} bytes) in no index file, usually left by an interrupted backup; \
                 prune removes it"
            ),
        );
    }
    Ok(missing)
}

/// `signers/` objects that do not verify, and revocations this machine saw that are gone.
fn check_signers(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    // As read when the repository was opened, a moment ago: listing `signers/` again would
    // cost a round trip per check for nothing.
    let signers = repo.signers_at_open()?;
    for (id, reason) in &signers.invalid {
        report.error(layout::in_dir(layout::SIGNERS, id), format!("signer record ignored: {reason}"));
    }
    for signer in &signers.vanished_revocations {
        report.error(
            layout::SIGNERS,
            format!(
                "the revocation of write-only key {} is gone from the repository (this machine saw it); \
                 its later snapshots stay untrusted here",
                signer.short()
            ),
        );
    }
    for (id, record) in &signers.registrations {
        let key = crate::crypto::VerifyingKey(record.verify_key).id();
        if record.wrapped_domain.is_none() && !signers.revoked.contains_key(&key) {
            report.warn(
                layout::in_dir(layout::SIGNERS, id),
                format!(
                    "write-only key {} ({}) is a version-1 key: it shares the repository's index and is bound to \
                     no host; replace it (README: \"Moving a repository to format v2\")",
                    key.short(),
                    crate::format::signer::printable(&record.label)
                ),
            );
        }
    }
    Ok(())
}

/// Without the secret key, snapshots cannot be opened, but their names and signatures can be
/// verified.
fn check_snapshot_signatures(repo: &Repository, report: &mut CheckReport) -> Result<(), RepoError> {
    let signers = repo.signers()?;
    for (id, _) in repo.list_object_ids(layout::SNAPSHOTS)? {
        let path = layout::in_dir(layout::SNAPSHOTS, &id);
        let bytes = match repo.read_object_named(&path, &id) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        report.snapshots_checked += 1;
        report.bytes_read += bytes.len() as u64;
        if Id::of_bytes(&bytes) != id {
            report.error(path, "snapshot ignored: content does not match its name");
            continue;
        }
        let verified = Snapshot::signer_id(&bytes).map_err(|e| e.to_string()).and_then(|signer| {
            let key = signers.key_for(&signer, &id)?;
            Snapshot::verify(&bytes, &repo.id(), key).map_err(|e| e.to_string())
        });
        if let Err(reason) = verified {
            report.error(path, format!("snapshot ignored: {reason}"));
        }
    }
    Ok(())
}

/// Trees read ahead of the walk, at most this much plaintext (beyond it, the walk reads the
/// rest one at a time).
const PREFETCH_TREE_BYTES: u64 = 256 << 20;

/// Over a network: reads every indexed tree by pack region, [`READ_WORKERS`] regions in
/// flight, so the walk costs a request per region rather than a round trip per folder. Each
/// tree is verified as any read is; a failure is kept for the walk to report where it meets it.
fn prefetch_trees(repo: &Repository, index: &CheckIndex) -> HashMap<Id, Result<Vec<u8>, RepoError>> {
    let mut trees: Vec<(BlobLocation, ())> = Vec::new();
    let mut bytes = 0u64;
    for blob in index.blobs.keys() {
        match index.locate(blob) {
            Some(location) if location.entry.kind == BlobKind::Tree => {
                bytes += u64::from(location.entry.raw_len);
                if bytes > PREFETCH_TREE_BYTES {
                    break;
                }
                trees.push((location, ()));
            }
            _ => {}
        }
    }
    let regions: Vec<Vec<BlobLocation>> = plan_regions(trees, REGION_GAP, REGION_MAX)
        .into_iter()
        .map(|region| region.into_iter().map(|(l, ())| l).collect())
        .collect();
    let next = AtomicUsize::new(0);
    let found = std::sync::Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..READ_WORKERS.min(regions.len()) {
            let (next, regions, found) = (&next, &regions, &found);
            scope.spawn(move || {
                let (mut sealed, mut out) = (Vec::new(), Vec::new());
                while let Some(region) = regions.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut got = Vec::with_capacity(region.len());
                    repo.read_region(region, &mut sealed, &mut out, |i, result| {
                        got.push((region[i].entry.id, result.map(<[u8]>::to_vec)));
                    });
                    found.lock().unwrap_or_else(|p| p.into_inner()).extend(got);
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Walks every snapshot's trees, each distinct tree once, reading them from storage. A blob
/// shared by several snapshots is reported under the first snapshot (and path) that reaches it.
fn check_trees(
    repo: &Repository,
    index: &CheckIndex,
    snapshots: &[SnapshotEntry],
    report: &mut CheckReport,
    progress: &dyn Fn(&str),
) {
    let mut seen: HashSet<Id> = HashSet::new();
    let mut prefetched = if repo.is_local() || snapshots.is_empty() {
        HashMap::new()
    } else {
        progress("reading trees");
        prefetch_trees(repo, index)
    };
    for (i, entry) in snapshots.iter().enumerate() {
        progress(&format!("checking trees of snapshot {} ({}/{})", entry.id.short(), i + 1, snapshots.len()));
        let object = layout::in_dir(layout::SNAPSHOTS, &entry.id);
        let mut stack: Vec<(Id, Vec<u8>)> = vec![(entry.snapshot.tree, b"/".to_vec())];
        while let Some((tree_id, dir)) = stack.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            report.trees_checked += 1;
            let shown = String::from_utf8_lossy(&dir).into_owned();
            let Some(location) = index.locate(&tree_id) else {
                report.error(&object, format!("{shown}: folder's tree {tree_id} is not in the index"));
                continue;
            };
            let pack_path = layout::pack(&location.pack);
            if location.entry.kind != BlobKind::Tree {
                report.error(pack_path, format!("{shown}: tree {tree_id} is indexed as a data blob"));
                continue;
            }
            report.bytes_read += u64::from(location.entry.length);
            let read =
                prefetched.remove(&tree_id).unwrap_or_else(|| repo.read_blob(&location, crate::repo::Copies::Listed));
            let tree = match read
                .and_then(|bytes| Tree::decode(&bytes).map_err(RepoError::format(format!("tree {tree_id}"))))
            {
                Ok(tree) => tree,
                Err(e) => {
                    report
                        .error(pack_path, format!("tree {tree_id} ({shown} in {object}) is damaged: {}", describe(&e)));
                    continue;
                }
            };
            report.blobs_checked += 1;
            for node in tree.nodes {
                let path = join_path(&dir, &node.name);
                match node.kind {
                    NodeKind::Dir { subtree } => stack.push((subtree, path)),
                    NodeKind::File { size, content } => {
                        check_file(index, &object, &path, size, &content, report);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn check_file(index: &CheckIndex, object: &str, path: &[u8], size: u64, content: &[Id], report: &mut CheckReport) {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let mut total = 0u64;
    let mut complete = true;
    for blob in content {
        match index.locate(blob) {
            None => {
                complete = false;
                report.error(object, format!("{}: data blob {blob} is not in the index", shown()));
            }
            Some(location) if location.entry.kind != BlobKind::Data => {
                complete = false;
                report.error(object, format!("{}: blob {blob} is indexed as a tree, not data", shown()));
            }
            Some(location) => total = total.saturating_add(u64::from(location.entry.raw_len)),
        }
    }
    if complete && total != size {
        report.error(object, format!("{}: size is {size} bytes but its blobs hold {total}", shown()));
    }
}

/// What verifying one pack found.
#[derive(Default)]
struct PackResult {
    errors: Vec<CheckProblem>,
    warnings: Vec<CheckProblem>,
    blobs_checked: u64,
    bytes_read: u64,
}

fn read_packs(
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

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::format::index::IndexPack;
    use crate::format::pack::PackWriter;
    use crate::format::tree::{Metadata, Node};
    use crate::keys::RepoKeys;
    use crate::test_kit::{self, backup, fixture, Fixture};

    fn run(fx: &Fixture, read_data: ReadData) -> CheckReport {
        check(&fx.repo, &CheckOptions { read_data }, |_| {}).unwrap()
    }

    fn objects(problems: &[CheckProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.object.as_str()).collect()
    }

    /// (pack id, its entries) of every pack holding blobs of `kind`, from the index files.
    fn packs_of(fx: &Fixture, kind: BlobKind) -> Vec<(Id, Vec<PackEntry>)> {
        let mut out = Vec::new();
        for (id, _) in fx.repo.list_object_ids(layout::INDEX).unwrap() {
            for pack in fx.repo.read_index_file(&id).unwrap().1.packs {
                if pack.blobs.iter().any(|b| b.kind == kind) {
                    out.push((pack.id, pack.blobs));
                }
            }
        }
        out
    }

    #[test]
    fn clean_repository_passes() {
        let fx = fixture();
        backup(&fx);
        let report = run(&fx, ReadData::All);
        assert!(report.is_ok(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.snapshots_checked, 1);
        assert!(report.index_files_checked >= 1);
        assert!(report.packs_checked >= 2, "a data pack and a tree pack");
        assert_eq!(report.packs_read, report.packs_checked);
        assert!(report.trees_checked >= 3);
        assert!(report.blobs_checked >= report.trees_checked + 2);
        assert!(report.bytes_read > 0);
        serde_json::to_string(&report).unwrap();
    }

    #[test]
    fn flipped_byte_in_a_data_pack_is_found_by_read_data_and_named() {
        let fx = fixture();
        backup(&fx);
        let (pack_id, entries) = packs_of(&fx, BlobKind::Data).remove(0);
        let path = layout::pack(&pack_id);
        let mut bytes = fx.repo.read_object(&path).unwrap();
        let victim = entries[0];
        bytes[victim.offset as usize + 20] ^= 1;
        fx.repo.write_object(&path, bytes).unwrap();

        // Same size, trees elsewhere: only reading the data notices.
        assert!(run(&fx, ReadData::None).is_ok());
        let report = run(&fx, ReadData::All);
        assert!(!report.is_ok());
        assert!(report.errors.iter().all(|p| p.object == path), "{:?}", report.errors);
        assert!(report.errors.iter().any(|p| p.message.contains("does not match its name")));
        assert!(report.errors.iter().any(|p| p.message.contains(&victim.id.to_hex())), "{:?}", report.errors);

        // Subsets 1/2 and 2/2 together read every pack exactly once.
        let halves: Vec<CheckReport> = (1..=2).map(|n| run(&fx, ReadData::Subset { n, m: 2 })).collect();
        assert_eq!(halves.iter().map(|r| r.packs_read).sum::<u64>(), report.packs_read);
        assert_eq!(halves.iter().filter(|r| objects(&r.errors).contains(&path.as_str())).count(), 1);
    }

    #[test]
    fn missing_and_truncated_packs_are_named() {
        let fx = fixture();
        backup(&fx);
        let (tree_pack, _) = packs_of(&fx, BlobKind::Tree).remove(0);
        let (data_pack, _) = packs_of(&fx, BlobKind::Data).remove(0);
        let tree_path = layout::pack(&tree_pack);
        let data_path = layout::pack(&data_pack);
        fx.repo.delete_object(&tree_path).unwrap();
        let mut bytes = fx.repo.read_object(&data_path).unwrap();
        bytes.truncate(bytes.len() - 5);
        fx.repo.write_object(&data_path, bytes).unwrap();

        let report = run(&fx, ReadData::All);
        let missing = report.errors.iter().find(|p| p.object == tree_path).unwrap();
        assert!(missing.message.contains("missing"), "{missing:?}");
        let truncated = report.errors.iter().find(|p| p.object == data_path && p.message.contains("size")).unwrap();
        assert!(truncated.message.contains("index/"), "{truncated:?}");
        // The damaged pack was also read, and its table found broken.
        assert!(report.errors.iter().any(|p| p.object == data_path && p.message.contains("blob table")));
        // Trees could not be loaded: named by their (missing) pack.
        assert!(report.errors.iter().filter(|p| p.object == tree_path).count() >= 2, "{:?}", report.errors);
    }

    #[test]
    fn corrupt_index_orphans_and_bad_snapshots_are_named() {
        let fx = fixture();
        let out = backup(&fx);
        // Damage every index file, keeping its name.
        let mut index_paths = Vec::new();
        for (id, _) in fx.repo.list_object_ids(layout::INDEX).unwrap() {
            let path = layout::in_dir(layout::INDEX, &id);
            let mut bytes = fx.repo.read_object(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            fx.repo.write_object(&path, bytes).unwrap();
            index_paths.push(path);
        }

        // An index file whose name matches but whose content is not an index.
        let junk = b"CFINDX01 not really".to_vec();
        let junk_path = layout::in_dir(layout::INDEX, &Id::of_bytes(&junk));
        fx.repo.write_object(&junk_path, junk).unwrap();

        let orphan = b"left behind by an interrupted backup".to_vec();
        let orphan_path = layout::pack(&Id::of_bytes(&orphan));
        fx.repo.write_object(&orphan_path, orphan).unwrap();
        fx.repo.write_object("data/zz/stray", b"x".to_vec()).unwrap();

        let snapshot_path = layout::in_dir(layout::SNAPSHOTS, &out.id);
        let mut bytes = fx.repo.read_object(&snapshot_path).unwrap();
        bytes[60] ^= 1;
        let forged = Id::of_bytes(&bytes);
        fx.repo.write_object(&layout::in_dir(layout::SNAPSHOTS, &forged), bytes).unwrap();

        let report = run(&fx, ReadData::None);
        let errors = objects(&report.errors);
        for path in &index_paths {
            assert!(errors.contains(&path.as_str()), "{errors:?}");
        }
        assert!(errors.contains(&junk_path.as_str()), "{errors:?}");
        let forged_path = layout::in_dir(layout::SNAPSHOTS, &forged);
        assert!(errors.contains(&forged_path.as_str()), "{errors:?}");
        assert!(!report.errors.iter().any(|p| p.object == snapshot_path && p.message.contains("ignored")));
        let warnings = objects(&report.warnings);
        assert!(warnings.contains(&orphan_path.as_str()), "{warnings:?}");
        assert!(warnings.contains(&"data/zz/stray"), "{warnings:?}");
        assert!(!errors.contains(&orphan_path.as_str()));
        // With the only index file unreadable, every pack now looks orphaned, and every
        // tree of the good snapshot is missing from the index.
        assert!(report.errors.iter().any(|p| p.object == snapshot_path && p.message.contains("not in the index")));
    }

    /// A snapshot whose one file references a blob nobody stored.
    #[test]
    fn missing_data_blob_names_snapshot_path_and_blob() {
        let fx = fixture();
        let repo = &fx.repo;
        let lost = Id([7; 32]);
        let tree = Tree {
            nodes: vec![Node {
                name: ByteBuf::from(b"lost.bin".to_vec()),
                kind: NodeKind::File { size: 3, content: vec![lost] },
                meta: Metadata::default(),
            }],
        };
        let bytes = tree.encode();
        let tree_id = repo.keys().id_key.blob_id(&bytes);
        let mut writer =
            PackWriter::new(&repo.keys().public, &repo.keys().index_key, BlobKind::Tree, Vec::new()).unwrap();
        writer.add(tree_id, &pack::compress(&bytes, 3), bytes.len() as u32).unwrap();
        let finished = writer.finish().unwrap();
        let size = finished.size;
        repo.write_object(&layout::pack(&finished.id), finished.out).unwrap();
        repo.save_index(&IndexFile { packs: vec![IndexPack { id: finished.id, size, blobs: finished.entries }] })
            .unwrap();
        let snapshot_id = repo.save_snapshot(&Snapshot { tree: tree_id, time_unix: 1, ..Snapshot::default() }).unwrap();

        let report = run(&fx, ReadData::All);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let problem = &report.errors[0];
        assert_eq!(problem.object, layout::in_dir(layout::SNAPSHOTS, &snapshot_id));
        assert!(problem.message.contains("/lost.bin"), "{problem:?}");
        assert!(problem.message.contains(&lost.to_hex()), "{problem:?}");
    }

    #[test]
    fn write_only_key_checks_structure_only() {
        let fx = fixture();
        let out = backup(&fx);
        let mut keys: RepoKeys = fx.repo.keys().clone();
        keys.secret = None;
        let store = fx.repo.store_for_tests();
        let cache = tempfile::tempdir().unwrap();
        let options = crate::repo::OpenOptions { data_dir: cache.path().to_path_buf(), kdf: test_kit::kdf() };
        let write_only = Repository::with_keys(store, fx.repo.config().clone(), keys, &options).unwrap();
        let full = CheckOptions { read_data: ReadData::All };
        assert!(matches!(check(&write_only, &full, |_| {}), Err(RepoError::WriteOnly { .. })));

        let report = check(&write_only, &CheckOptions::default(), |_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.snapshots_checked, 1);
        assert_eq!(report.trees_checked, 0);
        assert!(objects(&report.warnings).contains(&layout::SNAPSHOTS));

        // Signatures are still checked: a snapshot damaged under a matching name is caught.
        let path = layout::in_dir(layout::SNAPSHOTS, &out.id);
        let mut bytes = fx.repo.read_object(&path).unwrap();
        bytes[100] ^= 1;
        let damaged = layout::in_dir(layout::SNAPSHOTS, &Id::of_bytes(&bytes));
        fx.repo.write_object(&damaged, bytes).unwrap();
        let report = check(&write_only, &CheckOptions::default(), |_| {}).unwrap();
        assert_eq!(objects(&report.errors), vec![damaged.as_str()]);
    }

    #[test]
    fn parse_subset_and_selection() {
        assert!(matches!(ReadData::parse_subset("10%"), Ok(ReadData::Percent { percent: 10.0, .. })));
        assert!(matches!(ReadData::parse_subset(" 2.5 %"), Ok(ReadData::Percent { percent: 2.5, .. })));
        assert_eq!(ReadData::parse_subset("100%"), Ok(ReadData::All));
        assert_eq!(ReadData::parse_subset("1/5"), Ok(ReadData::Subset { n: 1, m: 5 }));
        assert_eq!(ReadData::parse_subset("1/1"), Ok(ReadData::All));
        for bad in ["0%", "101%", "NaN%", "x", "0/5", "6/5", "1/0", "1/", "%", "-3%"] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad} accepted");
        }
        let ids: Vec<Id> = (0u32..2000).map(|i| Id::of_bytes(&i.to_le_bytes())).collect();
        for m in [2u32, 3, 7] {
            for id in &ids {
                let hits = (1..=m).filter(|&n| ReadData::Subset { n, m }.selects(id)).count();
                assert_eq!(hits, 1);
            }
        }
        let ten = ids.iter().filter(|id| ReadData::Percent { percent: 10.0, seed: 0 }.selects(id)).count();
        assert!((100..300).contains(&ten), "{ten}");
        assert!(ids.iter().all(|id| !ReadData::Percent { percent: 10.0, seed: 5 }.selects(id)
            || ReadData::Percent { percent: 20.0, seed: 5 }.selects(id)));
        // Each run (each seed) picks another tenth, of about the same size.
        let picked = |spec: &str| -> std::collections::HashSet<Id> {
            let subset = ReadData::parse_subset(spec).expect("valid");
            ids.iter().filter(|id| subset.selects(id)).copied().collect()
        };
        let (first, second) = (picked("10%"), picked("10%"));
        assert!((100..300).contains(&first.len()) && (100..300).contains(&second.len()));
        assert_ne!(first, second, "two 10% runs read the same packs");
        // n/m stays deterministic: the same part every time.
        assert_eq!(picked("2/7"), picked("2/7"));
        assert!(!ReadData::None.selects(&ids[0]) && ReadData::All.selects(&ids[0]));
    }
}
