//! End-to-end: the `--json` output of every command against the one shape README.md's "JSON
//! output" documents: stdout is JSON Lines (each line one compact JSON value, nothing else),
//! result commands write one line, `ls` and `diff` one object per entry; keys are snake_case;
//! every time is RFC 3339 in UTC (`Z`); sizes and counts are non-negative integers; ids are
//! lower-case hex; a snapshot is the same object wherever it appears.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// Keys whose values are times.
const TIME_KEYS: [&str; 5] = ["time", "mtime", "created", "backup_start", "backup_end"];
/// Objects whose keys are user data (store options), not part of the shape.
const FREE_FORM: [&str; 1] = ["options"];

/// stdout as JSON Lines, checked line by line against the shape's general rules.
fn lines(out: &Out) -> Vec<Value> {
    let text = std::str::from_utf8(&out.stdout).unwrap_or_else(|e| panic!("stdout is not UTF-8 ({e})\n{out}"));
    assert!(text.is_empty() || text.ends_with('\n'), "stdout does not end with a newline\n{out}");
    let mut values = Vec::new();
    for line in text.lines() {
        assert!(!line.trim().is_empty(), "an empty line on stdout\n{out}");
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{out}"));
        assert!(value.is_object() || value.is_array(), "a line is not an object or array: {line}\n{out}");
        check_shape(&value, "$", out);
        values.push(value);
    }
    values
}

/// Exactly one JSON document on one line.
fn one(out: &Out) -> Value {
    let mut values = lines(out);
    assert_eq!(values.len(), 1, "expected one JSON line\n{out}");
    values.remove(0)
}

fn check_shape(value: &Value, at: &str, out: &Out) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{at}.{key}");
                assert!(
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "key {here} is not snake_case\n{out}"
                );
                if TIME_KEYS.contains(&key.as_str()) && !v.is_null() {
                    check_time(v, &here, out);
                }
                if key.ends_with("_id") && v.is_string() {
                    let s = v.as_str().unwrap_or_default();
                    assert!(is_hex(s, 64) || is_hex(s, 8), "{here} is not a lower-case hex id: {v}\n{out}");
                }
                if key == "id" && v.is_string() {
                    assert!(is_hex(v.as_str().unwrap_or_default(), 64), "{here} is not a full id: {v}\n{out}");
                }
                if key.ends_with("_bytes") || key.starts_with("bytes_") || key.starts_with("files_") {
                    assert!(v.is_u64() || (key == "bytes_freed" && v.is_i64()), "{here} is not an integer: {v}\n{out}");
                }
                if key.ends_with("_seconds") {
                    assert!(v.as_f64().is_some_and(|s| s >= 0.0), "{here} is not a number of seconds: {v}\n{out}");
                }
                if !FREE_FORM.contains(&key.as_str()) {
                    check_shape(v, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_shape(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The one time format: RFC 3339, UTC with `Z`.
fn check_time(v: &Value, at: &str, out: &Out) {
    let text = v.as_str().unwrap_or_else(|| panic!("{at} is not a string: {v}\n{out}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{at} is not RFC 3339 ({e}): {v}\n{out}"));
    assert!(text.ends_with('Z'), "{at} is not in UTC: {v}\n{out}");
}

fn has(v: &Value, keys: &[&str], what: &str) {
    for key in keys {
        assert!(v.get(key).is_some(), "{what} lacks {key:?}: {v}");
    }
}

const SNAPSHOT_KEYS: [&str; 12] = [
    "id",
    "short_id",
    "time",
    "hostname",
    "username",
    "paths",
    "tags",
    "tree",
    "incomplete",
    "signer",
    "signed_by",
    "summary",
];
const SUMMARY_KEYS: [&str; 6] = ["files_new", "dirs", "bytes_added", "total_bytes", "backup_start", "backup_end"];
const LS_KEYS: [&str; 9] = ["path", "type", "size", "mode", "mtime", "uid", "gid", "user", "group"];

fn check_snapshot(v: &Value) {
    has(v, &SNAPSHOT_KEYS, "snapshot object");
    has(&v["summary"], &SUMMARY_KEYS, "snapshot summary");
    assert!(v["summary"]["backup_end"].is_string(), "a new snapshot records its end: {v}");
}

fn array(v: &Value, what: &str) -> Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("{what} is not an array: {v}")).clone()
}

#[test]
fn every_command_writes_the_documented_json_shape() {
    let c = Coffer::new();
    let init = one(&c.ok(&["init", "--json"]));
    has(&init, &["repository", "id"], "init");

    let src = c.dir("src");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("sub/b.txt"), "beta\n").expect("write");
    std::os::unix::fs::symlink("a.txt", src.join("link")).expect("symlink");
    let backup_keys = [
        "snapshot_id",
        "short_id",
        "dry_run",
        "time",
        "files_new",
        "bytes_added",
        "errors",
        "incomplete",
        "backup_start",
        "backup_end",
        "elapsed_seconds",
    ];
    let s = src.to_str().expect("utf-8");
    let first = one(&c.ok(&["backup", "--json", "--tag", "one", s]));
    has(&first, &backup_keys, "backup");
    std::fs::write(src.join("c.txt"), "gamma\n").expect("write");
    std::fs::write(src.join("a.txt"), "alpha, longer\n").expect("write");
    let second = one(&c.ok(&["backup", "--json", "--tag", "two", s]));
    let dry = one(&c.ok(&["backup", "--json", "--dry-run", s]));
    has(&dry, &backup_keys, "backup --dry-run");
    assert!(dry["snapshot_id"].is_null() && dry["dry_run"] == true, "{dry}");

    let mut cmd = c.command();
    cmd.args(["backup", "--json", "--stdin", "--stdin-filename", "dump.sql"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"CREATE TABLE t;\n").expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let stdin_out = Out {
        argv: "backup --stdin --json".into(),
        status: output.status,
        stdout: output.stdout,
        stderr: output.stderr,
        elapsed: Default::default(),
    };
    stdin_out.assert_code(0);
    has(&one(&stdin_out), &backup_keys, "backup --stdin");

    // snapshots: one array of snapshot objects; the time is the backup's, in the same format.
    let snaps = array(&one(&c.ok(&["snapshots", "--json"])), "snapshots");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    snaps.iter().for_each(check_snapshot);
    let listed = snaps.iter().find(|v| v["id"] == first["snapshot_id"]).expect("the first backup is listed");
    assert_eq!(listed["time"], first["time"], "one time format for one time");
    assert_eq!(listed["summary"]["backup_end"], first["backup_end"]);
    let latest = array(&one(&c.ok(&["snapshots", "--json", "--latest", "1"])), "snapshots --latest");
    latest.iter().for_each(check_snapshot);

    // --group-by: [{group_key, snapshots}], the same snapshot objects.
    let groups = array(&one(&c.ok(&["snapshots", "--json", "--group-by", "host,paths"])), "group-by");
    assert_eq!(groups.len(), 2, "the folder and the stdin snapshot: {groups:?}");
    for g in &groups {
        has(g, &["group_key", "snapshots"], "group");
        has(&g["group_key"], &["hostname", "paths", "tags", "signer"], "group_key");
        array(&g["snapshots"], "group snapshots").iter().for_each(check_snapshot);
    }
    let tags = array(&one(&c.ok(&["snapshots", "--json", "--group-by", "tags"])), "group-by tags");
    assert_eq!(tags.len(), 3, "{tags:?}");

    // ls and diff: one object a line.
    let first_id = string(&first, "snapshot_id");
    let second_id = string(&second, "snapshot_id");
    let entries = lines(&c.ok(&["ls", "--json", &second_id]));
    assert!(entries.len() >= 5, "{entries:?}");
    entries.iter().for_each(|e| has(e, &LS_KEYS, "ls entry"));
    assert!(entries.iter().any(|e| e["target"] == "a.txt"), "the link's target: {entries:?}");
    let long = lines(&c.ok(&["ls", "-l", "--json", &second_id]));
    assert_eq!(long, entries, "ls -l --json is ls --json");
    let changes = lines(&c.ok(&["diff", "--json", &first_id, &second_id]));
    assert!(changes.len() >= 2, "{changes:?}");
    changes.iter().for_each(|e| has(e, &["change", "path", "type"], "diff entry"));

    // Restores, real and planned.
    let target = c.path("restored");
    let t = target.to_str().expect("utf-8");
    let restore_keys = [
        "snapshot_id",
        "short_id",
        "files",
        "dirs",
        "other",
        "bytes",
        "errors",
        "skipped",
        "dry_run",
        "elapsed_seconds",
    ];
    let planned = one(&c.ok(&["restore", "--json", "--dry-run", &second_id, "--target", t]));
    has(&planned, &restore_keys, "restore --dry-run");
    assert!(!planned["planned"].as_array().is_none_or(Vec::is_empty), "{planned}");
    let restored = one(&c.ok(&["restore", "--json", &second_id, "--target", t, "--verify"]));
    has(&restored, &restore_keys, "restore");
    assert_eq!(restored["short_id"], second["short_id"]);

    let check_keys = ["errors", "warnings", "packs_checked", "snapshots_checked", "bytes_read"];
    has(&one(&c.ok(&["check", "--json"])), &check_keys, "check");
    has(&one(&c.ok(&["check", "--json", "--read-data"])), &check_keys, "check --read-data");
    has(&one(&c.ok(&["stats", "--json"])), &["snapshots", "logical_bytes", "stored_bytes", "dedup_ratio"], "stats");
    let one_stats = one(&c.ok(&["stats", "--json", &second_id]));
    has(&one_stats, &["snapshot_id", "short_id", "time", "files", "dirs", "other", "restore_bytes"], "stats SNAP");

    let found = array(&one(&c.ok(&["find", "--json", "*.txt"])), "find");
    assert_eq!(found.len(), 2, "{found:?}");
    for hit in &found {
        has(hit, &["snapshot_id", "short_id", "time", "hostname", "hits", "matches"], "find result");
        array(&hit["matches"], "matches").iter().for_each(|e| has(e, &LS_KEYS, "find match"));
    }
    assert!(array(&one(&c.ok(&["find", "--json", "nothing*"])), "find").is_empty());

    // Keys.
    let keys = array(&one(&c.ok(&["key", "list", "--json"])), "key list");
    keys.iter().for_each(|k| has(k, &["id", "kind", "label", "created", "current", "revoked"], "key"));
    let new_password = c.path("new-password");
    std::fs::write(&new_password, "a second passphrase\n").expect("write");
    std::fs::set_permissions(&new_password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let np = new_password.to_str().expect("utf-8");
    let added = one(&c.ok(&["key", "add", "--json", "--new-password-file", np]));
    has(&added, &["action", "id", "kind"], "key add");
    let key_file = c.path("wo.key");
    let wo = one(&c.ok(&["key", "write-only", "--json", "--output", key_file.to_str().expect("utf-8")]));
    has(&wo, &["action", "id", "kind", "label", "hosts"], "key write-only");
    let removed = one(&c.ok(&["key", "remove", "--json", &string(&added, "id")]));
    has(&removed, &["action", "id", "kind"], "key remove");
    let revoked = one(&c.ok(&["key", "remove", "--json", &string(&wo, "id")]));
    has(&revoked, &["action", "id", "kind", "kept_snapshots"], "key remove (write-only)");
    // The key would share stdout with the report: refused, nothing on stdout.
    let mixed = c.cmd(&["key", "write-only", "--json", "--output", "-"]);
    mixed.assert_one_line_error(1);
    assert!(mixed.stdout.is_empty(), "{mixed}");

    let tagged = one(&c.ok(&["tag", "--json", "--add", "extra", &first_id]));
    has(&tagged, &["changed", "unchanged"], "tag");
    array(&tagged["changed"], "changed").iter().for_each(|t| has(t, &["old", "new"], "tag change"));

    // Copy into a second repository.
    let dest = Coffer::new();
    dest.init();
    let password_file = c.password_file();
    let copy_args: Vec<OsString> = vec![
        "copy".into(),
        "--json".into(),
        "--from".into(),
        c.repo.clone().into(),
        "--from-password-file".into(),
        password_file.into(),
    ];
    let copied = one(&dest.ok(&copy_args));
    has(&copied, &["copied", "skipped", "blobs_read", "bytes_added"], "copy");
    array(&copied["copied"], "copied").iter().for_each(|t| has(t, &["source", "copy", "signed_by"], "copied"));

    // forget and prune, planned then done.
    let forget_keys = ["dry_run", "groups", "removed", "future", "untrusted", "prune"];
    let plan = one(&c.ok(&["forget", "--json", "--keep-last", "1", "--dry-run"]));
    has(&plan, &forget_keys, "forget --dry-run");
    for g in array(&plan["groups"], "forget groups") {
        has(&g, &["group_key", "snapshots"], "forget group");
        has(&g["group_key"], &["hostname", "paths", "tags", "signer"], "forget group_key");
        for s in array(&g["snapshots"], "forget snapshots") {
            has(&s, &["id", "short_id", "time", "hostname", "tags", "signed_by", "keep", "reasons"], "forget snapshot");
        }
    }
    assert!(plan["prune"].is_null(), "{plan}");
    let prune_keys = ["dry_run", "packs_unused", "bytes_freed", "packs_deleted", "waiting_for"];
    // --prune: still one line, the prune's report inside.
    let forgot = one(&c.ok(&["forget", "--json", "--keep-last", "1", "--prune"]));
    assert!(!array(&forgot["removed"], "removed").is_empty(), "{forgot}");
    has(&forgot["prune"], &prune_keys, "forget --prune");
    has(&one(&c.ok(&["prune", "--json", "--dry-run"])), &prune_keys, "prune --dry-run");
    has(&one(&c.ok(&["prune", "--json"])), &prune_keys, "prune");

    has(&one(&c.ok(&["repair", "index", "--json"])), &["packs_indexed", "blobs_indexed", "unchanged"], "repair index");
    has(&one(&c.ok(&["repair", "snapshots", "--json"])), &["snapshots_checked", "repaired"], "repair snapshots");

    // A profile, shown.
    let profiles = c.home.join(".config/coffer/profiles");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    let profile = profiles.join("home.toml");
    std::fs::write(&profile, format!("repository = {:?}\nsources = [{s:?}]\n", c.repo.display().to_string()))
        .expect("write");
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    has(&one(&c.ok(&["profile", "show", "home", "--json"])), &["path", "problem", "repository", "sources"], "profile");

    // Commands whose stdout is the payload have no JSON form: refused, stdout left empty.
    for args in [&["dump", "--json", &second_id, "/"][..], &["generate", "--json", "--completions", "bash"][..]] {
        let out = c.cmd(args);
        out.assert_one_line_error(1);
        assert!(out.stdout.is_empty(), "{out}");
    }
}

/// A failing command with --json writes nothing on stdout: the error is one line on stderr.
#[test]
fn a_failure_leaves_stdout_empty() {
    let c = Coffer::new();
    let out = c.cmd(&["snapshots", "--json"]);
    out.assert_one_line_error(10);
    assert!(out.stdout.is_empty(), "{out}");
}
