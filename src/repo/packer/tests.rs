//! The packer on a repository in memory: deduplication, the pack sizes, the index cadence,
//! both with worker threads (a backup) and on the calling thread (prune, repair).

use super::*;
use crate::format::tree::Tree;
use crate::layout;
use crate::repo::test_kit::{memory_repo, memory_repo_with, noise, small_packs};

fn packs_added(sink: &Packer<'_>) -> u64 {
    sink.shared.stats.packs_added.load(Ordering::Relaxed)
}

#[test]
fn a_blob_is_saved_once_and_known_to_the_next_sink() {
    let (repo, _cache) = memory_repo();
    let sink = Packer::new(Arc::clone(&repo), 2, &HashSet::new()).unwrap();
    let data = noise(10_000, 1);
    let id = repo.keys().id_key.blob_id(&data);
    assert!(!sink.contains_all(&[id]));
    sink.add_data(id, data.clone()).unwrap();
    sink.add_data(id, data.clone()).unwrap();
    assert!(sink.contains_all(&[id]), "known as soon as it is queued");
    let tree = Tree { nodes: Vec::new() }.encode();
    let tree_id = sink.add_tree(tree.clone()).unwrap();
    assert_eq!(sink.add_tree(tree.clone()).unwrap(), tree_id);
    let totals = sink.finish().unwrap();
    assert_eq!(totals.raw_added, (data.len() + tree.len()) as u64, "each counted once");
    assert_eq!(totals.packs_added, 2, "a data pack and a tree pack");
    assert_eq!(repo.load_blob(&id).unwrap(), data);
    assert_eq!(repo.cached_tree(&tree_id).unwrap(), Some(tree), "trees go to the local cache too");

    let again = Packer::new(Arc::clone(&repo), 1, &HashSet::new()).unwrap();
    assert!(again.contains_all(&[id, tree_id]), "a new sink knows what the index holds");
    assert_eq!(again.finish().unwrap().packs_added, 0);
    // A prune plan condemns every pack: their blobs count as absent, to be saved again.
    let condemned: HashSet<Id> = repo.list_object_ids(layout::DATA).unwrap().into_iter().map(|(p, _)| p).collect();
    let doubting = Packer::new(Arc::clone(&repo), 1, &condemned).unwrap();
    assert!(!doubting.contains_all(&[id]));
    doubting.finish().unwrap();
}

#[test]
fn tree_packs_close_at_a_quarter_of_the_target() {
    let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
    let sink = Packer::new(Arc::clone(&repo), 1, &HashSet::new()).unwrap();
    // Trees of 6 KiB: the tree pack (16 KiB) is full at the third.
    sink.add_tree(noise(6 << 10, 1)).unwrap();
    sink.add_tree(noise(6 << 10, 2)).unwrap();
    assert_eq!(packs_added(&sink), 0);
    sink.add_tree(noise(6 << 10, 3)).unwrap();
    assert_eq!(packs_added(&sink), 1);
    sink.add_tree(noise(6 << 10, 4)).unwrap();
    assert_eq!(sink.finish().unwrap().packs_added, 2, "the open tree pack is stored at the end");
}

#[test]
fn an_index_file_is_written_every_so_many_packs() {
    let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
    let sink = Packer::new(Arc::clone(&repo), 1, &HashSet::new()).unwrap();
    // Each incompressible 64 KiB blob fills a pack of its own.
    let count = PACKS_PER_INDEX + 6;
    for seed in 0..count {
        let data = noise(64 << 10, seed as u64);
        sink.add_data(repo.keys().id_key.blob_id(&data), data).unwrap();
    }
    assert_eq!(sink.finish().unwrap().packs_added, count as u64);
    let index = repo.list_object_ids(layout::INDEX).unwrap();
    // Two, unless the run was so slow that the time rule wrote more.
    assert!(index.len() >= 2, "an index file at {PACKS_PER_INDEX} packs and one at the end: {}", index.len());
    let mut named: Vec<Id> =
        index.iter().flat_map(|(id, _)| repo.read_index_file(id).unwrap().1.packs).map(|p| p.id).collect();
    named.sort();
    let mut listed: Vec<Id> = repo.list_object_ids(layout::DATA).unwrap().into_iter().map(|(id, _)| id).collect();
    listed.sort();
    assert_eq!(named, listed, "every pack stored is named by exactly one index file");
}

#[test]
fn a_dry_run_stores_nothing() {
    let (repo, _cache) = memory_repo();
    let sink = Packer::with_dry_run(Arc::clone(&repo), 1, &HashSet::new(), true).unwrap();
    let data = noise(10_000, 9);
    sink.add_data(repo.keys().id_key.blob_id(&data), data).unwrap();
    let tree_id = sink.add_tree(Tree { nodes: Vec::new() }.encode()).unwrap();
    assert_eq!(sink.finish().unwrap().packs_added, 2, "packs are built and counted");
    assert!(repo.list_object_ids(layout::DATA).unwrap().is_empty());
    assert!(repo.list_object_ids(layout::INDEX).unwrap().is_empty());
    assert_eq!(repo.cached_tree(&tree_id).unwrap(), None);
}

fn stored_packs(repo: &Repository) -> usize {
    repo.list_object_ids(layout::DATA).unwrap().len()
}

fn add(packer: &Packer<'_>, repo: &Repository, kind: BlobKind, seed: u64) -> (Id, Vec<u8>) {
    let plain = noise(6 << 10, seed);
    let id = repo.keys.id_key.blob_id(&plain);
    packer.add(kind, id, plain.clone()).unwrap();
    (id, plain)
}

#[test]
fn on_the_calling_thread_tree_packs_close_at_a_quarter_and_data_packs_at_the_target() {
    let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
    let packer = Packer::in_domain(&repo, repo.keys.write_domain(), "packer-test");
    let mut added = Vec::new();
    // Blobs of 6 KiB: a tree pack (16 KiB) is full at the third, a data pack (64 KiB) at
    // the eleventh.
    for seed in 0..2 {
        added.push(add(&packer, &repo, BlobKind::Tree, seed));
        added.push(add(&packer, &repo, BlobKind::Data, 100 + seed));
    }
    assert_eq!(packs_added(&packer), 0, "no pack is stored while it has room");
    added.push(add(&packer, &repo, BlobKind::Tree, 2));
    assert_eq!(packs_added(&packer), 1, "the tree pack closes at a quarter");
    for seed in 2..10 {
        added.push(add(&packer, &repo, BlobKind::Data, 100 + seed));
    }
    assert_eq!(packs_added(&packer), 1, "ten data blobs still fit");
    added.push(add(&packer, &repo, BlobKind::Data, 110));
    assert_eq!(packs_added(&packer), 2, "the data pack closes at the target");
    added.push(add(&packer, &repo, BlobKind::Tree, 3));
    assert!(repo.list_object_ids(layout::INDEX).unwrap().is_empty(), "no index before finishing");

    packer.finish_and_index().unwrap();
    assert_eq!(stored_packs(&repo), 3, "the open tree pack is stored at the end");
    let index = repo.list_object_ids(layout::INDEX).unwrap();
    assert_eq!(index.len(), 1, "one index file for the packs written");
    let (_, file) = repo.read_index_file(&index[0].0).unwrap();
    let mut named: Vec<Id> = file.packs.iter().map(|p| p.id).collect();
    let mut listed: Vec<Id> = repo.list_object_ids(layout::DATA).unwrap().into_iter().map(|(id, _)| id).collect();
    named.sort();
    listed.sort();
    assert_eq!(named, listed, "the index names exactly the packs stored");
    for (id, plain) in &added {
        assert_eq!(&repo.load_blob(id).unwrap(), plain, "every blob reads back through the index");
    }
}

#[test]
fn nothing_added_in_a_domain_writes_nothing() {
    let (repo, _cache) = memory_repo_with(small_packs(1 << 16));
    Packer::in_domain(&repo, repo.keys.write_domain(), "packer-test").finish_and_index().unwrap();
    assert_eq!(stored_packs(&repo), 0);
    assert!(repo.list_object_ids(layout::INDEX).unwrap().is_empty());
}

#[test]
fn pack_targets_follow_the_config() {
    let (repo, _cache) = memory_repo_with(small_packs(1 << 20));
    assert_eq!(pack_target(repo.config(), BlobKind::Data), 1 << 20);
    assert_eq!(pack_target(repo.config(), BlobKind::Tree), 1 << 18);
}
