//! End-to-end: tags follow restic's rules. `--tag a,b` on backup gives two tags; as a filter,
//! `a,b` needs both and repeated `--tag`s are alternatives; `--keep-tag a,b` protects a
//! snapshot made with `--tag a,b`. The filters are compared with restic's on the same tags.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

fn tag_sets(values: &[serde_json::Value]) -> BTreeSet<Vec<String>> {
    values
        .iter()
        .map(|s| {
            let mut tags: Vec<String> = s["tags"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            tags.sort();
            tags
        })
        .collect()
}

fn restic(repo: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> Out {
    let mut command = Command::new("restic");
    command
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", cache)
        .stdin(std::process::Stdio::null())
        .args(args);
    let out = run(command, DEFAULT_TIMEOUT);
    assert_eq!(out.code(), Some(0), "restic failed (tests/install-deps.sh installs it)\n{out}");
    out
}

#[test]
fn tag_filters_match_restic() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "data").expect("write");
    let restic_repo = c.path("restic-repo");
    let restic_cache = c.dir("restic-cache");
    restic(&restic_repo, &restic_cache, &["init"]);
    let src_text = src.to_str().expect("UTF-8");
    for tags in [&["--tag", "a"][..], &["--tag", "b"], &["--tag", "a,b"], &["--tag", "a", "--tag", "c"], &[]] {
        c.backup_with(&[&src], tags);
        let mut args = vec!["backup"];
        args.extend_from_slice(tags);
        args.push(src_text);
        restic(&restic_repo, &restic_cache, &args);
    }
    let all = tag_sets(&c.snapshots());
    let expected_all: BTreeSet<Vec<String>> = [vec![], vec!["a"], vec!["b"], vec!["a", "b"], vec!["a", "c"]]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect();
    assert_eq!(all, expected_all, "--tag a,b stores two tags");

    for filter in [
        &["--tag", "a"][..],
        &["--tag", "a,b"],
        &["--tag", "a", "--tag", "b"],
        &["--tag", "b,c", "--tag", "c"],
        &["--tag", "b,a"],
        &["--tag", "z"],
    ] {
        let got = tag_sets(&c.snapshots_with(filter));
        let mut args = vec!["snapshots", "--json"];
        args.extend_from_slice(filter);
        let out = restic(&restic_repo, &restic_cache, &args);
        let restic_snapshots: Vec<serde_json::Value> = match out.json() {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Null => Vec::new(),
            other => panic!("restic snapshots --json: {other}"),
        };
        assert_eq!(got, tag_sets(&restic_snapshots), "coffer and restic disagree on {filter:?}");
    }
}

#[test]
fn keep_tag_protects_a_snapshot_tagged_with_both() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "one").expect("write");
    c.backup_with(&[&src], &["--tag", "daily,keep"]);
    std::fs::write(src.join("f"), "two").expect("write");
    c.backup_with(&[&src], &["--tag", "daily"]);
    std::fs::write(src.join("f"), "three").expect("write");
    c.backup(&[&src]);
    c.ok(&["forget", "--keep-last", "1", "--keep-tag", "daily,keep"]);
    let left = tag_sets(&c.snapshots());
    let expected: BTreeSet<Vec<String>> = [vec![], vec!["daily".to_string(), "keep".to_string()]].into_iter().collect();
    assert_eq!(left, expected);
}
