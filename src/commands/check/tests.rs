//! Unit tests of `check`: a clean repository passes, and each kind of damage is found and
//! named by its storage path.

use serde_bytes::ByteBuf;

use super::*;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{self, BlobKind, PackEntry, PackWriter};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Metadata, Node, NodeKind, Tree};
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
    let mut writer = PackWriter::new(&repo.keys().public, &repo.keys().index_key, BlobKind::Tree, Vec::new()).unwrap();
    writer.add(tree_id, &pack::compress(&bytes, 3), bytes.len() as u32).unwrap();
    let finished = writer.finish().unwrap();
    let size = finished.size;
    repo.write_object(&layout::pack(&finished.id), finished.out).unwrap();
    repo.save_index(&IndexFile { packs: vec![IndexPack { id: finished.id, size, blobs: finished.entries }] }).unwrap();
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
