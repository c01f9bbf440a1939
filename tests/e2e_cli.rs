//! End-to-end: the listing and selection surface of the CLI — snapshots/ls/diff/stats JSON,
//! snapshot selectors (latest, id prefixes, --host/--tag), backup --exclude, restore
//! --include/--exclude and SNAP:PATH, global options anywhere, repository and password sources.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::compare::{scan, Kind};
use common::tree::{self, write_random, write_text, KIB, MIB};
use common::*;
use serde_json::Value;

/// A small tree with a few plain files, for tests that only need something to back up.
fn simple_tree(c: &Coffer, name: &str) -> PathBuf {
    let src = c.path(name);
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    std::fs::create_dir_all(src.join("other")).expect("mkdir");
    for (p, body) in [
        ("keep.txt", "keep\n"),
        ("notes.log", "a log\n"),
        ("scratch.tmp", "temporary\n"),
        ("sub/a.txt", "a\n"),
        ("sub/b.log", "b\n"),
        ("sub/c.tmp", "c\n"),
        ("sub/deeper/d.txt", "d\n"),
        ("other/e.txt", "e\n"),
    ] {
        std::fs::write(src.join(p), body).expect("write");
    }
    src
}

fn str_of(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn snapshots_json_has_documented_fields() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    let before = chrono::Utc::now();
    let s = c.backup_with(&[&src], &["--tag", "daily", "--tag", "work", "--host", "h1"]);
    let snaps = c.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = &snaps[0];
    assert_eq!(snap["id"], s["snapshot_id"], "{snap}");
    assert_eq!(snap["short_id"], s["short_id"], "{snap}");
    let time = chrono::DateTime::parse_from_rfc3339(&string(snap, "time"))
        .unwrap_or_else(|e| panic!("time is not RFC3339 ({e}): {snap}"));
    let age = time.with_timezone(&chrono::Utc) - before;
    assert!(age.num_seconds().abs() < 600, "snapshot time {time} is not now: {snap}");
    assert_eq!(snap["hostname"], "h1", "{snap}");
    assert!(!string(snap, "username").is_empty(), "{snap}");
    assert_eq!(snap["paths"], serde_json::json!([str_of(&src)]), "{snap}");
    let mut tags: Vec<String> = snap["tags"]
        .as_array()
        .expect("tags array")
        .iter()
        .map(|t| t.as_str().expect("tag string").to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, ["daily", "work"], "{snap}");
    assert!(is_hex(&string(snap, "tree"), 64), "tree is not a 64-hex id: {snap}");
    assert_eq!(snap["incomplete"], false, "{snap}");
}

#[test]
fn default_hostname_is_the_machine_hostname() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    c.backup(&[&src]);
    let host = nix::unistd::gethostname().expect("hostname");
    assert_eq!(c.snapshots()[0]["hostname"], host.to_string_lossy().as_ref());
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDev => "chardev",
        Kind::BlockDev => "blockdev",
        Kind::Socket => "socket",
    }
}

/// ls entries keyed by path, restricted to those at or below `under`.
fn ls_map(entries: &[Value], under: &Path) -> BTreeMap<String, Value> {
    let under = str_of(under);
    entries
        .iter()
        .filter_map(|e| {
            let p = string(e, "path");
            (p == under || p.starts_with(&format!("{under}/"))).then(|| (p, e.clone()))
        })
        .collect()
}

#[test]
fn ls_json_lists_every_entry_with_type_and_metadata() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    std::os::unix::net::UnixListener::bind(src.join("socket")).expect("bind socket");
    tree::set_mtime(&src.join("socket"), 1_650_000_000, 42);
    tree::set_mtime(&src, 1_650_000_001, 43);
    c.backup(&[&src]);

    let listed = ls_map(&c.ls("latest", None), &src);
    let disk = scan(&src);
    assert_eq!(listed.len(), disk.len(), "ls lists {} entries under the source, disk has {}", listed.len(), disk.len());
    for (rel, e) in &disk {
        let abs = if rel.as_os_str().is_empty() { src.clone() } else { src.join(rel) };
        let Some(abs) = abs.to_str() else { continue }; // non-UTF-8: counted above
        let l = listed.get(abs).unwrap_or_else(|| panic!("ls does not list {abs}"));
        assert_eq!(l["type"], kind_name(e.kind), "type of {abs}: {l}");
        let mode = num(l, "mode") as u32;
        let full = std::fs::symlink_metadata(abs).expect("lstat").mode();
        assert!(mode == e.perm || mode == full, "mode of {abs}: {l} (want {:o} or {full:o})", e.perm);
        assert_eq!((num(l, "uid") as u32, num(l, "gid") as u32), (e.uid, e.gid), "owner of {abs}: {l}");
        if e.kind == Kind::File {
            assert_eq!(num(l, "size"), e.size, "size of {abs}: {l}");
        }
        check_mtime(&l["mtime"], e.mtime, abs);
    }
}

/// mtime in ls --json: RFC3339 (sub-second digits must be exact) or integer seconds.
fn check_mtime(v: &Value, (sec, nsec): (i64, i64), path: &str) {
    if let Some(s) = v.as_str() {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("mtime of {path} is not RFC3339 ({e}): {v}"));
        assert_eq!(t.timestamp(), sec, "mtime seconds of {path}: {v}");
        if s.contains('.') {
            assert_eq!(i64::from(t.timestamp_subsec_nanos()), nsec, "mtime nanoseconds of {path}: {v}");
        }
    } else {
        assert_eq!(v.as_i64(), Some(sec), "mtime of {path}: {v}");
    }
}

#[test]
fn ls_with_path_lists_only_that_subtree() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    c.backup(&[&src]);
    let sub = src.join("sub");
    let entries = c.ls("latest", Some(&sub));
    let paths: Vec<String> = entries.iter().map(|e| string(e, "path")).collect();
    assert!(!paths.is_empty(), "ls of a subtree printed nothing");
    for p in &paths {
        assert!(p.starts_with(str_of(&sub)), "ls {} listed {p}", sub.display());
    }
    let want = str_of(&sub.join("deeper/d.txt")).to_string();
    assert!(paths.contains(&want), "ls of the subtree misses {want}: {paths:?}");
}

#[test]
fn diff_shows_added_removed_and_modified() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    let a = c.backup(&[&src]);
    std::fs::write(src.join("keep.txt"), "keep, but changed\n").expect("modify");
    std::fs::remove_file(src.join("sub/a.txt")).expect("remove");
    std::fs::write(src.join("other/new.txt"), "new\n").expect("add");
    let b = c.backup(&[&src]);

    let out = c.ok(&["diff", &string(&a, "short_id"), &string(&b, "short_id")]);
    let lines: Vec<String> = out.stdout().lines().map(|l| l.trim_end().to_string()).collect();
    for want in [
        format!("M {}", src.join("keep.txt").display()),
        format!("- {}", src.join("sub/a.txt").display()),
        format!("+ {}", src.join("other/new.txt").display()),
    ] {
        assert!(lines.contains(&want), "diff lacks line {want:?}\n{out}");
    }
    assert!(!out.stdout().contains("sub/deeper/d.txt"), "diff lists an unchanged file\n{out}");

    let json = c.ok(&["diff", "--json", &string(&a, "snapshot_id"), &string(&b, "snapshot_id")]);
    let text = json.stdout();
    let parses = serde_json::from_str::<Value>(&text).is_ok()
        || text.lines().filter(|l| !l.trim().is_empty()).all(|l| serde_json::from_str::<Value>(l).is_ok());
    assert!(parses, "diff --json is neither one JSON value nor JSON lines\n{json}");
    assert!(text.contains("new.txt") && text.contains("a.txt") && text.contains("keep.txt"), "{json}");
}

#[test]
fn stats_json_reports_sizes_and_ratios() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    write_text(&src.join("text.txt"), MIB);
    write_random(&src.join("random.bin"), 11, 256 * KIB);
    c.backup(&[&src]);
    c.backup_with(&[&src], &["--tag", "again"]);

    let v = c.ok(&["stats", "--json"]).json();
    assert_eq!(num(&v, "snapshots"), 2, "{v}");
    let logical = num(&v, "logical_bytes");
    let stored = num(&v, "stored_bytes");
    assert!(logical >= 2 * (MIB + 256 * KIB), "logical_bytes counts both snapshots: {v}");
    assert!(stored > 256 * KIB, "stored_bytes below the incompressible data: {v}");
    assert!(stored < (MIB + 256 * KIB) / 2, "stored_bytes shows no dedup/compression: {v}");
    assert!(stored <= c.repo_size(), "stored_bytes exceeds the repository size on disk: {v}");
    assert!(num(&v, "blobs") >= 2, "{v}");
    assert!(num(&v, "packs") >= 1, "{v}");
    assert!(float(&v, "dedup_ratio") >= 1.8, "two identical snapshots: dedup_ratio ≈ 2: {v}");
    assert!(float(&v, "compression_ratio") >= 2.0, "1 MiB of text compresses well: {v}");
}

#[test]
fn latest_prefixes_and_full_ids_select_snapshots() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    let a = c.backup(&[&src]);
    // Snapshot times may have one-second resolution; make "latest" unambiguous.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(src.join("second.txt"), "only in the second snapshot\n").expect("write");
    let b = c.backup(&[&src]);

    let has_second = |snap: &str| {
        let target = c.dir(&format!("r-{}", snap.replace(':', "_")));
        c.restore(snap, &target);
        restored_path(&target, &src).join("second.txt").exists()
    };
    assert!(has_second("latest"), "latest is not the newest snapshot");
    let a_id = string(&a, "snapshot_id");
    assert!(!has_second(&a_id), "full id selected the wrong snapshot");
    assert!(!has_second(&a_id[..8]), "8-char prefix selected the wrong snapshot");
    assert!(has_second(&string(&b, "snapshot_id")[..6]), "6-char prefix selected the wrong snapshot");

    let unknown =
        if a_id.starts_with("ffff") || string(&b, "snapshot_id").starts_with("ffff") { "00000000" } else { "ffffffff" };
    let out = c.cmd(&["ls", unknown]);
    out.assert_one_line_error(1);
}

#[test]
fn host_and_tag_filters_select_snapshots() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    c.backup_with(&[&src], &["--host", "alpha", "--tag", "daily"]);
    std::fs::write(src.join("beta-only.txt"), "b\n").expect("write");
    c.backup_with(&[&src], &["--host", "beta", "--tag", "weekly"]);

    let hosts =
        |extra: &[&str]| -> Vec<String> { c.snapshots_with(extra).iter().map(|s| string(s, "hostname")).collect() };
    assert_eq!(hosts(&[]).len(), 2);
    assert_eq!(hosts(&["--host", "alpha"]), ["alpha"]);
    assert_eq!(hosts(&["--tag", "weekly"]), ["beta"]);
    assert!(hosts(&["--tag", "nope"]).is_empty());

    let target = c.dir("restore");
    c.restore_with("latest", &target, &["--host", "alpha"]);
    let root = restored_path(&target, &src);
    assert!(root.join("keep.txt").exists(), "latest --host alpha restored nothing");
    assert!(!root.join("beta-only.txt").exists(), "latest --host alpha restored beta's snapshot");

    let target = c.dir("restore-tag");
    c.restore_with("latest", &target, &["--tag", "weekly"]);
    assert!(restored_path(&target, &src).join("beta-only.txt").exists());
}

#[test]
fn backup_exclude_glob_skips_matching_files() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    c.backup_with(&[&src], &["--exclude", "*.tmp"]);
    let target = c.dir("restore");
    c.restore("latest", &target);
    let root = restored_path(&target, &src);
    assert!(!root.join("scratch.tmp").exists() && !root.join("sub/c.tmp").exists());
    assert!(root.join("sub/a.txt").exists() && root.join("notes.log").exists());

    let paths: Vec<String> = c.ls("latest", None).iter().map(|e| string(e, "path")).collect();
    assert!(paths.iter().all(|p| !p.ends_with(".tmp")), "excluded files listed: {paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("sub/deeper/d.txt")), "{paths:?}");
}

/// Relative paths of regular files under `root`.
fn files_under(root: &Path) -> Vec<String> {
    scan(root)
        .into_iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn restore_include_and_exclude_filter_files() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    c.backup(&[&src]);

    let target = c.dir("only-txt");
    c.restore_with("latest", &target, &["--include", "*.txt"]);
    let got = files_under(&restored_path(&target, &src));
    assert_eq!(got, ["keep.txt", "other/e.txt", "sub/a.txt", "sub/deeper/d.txt"], "--include '*.txt'");

    let target = c.dir("no-log-no-tmp");
    c.restore_with("latest", &target, &["--exclude", "*.log", "--exclude", "*.tmp"]);
    let got = files_under(&restored_path(&target, &src));
    assert_eq!(got, ["keep.txt", "other/e.txt", "sub/a.txt", "sub/deeper/d.txt"], "--exclude");

    let target = c.dir("include-minus-exclude");
    c.restore_with("latest", &target, &["--include", "*.txt", "--exclude", "d.txt"]);
    let got = files_under(&restored_path(&target, &src));
    assert_eq!(got, ["keep.txt", "other/e.txt", "sub/a.txt"], "--include with --exclude");
}

/// `restore SNAP:PATH --target T` puts the contents of PATH directly into T (as restic does).
#[test]
fn restore_of_a_subtree_with_snap_colon_path() {
    let c = Coffer::new();
    c.init();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    let s = c.backup(&[&src]);

    let target = c.dir("restore");
    let sub = src.join("nested");
    let spec = format!("{}:{}", string(&s, "short_id"), sub.display());
    c.restore(&spec, &target);
    let opts = CompareOptions { root_metadata: false, ..Default::default() };
    assert_trees_equal_with(&sub, &target, &opts);

    let target = c.dir("restore-latest");
    c.restore(&format!("latest:{}", src.join("hard").display()), &target);
    assert_trees_equal_with(&src.join("hard"), &target, &opts);
}

#[test]
fn global_options_before_or_after_the_subcommand() {
    let c = Coffer::new();
    let pw = c.password_file();
    let go = |args: &[&std::ffi::OsStr]| {
        let mut cmd = c.bare_command();
        cmd.args(args);
        run(cmd, DEFAULT_TIMEOUT)
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let (repo, cache, pwf) = (c.repo.as_os_str(), c.cache.as_os_str(), pw.as_os_str());

    go(&[&os("--repo"), repo, &os("--password-file"), pwf, &os("init")]).assert_code(0);
    let src = simple_tree(&c, "src");
    go(&[&os("backup"), src.as_os_str(), &os("-r"), repo, &os("--password-file"), pwf, &os("--cache-dir"), cache])
        .assert_code(0);
    go(&[&os("-r"), repo, &os("--cache-dir"), cache, &os("backup"), &os("--password-file"), pwf, src.as_os_str()])
        .assert_code(0);
    let out = go(&[&os("snapshots"), &os("--json"), &os("--repo"), repo, &os("--password-file"), pwf]);
    out.assert_code(0);
    assert_eq!(out.json().as_array().map(Vec::len), Some(2), "{out}");
    let out = go(&[&os("--json"), &os("-r"), repo, &os("--password-file"), pwf, &os("snapshots")]);
    out.assert_code(0);
    assert_eq!(out.json().as_array().map(Vec::len), Some(2), "--json before the subcommand\n{out}");
    go(&[&os("-q"), &os("snapshots"), &os("-r"), repo, &os("--password-file"), pwf, &os("-v")]).assert_code(0);
}

#[test]
fn repository_and_password_from_environment_and_command() {
    let c = Coffer::new();
    c.init(); // COFFER_REPOSITORY + COFFER_PASSWORD
    let src = simple_tree(&c, "src");
    let pw = c.password_file();

    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo)
        .env("COFFER_CACHE_DIR", &c.cache)
        .arg("--password-command")
        .arg(format!("cat {}", pw.display()))
        .arg("backup")
        .arg(&src);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);

    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).args(["snapshots", "--json", "--password-file"]).arg(&pw);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");
}

#[test]
fn plain_backup_prints_a_summary_and_no_progress_when_not_a_terminal() {
    let c = Coffer::new();
    c.init();
    let src = simple_tree(&c, "src");
    let out = c.ok(&[std::ffi::OsStr::new("backup"), src.as_os_str()]);
    let short = string(&c.snapshots()[0], "short_id");
    assert!(out.stdout().contains(&short), "summary does not name the snapshot {short}\n{out}");
    assert!(!out.all().contains('\r'), "progress bar drawn although stdout is not a terminal\n{out}");
    let quiet = c.ok(&[std::ffi::OsStr::new("backup"), std::ffi::OsStr::new("-q"), src.as_os_str()]);
    assert!(quiet.stdout().trim().is_empty(), "-q still printed\n{quiet}");
}

#[test]
fn usage_errors_exit_2() {
    let c = Coffer::new();
    c.init();
    c.cmd(&["frobnicate"]).assert_code(2);
    c.cmd(&["backup", "--no-such-flag", "/"]).assert_code(2);
    c.cmd(&["restore", "latest"]).assert_code(2); // --target is required
    c.cmd(&["check", "--read-data-subset", "lots"]).assert_code(2);
}
