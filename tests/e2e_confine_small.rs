//! End-to-end checks for issue 15's small confinement items: deep trees, planted key files,
//! host and tag strings, secrets in logs and the environment, password file modes, WebDAV over
//! plain HTTP, oversized objects, repository file modes, copy attribution, and restoring a
//! write-only key's special files.

mod common;

use std::path::Path;

use common::*;

/// Makes `levels` nested folders named `d` under `root` with a file at the bottom, each one
/// reached through `/proc/self/fd` of its parent, so the chain may be longer than PATH_MAX
/// allows as one path.
fn deep_folder(root: &Path, levels: usize) {
    use std::os::fd::AsRawFd;
    let mut dir = std::fs::File::open(root).expect("open the root");
    for _ in 0..levels {
        let next = format!("/proc/self/fd/{}/d", dir.as_raw_fd());
        std::fs::create_dir(&next).expect("mkdir");
        dir = std::fs::File::open(&next).expect("open");
    }
    std::fs::write(format!("/proc/self/fd/{}/bottom.txt", dir.as_raw_fd()), b"deep").expect("write the bottom file");
}

/// `rm -rf`: its fts walk removes a tree deeper than PATH_MAX, which a temp dir's drop may not.
fn remove_deep(path: &Path) {
    let _ = std::process::Command::new("rm").arg("-rf").arg(path).status();
}

fn assert_not_crashed(out: &Out) {
    assert!(out.code().is_some(), "killed by a signal (stack overflow?)\n{out}");
    assert_ne!(out.code(), Some(134), "aborted\n{out}");
    out.assert_no_panic();
}

/// A folder 2500 levels deep, backed up as it is on disk (what lies beyond PATH_MAX is
/// reported by the backup), then listed, compared, counted, checked and restored.
#[test]
fn deep_folders_are_listed_compared_and_restored_without_crashing() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("top.txt"), b"top").expect("write");
    let first = c.backup(&[&src]);
    let first = string(&first, "snapshot_id");
    deep_folder(&src, 2500);
    let out = c.cmd(&["backup", "--json", src.to_str().expect("utf-8")]);
    assert_not_crashed(&out);
    let second = c.snapshots().last().map(|s| string(s, "id")).expect("a second snapshot");
    assert_ne!(first, second);

    let ls = c.ok(&["ls", "--json", &second]);
    let deep = ls.json_lines().iter().filter(|e| string(e, "path").ends_with("/d/d")).count();
    assert!(deep > 1500, "only {deep} nested folders listed");
    c.ok(&["stats"]);
    let diff = c.ok(&["diff", &first, &second]);
    assert!(diff.stdout().lines().count() > 1500, "{}", diff.stdout().lines().count());
    c.ok(&["check", "--read-data"]);
    let target = c.path("restored");
    let out = c.restore_out(&second, &target, &[]);
    assert_not_crashed(&out);
    assert!(restored_path(&target, &src).join("top.txt").is_file(), "{out}");
    remove_deep(&target);
    remove_deep(&src);
}
