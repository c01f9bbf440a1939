//! End-to-end: a storage that lies. Objects swapped (two packs' contents exchanged, two
//! snapshots exchanged), renamed, an older state of the repository served (rolled back), and a
//! snapshot hidden: each is detected and named by `check`, listing and restore never present
//! a lie as data, and the local database warns when snapshots it saw vanish.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::compare::{first_difference, scan, Kind};
use common::tree::{write_random, KIB};
use common::*;
use serde_json::Value;

struct Setup {
    c: Coffer,
    src: PathBuf,
    first: Value,
    second: Value,
}

fn setup() -> Setup {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_random(&src.join("one.bin"), 1, 150 * KIB);
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    let first = c.backup(&[&src]);
    write_random(&src.join("two.bin"), 2, 120 * KIB);
    std::fs::write(src.join("a.txt"), "alpha, changed\n").expect("write");
    let second = c.backup(&[&src]);
    Setup { c, src, first, second }
}

fn swap_contents(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).expect("read a"), std::fs::read(b).expect("read b"));
    std::fs::write(a, y).expect("write a");
    std::fs::write(b, x).expect("write b");
}

fn snapshot_file(c: &Coffer, snap: &Value) -> PathBuf {
    c.repo.join("snapshots").join(string(snap, "snapshot_id"))
}

/// Restores `snap` with an empty local cache; every file is either exact or absent and named.
fn restore_tells_no_lies(c: &Coffer, snap: &str, src: &Path, name: &str) -> Out {
    let target = c.dir(name);
    let cache = c.dir(&format!("{name}-cache"));
    let mut cmd = c.command();
    cmd.env("COFFER_CACHE_DIR", &cache).args(["restore", snap, "--target"]).arg(&target);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_no_panic();
    let root = restored_path(&target, src);
    for (rel, e) in scan(src) {
        if e.kind != Kind::File {
            continue;
        }
        let got = root.join(&rel);
        if got.exists() {
            assert!(first_difference(&src.join(&rel), &got).is_none(), "restore wrote wrong bytes to {rel:?}\n{out}");
        } else {
            assert!(!out.status.success(), "{rel:?} missing but restore succeeded\n{out}");
        }
    }
    out
}

#[test]
fn two_packs_with_their_contents_exchanged_are_named_and_never_restored() {
    let s = setup();
    let packs = s.c.repo_files("data");
    assert!(packs.len() >= 2, "{packs:?}");
    // The two largest: data packs of the two backups.
    let mut by_size = packs.clone();
    by_size.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("stat").len()));
    let (a, b) = (&by_size[0], &by_size[1]);
    swap_contents(a, b);
    let out = s.c.cmd(&["check", "--read-data"]);
    out.assert_failed();
    assert_names_object(&out.all(), a, "check after swapping two packs");
    assert_names_object(&out.all(), b, "check after swapping two packs");
    restore_tells_no_lies(&s.c, "latest", &s.src, "restore").assert_failed();
}

#[test]
fn two_snapshots_exchanged_are_rejected_and_named() {
    let s = setup();
    let (a, b) = (snapshot_file(&s.c, &s.first), snapshot_file(&s.c, &s.second));
    swap_contents(&a, &b);
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
    assert_names_object(&out.all(), &a, "check after swapping two snapshots");
    assert_names_object(&out.all(), &b, "check after swapping two snapshots");
    // A fresh cache: neither is listed as a valid snapshot.
    let cache = s.c.dir("fresh");
    let mut cmd = s.c.command();
    cmd.env("COFFER_CACHE_DIR", &cache).args(["snapshots", "--json"]);
    let listed = run(cmd, DEFAULT_TIMEOUT);
    listed.assert_code(0);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(0), "a swapped snapshot was listed:\n{listed}");
    assert_names_object(&listed.stderr(), &a, "snapshots after swapping two snapshots");
}

#[test]
fn renamed_objects_are_detected() {
    let s = setup();
    // A pack moved to another name: the index's pack is missing, the stray one is not trusted.
    let pack = s.c.repo_files("data").into_iter().next().expect("a pack");
    let fake = "ab".repeat(32);
    let moved = s.c.repo.join("data").join(&fake[..2]).join(&fake);
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&pack, &moved).expect("rename pack");
    let out = s.c.cmd(&["check", "--read-data"]);
    out.assert_failed();
    assert_names_object(&out.all(), &pack, "check after renaming a pack");
    std::fs::rename(&moved, &pack).expect("rename back");

    // A snapshot under another snapshot's name... or any name: its content is not its name.
    let snap = snapshot_file(&s.c, &s.second);
    let renamed = s.c.repo.join("snapshots").join("cd".repeat(32));
    std::fs::rename(&snap, &renamed).expect("rename snapshot");
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
    assert_names_object(&out.all(), &renamed, "check after renaming a snapshot");
    // ... and the real one is reported as vanished, since this machine saw it.
    assert!(out.all().contains(&string(&s.second, "short_id")), "{out}");
}

/// The storage serves an older state: the repository as it was before the second backup.
#[test]
fn a_rolled_back_repository_is_noticed() {
    let s = setup();
    let old = s.c.path("repo-old");
    // Rebuild the state after the first backup: the second's snapshot, index and packs gone.
    let st = Command::new("cp").arg("-a").arg(&s.c.repo).arg(&old).status().expect("cp -a");
    assert!(st.success());
    std::fs::remove_file(old.join("snapshots").join(string(&s.second, "snapshot_id"))).expect("rm");
    let newest_index = newest_files(&s.c.repo.join("index"));
    for f in &newest_index {
        std::fs::remove_file(old.join("index").join(file_name(f))).expect("rm index");
    }
    std::fs::remove_dir_all(&s.c.repo).expect("rm repo");
    std::fs::rename(&old, &s.c.repo).expect("roll back");

    // Listing warns at once; check names the vanished snapshot.
    let listed = s.c.ok(&["snapshots"]);
    assert!(
        listed.stderr().contains(&string(&s.second, "short_id")) && listed.stderr().contains("missing"),
        "listing does not warn about the vanished snapshot:\n{listed}"
    );
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
    assert!(out.all().contains(&string(&s.second, "short_id")), "{out}");
    // The next backup does not lean on the rolled-back index: everything it needs is stored.
    let third = s.c.backup(&[&s.src]);
    let target = s.c.dir("restore");
    s.c.restore(&string(&third, "snapshot_id"), &target);
    assert_trees_equal(&s.src, &restored_path(&target, &s.src));
    let cache = s.c.dir("fresh");
    let mut cmd = s.c.command();
    cmd.env("COFFER_CACHE_DIR", &cache).args(["check", "--read-data"]);
    let fresh = run(cmd, DEFAULT_TIMEOUT);
    // A database that never saw the second snapshot still notices it is gone: the third names
    // it as the snapshot this machine wrote before (docs/design.md, "Anchored trust"). Besides
    // that, only orphan packs (the rolled-back index's) are left: warnings.
    fresh.assert_failed();
    assert!(fresh.all().contains(&string(&s.second, "short_id")) && fresh.all().contains("hides"), "{fresh}");
    assert!(!fresh.all().contains("error: data/"), "{fresh}");
}

/// The index files written by the second backup: the newest by modification time.
fn newest_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (std::fs::metadata(&p).and_then(|m| m.modified()).expect("mtime"), p)
        })
        .collect();
    files.sort();
    let newest = files.last().map(|(t, _)| *t).expect("a file");
    files.into_iter().filter(|(t, _)| *t == newest).map(|(_, p)| p).collect()
}

#[test]
fn a_hidden_snapshot_is_warned_about_by_every_listing() {
    let s = setup();
    std::fs::remove_file(snapshot_file(&s.c, &s.second)).expect("hide snapshot");
    let out = s.c.ok(&["snapshots"]);
    assert!(out.stderr().contains(&string(&s.second, "short_id")), "no warning:\n{out}");
    let out = s.c.cmd(&["check"]);
    out.assert_failed();
    assert!(out.all().contains(&string(&s.second, "short_id")), "{out}");
}
