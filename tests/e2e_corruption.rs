//! End-to-end: damaged repositories. Flip a byte in, or delete, a pack, an index file or a
//! snapshot; `check` must fail and name the object; `check --read-data` must find a flipped
//! byte in any pack; `restore` must say which files are affected, exit non-zero, and never write
//! wrong bytes (a restored file either equals its source or is absent and named).
//!
//! The tests find objects by listing repo/data/**, repo/index/*, repo/snapshots/*; which packs
//! hold trees is found by probing `ls` with an empty cache dir.

mod common;

use std::path::{Path, PathBuf};

use common::compare::{first_difference, scan, Kind};
use common::tree::{write_random, KIB};
use common::*;
use serde_json::Value;

struct Setup {
    c: Coffer,
    src: PathBuf,
    snap: Value,
}

fn setup() -> Setup {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    write_random(&src.join("big.bin"), 1, 600 * KIB);
    write_random(&src.join("medium.bin"), 2, 200 * KIB);
    write_random(&src.join("sub/small.bin"), 3, 5 * KIB);
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(src.join("sub/b.txt"), "bravo\n").expect("write");
    std::fs::write(src.join("empty"), "").expect("write");
    let snap = c.backup(&[&src]);
    Setup { c, src, snap }
}

/// Runs `f` with `file` corrupted (one bit flipped in the middle), then puts it back.
fn with_flipped<T>(file: &Path, f: impl FnOnce() -> T) -> T {
    let original = std::fs::read(file).expect("read object");
    flip_byte(file, None);
    let result = f();
    std::fs::write(file, original).expect("restore object");
    result
}

fn fresh_cache_arg(c: &Coffer, name: &str) -> String {
    c.dir(name).to_string_lossy().into_owned()
}

/// Packs whose corruption makes `ls` fail with an empty cache: the packs holding tree blobs.
fn tree_packs(c: &Coffer) -> Vec<PathBuf> {
    let packs = c.repo_files("data");
    let mut trees = Vec::new();
    for (i, p) in packs.iter().enumerate() {
        let cache = fresh_cache_arg(c, &format!("probe-cache-{i}"));
        let fails = with_flipped(p, || !c.cmd(&["--cache-dir", &cache, "ls", "latest"]).status.success());
        if fails {
            trees.push(p.clone());
        }
    }
    assert!(
        !trees.is_empty(),
        "no pack's corruption broke `ls` with an empty cache: tree blobs are not verified on read"
    );
    trees
}

fn data_packs(c: &Coffer) -> Vec<PathBuf> {
    let trees = tree_packs(c);
    let data: Vec<PathBuf> = c.repo_files("data").into_iter().filter(|p| !trees.contains(p)).collect();
    assert!(!data.is_empty(), "no pack holds only data blobs (trees and data must be in separate packs)");
    data
}

#[test]
fn check_passes_on_a_healthy_repository() {
    let s = setup();
    s.c.ok(&["check"]);
    s.c.ok(&["check", "--read-data"]);
    s.c.ok(&["check", "--read-data-subset", "10%"]);
}

#[test]
fn check_read_data_names_every_corrupted_pack() {
    let s = setup();
    let packs = s.c.repo_files("data");
    assert!(packs.len() >= 2, "expected separate tree and data packs, found {packs:?}");
    for pack in &packs {
        let out = with_flipped(pack, || s.c.cmd(&["check", "--read-data"]));
        out.assert_failed();
        assert_names_object(&out.all(), pack, "check --read-data with a flipped byte");
    }
    s.c.ok(&["check", "--read-data"]);
}

#[test]
fn check_finds_a_corrupted_tree_pack_without_read_data() {
    let s = setup();
    for pack in tree_packs(&s.c) {
        let out = with_flipped(&pack, || s.c.cmd(&["check"]));
        out.assert_failed();
        assert_names_object(&out.all(), &pack, "check with a corrupted tree pack");
    }
}

#[test]
fn check_names_a_missing_pack() {
    let s = setup();
    for pack in s.c.repo_files("data") {
        let saved = std::fs::read(&pack).expect("read pack");
        std::fs::remove_file(&pack).expect("delete pack");
        let out = s.c.cmd(&["check"]);
        std::fs::write(&pack, saved).expect("put pack back");
        out.assert_failed();
        assert_names_object(&out.all(), &pack, "check with a deleted pack");
    }
}

#[test]
fn check_names_a_corrupted_index_file() {
    let s = setup();
    let index = s.c.repo_files("index");
    assert!(!index.is_empty(), "no index files after a backup");
    for file in &index {
        let out = with_flipped(file, || s.c.cmd(&["check"]));
        out.assert_failed();
        assert_names_object(&out.all(), file, "check with a flipped byte in an index file");
    }
}

#[test]
fn check_fails_when_the_index_is_deleted() {
    let s = setup();
    for file in s.c.repo_files("index") {
        std::fs::remove_file(file).expect("delete index file");
    }
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
}

#[test]
fn check_names_a_corrupted_snapshot() {
    let s = setup();
    let snaps = s.c.repo_files("snapshots");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let out = with_flipped(&snaps[0], || s.c.cmd(&["check"]));
    out.assert_failed();
    assert_names_object(&out.all(), &snaps[0], "check with a flipped byte in a snapshot");
}

/// The local database remembers the snapshots it saw, so hiding one is noticed.
#[test]
fn check_notices_a_deleted_snapshot() {
    let s = setup();
    let before = s.c.repo_files("snapshots");
    std::fs::write(s.src.join("a.txt"), "changed\n").expect("modify");
    let second = s.c.backup(&[&s.src]);
    let newest: Vec<PathBuf> = s.c.repo_files("snapshots").into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(newest.len(), 1, "{newest:?}");
    std::fs::remove_file(&newest[0]).expect("delete snapshot");
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
    let text = out.all();
    let short = string(&second, "short_id");
    assert!(
        text.contains(&short) || text.contains(&file_name(&newest[0])[..8]),
        "check does not name the vanished snapshot {short}\n{out}"
    );
}

#[test]
fn a_corrupted_snapshot_is_reported_and_the_others_still_listed() {
    let s = setup();
    let first = s.c.repo_files("snapshots");
    std::fs::write(s.src.join("a.txt"), "changed\n").expect("modify");
    let second = s.c.backup(&[&s.src]);
    let cache = fresh_cache_arg(&s.c, "fresh-cache");
    let out = with_flipped(&first[0], || s.c.cmd(&["--cache-dir", &cache, "snapshots", "--json"]));
    out.assert_no_panic();
    let text = out.stdout();
    assert!(text.contains(&string(&second, "snapshot_id")), "healthy snapshot not listed\n{out}");
    assert!(!text.contains(&string(&s.snap, "snapshot_id")), "corrupted snapshot listed as valid\n{out}");
    assert_names_object(&out.stderr(), &first[0], "snapshots with one corrupted snapshot");
}

/// Every source file is either restored exactly or absent and named in the output; at least
/// one is absent. Returns the names reported as affected.
fn assert_restore_is_safe(s: &Setup, out: &Out, target: &Path) {
    out.assert_failed();
    let restored_root = restored_path(target, &s.src);
    let text = out.all();
    let mut affected = Vec::new();
    for (rel, e) in scan(&s.src) {
        if e.kind != Kind::File {
            continue;
        }
        let got = restored_root.join(&rel);
        match std::fs::symlink_metadata(&got) {
            Ok(_) => {
                let same = std::fs::metadata(&got).expect("stat").len() == e.size
                    && first_difference(&s.src.join(&rel), &got).is_none();
                assert!(same, "restore wrote wrong bytes to {}\n{out}", got.display());
            }
            Err(_) => {
                let name = rel.file_name().expect("name").to_string_lossy().into_owned();
                assert!(text.contains(&name), "{name} was not restored and not named\n{out}");
                affected.push(name);
            }
        }
    }
    assert!(!affected.is_empty(), "restore failed but every file was restored intact?\n{out}");
    // Nothing else (partial or temporary files) left behind next to the real ones.
    let extra: Vec<_> = scan(&restored_root).into_keys().filter(|p| !s.src.join(p).exists()).collect();
    assert!(extra.is_empty(), "restore left unexpected files: {extra:?}");
}

#[test]
fn restore_from_a_corrupted_data_pack_never_writes_wrong_bytes() {
    let s = setup();
    let data = data_packs(&s.c);
    let biggest = data.iter().max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).expect("a data pack");
    let target = s.c.dir("restore");
    let out = with_flipped(biggest, || s.c.restore_out("latest", &target, &[]));
    assert_restore_is_safe(&s, &out, &target);
}

#[test]
fn restore_with_a_missing_data_pack_names_the_affected_files() {
    let s = setup();
    for pack in data_packs(&s.c) {
        std::fs::remove_file(pack).expect("delete pack");
    }
    let target = s.c.dir("restore");
    let out = s.c.restore_out("latest", &target, &[]);
    assert_restore_is_safe(&s, &out, &target);
    assert!(out.all().contains("big.bin") && out.all().contains("medium.bin"), "{out}");
}

/// A restore over an earlier one, with the data gone: a file whose content cannot be read is
/// reported and the copy already at the target is left as it was (the restore creates a file
/// only once its first bytes are read), never truncated or removed.
#[test]
fn a_file_that_cannot_be_read_leaves_the_one_at_the_target_alone() {
    let s = setup();
    let target = s.c.dir("restore");
    let earlier = restored_path(&target, &s.src).join("big.bin");
    std::fs::create_dir_all(earlier.parent().expect("parent")).expect("mkdir");
    std::fs::write(&earlier, b"an earlier restore").expect("write");
    for pack in data_packs(&s.c) {
        std::fs::remove_file(pack).expect("delete pack");
    }
    let out = s.c.restore_out("latest", &target, &[]);
    out.assert_failed();
    assert!(out.all().contains("big.bin"), "{out}");
    assert_eq!(std::fs::read(&earlier).expect("still there"), b"an earlier restore", "{out}");
}

/// Every source file is either restored exactly or absent, with the restore failing and naming
/// it, or naming the damaged object when that stopped the restore (a folder's tree unreadable).
fn assert_no_wrong_bytes(s: &Setup, out: &Out, target: &Path, damaged: &Path, what: &str) {
    out.assert_no_panic();
    let restored_root = restored_path(target, &s.src);
    let text = out.all();
    for (rel, e) in scan(&s.src) {
        if e.kind != Kind::File {
            continue;
        }
        let got = restored_root.join(&rel);
        if std::fs::symlink_metadata(&got).is_ok() {
            let same = std::fs::metadata(&got).expect("stat").len() == e.size
                && first_difference(&s.src.join(&rel), &got).is_none();
            assert!(same, "{what}: restore wrote wrong bytes to {}\n{out}", got.display());
        } else {
            let name = rel.file_name().expect("name").to_string_lossy().into_owned();
            assert!(!out.status.success(), "{what}: {name} is missing but restore succeeded\n{out}");
            let short = &file_name(damaged)[..8];
            assert!(
                text.contains(&name) || text.contains(short),
                "{what}: {name} was not restored, and neither it nor the damaged object is named\n{out}"
            );
        }
    }
}

/// Offsets worth flipping in an object of `len` bytes: the start, fixed-size headers, the
/// middle, and the trailer.
fn offsets(len: usize, inner: &[usize]) -> Vec<usize> {
    let mut all: Vec<usize> = [0, len / 2, len.saturating_sub(1)].into_iter().chain(inner.iter().copied()).collect();
    all.retain(|&o| o < len);
    all.sort_unstable();
    all.dedup();
    all
}

/// Bit rot anywhere: one flipped byte at many places of every object of every type (packs of
/// data and of trees, index files, snapshots). Each time, `check --read-data` fails and names
/// the object; where the object holds file content or folders, a restore writes no wrong byte.
#[test]
fn bit_rot_in_every_object_of_every_type_is_named_and_never_restored() {
    let s = setup();
    std::fs::write(s.src.join("a.txt"), "changed\n").expect("modify");
    s.c.backup(&[&s.src]);
    let trees = tree_packs(&s.c);
    let mut cases: Vec<(PathBuf, usize, &str)> = Vec::new();
    for pack in s.c.repo_files("data") {
        let len = std::fs::metadata(&pack).expect("stat").len() as usize;
        // Tree packs of earlier snapshots may look like data packs to the probe: any pack.
        let kind = if trees.contains(&pack) { "tree pack" } else { "pack" };
        // Header magic, wrapped key, first sealed blob, table, table length, end magic.
        for at in offsets(len, &[9, 50, 100, 110, len.saturating_sub(30), len.saturating_sub(11)]) {
            cases.push((pack.clone(), at, kind));
        }
    }
    for file in s.c.repo_files("index") {
        let len = std::fs::metadata(&file).expect("stat").len() as usize;
        for at in offsets(len, &[2, 10, 30]) {
            cases.push((file.clone(), at, "index file"));
        }
    }
    for file in s.c.repo_files("snapshots") {
        let len = std::fs::metadata(&file).expect("stat").len() as usize;
        // Magic, signer id, wrapped key, sealed body, signature.
        for at in offsets(len, &[4, 20, 60, 140, len.saturating_sub(40)]) {
            cases.push((file.clone(), at, "snapshot"));
        }
    }
    assert!(cases.len() >= 40, "too few objects to corrupt: {}", cases.len());
    let kinds: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.2).collect();
    assert_eq!(kinds.len(), 4, "not every object type is present: {kinds:?}");

    for (i, (file, at, kind)) in cases.iter().enumerate() {
        let what = format!("{kind} {} with byte {at} flipped", file_name(file));
        let original = std::fs::read(file).expect("read object");
        flip_byte(file, Some(*at));
        let check = s.c.cmd(&["check", "--read-data"]);
        let restore = (*kind != "index file" && *kind != "snapshot").then(|| {
            let target = s.c.dir(&format!("restore-{i}"));
            let cache = fresh_cache_arg(&s.c, &format!("cache-{i}"));
            let out = s.c.cmd(&[
                "--cache-dir",
                &cache,
                "restore",
                "latest",
                "--target",
                target.to_str().expect("utf-8 path"),
            ]);
            (target, out)
        });
        std::fs::write(file, original).expect("put the object back");
        check.assert_failed();
        assert_names_object(&check.all(), file, &what);
        if let Some((target, out)) = restore {
            assert_no_wrong_bytes(&s, &out, &target, file, &what);
            let _ = std::fs::remove_dir_all(&target);
        }
    }
    s.c.ok(&["check", "--read-data"]);
}

/// The repository's own small objects: a flipped byte in `config` or a key file stops every
/// command with an error (never a panic, never a silent success); `config` is named.
#[test]
fn bit_rot_in_config_and_key_files_is_refused() {
    let s = setup();
    let config = s.c.repo.join("config");
    let len = std::fs::metadata(&config).expect("stat").len() as usize;
    for at in offsets(len, &[5, 20, len.saturating_sub(30)]) {
        let out = with_flipped_at(&config, at, || s.c.cmd(&["check"]));
        out.assert_failed();
        assert!(out.stderr().contains("config"), "config with byte {at} flipped is not named:\n{out}");
    }
    for key in s.c.repo_files("keys") {
        let len = std::fs::metadata(&key).expect("stat").len() as usize;
        for at in offsets(len, &[5, 12, 40]) {
            let out = with_flipped_at(&key, at, || s.c.cmd(&["snapshots"]));
            out.assert_failed();
        }
    }
    s.c.ok(&["check"]);
}

fn with_flipped_at<T>(file: &Path, at: usize, f: impl FnOnce() -> T) -> T {
    let original = std::fs::read(file).expect("read object");
    flip_byte(file, Some(at));
    let result = f();
    std::fs::write(file, original).expect("restore object");
    result
}
