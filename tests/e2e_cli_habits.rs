//! End-to-end: smaller habits restic users bring (issue 17): an empty COFFER_* variable means
//! unset; a missing source among several is a warning; `snapshots --latest N`; the local
//! database folder is tagged as a cache, so `--exclude-caches` leaves it out.

mod common;

use common::*;

#[test]
fn an_empty_password_file_variable_means_unset() {
    let c = Coffer::new();
    c.init();
    let mut cmd = c.command();
    cmd.env("COFFER_PASSWORD_FILE", "").args(["snapshots", "--json"]);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
}

#[test]
fn a_missing_source_among_several_warns_and_the_rest_is_backed_up() {
    let c = Coffer::new();
    c.init();
    let here = c.dir("here");
    std::fs::write(here.join("f.txt"), "data").expect("write");
    let gone = c.path("gone");
    let out = c.backup_out(&[&here, &gone], &[]);
    out.assert_code(3);
    assert!(out.stderr().contains("gone"), "{out}");
    assert_eq!(c.snapshots()[0]["incomplete"], true, "a snapshot lacking a source is incomplete");
    let paths: Vec<String> = c.ls("latest", None).iter().map(|e| string(e, "path")).collect();
    assert!(paths.iter().any(|p| p.ends_with("here/f.txt")), "{paths:?}");

    // All of them missing: nothing is backed up, and that is an error.
    let out = c.backup_out(&[&gone, &c.path("also-gone")], &[]);
    out.assert_failed();
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(c.snapshots().len(), 1);
}

#[test]
fn snapshots_latest_n_keeps_the_newest_of_each_host_and_paths() {
    let c = Coffer::new();
    c.init();
    let a = c.dir("a");
    let b = c.dir("b");
    std::fs::write(a.join("x"), "1").expect("write");
    std::fs::write(b.join("y"), "1").expect("write");
    let first_a = string(&c.backup(&[&a]), "snapshot_id");
    std::fs::write(a.join("x"), "2").expect("write");
    let second_a = string(&c.backup(&[&a]), "snapshot_id");
    let only_b = string(&c.backup(&[&b]), "snapshot_id");
    let ids: Vec<String> = c.snapshots_with(&["--latest", "1"]).iter().map(|s| string(s, "id")).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&second_a) && ids.contains(&only_b) && !ids.contains(&first_a), "{ids:?}");
    assert_eq!(c.snapshots_with(&["--latest", "2"]).len(), 3);
}

#[test]
fn the_local_database_folder_is_a_tagged_cache_and_exclude_caches_skips_it() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f.txt"), "data").expect("write");
    c.backup(&[&src]);
    let mut tags = Vec::new();
    for entry in std::fs::read_dir(&c.cache).expect("list cache dir") {
        let tag = entry.expect("entry").path().join("CACHEDIR.TAG");
        if tag.is_file() {
            tags.push(tag);
        }
    }
    assert_eq!(tags.len(), 1, "no CACHEDIR.TAG in the database folder under {}", c.cache.display());
    let text = std::fs::read_to_string(&tags[0]).expect("read tag");
    assert!(text.starts_with("Signature: 8a477f597d28d172789f06886806bc55"), "{text}");

    // Backing up the folder holding the database with --exclude-caches leaves the database out.
    let s = c.backup_with(&[&c.cache], &["--exclude-caches"]);
    let db_dir = tags[0].parent().expect("has a parent").to_path_buf();
    let paths: Vec<String> = c.ls(&string(&s, "snapshot_id"), None).iter().map(|e| string(e, "path")).collect();
    let db_text = db_dir.to_str().expect("UTF-8").to_string();
    assert!(paths.contains(&format!("{db_text}/CACHEDIR.TAG")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("state.db")), "the database was backed up: {paths:?}");
}

#[test]
fn counts_are_singular_for_one_and_check_prints_a_summary_not_a_line_per_pack() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("only.txt"), "one file").expect("write");
    c.backup(&[&src]);
    let out = c.ok(&["snapshots"]);
    assert!(out.stdout().lines().any(|l| l == "1 snapshot"), "{out}");
    let target = c.dir("target");
    let out = c.restore("latest", &target);
    assert!(out.stdout().contains(": 1 file,"), "{out}");
    let out = c.ok(&["check", "--read-data"]);
    assert!(out.stdout().contains("checked 1 snapshot,"), "{out}");
    assert!(!out.stderr().lines().any(|l| l.starts_with("read ")), "a line per pack in a log: {out}");
}
