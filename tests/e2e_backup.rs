//! End-to-end: back up generated trees with the real binary, restore them, compare bit for bit;
//! the files cache (an unchanged re-backup reads nothing) and dedup (also after the local
//! database is deleted).
//!
//! Owns the round-trip and re-backup scenarios. CLI listing commands are in e2e_cli.rs, bad
//! input in e2e_errors.rs, damaged repositories in e2e_corruption.rs, signals and full disks in
//! e2e_interrupt.rs.

mod common;

use std::path::Path;

use common::compare::{scan, Kind};
use common::tree::{self, write_random, MIB};
use common::*;

/// What a generated tree contains, counted from disk.
struct Counts {
    /// Regular-file paths (each name of a hardlink set counts).
    files: u64,
    /// Directories, the root included.
    dirs: u64,
    /// Non-directory entries of every kind.
    non_dirs: u64,
    /// Sum of the sizes of regular files, each hardlinked inode once.
    inode_bytes: u64,
}

fn counts(root: &Path) -> Counts {
    let t = scan(root);
    let files = t.values().filter(|e| e.kind == Kind::File).count() as u64;
    let dirs = t.values().filter(|e| e.kind == Kind::Dir).count() as u64;
    let mut inodes = std::collections::BTreeMap::new();
    for e in t.values().filter(|e| e.kind == Kind::File) {
        inodes.insert(e.inode, e.size);
    }
    let inode_bytes = inodes.values().sum();
    Counts { files, dirs, non_dirs: t.len() as u64 - dirs, inode_bytes }
}

#[test]
fn full_tree_round_trip_is_exact() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    let opts = TreeOptions::full();
    make_tree(&src, &opts);
    let n = counts(&src);

    let s = c.backup(&[&src]);
    assert_eq!(s["errors"], serde_json::json!([]), "errors in a clean backup: {s}");
    assert_eq!(s["incomplete"], false, "clean backup marked incomplete: {s}");
    assert!(num(&s, "files_new") >= n.files, "files_new < {} regular files: {s}", n.files);
    assert_eq!(num(&s, "files_unmodified"), 0, "first backup has unmodified files: {s}");
    assert!(num(&s, "dirs") >= n.dirs, "dirs < {} directories: {s}", n.dirs);
    let unique_random = opts.random_size + opts.huge_size;
    assert!(
        num(&s, "bytes_added") >= unique_random,
        "bytes_added is less than the incompressible data ({unique_random}): {s}"
    );
    assert!(
        num(&s, "bytes_added") <= n.inode_bytes - opts.random_size / 2,
        "bytes_added shows no dedup (random-copy.bin duplicates random.bin): {s}"
    );

    let target = c.dir("restore");
    c.restore(&string(&s, "short_id"), &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// A tree of every kind plus some incompressible data, for the re-backup tests.
fn rebackup_tree(c: &Coffer) -> std::path::PathBuf {
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    write_random(&src.join("two-mib.bin"), 99, 2 * MIB);
    tree::set_mtime(&src.join("two-mib.bin"), 1_700_000_000, 5);
    tree::set_mtime(&src, 1_700_000_001, 7);
    src
}

#[test]
fn unchanged_rebackup_reads_nothing_and_adds_almost_nothing() {
    let c = Coffer::new();
    c.init();
    let src = rebackup_tree(&c);
    let n = counts(&src);
    let first = c.backup(&[&src]);

    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_new"), 0, "unchanged tree has new files: {s}");
    assert_eq!(num(&s, "files_changed"), 0, "unchanged tree has changed files: {s}");
    assert!(
        num(&s, "files_unmodified") >= n.files && num(&s, "files_unmodified") <= n.non_dirs,
        "files_unmodified should count every one of the {} files: {s}",
        n.files
    );
    assert_eq!(num(&s, "bytes_read"), 0, "files cache unused: content was read again: {s}");
    assert!(num(&s, "bytes_added") < 64 * 1024, "unchanged tree added data: {s}");
    assert_ne!(s["snapshot_id"], first["snapshot_id"], "second backup reused the snapshot id");
    assert_eq!(c.snapshots().len(), 2);
}

#[test]
fn deleting_the_local_database_loses_nothing() {
    let c = Coffer::new();
    c.init();
    let src = rebackup_tree(&c);
    c.backup(&[&src]);

    std::fs::remove_dir_all(&c.cache).expect("delete cache dir");
    let s = c.backup(&[&src]);
    assert!(
        num(&s, "bytes_added") < 64 * 1024,
        "without the local database, dedup against the repository index failed: {s}"
    );
    assert_eq!(c.snapshots().len(), 2, "snapshots lost with the local database");

    std::fs::remove_dir_all(&c.cache).expect("delete cache dir again");
    let target = c.dir("restore");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn changed_file_is_read_again_and_only_it() {
    let c = Coffer::new();
    c.init();
    let src = rebackup_tree(&c);
    c.backup(&[&src]);

    std::fs::write(src.join("small.txt"), b"changed content, longer than before\n").expect("modify");
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_changed"), 1, "one file changed: {s}");
    assert_eq!(num(&s, "files_new"), 0, "{s}");
    assert_eq!(num(&s, "bytes_read"), 36, "only the changed file should be read: {s}");
}

/// Same size, mtime set back: only ctime tells. The files cache must not trust size+mtime alone.
#[test]
fn change_hidden_behind_same_size_and_mtime_is_still_seen() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    let f = src.join("sneaky.txt");
    std::fs::write(&f, b"AAAAAAAAAAAAAAAA").expect("write");
    tree::set_mtime(&f, 1_600_000_000, 123);
    c.backup(&[&src]);

    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&f, b"BBBBBBBBBBBBBBBB").expect("rewrite");
    tree::set_mtime(&f, 1_600_000_000, 123);
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_changed"), 1, "content change with same size+mtime missed: {s}");

    let target = c.dir("restore");
    c.restore("latest", &target);
    let got = std::fs::read(restored_path(&target, &f)).expect("read restored");
    assert_eq!(got, b"BBBBBBBBBBBBBBBB", "restored the stale content");
}

/// An unchanged file's extended attributes come from the files cache; setting or removing one
/// changes ctime, so the next backup must see it (and keep the content it had).
#[test]
fn extended_attribute_changes_alone_are_seen() {
    // A file changed within 100 ms of being read is not cached: let each change settle.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(250));
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    let (tagged, plain) = (src.join("tagged.txt"), src.join("plain.txt"));
    std::fs::write(&tagged, b"same content throughout\n").expect("write");
    std::fs::write(&plain, b"no attributes here\n").expect("write");
    xattr::set(&tagged, "user.colour", b"blue").expect("setxattr (needs a filesystem with user xattrs)");
    settle();
    c.backup(&[&src]);
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_unmodified"), 2, "{s}");

    xattr::set(&tagged, "user.colour", b"green").expect("setxattr");
    xattr::set(&plain, "user.new", b"1").expect("setxattr");
    settle();
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_changed"), 2, "attribute changes went unseen: {s}");
    let target = c.dir("restore");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));

    xattr::remove(&tagged, "user.colour").expect("removexattr");
    settle();
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_changed"), 1, "attribute removal went unseen: {s}");
    let s = c.backup(&[&src]);
    assert_eq!(num(&s, "files_unmodified"), 2, "{s}");
    let target = c.dir("restore-again");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn renamed_file_is_deduplicated() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    write_random(&src.join("a.bin"), 5, MIB);
    c.backup(&[&src]);

    std::fs::rename(src.join("a.bin"), src.join("b.bin")).expect("rename");
    let s = c.backup(&[&src]);
    assert!(num(&s, "bytes_added") < 64 * 1024, "renamed file stored again: {s}");
    let target = c.dir("restore");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn several_sources_in_one_snapshot() {
    let c = Coffer::new();
    c.init();
    let one = c.path("one");
    let two = c.path("two/deeper");
    make_tree(&one, &TreeOptions::small());
    std::fs::create_dir_all(&two).expect("mkdir");
    std::fs::write(two.join("f"), b"second source\n").expect("write");
    let s = c.backup(&[&one, &two]);
    let snaps = c.snapshots();
    let paths: Vec<&str> =
        snaps[0]["paths"].as_array().expect("paths array").iter().map(|p| p.as_str().expect("path string")).collect();
    assert!(paths.contains(&one.to_str().expect("utf8")), "paths: {paths:?}");
    assert!(paths.contains(&two.to_str().expect("utf8")), "paths: {paths:?}");

    let target = c.dir("restore");
    c.restore(&string(&s, "snapshot_id"), &target);
    assert_trees_equal(&one, &restored_path(&target, &one));
    assert_trees_equal(&two, &restored_path(&target, &two));
}

#[test]
fn restore_over_umask_keeps_exact_modes() {
    // The restoring process's umask must not change restored modes.
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    for (name, mode) in [("rw-all", 0o666), ("rwx-all", 0o777), ("g-w", 0o664)] {
        std::fs::write(src.join(name), name).expect("write");
        tree::chmod(&src.join(name), mode);
    }
    c.backup(&[&src]);
    let target = c.dir("restore");
    // umask is inherited: run through sh with a strict umask.
    let mut sh = c.wrapped(&["sh", "-c", "umask 077 && exec \"$0\" \"$@\""]);
    sh.args(["restore", "latest", "--target"]).arg(&target);
    run(sh, DEFAULT_TIMEOUT).assert_code(0);
    assert_trees_equal(&src, &restored_path(&target, &src));
}
