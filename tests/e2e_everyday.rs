//! End-to-end: the everyday commands a restic user expects (issue 17): `latest~N`, `find`,
//! `dump`, `tag`, `ls -l`, `stats SNAP`, the diff summary, `snapshots --group-by`, and shell
//! completions and the man page.

mod common;

use std::path::Path;

use common::*;

/// Three snapshots of one folder whose file says "one", "two", "three"; returns their ids.
fn three_versions(c: &Coffer, src: &Path, extra: &[&str]) -> Vec<String> {
    ["one", "two", "three"]
        .iter()
        .map(|text| {
            std::fs::write(src.join("f.txt"), text).expect("write");
            string(&c.backup_with(&[src], extra), "snapshot_id")
        })
        .collect()
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn latest_tilde_n_names_older_snapshots_everywhere() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    three_versions(&c, &src, &["--tag", "v"]);
    // Newer snapshots without the tag, one of another folder: only the filters skip them.
    std::fs::write(src.join("f.txt"), "fourth").expect("write");
    c.backup_with(&[&src], &[]);
    let other = c.dir("other");
    std::fs::write(other.join("g"), "g").expect("write");
    c.backup_with(&[&other], &[]);

    let file = src.join("f.txt");
    let size_in = |args: &[&str]| {
        let mut argv = vec!["ls", "--json"];
        argv.extend_from_slice(args);
        argv.push(utf8(&file));
        num(&c.ok(&argv).json_lines()[0], "size")
    };
    assert_eq!(size_in(&["latest~1"]), 6, "latest~1 is the untagged 'fourth'");
    assert_eq!(size_in(&["latest~1", "--tag", "v"]), 3, "two");
    assert_eq!(size_in(&["latest~2", "--tag", "v"]), 3, "one");
    assert_eq!(size_in(&["latest~0", "--tag", "v"]), 5, "three");
    assert_eq!(size_in(&["latest", "--path", utf8(&src)]), 6, "--path skips the other folder's snapshot");

    let target = c.dir("target");
    c.restore_with("latest~2", &target, &["--tag", "v"]);
    assert_eq!(std::fs::read_to_string(restored_path(&target, &file)).expect("restored"), "one");
    let target2 = c.dir("target2");
    c.restore_with(&format!("latest~1:{}", utf8(&file)), &target2, &["--tag", "v"]);
    assert_eq!(std::fs::read_to_string(target2.join("f.txt")).expect("restored file"), "two");

    let diff = c.ok(&["diff", "--json", "latest~2", "latest~1", "--tag", "v"]).json_lines();
    assert!(
        diff.iter().any(|d| d["path"] == utf8(&file) && d["change"] == "M"),
        "diff of latest~2 and latest~1 shows f.txt modified: {diff:?}"
    );

    let out = c.cmd(&["ls", "latest~3", "--tag", "v"]);
    out.assert_code(1);
    assert!(out.stderr().contains("latest~3"), "the error names what matched nothing\n{out}");
    let out = c.cmd(&["ls", "latest~x"]);
    out.assert_code(1);
}
