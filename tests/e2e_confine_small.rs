//! End-to-end checks for issue 15's small confinement items: deep trees, planted key files,
//! host and tag strings, secrets in logs and the environment, password file modes, WebDAV over
//! plain HTTP, oversized objects, repository file modes, copy attribution, and restoring a
//! write-only key's special files.

mod common;

use std::path::{Path, PathBuf};

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

// --- Item 6: planted key files --------------------------------------------------------------

/// Plants a copy of the repository's key file with other KDF parameters and creation time (it
/// does not open with any passphrase: its sealed key no longer matches its salt).
fn plant_key_file(c: &Coffer, memory_kib: u32, iterations: u32, created_unix: i64, n: u8) -> PathBuf {
    use coffer::format::keyfile::KeyFile;
    let keys = c.repo.join("keys");
    let original = std::fs::read_dir(&keys).expect("keys/").next().expect("a key file").expect("entry").path();
    let mut file = KeyFile::decode(&std::fs::read(original).expect("read")).expect("decode");
    file.kdf.memory_kib = memory_kib;
    file.kdf.iterations = iterations;
    file.created_unix = created_unix;
    file.salt = [n; 16];
    let bytes = file.encode();
    let path = keys.join(coffer::id::Id::of_bytes(&bytes).to_hex());
    std::fs::write(&path, bytes).expect("plant");
    path
}

#[test]
fn planted_key_files_cannot_stall_an_unlock() {
    let mut c = Coffer::new();
    c.init();
    // Argon2 at 1 GiB and 4 passes: allowed in a key file, refused at unlock.
    let heavy = plant_key_file(&c, 1 << 20, 4, 0, 1);
    let out = c.ok(&["snapshots"]);
    assert!(out.stderr().contains(&file_name(&heavy)) && out.stderr().contains("Argon2 cost"), "{out}");

    // Twenty cheap ones, all claiming to be older than the real key (so tried first).
    for n in 0..20 {
        plant_key_file(&c, 64, 1, 0, 10 + n);
    }
    // This machine opened the repository before: its key file is tried first.
    c.ok(&["snapshots"]);
    // A fresh machine tries at most 16 and says why it stopped.
    c.cache = c.dir("fresh-cache");
    let out = c.cmd(&["snapshots"]);
    out.assert_code(12);
    assert!(out.stderr().contains("16 key files") && out.stderr().contains("keys/ holds 22"), "{out}");
    c.password = "wrong".into();
    c.cmd(&["snapshots"]).assert_code(12);
}
