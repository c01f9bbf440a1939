//! Real kernel mounts of a `MemorySource`, checked with std::fs and the usual tools.
//!
//! Every test needs /dev/fuse and permission to mount (root here). Without /dev/fuse they print
//! why and pass without checking anything.

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use coffer_mount::memory::{Fault, MemorySource, Meta, NodeId};
use coffer_mount::{spawn, ErrorKind as SourceErrorKind, MountError, MountHandle, MountOptions, NodeKind};

struct Mounted {
    handle: Option<MountHandle>,
    // Dropped after the handle: the mountpoint must outlive the mount.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Mounted {
    fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.unmount();
        }
    }
}

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("SKIPPED: /dev/fuse is absent, no kernel mount possible");
    false
}

fn mount_with(source: &MemorySource, options: &MountOptions) -> Option<Mounted> {
    if !fuse_available() {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mnt");
    fs::create_dir(&path).expect("mountpoint");
    let handle = spawn(source.clone(), &path, options).expect("mount");
    Some(Mounted { handle: Some(handle), _dir: dir, path })
}

fn mount(source: &MemorySource) -> Option<Mounted> {
    mount_with(source, &MountOptions::default())
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const BLOCK: usize = 64 * 1024;
const MTIME: (i64, u32) = (1_700_000_000, 123_456_789);

struct Sample {
    source: MemorySource,
    big: Vec<u8>,
    big_id: NodeId,
}

/// A tree with every kind of node:
/// docs/{big.bin, small.txt (xattr), exec.sh, hard2}, hard1, link, fifo, sock, tty, empty,
/// and a non-UTF-8 name.
fn sample() -> Sample {
    let m = MemorySource::new();
    let root = m.root_id();
    let docs = m.dir(root, "docs", Meta::new().mode(0o750).owner(1000, 1000).mtime(MTIME.0, MTIME.1));
    let big = noise(5 * BLOCK - 1000, 7);
    let big_id = m.file(docs, "big.bin", &big, BLOCK, Meta::new().mtime(MTIME.0, MTIME.1));
    let small = m.file(docs, "small.txt", b"hello\n", BLOCK, Meta::new().mode(0o600).owner(1000, 100));
    m.set_xattr(small, "user.comment", "hi there");
    m.file(docs, "exec.sh", b"#!/bin/sh\necho hi\n", BLOCK, Meta::new().mode(0o755));
    let hard = m.file(root, "hard1", b"linked content", BLOCK, Meta::new());
    m.hardlink(docs, "hard2", hard);
    m.symlink(root, "link", "docs/small.txt", Meta::new());
    m.special(root, "fifo", NodeKind::Fifo, 0, Meta::new());
    m.special(root, "sock", NodeKind::Socket, 0, Meta::new());
    m.special(root, "tty", NodeKind::CharDevice, (4 << 8) | 1, Meta::new().mode(0o620));
    m.file(root, "empty", b"", BLOCK, Meta::new());
    m.file(root, &b"caf\xe9.txt"[..], b"latin-1 name", BLOCK, Meta::new());
    Sample { source: m, big, big_id }
}

fn raw_errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result.expect_err("must fail").raw_os_error().expect("an errno")
}

#[test]
fn stat_shows_modes_owners_sizes_times_links_and_blocks() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };

    let docs = fs::symlink_metadata(m.path("docs")).expect("docs");
    assert!(docs.is_dir());
    assert_eq!(docs.mode() & 0o7777, 0o750);
    assert_eq!((docs.uid(), docs.gid()), (1000, 1000));
    assert_eq!((docs.mtime(), docs.mtime_nsec()), (MTIME.0, i64::from(MTIME.1)));
    assert_eq!(docs.nlink(), 2);

    let big = fs::symlink_metadata(m.path("docs/big.bin")).expect("big");
    assert!(big.is_file());
    assert_eq!(big.len(), s.big.len() as u64);
    assert_eq!(big.blocks(), (s.big.len() as u64).div_ceil(512));
    assert_eq!(big.mode() & 0o7777, 0o644);

    let small = fs::symlink_metadata(m.path("docs/small.txt")).expect("small");
    assert_eq!(small.mode() & 0o7777, 0o600);
    assert_eq!((small.uid(), small.gid()), (1000, 100));
    assert_eq!(small.len(), 6);

    let h1 = fs::symlink_metadata(m.path("hard1")).expect("hard1");
    let h2 = fs::symlink_metadata(m.path("docs/hard2")).expect("hard2");
    assert_eq!(h1.ino(), h2.ino(), "hardlinks share an inode");
    assert_eq!(h1.nlink(), 2);
    assert_ne!(h1.ino(), small.ino());

    let link = fs::symlink_metadata(m.path("link")).expect("link");
    assert!(link.file_type().is_symlink());
    assert_eq!(link.len(), "docs/small.txt".len() as u64);
    assert!(fs::symlink_metadata(m.path("fifo")).expect("fifo").file_type().is_fifo());
    assert!(fs::symlink_metadata(m.path("sock")).expect("sock").file_type().is_socket());
    let tty = fs::symlink_metadata(m.path("tty")).expect("tty");
    assert!(tty.file_type().is_char_device());
    assert_eq!(tty.rdev(), (4 << 8) | 1);
    assert_eq!(fs::symlink_metadata(m.path("empty")).expect("empty").len(), 0);

    // `ls -ln` agrees (it goes through readdirplus rather than lookup).
    let out = Command::new("ls").env("TZ", "UTC").arg("-ln").arg(m.path("docs")).output().expect("ls");
    let listing = String::from_utf8_lossy(&out.stdout);
    let has = |prefix: &[&str], name: &str| {
        listing.lines().any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.starts_with(prefix) && fields.last() == Some(&name)
        })
    };
    assert!(has(&["-rw-------", "1", "1000", "100", "6"], "small.txt"), "{listing}");
    assert!(has(&["-rw-r--r--", "2", "0", "0", "14"], "hard2"), "{listing}");
    assert!(has(&["-rw-r--r--", "1", "0", "0", "326680", "Nov", "14", "2023"], "big.bin"), "{listing}");
}

#[test]
fn reads_whole_files_ranges_across_blocks_and_past_the_end() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    assert_eq!(fs::read(m.path("docs/big.bin")).expect("read"), s.big);
    assert_eq!(fs::read(m.path("docs/small.txt")).expect("read"), b"hello\n");
    assert_eq!(fs::read(m.path("link")).expect("through the link"), b"hello\n");
    assert!(fs::read(m.path("empty")).expect("empty").is_empty());
    assert_eq!(fs::read(m.path(OsStr::from_bytes(b"caf\xe9.txt"))).expect("read"), b"latin-1 name");

    let mut f = fs::File::open(m.path("docs/big.bin")).expect("open");
    let start = BLOCK as u64 - 100;
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut buf = vec![0; 2 * BLOCK + 200];
    f.read_exact(&mut buf).expect("spanning read");
    assert_eq!(buf, s.big[start as usize..start as usize + buf.len()]);
    f.seek(SeekFrom::Start(s.big.len() as u64 + 10)).expect("seek past end");
    assert_eq!(f.read(&mut buf).expect("read past end"), 0);
}

#[test]
fn blocks_are_fetched_once_however_many_readers() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let path = m.path("docs/big.bin");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            thread::spawn(move || fs::read(path).expect("read"))
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().expect("reader"), s.big);
    }
    for key in s.source.file_blocks(s.big_id) {
        assert_eq!(s.source.block_reads(&key), 1);
    }
}

#[test]
fn readlink_and_non_utf8_names() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    assert_eq!(fs::read_link(m.path("link")).expect("readlink"), Path::new("docs/small.txt"));
    assert_eq!(raw_errno(fs::read_link(m.path("empty"))), libc::EINVAL);
    let names: Vec<Vec<u8>> =
        fs::read_dir(&m.path).expect("readdir").map(|e| e.expect("entry").file_name().as_bytes().to_vec()).collect();
    assert!(names.contains(&b"caf\xe9.txt".to_vec()), "{names:?}");
    assert_eq!(names.len(), 8);
}

#[test]
fn xattrs_are_listed_and_read_and_missing_ones_are_enodata() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let small = m.path("docs/small.txt");
    assert_eq!(xattr::get(&small, "user.comment").expect("getxattr"), Some(b"hi there".to_vec()));
    let names: Vec<_> = xattr::list(&small).expect("listxattr").collect();
    assert_eq!(names, [OsStr::new("user.comment")]);
    // The crate maps ENODATA to None; any other errno would be an Err.
    assert_eq!(xattr::get(&small, "user.other").expect("ENODATA"), None);
    assert_eq!(xattr::get(m.path("docs"), "security.selinux").expect("ENODATA"), None);
    assert_eq!(xattr::list(m.path("docs/big.bin")).expect("listxattr").count(), 0);
    // ERANGE for a too-small buffer and the size-0 probe are unit-tested in fs.rs (the
    // xattr crate always probes first, so it cannot provoke ERANGE).
}

#[test]
fn statfs_and_access() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let out = Command::new("stat").args(["-f", "-c", "%b %S %l"]).arg(&m.path).output().expect("stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u64> = text.split_whitespace().map(|f| f.parse().expect("number")).collect();
    assert!(fields[0] > 0 && fields[1] > 0 && fields[2] == 255, "{text}");
    let test =
        |flag: &str, rel: &str| Command::new("test").arg(flag).arg(m.path(rel)).status().expect("test").success();
    assert!(test("-r", "docs/big.bin"));
    assert!(test("-x", "docs/exec.sh"));
    assert!(!test("-x", "docs/big.bin"));
    assert!(!test("-w", "docs/big.bin"), "nothing is writable");
}

#[test]
fn readahead_is_raised_on_the_mounts_bdi() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = m.path.to_string_lossy().replace(' ', "\\040");
    let device = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        .filter_map(|l| l.split(' ').nth(2))
        .next_back()
        .expect("mounted");
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match fs::read_to_string(&knob) {
        Ok(kb) => assert_eq!(kb.trim(), "1024"),
        Err(e) => eprintln!("SKIPPED: {knob}: {e}"),
    }
}

#[test]
fn missing_names_are_enoent_from_memory() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    fs::read_dir(m.path("docs")).expect("list docs").for_each(drop);
    fs::read_dir(&m.path).expect("list root").for_each(drop);
    let lists = s.source.list_calls();
    for name in [".Trash", ".Trash-0", ".hidden", "autorun.inf", "docs/.thumbnails", "docs/desktop.ini"] {
        for _ in 0..3 {
            let err = fs::symlink_metadata(m.path(name)).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::NotFound, "{name}");
        }
    }
    assert_eq!(s.source.list_calls(), lists, "no listing was needed again");
}

#[test]
fn every_write_is_erofs() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let small = m.path("docs/small.txt");
    assert_eq!(raw_errno(fs::File::create(m.path("new"))), libc::EROFS);
    assert_eq!(raw_errno(fs::OpenOptions::new().write(true).open(&small)), libc::EROFS);
    assert_eq!(raw_errno(fs::OpenOptions::new().read(true).write(true).open(&small)), libc::EROFS);
    assert_eq!(raw_errno(fs::OpenOptions::new().append(true).open(&small)), libc::EROFS);
    assert_eq!(raw_errno(fs::set_permissions(&small, fs::Permissions::from_mode(0o777))), libc::EROFS);
    assert_eq!(raw_errno(fs::remove_file(&small)), libc::EROFS);
    assert_eq!(raw_errno(fs::create_dir(m.path("docs/x"))), libc::EROFS);
    assert_eq!(raw_errno(fs::remove_dir(m.path("docs"))), libc::EROFS);
    assert_eq!(raw_errno(fs::rename(&small, m.path("moved"))), libc::EROFS);
    assert_eq!(raw_errno(fs::hard_link(&small, m.path("docs/again"))), libc::EROFS);
    assert_eq!(raw_errno(std::os::unix::fs::symlink("x", m.path("l2"))), libc::EROFS);
    assert_eq!(raw_errno(xattr::set(&small, "user.x", b"1")), libc::EROFS);
    assert_eq!(raw_errno(xattr::remove(&small, "user.comment")), libc::EROFS);
    assert_eq!(fs::read(&small).expect("still readable"), b"hello\n");
}

#[test]
fn mmap_reads_the_same_bytes() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let script = "import mmap,sys\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nsys.stdout.buffer.write(m[:])";
    let out = Command::new("python3").arg("-c").arg(script).arg(m.path("docs/big.bin")).output();
    let Ok(out) = out else {
        eprintln!("SKIPPED: python3 is needed to mmap from a separate process");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, s.big);
}

#[test]
fn a_failing_block_is_eio_and_the_rest_still_reads() {
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let bad = s.source.file_blocks(s.big_id)[2];
    s.source.set_fault(&bad, Some(Fault::Fail(SourceErrorKind::Corrupt)));
    assert_eq!(raw_errno(fs::read(m.path("docs/big.bin"))), libc::EIO);
    // Reads before the bad block work, and so do other files.
    let mut f = fs::File::open(m.path("docs/big.bin")).expect("open");
    let mut head = vec![0; BLOCK];
    f.read_exact(&mut head).expect("first block");
    assert_eq!(head, s.big[..BLOCK]);
    assert_eq!(fs::read(m.path("docs/small.txt")).expect("other file"), b"hello\n");
    // Failures are not cached: once storage heals, the file reads.
    s.source.set_fault(&bad, None);
    assert_eq!(fs::read(m.path("docs/big.bin")).expect("healed"), s.big);
}

#[test]
fn a_stalled_block_fails_after_the_timeout_without_blocking_others() {
    let s = sample();
    let options = MountOptions { read_timeout: Duration::from_millis(800), ..MountOptions::default() };
    let Some(m) = mount_with(&s.source, &options) else {
        return;
    };
    let slow = s.source.file_blocks(s.big_id)[0];
    s.source.set_fault(&slow, Some(Fault::Delay(Duration::from_secs(4))));
    let path = m.path("docs/big.bin");
    let started = Instant::now();
    let reader = thread::spawn(move || fs::File::open(path).and_then(|mut f| f.read(&mut [0; 4096])));
    thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    fs::symlink_metadata(m.path("docs/exec.sh")).expect("stat");
    assert_eq!(fs::read(m.path("docs/small.txt")).expect("other file"), b"hello\n");
    assert!(t.elapsed() < Duration::from_millis(500), "unrelated requests were held up");
    assert_eq!(raw_errno(reader.join().expect("reader")), libc::EIO);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[test]
fn a_volatile_directory_shows_new_entries_within_seconds() {
    let s = sample();
    s.source.set_volatile(s.source.root_id(), true);
    let Some(m) = mount(&s.source) else { return };
    assert!(fs::symlink_metadata(m.path("fresh")).is_err());
    s.source.file(s.source.root_id(), "fresh", b"new snapshot", BLOCK, Meta::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = fs::read_dir(&m.path).expect("readdir").any(|e| e.expect("entry").file_name() == "fresh");
        if listed {
            break;
        }
        assert!(Instant::now() < deadline, "new entry never appeared");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fs::read(m.path("fresh")).expect("read"), b"new snapshot");
}

#[test]
fn mount_errors_are_clear() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp");
    let options = MountOptions::default();
    let missing = spawn(MemorySource::new(), dir.path().join("nope"), &options);
    assert!(matches!(missing, Err(MountError::MissingMountpoint(_))), "{missing:?}");
    let file = dir.path().join("file");
    fs::write(&file, b"x").expect("file");
    let not_dir = spawn(MemorySource::new(), &file, &options);
    assert!(matches!(not_dir, Err(MountError::NotADirectory(_))), "{not_dir:?}");
    let s = sample();
    let Some(m) = mount(&s.source) else { return };
    let again = spawn(MemorySource::new(), &m.path, &options);
    assert!(matches!(again, Err(MountError::AlreadyMounted(_))), "{again:?}");
    assert!(again.expect_err("error").to_string().contains("already a mount point"));
}

fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

#[test]
fn outside_unmount_ends_the_session_and_busy_unmount_detaches() {
    let s = sample();
    let Some(mut m) = mount(&s.source) else {
        return;
    };
    // Busy: a file stays open while we unmount; the mount is detached, not left behind.
    let open = fs::File::open(m.path("docs/small.txt")).expect("open");
    let handle = m.handle.take().expect("handle");
    handle.unmount().expect("lazy unmount");
    assert!(!is_mounted(&m.path));
    drop(open);

    let Some(mut m) = mount(&s.source) else {
        return;
    };
    let status = Command::new("fusermount3").arg("-u").arg(&m.path).status();
    if status.is_err() {
        eprintln!("fusermount3 missing; using umount");
        Command::new("umount").arg(&m.path).status().expect("umount");
    }
    let handle = m.handle.take().expect("handle");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "session did not notice the unmount");
        thread::sleep(Duration::from_millis(50));
    }
    handle.unmount().expect("nothing left to unmount");
}

#[test]
fn foreground_mount_ends_on_sigterm() {
    if !fuse_available() {
        return;
    }
    let s = sample();
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().to_path_buf();
    let source = s.source.clone();
    let server = {
        let path = path.clone();
        thread::spawn(move || coffer_mount::mount_foreground(source, path, &MountOptions::default()))
    };
    // Files are served only once the signal watcher is installed, so SIGTERM is safe after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read(path.join("docs/small.txt")).ok().as_deref() != Some(b"hello\n") {
        assert!(Instant::now() < deadline, "foreground mount never came up");
        thread::sleep(Duration::from_millis(50));
    }
    let pid = std::process::id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.is_finished() {
        assert!(Instant::now() < deadline, "SIGTERM did not end the mount");
        thread::sleep(Duration::from_millis(50));
    }
    server.join().expect("server thread").expect("clean exit");
    assert!(!is_mounted(&path));
}
