//! Generates source trees holding every kind of entry a backup must round-trip.
//!
//! Owns: [`make_tree`] (all kinds: regular files of every shape, sparse files, directories,
//! symlinks, hardlinks, FIFOs, device nodes, special modes, foreign owners, nanosecond mtimes,
//! xattrs, non-UTF-8 and long names, a > 1000-byte deep path) and the small writers it is built
//! from, reused by tests that need one specific file.
//! Must not touch: anything outside the directory it is given.
//!
//! Content is deterministic (a keyed BLAKE3 stream per seed), so two calls with the same options
//! produce identical trees — the frozen v1 fixture relies on that.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// The foreign owner given to some entries (needs root; skipped otherwise).
pub const UID: u32 = 1234;
pub const GID: u32 = 5678;

/// Which sizes to generate. Every kind of entry is present in both variants.
#[derive(Clone, Debug)]
pub struct TreeOptions {
    /// Size of the "few MiB of random data" file (and of its duplicate).
    pub random_size: u64,
    /// Size of the file larger than the chunker's maximum chunk; 0 = leave it out.
    pub huge_size: u64,
    /// Size of the highly compressible text file.
    pub text_size: u64,
    /// Logical size of the sparse file (data only at a few spots).
    pub sparse_size: u64,
    /// Seed for file contents; change it to get a tree with the same shape, other bytes.
    pub seed: u64,
    /// Base of the generated mtimes (seconds since the epoch).
    pub mtime_base: i64,
}

impl TreeOptions {
    /// Everything, with realistic sizes (~15 MiB of data plus a 16 MiB sparse file). The huge
    /// file is larger than the largest chunk (4 MiB by default, 16 MiB at most).
    pub fn full() -> Self {
        TreeOptions {
            random_size: 2 * MIB,
            huge_size: 10 * MIB,
            text_size: MIB,
            sparse_size: 16 * MIB,
            seed: 1,
            mtime_base: 1_600_000_000,
        }
    }

    /// Every kind of entry, tiny contents: fast to back up, for CLI and error tests.
    pub fn small() -> Self {
        TreeOptions {
            random_size: 100 * KIB,
            huge_size: 0,
            text_size: 64 * KIB,
            sparse_size: 4 * MIB,
            seed: 2,
            mtime_base: 1_650_000_000,
        }
    }
}

pub fn is_root() -> bool {
    super::is_root()
}

/// Creates `root` (must not exist yet, or be empty) and fills it with every kind of entry.
/// Finally sets deterministic nanosecond mtimes on every entry, bottom-up, root last.
pub fn make_tree(root: &Path, o: &TreeOptions) {
    fs::create_dir_all(root).expect("create tree root");
    regular_files(root, o);
    modes_and_owners(root);
    symlinks(root);
    hardlinks(root, o);
    special_files(root);
    names(root, o);
    deep_path(root);
    xattrs(root);
    fs::create_dir(root.join("empty-top")).expect("mkdir");
    fs::create_dir_all(root.join("nested/empty-dir")).expect("mkdir");
    set_times_recursively(root, o.mtime_base);
}

fn regular_files(root: &Path, o: &TreeOptions) {
    write_file(&root.join("empty.txt"), b"");
    write_file(&root.join("small.txt"), b"hello coffer\n");
    write_random(&root.join("random.bin"), o.seed, o.random_size);
    // Same bytes under another name (not a hardlink): stored once.
    write_random(&root.join("random-copy.bin"), o.seed, o.random_size);
    write_text(&root.join("text.txt"), o.text_size);
    if o.huge_size > 0 {
        write_random(&root.join("huge.bin"), o.seed + 1000, o.huge_size);
    }
    write_sparse(&root.join("sparse.img"), o.sparse_size);
    fs::create_dir_all(root.join("nested/a/b/c/d")).expect("mkdir nested");
    write_file(&root.join("nested/a/one.txt"), b"one\n");
    write_file(&root.join("nested/a/b/c/d/five.txt"), b"five levels down\n");
}

fn modes_and_owners(root: &Path) {
    let m = root.join("modes");
    fs::create_dir(&m).expect("mkdir modes");
    for (name, mode) in
        [("private-0600", 0o600), ("exec-0755", 0o755), ("readonly-0444", 0o444), ("nothing-0000", 0o000)]
    {
        write_file(&m.join(name), name.as_bytes());
        chmod(&m.join(name), mode);
    }
    // setuid/setgid: chown first (chown clears the setuid bit), then chmod.
    write_file(&m.join("setuid-4755"), b"#!/bin/sh\n");
    chown(&m.join("setuid-4755"));
    chmod(&m.join("setuid-4755"), 0o4755);
    write_file(&m.join("setgid-2755"), b"#!/bin/sh\n");
    chmod(&m.join("setgid-2755"), 0o2755);
    fs::create_dir(m.join("sticky-1777")).expect("mkdir");
    chmod(&m.join("sticky-1777"), 0o1777);
    fs::create_dir(m.join("setgid-dir-2775")).expect("mkdir");
    chmod(&m.join("setgid-dir-2775"), 0o2775);
    fs::create_dir(m.join("dir-0700")).expect("mkdir");
    write_file(&m.join("dir-0700/inside"), b"inside a 0700 dir\n");
    chmod(&m.join("dir-0700"), 0o700);

    let owned = root.join("owned");
    fs::create_dir(&owned).expect("mkdir owned");
    write_file(&owned.join("file"), b"owned by 1234:5678\n");
    symlink("file", owned.join("link")).expect("symlink");
    chown(&owned.join("file"));
    lchown(&owned.join("link"));
    chown(&owned);
}

fn symlinks(root: &Path) {
    let l = root.join("links");
    fs::create_dir(&l).expect("mkdir links");
    symlink("../small.txt", l.join("relative")).expect("symlink");
    symlink("/etc/hostname", l.join("absolute")).expect("symlink");
    symlink("does/not/exist", l.join("dangling")).expect("symlink");
    symlink("../nested", l.join("to-dir")).expect("symlink");
    symlink("self-loop", l.join("self-loop")).expect("symlink");
}

fn hardlinks(root: &Path, o: &TreeOptions) {
    let h = root.join("hard");
    fs::create_dir_all(h.join("sub")).expect("mkdir hard");
    write_random(&h.join("a"), o.seed + 7, 20 * KIB);
    fs::hard_link(h.join("a"), h.join("b")).expect("hard link");
    fs::hard_link(h.join("a"), h.join("sub/c")).expect("hard link");
    // A second, separate set of two, to check sets are not merged.
    write_file(&h.join("x"), b"another inode\n");
    fs::hard_link(h.join("x"), h.join("sub/y")).expect("hard link");
}

fn special_files(root: &Path) {
    let s = root.join("special");
    fs::create_dir(&s).expect("mkdir special");
    nix::unistd::mkfifo(&s.join("fifo"), Mode::from_bits_truncate(0o640)).expect("mkfifo");
    chmod(&s.join("fifo"), 0o640);
    if is_root() {
        let mode = Mode::from_bits_truncate(0o660);
        mknod(&s.join("chardev"), SFlag::S_IFCHR, mode, makedev(1, 3)).expect("mknod c 1 3");
        mknod(&s.join("blockdev"), SFlag::S_IFBLK, mode, makedev(7, 200)).expect("mknod b 7 200");
        chmod(&s.join("chardev"), 0o660);
        chmod(&s.join("blockdev"), 0o660);
    } else {
        eprintln!("note: not root, no device nodes in the generated tree");
    }
}

fn names(root: &Path, o: &TreeOptions) {
    let n = root.join("names");
    fs::create_dir(&n).expect("mkdir names");
    let raw = |b: &[u8]| n.join(OsStr::from_bytes(b));
    write_file(&raw(b"not-utf8-\xff\xfe.txt"), b"latin-1 name\n");
    fs::create_dir(raw(b"dir-\xff\xfe")).expect("mkdir non-utf8");
    write_file(&raw(b"dir-\xff\xfe/inner-\xe9.txt"), b"inside a non-UTF-8 dir\n");
    let long = format!("{}.txt", "L".repeat(251));
    assert_eq!(long.len(), 255);
    write_file(&n.join(&long), b"255-byte name\n");
    let long_dir = n.join("D".repeat(255));
    fs::create_dir(&long_dir).expect("mkdir long");
    write_random(&long_dir.join("in-long-dir.bin"), o.seed + 3, 3000);
    write_file(&n.join("spaces and ünïcödé ☃.txt"), b"unicode\n");
    write_file(&n.join("tab\tand\nnewline"), b"control characters\n");
    write_file(&n.join("glob[chars]*?.txt"), b"glob characters\n");
    write_file(&n.join("-leading-dash"), b"dash\n");
    write_file(&n.join(".hidden"), b"dot file\n");
}

fn deep_path(root: &Path) {
    let mut p = root.join("deep");
    for i in 0..14 {
        p.push(format!("{i:02}-{}", "d".repeat(97)));
    }
    fs::create_dir_all(&p).expect("mkdir deep");
    let rel_len = p.strip_prefix(root).expect("prefix").as_os_str().len();
    assert!(rel_len > 1000, "deep path is only {rel_len} bytes");
    write_file(&p.join("bottom.txt"), b"deep down\n");
}

fn xattrs(root: &Path) {
    let x = root.join("xattrs");
    fs::create_dir(&x).expect("mkdir xattrs");
    let f = x.join("file");
    write_file(&f, b"file with extended attributes\n");
    set_xattr(&f, "user.comment", b"hello xattr");
    set_xattr(&f, "user.binary", &[0, 255, 1, 254, 0]);
    set_xattr(&f, "user.empty", b"");
    set_xattr(&f, "user.large", &vec![b'x'; 2000]);
    set_xattr(&x, "user.on-dir", b"directory attribute");
    // Hardlinked files share xattrs; a set-uid file with an xattr.
    set_xattr(&root.join("hard/a"), "user.shared", b"on all three links");
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    xattr::set(p, name, value).unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

pub fn write_file(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// `len` pseudo-random, incompressible bytes determined by `seed`.
pub fn random_bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    let mut h = blake3::Hasher::new();
    h.update(b"coffer-test-random");
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut buf);
    buf
}

/// Writes `len` pseudo-random bytes determined by `seed`, streaming 1 MiB at a time.
pub fn write_random(p: &Path, seed: u64, len: u64) {
    let mut f = File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    let mut h = blake3::Hasher::new();
    h.update(b"coffer-test-random");
    h.update(&seed.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write random");
        left -= n as u64;
    }
}

/// Highly compressible text (repeated log-like lines).
pub fn write_text(p: &Path, len: u64) {
    let mut data = Vec::with_capacity(len as usize);
    let mut i = 0u64;
    while (data.len() as u64) < len {
        let line = format!("{i:08} INFO coffer: the quick brown fox jumps over the lazy dog\n");
        data.extend_from_slice(line.as_bytes());
        i += 1;
    }
    data.truncate(len as usize);
    write_file(p, &data);
}

/// A sparse file: 4 KiB of data at 0 and at the middle, a hole between, a hole at the end.
pub fn write_sparse(p: &Path, len: u64) {
    let mut f = File::create(p).expect("create sparse");
    f.write_all(&[0xab; 4096]).expect("write");
    f.seek(SeekFrom::Start(len / 2)).expect("seek");
    f.write_all(&[0xcd; 4096]).expect("write");
    f.set_len(len).expect("set_len");
    drop(f);
    let m = fs::metadata(p).expect("stat sparse");
    assert!(
        m.blocks() * 512 < len / 4,
        "the scratch filesystem does not keep holes ({} bytes allocated for {len})",
        m.blocks() * 512
    );
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

pub fn chown(p: &Path) {
    if is_root() {
        std::os::unix::fs::chown(p, Some(UID), Some(GID)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }
}

pub fn lchown(p: &Path) {
    if is_root() {
        std::os::unix::fs::lchown(p, Some(UID), Some(GID)).unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
    }
}

/// Sets atime/mtime of one entry without following symlinks.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = TimeSpec::new(sec, nsec);
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Gives every entry under `root` (and `root`) a distinct mtime with nanoseconds, children
/// before their directory so that later steps do not disturb directory mtimes.
pub fn set_times_recursively(root: &Path, base: i64) {
    let mut counter = 0i64;
    set_times_inner(root, base, &mut counter);
}

fn set_times_inner(p: &Path, base: i64, counter: &mut i64) {
    let meta = fs::symlink_metadata(p).expect("stat");
    if meta.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(p).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        children.sort();
        for c in children {
            set_times_inner(&c, base, counter);
        }
    }
    *counter += 1;
    let n = *counter;
    set_mtime(p, base + n * 3607, (n * 123_456_789 + 1) % 1_000_000_000);
}
