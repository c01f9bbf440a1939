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

/// Text lines of `coffer find ARGS` (stdout).
fn find_lines(c: &Coffer, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["find"];
    argv.extend_from_slice(args);
    c.ok(&argv).stdout().lines().map(str::to_string).collect()
}

#[test]
fn find_names_the_snapshots_holding_a_match() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::create_dir_all(src.join("sub/deep")).expect("mkdir");
    std::fs::write(src.join("a.txt"), "a").expect("write");
    std::fs::write(src.join("sub/b.txt"), "bb").expect("write");
    std::fs::write(src.join("sub/deep/c.TXT"), "ccc").expect("write");
    let first = string(&c.backup(&[&src]), "short_id");
    std::fs::write(src.join("new.txt"), "new!").expect("write");
    let second = string(&c.backup(&[&src]), "short_id");
    let s = utf8(&src);

    let found = c.ok(&["find", "--json", "new.txt"]).json();
    let found = found.as_array().expect("an array of snapshots");
    assert_eq!(found.len(), 1, "only the second snapshot holds new.txt: {found:?}");
    assert_eq!(found[0]["short_id"], second.as_str());
    assert_eq!(found[0]["hits"], 1);
    let hit = &found[0]["matches"][0];
    assert_eq!(hit["path"], format!("{s}/new.txt"));
    assert_eq!(num(hit, "size"), 4);
    assert!(hit["mtime"].as_str().is_some_and(|t| t.ends_with('Z')), "{hit}");

    let txt = find_lines(&c, &["*.txt"]);
    assert_eq!(txt.len(), 5, "a and b in both, new.txt in the second; not c.TXT: {txt:?}");
    assert!(txt.iter().any(|l| l.starts_with(&first) && l.ends_with(&format!("{s}/sub/b.txt"))), "{txt:?}");
    assert!(txt.iter().all(|l| !l.contains("c.TXT")), "{txt:?}");
    assert_eq!(find_lines(&c, &["-i", "*.txt"]).len(), 7, "with -i c.TXT matches too");

    let sub = find_lines(&c, &["sub"]);
    assert_eq!(sub.len(), 2, "the folder, not what it holds: {sub:?}");
    assert!(sub.iter().all(|l| l.ends_with(&format!("{s}/sub"))), "{sub:?}");

    let by_path = find_lines(&c, &["sub/*.txt", "-s", "latest~1"]);
    assert_eq!(by_path.len(), 1, "{by_path:?}");
    assert!(by_path[0].starts_with(&first) && by_path[0].contains(" 2 "), "id, then size 2: {by_path:?}");
    assert!(find_lines(&c, &["/sub"]).is_empty(), "an anchored pattern starts at the root");
    assert!(find_lines(&c, &["*.txt", "--host", "nobody"]).is_empty());
    let none = c.ok(&["find", "--json", "nothing*"]).json();
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");
}

#[test]
fn dump_writes_a_file_or_a_folder_as_tar() {
    use std::os::unix::fs::PermissionsExt;
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    // Several chunks: the dump streams blob after blob.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("sub/big.bin"), &big).expect("write");
    std::fs::write(src.join("small"), "small").expect("write");
    std::fs::set_permissions(src.join("small"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    std::fs::File::options().write(true).open(src.join("small")).expect("open").set_modified(mtime).expect("mtime");
    std::os::unix::fs::symlink("sub/big.bin", src.join("link")).expect("symlink");
    c.backup(&[&src]);
    let s = utf8(&src);

    let out = c.ok(&["dump", "latest", &format!("{s}/sub/big.bin")]);
    assert!(out.stdout == big, "the file's bytes, exactly ({} of {})", out.stdout.len(), big.len());

    let out = c.ok(&["dump", "latest", s, "--archive", "tar"]);
    let mut seen = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    for entry in archive.entries().expect("a tar stream") {
        let mut entry = entry.expect("a tar entry");
        let header = entry.header().clone();
        let name = entry.path().expect("name").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read entry");
        seen.insert(name, (header, data));
    }
    let names: Vec<&String> = seen.keys().collect();
    assert_eq!(names, ["src", "src/link", "src/small", "src/sub", "src/sub/big.bin"], "named from the folder");
    let (small, data) = &seen["src/small"];
    assert_eq!((data.as_slice(), small.mode().expect("mode")), (&b"small"[..], 0o640));
    assert_eq!(small.mtime().expect("mtime"), 1_600_000_000);
    let (link, _) = &seen["src/link"];
    assert_eq!(link.entry_type(), tar::EntryType::Symlink);
    assert_eq!(link.link_name().expect("target").expect("a target").to_str(), Some("sub/big.bin"));
    assert!(seen["src/sub/big.bin"].1 == big);
    assert_eq!(seen["src/sub"].0.entry_type(), tar::EntryType::Directory);

    // GNU tar reads it too.
    let tarball = c.path("dump.tar");
    std::fs::write(&tarball, &out.stdout).expect("write tarball");
    let unpacked = c.dir("unpacked");
    let mut untar = std::process::Command::new("tar");
    untar.arg("-xf").arg(&tarball).arg("-C").arg(&unpacked);
    run(untar, DEFAULT_TIMEOUT).assert_code(0);
    assert!(std::fs::read(unpacked.join("src/sub/big.bin")).expect("unpacked") == big);
    assert_eq!(std::fs::read_link(unpacked.join("src/link")).expect("link").to_str(), Some("sub/big.bin"));

    let out = c.cmd(&["dump", "latest", &format!("{s}/link")]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("symlink"), "{out}");
    let out = c.cmd(&["dump", "latest", &format!("{s}/nope")]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("not in this snapshot"), "{out}");
}

/// The tags of each snapshot, sorted, as a sorted list.
fn tag_sets(c: &Coffer, cache: Option<&Path>) -> Vec<Vec<String>> {
    let mut cmd = c.command();
    if let Some(cache) = cache {
        cmd.env("COFFER_CACHE_DIR", cache);
    }
    cmd.args(["snapshots", "--json"]);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    let mut sets: Vec<Vec<String>> = out
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            let mut tags: Vec<String> =
                s["tags"].as_array().expect("tags").iter().map(|t| t.as_str().expect("tag").to_string()).collect();
            tags.sort();
            tags
        })
        .collect();
    sets.sort();
    sets
}

/// `coffer check` with a new, empty local database passes, and names no hidden snapshot.
fn check_clean_with_fresh_db(c: &Coffer, name: &str) {
    let mut cmd = c.command();
    cmd.env("COFFER_CACHE_DIR", c.dir(name)).arg("check");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    assert!(!out.all().contains("missing"), "check with a fresh database\n{out}");
}

#[test]
fn tag_rewrites_snapshots_and_retires_the_old_ones() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "1").expect("write");
    c.backup_with(&[&src], &["--tag", "daily"]);
    std::fs::write(src.join("f"), "2").expect("write");
    c.backup(&[&src]);
    // A write-only key's snapshot: the owner may retag it, and it stays that key's.
    let key = c.path("wo.key");
    c.ok(&["key", "write-only", "--output", utf8(&key), "--label", "laptop"]);
    let mut cmd = c.command();
    cmd.env_remove("COFFER_PASSWORD").env("COFFER_CACHE_DIR", c.dir("wo-cache")).arg("--key-file").arg(&key);
    cmd.args(["backup", "--tag", "wo"]).arg(&src);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);

    c.ok(&["tag", "--add", "keep,extra", "latest", "--tag", "daily"]);
    c.ok(&["tag", "--remove", "extra", "--tag", "daily"]);
    c.ok(&["tag", "--set", "monthly", "latest~1"]);
    let out = c.ok(&["tag", "--json", "--add", "owned", "latest", "--tag", "wo"]);
    assert_eq!(out.json()["changed"].as_array().map(Vec::len), Some(1), "{out}");
    let again = c.ok(&["tag", "--json", "--add", "owned", "--tag", "wo"]).json();
    assert_eq!(again["unchanged"].as_array().map(Vec::len), Some(1), "nothing to change: {again}");
    let expected =
        vec![vec!["daily".to_string(), "keep".into()], vec!["monthly".into()], vec!["owned".into(), "wo".into()]];
    assert_eq!(tag_sets(&c, None), expected);
    assert_eq!(tag_sets(&c, Some(&c.dir("fresh-list"))), expected, "a new machine sees the same");
    assert_eq!(c.repo_files("snapshots").len(), 3, "each old snapshot is gone");

    let signed_by = c.snapshots_with(&["--tag", "owned"])[0]["signed_by"].as_str().expect("signed_by").to_string();
    assert!(signed_by.contains("laptop") && signed_by.contains("retagged"), "{signed_by}");

    check_clean_with_fresh_db(&c, "fresh-check");
    c.ok(&["check"]);

    // forget --keep-tag sees the new tags (`keep` and `owned` came from `tag`).
    c.ok(&["forget", "--keep-tag", "keep,daily", "--keep-tag", "owned"]);
    let after = tag_sets(&c, None);
    assert_eq!(after, vec![vec!["daily".to_string(), "keep".into()], vec!["owned".into(), "wo".into()]]);
    check_clean_with_fresh_db(&c, "fresh-check-2");

    // A write-only key cannot.
    let mut cmd = c.command();
    cmd.env_remove("COFFER_PASSWORD").env("COFFER_CACHE_DIR", c.dir("wo-cache")).arg("--key-file").arg(&key);
    cmd.args(["tag", "--add", "x", "latest"]);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("full repository key"), "{out}");
    let out = c.cmd(&["tag", "latest"]);
    out.assert_one_line_error(1);
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    let c = Coffer::new();
    let out = c.ok(&["generate", "--completions", "bash"]);
    let script = out.stdout();
    assert!(script.contains("_coffer()") && script.contains("complete"), "a bash completion function");
    for sub in ["backup", "restore", "find", "dump", "tag", "snapshots"] {
        assert!(script.contains(sub), "the script names {sub}");
    }
    let syntax = run(
        {
            let mut bash = std::process::Command::new("bash");
            bash.arg("-n").arg("-c").arg(&script);
            bash
        },
        DEFAULT_TIMEOUT,
    );
    syntax.assert_code(0);
    for shell in ["zsh", "fish"] {
        assert!(!c.ok(&["generate", "--completions", shell]).stdout.is_empty(), "{shell}");
    }

    let man = c.path("man");
    c.ok(&["generate", "--man", utf8(&man)]);
    for page in ["coffer.1", "coffer-backup.1", "coffer-find.1", "coffer-key.1"] {
        assert!(man.join(page).is_file(), "{page} written");
    }
    let mut render = std::process::Command::new("man");
    render.arg("-l").arg(man.join("coffer.1")).env("MANPAGER", "cat").env("MANWIDTH", "100");
    let rendered = run(render, DEFAULT_TIMEOUT);
    rendered.assert_code(0);
    let text = rendered.stdout();
    assert!(text.contains("NAME") && text.contains("coffer"), "{text}");
    assert!(text.contains("COFFER_PASSWORD"), "the environment is documented\n{text}");

    let help = c.ok(&["backup", "--help"]).stdout();
    assert!(help.contains("Examples:") && help.contains("coffer backup"), "{help}");
    let out = c.cmd(&["generate"]);
    out.assert_code(2);
}

#[test]
fn ls_long_stats_of_a_snapshot_and_the_diff_summary() {
    use std::os::unix::fs::PermissionsExt;
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("keep"), "same").expect("write");
    std::fs::write(src.join("gone"), "0123456789").expect("write");
    std::fs::write(src.join("edit"), "v1").expect("write");
    std::fs::set_permissions(src.join("edit"), std::fs::Permissions::from_mode(0o4750)).expect("chmod");
    c.backup(&[&src]);
    std::fs::remove_file(src.join("gone")).expect("rm");
    std::fs::write(src.join("edit"), "version 2").expect("write");
    std::fs::write(src.join("new1"), "abc").expect("write");
    std::fs::write(src.join("new2"), "defgh").expect("write");
    std::os::unix::fs::symlink("keep", src.join("link")).expect("symlink");
    c.backup(&[&src]);
    let s = utf8(&src);

    let listing = c.ok(&["ls", "-l", "latest", s]).stdout();
    let edit = listing.lines().find(|l| l.ends_with(&format!("{s}/edit"))).expect("edit listed");
    let fields: Vec<&str> = edit.split_whitespace().collect();
    assert_eq!(fields[0], "-rwsr-x---", "{edit}");
    assert_eq!(fields[3], "9", "size: {edit}");
    assert!(fields[4].len() == 10 && fields[5].len() == 8, "date and time: {edit}");
    let link = listing.lines().find(|l| l.contains(&format!("{s}/link"))).expect("link listed");
    assert!(link.starts_with('l') && link.ends_with(&format!("{s}/link -> keep")), "{link}");

    let stats = c.ok(&["stats", "--json", "latest"]).json();
    assert_eq!((num(&stats, "files"), num(&stats, "other")), (4, 1), "{stats}");
    assert_eq!(num(&stats, "restore_bytes"), 4 + 9 + 3 + 5, "{stats}");
    let older = c.ok(&["stats", "--json", "latest~1"]).json();
    assert_eq!((num(&older, "files"), num(&older, "restore_bytes")), (3, 16), "{older}");
    assert!(c.ok(&["stats", "latest"]).stdout().contains("restore size"));

    let diff = c.ok(&["diff", "latest~1", "latest"]).stdout();
    let last = diff.lines().last().expect("a summary line");
    assert!(
        last.starts_with("2 files added (8 B), 1 removed (10 B), 1 changed (9 B now); "),
        "the summary line\n{diff}"
    );
    // The link, and the folder's new mtime.
    let others = diff.lines().filter(|l| l.starts_with("+ ") || l.starts_with("U ")).count() - 2;
    assert!(last.ends_with(&format!("; {others} other changes")), "{diff}");
    let json = c.ok(&["diff", "--json", "latest~1", "latest"]).json_lines();
    assert_eq!(json.len(), diff.lines().count() - 1, "--json prints the entries only: {json:?}");
}

#[test]
fn snapshots_group_by_host_and_tags() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "f").expect("write");
    c.backup_with(&[&src], &["--host", "alpha", "--tag", "x"]);
    c.backup_with(&[&src], &["--host", "beta"]);
    c.backup_with(&[&src], &["--host", "alpha", "--tag", "x"]);
    c.backup_with(&[&src], &["--host", "alpha"]);

    let text = c.ok(&["snapshots", "--group-by", "host,tags"]).stdout();
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("snapshots for ")).collect();
    assert_eq!(
        headers,
        [
            "snapshots for host [alpha], tags [x]:",
            "snapshots for host [beta], tags []:",
            "snapshots for host [alpha], tags []:"
        ],
        "{text}"
    );
    let counts: Vec<&str> = text.lines().filter(|l| l.ends_with("snapshot") || l.ends_with("snapshots")).collect();
    assert_eq!(counts, ["2 snapshots", "1 snapshot", "1 snapshot"], "{text}");
    let one = c.ok(&["snapshots", "--group-by", ""]).stdout();
    assert!(one.starts_with("snapshots for all:") && one.contains("4 snapshots"), "{one}");
    c.cmd(&["snapshots", "--group-by", "colour"]).assert_code(2);
}
