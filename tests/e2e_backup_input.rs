//! End-to-end: where a backup's paths and data come from, and whether it stores anything:
//! `--dry-run`, `--files-from` (and `-verbatim`, and `-` for stdin), `--stdin`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::tree::write_random;
use common::*;

/// Every file of the repository with its size: a dry run must change none of them.
fn repo_state(c: &Coffer) -> Vec<(std::path::PathBuf, u64)> {
    c.repo_files("")
        .into_iter()
        .filter(|p| !p.starts_with(c.repo.join(".tmp")))
        .map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, size)
        })
        .collect()
}

#[test]
fn dry_run_counts_what_would_be_added_and_writes_nothing() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_random(&src.join("big.bin"), 1, 300_000);
    std::fs::write(src.join("small.txt"), "hello\n").expect("write");
    let before = repo_state(&c);

    let out = c.backup_out(&[&src], &["--dry-run"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(v["snapshot_id"].is_null(), "a dry run names a snapshot: {v}");
    assert_eq!(num(&v, "files_new"), 2, "{v}");
    assert!(num(&v, "bytes_added") > 0, "a dry run of new data would add nothing? {v}");
    assert_eq!(repo_state(&c), before, "the dry run wrote to the repository");
    assert!(c.snapshots().is_empty());

    // The text form says it was a dry run, and still nothing is written.
    let text = c.cmd(&["backup", "--dry-run", src.to_str().expect("utf-8")]);
    text.assert_code(0);
    assert!(text.stdout().contains("would add"), "{text}");
    assert!(text.stdout().contains("dry run: nothing was written"), "{text}");
    assert_eq!(repo_state(&c), before, "the dry run wrote to the repository");

    // The dry run did not fill the local caches: the real backup reads and stores everything.
    let real = c.backup(&[&src]);
    assert_eq!(num(&real, "files_new"), 2, "{real}");
    // The same data; only the trees of the folders above the source may differ (other tests
    // change the shared temp folder's times meanwhile).
    let (dry, wet) = (num(&v, "bytes_added"), num(&real, "bytes_added"));
    assert!(dry.abs_diff(wet) < 4096, "dry run {v}\nreal {real}");
    let after = repo_state(&c);
    assert!(after.len() > before.len(), "the real backup stored nothing");

    // After a real backup, a dry run of the same tree would add no data.
    let again = c.backup_out(&[&src], &["--dry-run"]).json();
    assert_eq!(num(&again, "files_unmodified"), 2, "{again}");
    assert_eq!(repo_state(&c), after, "the second dry run wrote to the repository");
}

fn snapshot_names(c: &Coffer, base: &Path) -> Vec<String> {
    let mut names: Vec<String> = c
        .ls("latest", Some(base))
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| e["path"].as_str().expect("path").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn files_from_reads_paths_comments_and_stdin() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    for name in ["a.txt", "b.txt", "c.txt", " spaced.txt"] {
        std::fs::write(src.join(name), name).expect("write");
    }
    let list = c.path("list.txt");
    let s = src.display();
    std::fs::write(&list, format!("# what to keep\n{s}/a.txt\n\n   {s}/b.txt  \n#{s}/c.txt\n")).expect("write");
    c.backup_with(&[], &["--files-from", list.to_str().expect("utf-8")]);
    let base = src.display().to_string();
    assert_eq!(snapshot_names(&c, &src), [format!("{base}/a.txt"), format!("{base}/b.txt")]);

    // Verbatim: the leading space belongs to the name, and `#` starts no comment.
    let verbatim = c.path("verbatim.txt");
    std::fs::write(&verbatim, format!("{s}/ spaced.txt\n")).expect("write");
    c.backup_with(&[], &["--files-from-verbatim", verbatim.to_str().expect("utf-8")]);
    assert_eq!(snapshot_names(&c, &src), [format!("{base}/ spaced.txt")]);

    // `-` reads the list from standard input, and paths on the command line add to it.
    let mut cmd = c.command();
    cmd.args(["backup", "--json", "--files-from", "-"]).arg(src.join("c.txt"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(format!("{s}/a.txt\n").as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot_names(&c, &src), [format!("{base}/a.txt"), format!("{base}/c.txt")]);

    // A list naming nothing is an error, not a backup of the profile's or of nothing.
    let empty = c.path("empty.txt");
    std::fs::write(&empty, "# nothing\n\n").expect("write");
    let out = c.cmd(&["backup", "--files-from", empty.to_str().expect("utf-8")]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("--files-from lists name no path"), "{out}");
}

/// restic reads `--files-from` lines as globs (Go's `filepath.Glob`); `-verbatim` never does.
#[test]
fn files_from_expands_glob_lines() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    for name in ["a/x.txt", "a/y.log", "b/x.txt", "b/deep/x.txt", "c/x.txt", "lit[1]"] {
        std::fs::create_dir_all(src.join(name).parent().expect("parent")).expect("mkdir");
        std::fs::write(src.join(name), name).expect("write");
    }
    let s = src.display();
    let list = c.path("list.txt");
    std::fs::write(&list, format!("{s}/[ab]/*.txt\n{s}/*/nothing*\n{s}/lit\\[1]\n")).expect("write");
    let out = c.backup_out(&[], &["--files-from", list.to_str().expect("utf-8")]);
    out.assert_code(0);
    // `*` stays within one folder: b/deep/x.txt is not matched, nor c/ by [ab].
    let base = src.display().to_string();
    let want: Vec<String> = ["a/x.txt", "b/x.txt", "lit[1]"].iter().map(|n| format!("{base}/{n}")).collect();
    assert_eq!(snapshot_names(&c, &src), want);
    assert!(out.stderr().contains("matches no file, skipped"), "no warning for the empty pattern\n{out}");

    // Verbatim: the same line is a path (here a missing one: the snapshot's error).
    let verbatim = c.path("verbatim.txt");
    std::fs::write(&verbatim, format!("{s}/[ab]/*.txt\n{s}/c/x.txt\n")).expect("write");
    let out = c.backup_out(&[], &["--files-from-verbatim", verbatim.to_str().expect("utf-8")]);
    out.assert_code(3);
    assert_eq!(snapshot_names(&c, &src), [format!("{base}/c/x.txt")]);
}

/// Runs `coffer ARGS` with `input` on its standard input.
fn with_stdin(c: &Coffer, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut cmd = c.command();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A writer thread: the child may stop reading (an error) before taking everything.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

#[test]
fn stdin_is_stored_as_one_file_and_restores_byte_for_byte() {
    let c = Coffer::new();
    c.init();
    // Larger than one chunk, so the stream is cut and deduplicated like a file.
    let dump = common::tree::random_bytes(7, 3 << 20);
    let out = with_stdin(&c, &["backup", "--json", "--stdin", "--stdin-filename", "db.sql"], &dump);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    check_backup_summary(&v);
    assert_eq!(num(&v, "files_new"), 1, "{v}");
    assert_eq!(num(&v, "bytes_read"), dump.len() as u64, "{v}");
    let id = string(&v, "short_id");

    let snaps = c.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/db.sql"]), "{}", snaps[0]);
    let listing = c.ls(&id, None);
    let file = listing.iter().find(|e| e["path"] == "/db.sql").unwrap_or_else(|| panic!("no /db.sql in {listing:?}"));
    assert_eq!(file["type"], "file");
    assert_eq!(num(file, "size"), dump.len() as u64);
    assert_eq!(num(file, "mode"), 0o600, "a dump is its owner's only");

    let target = c.path("out");
    c.restore(&id, &target);
    assert!(std::fs::read(target.join("db.sql")).expect("restored db.sql") == dump, "restored bytes differ");

    // The same dump again adds (almost) nothing: its chunks are known.
    let again = with_stdin(&c, &["backup", "--json", "--stdin", "--stdin-filename", "db.sql"], &dump);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let v2: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert!(num(&v2, "bytes_added") < 4096, "the same dump was stored again: {v2}");

    // Paths beside --stdin, or a name with folders, are refused before anything is read.
    let src = c.dir("src");
    let out = with_stdin(&c, &["backup", "--stdin", src.to_str().expect("utf-8")], b"x");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stdin backs up standard input only"));
    let out = with_stdin(&c, &["backup", "--stdin", "--stdin-filename", "a/b.sql"], b"x");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a file name"));
    assert_eq!(c.snapshots().len(), 2);
}
