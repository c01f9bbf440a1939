//! End-to-end: the local database is only a cache. Lost, replaced by a week-old copy, or copied
//! to a second machine, it is brought back in step with the repository, and no backup ever
//! deduplicates against an object the repository no longer holds: every snapshot written
//! afterwards passes `check --read-data` and restores bit-identically.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tree::{write_random, KIB};
use common::*;
use serde_json::Value;

fn source(c: &Coffer) -> PathBuf {
    let src = c.dir("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    write_random(&src.join("a.bin"), 1, 120 * KIB);
    write_random(&src.join("sub/b.bin"), 2, 80 * KIB);
    std::fs::write(src.join("sub/c.txt"), "charlie\n").expect("write");
    src
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp -a");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn restore_equals(c: &Coffer, snap: &Value, src: &Path, name: &str) {
    let target = c.dir(name);
    c.restore(&string(snap, "snapshot_id"), &target);
    assert_trees_equal(src, &restored_path(&target, src));
}

#[test]
fn a_lost_database_is_rebuilt_from_the_repository() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    c.backup(&[&src]);
    std::fs::remove_dir_all(&c.cache).expect("delete the local database");
    let second = c.backup(&[&src]);
    // The files cache is gone, so every file is read; the index comes back from the
    // repository, so nothing is uploaded again.
    assert_eq!(num(&second, "files_unmodified"), 0, "{second}");
    assert!(num(&second, "bytes_added") < 8 * KIB, "data was uploaded again: {second}");
    c.ok(&["check", "--read-data"]);
    restore_equals(&c, &second, &src, "restore");
}

/// The local database from before a prune elsewhere: it still lists an index file, packs and
/// files-cache entries whose objects the repository no longer holds.
#[test]
fn a_week_old_database_never_deduplicates_against_pruned_objects() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let first = c.backup_with(&[&src], &["--tag", "keep"]);
    let index_before: Vec<PathBuf> = c.repo_files("index");
    let packs_before: Vec<PathBuf> = c.repo_files("data");
    write_random(&src.join("later.bin"), 3, 150 * KIB);
    let second = c.backup(&[&src]);
    let old_db = c.path("old-cache");
    copy_dir(&c.cache, &old_db);

    // What a forget + prune run elsewhere does to the second snapshot: forget removes it, and
    // prune the index files and packs only it used.
    c.ok(&["forget", "--keep-tag", "keep"]);
    assert!(!c.repo.join("snapshots").join(string(&second, "snapshot_id")).exists());
    for f in c.repo_files("index").into_iter().filter(|f| !index_before.contains(f)) {
        std::fs::remove_file(f).expect("prune index");
    }
    for f in c.repo_files("data").into_iter().filter(|f| !packs_before.contains(f)) {
        std::fs::remove_file(f).expect("prune pack");
    }
    copy_dir(&old_db, &c.cache);

    // later.bin is unchanged and its files-cache entry names blobs that were pruned.
    let third = c.backup(&[&src]);
    assert!(num(&third, "bytes_added") >= 150 * KIB, "later.bin was not uploaded again: {third}");
    restore_equals(&c, &third, &src, "restore-third");
    let out = c.cmd(&["check", "--read-data"]);
    // The only finding: the old database saw the second snapshot, which is gone.
    let errors: Vec<String> = out.stdout().lines().filter(|l| l.contains("snapshots/")).map(String::from).collect();
    assert!(
        out.all().contains(&string(&second, "snapshot_id")[..8]) && out.all().contains("seen here before"),
        "check did not report the snapshot the old database saw vanish:\n{out}"
    );
    assert!(!out.all().contains("data/"), "check found damage after the backup:\n{out}\n{errors:?}");
    // With a database that never saw it, the repository is clean.
    let fresh = c.dir("fresh-cache");
    let mut cmd = c.command();
    cmd.env("COFFER_CACHE_DIR", &fresh).args(["check", "--read-data"]);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);
    let target = c.dir("restore-first");
    c.restore(&string(&first, "snapshot_id"), &target);
    let before = src_without(&c, &src, "later.bin");
    let opts = CompareOptions { root_metadata: false, ..CompareOptions::default() };
    assert_trees_equal_with(&before, &restored_path(&target, &src), &opts);
}

/// The source as it was before `name` was added: a copy without it, with the folder's times
/// left as they are (the comparison skips the root's own metadata).
fn src_without(c: &Coffer, src: &Path, name: &str) -> PathBuf {
    let copy = c.path("src-before");
    copy_dir(src, &copy);
    std::fs::remove_file(copy.join(name)).expect("remove from copy");
    copy
}

#[test]
fn a_database_copied_to_a_second_machine_is_noticed_and_stays_safe() {
    if !is_root() || Command::new("unshare").arg("--help").output().is_err() {
        skip("a_database_copied_to_a_second_machine", "needs root and unshare to run under another host name");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    c.backup(&[&src]);
    let second_cache = c.path("second-machine-cache");
    copy_dir(&c.cache, &second_cache);

    // The second machine: another host name (its own UTS namespace), the copied database.
    let backup_on_second = |extra_file: Option<&str>| {
        if let Some(name) = extra_file {
            write_random(&src.join(name), 7, 60 * KIB);
        }
        let mut cmd = c.wrapped(&["unshare", "--uts", "sh", "-c", "hostname coffer-second && exec \"$0\" \"$@\""]);
        cmd.env("COFFER_CACHE_DIR", &second_cache).args(["backup", "--json"]).arg(&src);
        run(cmd, DEFAULT_TIMEOUT)
    };
    let out = backup_on_second(None);
    out.assert_code(0);
    assert!(out.stderr().contains("last used for backups on"), "the copy was not noticed:\n{out}");
    let on_second = out.json();
    assert_eq!(num(&on_second, "files_unmodified"), 0, "files cache of another machine trusted: {on_second}");
    assert!(num(&on_second, "bytes_added") < 8 * KIB, "{on_second}");
    // Once claimed, the second machine's cache is its own: no warning the next time.
    let out = backup_on_second(Some("second.bin"));
    out.assert_code(0);
    assert!(!out.stderr().contains("last used for backups on"), "{out}");
    let second_snap = out.json();

    // Back on the first machine: it imports the second's index and deduplicates against it.
    let first_again = c.backup(&[&src]);
    assert!(num(&first_again, "bytes_added") < 8 * KIB, "second.bin uploaded twice: {first_again}");
    c.ok(&["check", "--read-data"]);
    restore_equals(&c, &first_again, &src, "restore-first-machine");
    restore_equals(&c, &second_snap, &src, "restore-second-machine");
}
