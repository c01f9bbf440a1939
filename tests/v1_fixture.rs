//! The frozen repository of format v1: every later version must open and restore it.
//!
//! tests/fixtures/v1-repo is a small repository written once by the v1 code, with the password
//! [`FIXTURE_PASSWORD`], holding one snapshot (host `coffer-fixture`, tag `v1-fixture`) of the
//! tree that [`make_v1_source`] generates. The expected tree is not stored: the generator is
//! deterministic (fixed bytes, names, modes, owners, nanosecond mtimes, xattrs), so the test
//! regenerates it and compares. NEVER change `make_v1_source` or the fixture: both are frozen
//! together. To (re)create the fixture on purpose, delete tests/fixtures/v1-repo and run
//! `cargo test --test v1_fixture -- --ignored create_v1_fixture` as root.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tree::{chmod, chown, lchown, set_mtime, set_xattr, write_file};
use common::*;

pub const FIXTURE_PASSWORD: &str = "coffer-v1-fixture";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture_repo() -> PathBuf {
    Path::new(FIXTURES).join("v1-repo")
}

/// Frozen content generator: `len` bytes from a BLAKE3 stream labelled by `label`.
fn v1_bytes(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"coffer v1 fixture content\0");
    h.update(label.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// Recreates, bit for bit, the source tree frozen in the v1 fixture. Do not change.
pub fn make_v1_source(root: &Path) {
    fs::create_dir_all(root).expect("mkdir v1 source");
    let p = |s: &str| root.join(s);
    for d in ["docs", "docs/empty", "bin", "links", "hard", "special", "names", "deep"] {
        fs::create_dir_all(p(d)).expect("mkdir");
    }
    write_file(&p("empty.txt"), b"");
    write_file(&p("hello.txt"), b"Hello from Coffer format v1.\n");
    write_file(&p("random.bin"), &v1_bytes("random", 150_000));
    write_file(&p("docs/random-copy.bin"), &v1_bytes("random", 150_000));
    let text: String = (0..1500).map(|i| format!("{i:05} fixture line, compressible\n")).collect();
    write_file(&p("docs/text.txt"), text.as_bytes());
    // Sparse: 2 MiB, data at 0 and at 1 MiB.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(p("sparse.img")).expect("create sparse");
        f.write_all(&v1_bytes("sparse-a", 4096)).expect("write");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(&v1_bytes("sparse-b", 4096)).expect("write");
        f.set_len(2 << 20).expect("set_len");
    }
    write_file(&p("bin/tool"), b"#!/bin/sh\necho v1\n");
    chown(&p("bin/tool"));
    chmod(&p("bin/tool"), 0o4755);
    write_file(&p("bin/private"), b"private\n");
    chmod(&p("bin/private"), 0o600);
    chmod(&p("docs/empty"), 0o1777);
    symlink("../hello.txt", p("links/relative")).expect("symlink");
    symlink("/etc/hostname", p("links/absolute")).expect("symlink");
    symlink("nowhere", p("links/dangling")).expect("symlink");
    lchown(&p("links/dangling"));
    write_file(&p("hard/one"), &v1_bytes("hard", 3000));
    fs::hard_link(p("hard/one"), p("hard/two")).expect("link");
    fs::hard_link(p("hard/one"), p("docs/three")).expect("link");
    nix::unistd::mkfifo(&p("special/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    chmod(&p("special/fifo"), 0o644);
    if is_root() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let m = Mode::from_bits_truncate(0o600);
        mknod(&p("special/null"), SFlag::S_IFCHR, m, makedev(1, 3)).expect("mknod");
        mknod(&p("special/loop"), SFlag::S_IFBLK, m, makedev(7, 1)).expect("mknod");
        chmod(&p("special/null"), 0o600);
        chmod(&p("special/loop"), 0o600);
    }
    write_file(&root.join("names").join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1\n");
    write_file(&p(&format!("names/{}", "n".repeat(255))), b"long name\n");
    write_file(&p("names/ünï cødé.txt"), b"utf-8\n");
    let mut deep = p("deep");
    for i in 0..11 {
        deep.push(format!("{i:02}-{}", "x".repeat(100)));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    write_file(&deep.join("bottom.txt"), b"deep\n");
    set_xattr(&p("hello.txt"), "user.greeting", b"hi");
    set_xattr(&p("hello.txt"), "user.binary", &[0, 1, 2, 255]);
    set_xattr(&p("docs"), "user.dir", b"dir attr");
    chown(&p("docs"));
    set_v1_times(root);
}

/// Fixed mtimes, bottom-up, in sorted order. Do not change.
fn set_v1_times(root: &Path) {
    fn walk(p: &Path, n: &mut i64) {
        if fs::symlink_metadata(p).expect("lstat").is_dir() {
            let mut kids: Vec<PathBuf> = fs::read_dir(p).expect("read_dir").map(|e| e.expect("entry").path()).collect();
            kids.sort();
            for k in kids {
                walk(&k, n);
            }
        }
        *n += 1;
        set_mtime(p, 1_700_000_000 + *n * 86_399, (*n * 987_654_321) % 1_000_000_000);
    }
    walk(root, &mut 0);
}

fn fixture_coffer(repo: PathBuf) -> Coffer {
    let mut c = Coffer::new();
    c.repo = repo;
    c.password = FIXTURE_PASSWORD.to_string();
    c
}

#[test]
fn v1_fixture_opens_and_restores() {
    let fixture = fixture_repo();
    if !fixture.join("config").exists() {
        skip(
            "v1_fixture_opens_and_restores",
            "tests/fixtures/v1-repo does not exist yet; create it with \
             `cargo test --test v1_fixture -- --ignored create_v1_fixture`",
        );
        return;
    }
    // Work on a copy: opening may write locks or caches; the fixture stays pristine.
    let scratch = tempdir();
    let repo = scratch.path().join("v1-repo");
    let st = Command::new("cp").arg("-a").arg(&fixture).arg(&repo).status().expect("cp");
    assert!(st.success(), "copy fixture");
    let c = fixture_coffer(repo);

    let snaps = c.snapshots();
    assert_eq!(snaps.len(), 1, "the v1 fixture holds exactly one snapshot: {snaps:?}");
    let snap = &snaps[0];
    assert_eq!(snap["hostname"], "coffer-fixture", "{snap}");
    assert_eq!(snap["tags"], serde_json::json!(["v1-fixture"]), "{snap}");
    let source = PathBuf::from(snap["paths"][0].as_str().expect("paths[0] is a string"));
    c.ok(&["check", "--read-data"]);

    let target = c.dir("restore");
    c.restore("latest", &target);
    let expected = c.path("expected");
    make_v1_source(&expected);
    let opts = CompareOptions { ownership: is_root(), ..Default::default() };
    assert_trees_equal_with(&expected, &restored_path(&target, &source), &opts);

    // A v1 repository keeps its v1 config, and with it its chunker (fastcdc's table XORed with
    // a seed: `chunker::tests::v1_boundaries_are_fastcdcs`), so its deduplication holds.
    c.backup(&[&expected]);
    assert!(std::fs::read(c.repo.join("config")).expect("config").starts_with(b"CFCONF01"));

    let mut wrong = fixture_coffer(c.repo.clone());
    wrong.password = "not-the-fixture-password".into();
    wrong.cmd(&["snapshots"]).assert_one_line_error(12);
}

/// Builds tests/fixtures/v1-repo with the current binary. Run once, by hand, as root:
/// `cargo test --test v1_fixture -- --ignored create_v1_fixture --nocapture`
#[test]
#[ignore = "creates the frozen v1 fixture; run by hand once"]
fn create_v1_fixture() {
    let fixture = fixture_repo();
    assert!(
        !fixture.exists(),
        "{} exists already; it is frozen. Delete it only if the format has not shipped.",
        fixture.display()
    );
    assert!(is_root(), "run as root: the fixture has device nodes and foreign owners");
    let c = fixture_coffer(fixture.clone());
    let source = scratch_root().join("coffer-v1-source");
    let _ = fs::remove_dir_all(&source);
    make_v1_source(&source);
    fs::create_dir_all(FIXTURES).expect("mkdir fixtures");
    c.init();
    c.backup_with(&[&source], &["--host", "coffer-fixture", "--tag", "v1-fixture"]);
    c.ok(&["check", "--read-data"]);
    let target = c.dir("restore");
    c.restore("latest", &target);
    assert_trees_equal(&source, &restored_path(&target, &source));
    fs::remove_dir_all(&source).expect("remove source");
    eprintln!("created {}; commit it together with tests/v1_fixture.rs", fixture.display());
}
