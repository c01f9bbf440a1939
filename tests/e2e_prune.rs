//! End-to-end: `forget` and `prune` through the binary. Policies decide and explain; space comes
//! back; prune killed at every named step and at random moments leaves a repository that
//! checks and restores; a short listing or an untrusted snapshot makes prune delete nothing;
//! an interrupted backup's packs wait for its lock; backups and prunes running at once lose
//! nothing (`COFFER_TEST_CONCURRENCY_SECS`, default 60).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tree::{write_random, MIB};
use common::*;
use nix::sys::signal::Signal;

const KIB: u64 = 1024;

/// Writes version `v` of a small source tree: shared files, plus files only this version has.
fn write_version(src: &Path, v: u64, unique: u64) {
    let _ = std::fs::remove_dir_all(src);
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write_random(&src.join("shared.bin"), 1, 300 * KIB);
    write_random(&src.join("sub/also-shared.bin"), 2, 40 * KIB);
    write_random(&src.join(format!("v{v}.bin")), 1000 + v, unique);
    write_random(&src.join(format!("sub/v{v}-small.bin")), 2000 + v, 3 * KIB);
    // The previous version's unique file lives on: once that version is forgotten, its packs
    // are partly used and get repacked.
    if v > 0 {
        write_random(&src.join(format!("v{}.bin", v - 1)), 1000 + v - 1, unique);
    }
}

/// Crash points and test hooks exist only in debug builds of the binary.
fn test_hooks(test: &str) -> bool {
    if !cfg!(debug_assertions) {
        skip(test, "crash points and listing hooks are compiled out of release builds");
    }
    cfg!(debug_assertions)
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

fn snapshot_ids(c: &Coffer) -> Vec<String> {
    c.snapshots().iter().map(|s| string(s, "id")).collect()
}

/// Restores snapshot `id` and compares it with the saved copy of its source.
fn assert_restores(c: &Coffer, id: &str, src: &Path, copy: &Path) {
    let target = c.path(&format!("restore-{}", &id[..12]));
    let _ = std::fs::remove_dir_all(&target);
    c.restore(id, &target);
    assert_trees_equal(copy, &restored_path(&target, src));
    std::fs::remove_dir_all(&target).unwrap();
}

fn check_read_data(c: &Coffer, context: &str) {
    let out = c.cmd(&["check", "--read-data"]);
    assert_eq!(out.code(), Some(0), "check --read-data failed {context}\n{out}");
}

fn prune_json(c: &Coffer, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["prune", "--json"];
    args.extend_from_slice(extra);
    c.ok(&args).json()
}

#[test]
fn forget_explains_each_decision_and_removes_only_what_no_rule_keeps() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    let other = c.dir("other");
    write_random(&other.join("o.bin"), 9, 10 * KIB);
    for v in 0..4 {
        write_version(&src, v, 20 * KIB);
        c.backup_with(&[&src], if v == 0 { &["--tag", "important"] } else { &[] });
    }
    c.backup(&[&other]);
    let before = snapshot_ids(&c);
    assert_eq!(before.len(), 5);

    let out = c.ok(&["forget", "--keep-last", "2", "--keep-tag", "important", "--dry-run", "--json"]);
    let v = out.json();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "grouped by host and paths: {v}");
    let src_group = groups.iter().find(|g| g["snapshots"].as_array().unwrap().len() == 4).expect("src group");
    let reasons: Vec<Vec<String>> = src_group["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .collect();
    // Newest first: two by keep-last, one removed, the oldest by its tag.
    assert_eq!(reasons, vec![vec!["last"], vec!["last"], vec![], vec!["tag important"]], "{v}");
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(snapshot_ids(&c), before, "a dry run removed snapshots");

    let text = c.ok(&["forget", "--keep-last", "2", "--keep-tag", "important", "--dry-run"]).stdout();
    assert!(text.contains("remove") && text.contains("(last)") && text.contains("tag important"), "{text}");

    let removed = v["removed"][0].as_str().unwrap().to_string();
    c.ok(&["forget", "--keep-last", "2", "--keep-tag", "important"]);
    let after = snapshot_ids(&c);
    assert_eq!(after.len(), 4);
    assert!(!after.contains(&removed), "the forgotten snapshot is still listed");
    assert!(!c.repo.join("snapshots").join(&removed).exists());

    // No rule: refused, nothing removed.
    let out = c.cmd(&["forget"]);
    out.assert_one_line_error(1);
    assert_eq!(snapshot_ids(&c).len(), 4);
    let out = c.cmd(&["forget", "--keep-last", "0"]);
    out.assert_one_line_error(1);
    // --host narrows what is considered: other hosts' snapshots are left alone.
    let v = c.ok(&["forget", "--keep-last", "1", "--host", "no-such-host", "--json"]).json();
    assert!(v["removed"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(snapshot_ids(&c).len(), 4);
    // One group, keep one: only the newest of all stays; --prune frees the space.
    let packs_before = c.repo_files("data").len();
    c.ok(&["forget", "--keep-last", "1", "--group-by", "", "--prune"]);
    assert_eq!(snapshot_ids(&c).len(), 1);
    assert!(c.repo_files("data").len() < packs_before, "forget --prune deleted no pack");
    check_read_data(&c, "after forget --prune");

    // Forgotten on another machine (its own local database): this one's prune must take the
    // signed record of the forget for what it is, not for a short listing.
    let src2 = c.dir("src2");
    write_random(&src2.join("x.bin"), 77, 10 * KIB);
    c.backup(&[&src2]);
    c.backup(&[&src2]);
    let elsewhere = c.dir("other-machine-cache");
    let mut cmd = c.command();
    cmd.env("COFFER_CACHE_DIR", &elsewhere).args(["forget", "--keep-last", "1"]);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);
    assert_eq!(snapshot_ids(&c).len(), 2);
    c.ok(&["prune"]);
    // A snapshot deleted behind everyone's back still stops prune.
    let victim = c.repo_files("snapshots")[0].clone();
    std::fs::remove_file(&victim).unwrap();
    let out = c.cmd(&["prune"]);
    out.assert_failed();
    assert!(out.stderr().contains("missing from the storage listing"), "{out}");
}

#[test]
fn forgetting_half_and_pruning_brings_the_size_near_a_fresh_backup() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    let mut copies = Vec::new();
    for v in 0..6 {
        write_version(&src, v, 2 * MIB);
        c.backup(&[&src]);
        let copy = c.path(&format!("copy-{v}"));
        copy_tree(&src, &copy);
        copies.push(copy);
    }
    let dry = prune_json(&c, &["--dry-run"]);
    assert_eq!(dry["packs_unused"], 0, "nothing is unused yet: {dry}");
    c.ok(&["forget", "--keep-last", "3"]);
    let full = c.repo_size();
    let dry = prune_json(&c, &["--dry-run"]);
    assert!(dry["bytes_freed"].as_i64().unwrap() > 0, "{dry}");
    assert_eq!(c.repo_size(), full, "prune --dry-run changed the repository");
    let report = prune_json(&c, &[]);
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    let pruned = c.repo_size();

    // A fresh repository holding the same three versions.
    let fresh = Coffer::new();
    fresh.init();
    for copy in &copies[3..] {
        std::fs::remove_dir_all(&src).unwrap();
        copy_tree(copy, &src);
        fresh.backup(&[&src]);
    }
    let fresh_size = fresh.repo_size();
    eprintln!("full {full}, pruned {pruned}, fresh {fresh_size}");
    assert!(pruned as f64 <= fresh_size as f64 * 1.10, "pruned {pruned} vs fresh {fresh_size} (full {full})");
    check_read_data(&c, "after prune");
    for (id, copy) in snapshot_ids(&c).iter().zip(&copies[3..]) {
        assert_restores(&c, id, &src, copy);
    }
}

/// The named steps of prune (src/commands/prune.rs), each a place a kill must be survivable.
const CRASH_POINTS: &[&str] = &[
    "prune-after-new-pack",
    "prune-after-index",
    "prune-after-plan",
    "prune-before-lock-listing",
    "prune-after-wait-record",
    "prune-mid-index-delete",
    "prune-after-index-delete",
    "prune-mid-pack-delete",
    "prune-after-pack-delete",
    "prune-after-wait-delete",
];

#[test]
fn prune_killed_at_every_step_and_at_random_moments_loses_nothing() {
    if !test_hooks("prune_killed_at_every_step_and_at_random_moments_loses_nothing") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    let mut copies: HashMap<String, PathBuf> = HashMap::new();
    let rounds = 3 * CRASH_POINTS.len() + 8;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut killed = 0;
    for round in 0..rounds {
        write_version(&src, round as u64, 64 * KIB);
        let id = string(&c.backup(&[&src]), "snapshot_id");
        let copy = c.path(&format!("copy-{round}"));
        copy_tree(&src, &copy);
        copies.insert(id, copy);
        c.ok(&["forget", "--keep-last", "2"]);

        let mut cmd = c.command();
        cmd.args(["prune", "--max-unused", "0%"]);
        let out = if round < 3 * CRASH_POINTS.len() {
            cmd.env("COFFER_CRASH_AT", CRASH_POINTS[round % CRASH_POINTS.len()]);
            run(cmd, DEFAULT_TIMEOUT)
        } else {
            // Random moments: a delay drawn from 0..400 ms.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let running = Running::start(cmd);
            std::thread::sleep(Duration::from_millis(rng % 300));
            running.signal(Signal::SIGKILL);
            running.wait(Duration::from_secs(60))
        };
        if out.code().is_none() {
            killed += 1;
        } else {
            out.assert_code(0);
        }
        check_read_data(&c, &format!("after prune round {round}\n{out}"));
        for id in snapshot_ids(&c) {
            assert_restores(&c, &id, &src, &copies[&id]);
        }
    }
    eprintln!("prune was killed {killed} times in {rounds} rounds");
    assert!(killed >= 30, "only {killed} kills landed");
    // The last run finishes whatever was left half done.
    c.ok(&["prune", "--max-unused", "0%"]);
    let again = prune_json(&c, &["--max-unused", "0%"]);
    assert!(
        !again["finished_earlier_plan"].as_bool().unwrap() && again["packs_deleted"] == 0,
        "the final prune left a plan or garbage behind: {again}"
    );
    check_read_data(&c, "after the final prune");
    let out = c.ok(&["check"]);
    assert!(!out.all().contains("orphan"), "orphan packs left after the final prune\n{out}");
}

#[test]
fn a_short_listing_or_an_untrusted_snapshot_makes_prune_delete_nothing() {
    if !test_hooks("a_short_listing_or_an_untrusted_snapshot_makes_prune_delete_nothing") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    for v in 0..3 {
        write_version(&src, v, 100 * KIB);
        c.backup(&[&src]);
    }
    c.ok(&["forget", "--keep-last", "1"]);
    let files_before = c.repo_files("");

    let pack = c.repo_files("data")[0].clone();
    let pack_name = file_name(&pack);
    let out = c.command().args(["prune"]).env("COFFER_TEST_HIDE_FROM_LISTING", &pack_name).output().unwrap();
    assert!(!out.status.success(), "prune succeeded with a pack missing from the listing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listing") && stderr.contains(&pack_name[..8]), "{stderr}");
    assert_eq!(c.repo_files(""), files_before, "prune deleted something despite the short listing");

    let snapshot = c.repo_files("snapshots")[0].clone();
    let out = c.command().args(["prune"]).env("COFFER_TEST_HIDE_FROM_LISTING", file_name(&snapshot)).output().unwrap();
    assert!(!out.status.success(), "prune succeeded with a snapshot missing from the listing");
    assert_eq!(c.repo_files(""), files_before, "prune deleted something despite the missing snapshot");

    // A snapshot damaged in storage (its bytes no longer hash to its name) may be a real one
    // whose data must not go: prune deletes nothing.
    let original = std::fs::read(&snapshot).unwrap();
    let mut bytes = original.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&snapshot, &bytes).unwrap();
    let out = c.cmd(&["prune"]);
    out.assert_failed();
    assert!(out.stderr().contains("damaged"), "{out}");
    assert_eq!(c.repo_files(""), files_before, "prune deleted something despite a damaged snapshot");
    std::fs::write(&snapshot, &original).unwrap();

    // A forged snapshot (that one with a byte changed, stored under its new name) protects
    // nothing and stalls nothing (issue 15): forget neither counts nor removes it, prune goes on.
    let forged = c.repo.join("snapshots").join(blake3::hash(&bytes).to_hex().as_str());
    std::fs::write(&forged, &bytes).unwrap();
    let v = c.ok(&["forget", "--keep-last", "1", "--json"]).json();
    assert_eq!(v["untrusted"].as_array().unwrap().len(), 1, "{v}");
    assert!(forged.exists());
    c.ok(&["prune"]);
    std::fs::remove_file(&forged).unwrap();
    check_read_data(&c, "after a prune beside the forged snapshot");
}

#[test]
fn an_interrupted_backups_packs_wait_for_its_lock_and_are_not_adopted_once_condemned() {
    if !test_hooks("an_interrupted_backups_packs_wait_for_its_lock_and_are_not_adopted_once_condemned") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    write_version(&src, 0, 100 * KIB);
    c.backup(&[&src]);
    let big = c.dir("big");
    for i in 0..3 {
        write_random(&big.join(format!("part-{i}.bin")), 500 + i, 4 * MIB);
    }
    let mut cmd = c.command();
    cmd.arg("backup").arg(&big).env("COFFER_CRASH_AT", "backup-before-snapshot-write");
    let out = run(cmd, DEFAULT_TIMEOUT);
    assert_eq!(out.code(), None, "backup was not killed at its crash point\n{out}");
    assert!(c.repo_files("data").len() >= 2);

    // Its lock is neither finished nor stale: prune condemns its packs but deletes nothing.
    let report = prune_json(&c, &[]);
    assert!(report["packs_unused"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["waiting_for"].as_array().unwrap().len(), 1, "{report}");
    assert!(!c.repo_files("plans").is_empty());
    let data_before = c.repo_files("data");

    // The next backup must not take the condemned packs back.
    write_version(&src, 1, 100 * KIB);
    let id = string(&c.backup(&[&src]), "snapshot_id");
    let copy = c.path("copy");
    copy_tree(&src, &copy);
    let report = prune_json(&c, &[]);
    assert_eq!(report["waiting_for"].as_array().unwrap().len(), 1, "{report}");
    assert!(data_before.iter().all(|p| p.exists()), "deleted while a lock was pending");

    // Once the lock times out, the packs go.
    let mut cmd = c.command();
    cmd.args(["prune", "--json"]).env("COFFER_TEST_LOCK_TIMEOUT_SECS", "0");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    let report = out.json();
    assert!(report["packs_deleted"].as_u64().unwrap() >= 1, "{report}");
    assert!(c.repo_files("plans").is_empty());
    assert!(c.repo_files("locks").is_empty(), "locks left: {:?}", c.repo_files("locks"));
    check_read_data(&c, "after the stale lock's packs went");
    assert_restores(&c, &id, &src, &copy);
}

#[test]
fn backups_and_prunes_running_at_once_lose_nothing() {
    let secs: u64 = std::env::var("COFFER_TEST_CONCURRENCY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let c = Arc::new(Coffer::new());
    c.init();
    let backup_cache = c.dir("backup-cache");
    let src = c.path("src");
    let stop = Arc::new(AtomicBool::new(false));
    let copies: Arc<Mutex<HashMap<String, PathBuf>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(secs);

    let backups = {
        let (c, src, stop, copies, cache) =
            (Arc::clone(&c), src.clone(), Arc::clone(&stop), Arc::clone(&copies), backup_cache);
        std::thread::spawn(move || {
            let mut v = 0u64;
            while !stop.load(Ordering::Relaxed) {
                write_version(&src, v, 50 * KIB);
                // Now and then bring back content of a version forgotten since: the blobs a
                // running prune condemned, which a backup that started before the plan
                // deduplicates against (prune must rescue them).
                if v >= 5 && v % 2 == 1 {
                    write_random(&src.join("resurrected.bin"), 1000 + v - 5, 50 * KIB);
                }
                let copy = c.path(&format!("copy-{v}"));
                copy_tree(&src, &copy);
                // Every other backup shares prune's local database (one machine), the others
                // use their own (a second machine).
                let mut cmd = c.command();
                if v & 1 == 0 {
                    cmd.env("COFFER_CACHE_DIR", &cache);
                }
                cmd.args(["backup", "--json"]).arg(&src);
                let out = run(cmd, DEFAULT_TIMEOUT);
                out.assert_code(0);
                copies.lock().unwrap().insert(string(&out.json(), "snapshot_id"), copy);
                v += 1;
            }
            v
        })
    };
    let mut prunes = 0;
    let mut waited = 0;
    let mut rescued = 0;
    while Instant::now() < deadline {
        c.ok(&["forget", "--keep-last", "3"]);
        let report = prune_json(&c, &["--max-unused", "0%"]);
        if !report["waiting_for"].as_array().unwrap().is_empty() {
            waited += 1;
        }
        rescued += report["packs_rescued"].as_u64().unwrap();
        prunes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let backups_done = backups.join().expect("backup loop panicked");
    eprintln!(
        "{backups_done} backups, {prunes} prunes ({waited} waited for a running backup, {rescued} packs rescued) \
         in {secs} s"
    );
    assert!(backups_done >= 3 && prunes >= 3, "too little overlap to test anything");
    // Finish what the last prune left waiting.
    c.ok(&["prune", "--max-unused", "0%"]);
    check_read_data(&c, "after concurrent backups and prunes");
    let copies = copies.lock().unwrap();
    let ids = snapshot_ids(&c);
    assert!(!ids.is_empty());
    for id in ids {
        let copy = copies.get(&id).unwrap_or_else(|| panic!("snapshot {id} was not written by the loop"));
        assert_restores(&c, &id, &src, copy);
    }
}
