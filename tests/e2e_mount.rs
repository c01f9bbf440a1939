//! End-to-end: `coffer mount` through the real binary and a real kernel FUSE mount.
//!
//! Every test backs up its own tree into its own repository, starts `coffer mount MNT` as a
//! child process, waits until `MNT/snapshots` is listable, and drives the mount with the
//! tools people use (`ls`, `stat`, `diff -r`, `cp -a`, `rsync -aHX`, `tar`, `gio`, `find`,
//! `python3` for mmap). A [`Mounted`] guard always unmounts (`fusermount3 -u`, then `-uz`) and
//! ends the child, whatever happens.
//!
//! Needs root and /dev/fuse (skips otherwise); fusermount3 (fuse3), rsync, tar, diff, getfattr
//! (attr), python3 and gio (libglib2.0-bin; skipped with a note when absent).

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tree::{random_bytes, write_file, write_random, KIB, MIB};
use common::*;
use serde_json::Value;

/// How long `coffer mount` may take before `MNT/snapshots` is listable.
const MOUNT_READY: Duration = Duration::from_secs(30);
/// How long the mount process may take to exit after an unmount.
const EXIT_AFTER_UNMOUNT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The mount guard
// ---------------------------------------------------------------------------------------------

/// A running `coffer mount`; dropping it unmounts and ends the process.
struct Mounted {
    mnt: PathBuf,
    proc: Option<Running>,
}

impl Mounted {
    /// `coffer mount EXTRA MNT`, waiting until `MNT/snapshots` can be listed.
    fn start(c: &Coffer, mnt: &Path, extra: &[&str]) -> Mounted {
        let mut args: Vec<OsString> = vec!["mount".into()];
        args.extend(extra.iter().map(OsString::from));
        args.push(mnt.as_os_str().to_owned());
        let mut m = Mounted { mnt: mnt.to_path_buf(), proc: Some(c.spawn(&args)) };
        let started = Instant::now();
        loop {
            if is_mounted(mnt) && fs::read_dir(mnt.join("snapshots")).is_ok() {
                return m;
            }
            if m.proc.as_mut().expect("process").finished() {
                let out = m.proc.take().expect("process").wait(Duration::from_secs(5));
                panic!("coffer mount exited before the mount was ready\n{out}");
            }
            if started.elapsed() > MOUNT_READY {
                panic!("{}/snapshots not listable {MOUNT_READY:?} after `coffer mount`", mnt.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().expect("mount process").child.id()
    }

    /// The mount process is still alive.
    fn alive(&mut self) -> bool {
        !self.proc.as_mut().expect("mount process").finished()
    }

    /// `MNT/latest/<abs path>`.
    fn latest(&self, abs: &Path) -> PathBuf {
        self.mnt.join("latest").join(abs.strip_prefix("/").expect("absolute path"))
    }

    /// Unmounts with `fusermount3 -u` and returns the output of the mount process, which must
    /// have ended cleanly (exit 0, no panic).
    fn stop(mut self) -> Out {
        let unmounted = fusermount(&self.mnt, "-u");
        assert!(unmounted, "fusermount3 -u {} failed", self.mnt.display());
        let out = self.proc.take().expect("mount process").wait(EXIT_AFTER_UNMOUNT);
        out.assert_code(0);
        out
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) && !fusermount(&self.mnt, "-u") {
            fusermount(&self.mnt, "-uz");
        }
        let Some(mut proc) = self.proc.take() else { return };
        let deadline = Instant::now() + EXIT_AFTER_UNMOUNT;
        while !proc.finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if proc.finished() {
            let out = proc.wait(Duration::from_secs(1));
            if std::thread::panicking() {
                eprintln!("--- the mount process ---\n{out}");
            }
        } else {
            eprintln!("coffer mount did not exit after the unmount: killing it");
            // Running's own Drop kills and reaps it.
        }
        if is_mounted(&self.mnt) {
            fusermount(&self.mnt, "-uz");
        }
    }
}

fn fusermount(mnt: &Path, flag: &str) -> bool {
    Command::new("fusermount3")
        .arg(flag)
        .arg(mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Something is mounted exactly at `mnt` (per /proc/self/mountinfo).
fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = mnt.as_os_str().as_bytes();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|p| unescape_mountinfo(p) == want))
}

fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4]).ok().and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The tests need root (device nodes, foreign owners, mounting) and /dev/fuse.
fn can_mount(test: &str) -> bool {
    if !is_root() {
        skip(test, "not root");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip(test, "/dev/fuse is absent");
        return false;
    }
    if !have("fusermount3") {
        skip(test, "fusermount3 is not installed (package fuse3; tests/install-deps.sh)");
        return false;
    }
    true
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Runs a prepared command, asserting success; returns stdout.
fn sh_ok(mut c: Command) -> Vec<u8> {
    let argv = format!("{c:?}");
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{argv}: {e}"));
    assert!(
        out.status.success(),
        "{argv} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}) but should have failed"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

fn errno_name(n: i32) -> String {
    format!("{} ({n})", nix::errno::Errno::from_raw(n))
}

fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    let got = errno(r, what);
    assert_eq!(got, want, "{what}: expected {}, got {}", errno_name(want), errno_name(got));
}

fn names_in(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

fn str_names(dir: &Path) -> BTreeSet<String> {
    names_in(dir).into_iter().map(|n| n.into_string().expect("UTF-8 name")).collect()
}

/// Reads a whole file, returning the error (with its errno) instead of panicking.
fn read_all(p: &Path) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(p)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// `diffs` without the sparseness lines: a FUSE mount reports `st_blocks` for the whole size and
/// has no SEEK_HOLE, so neither it nor a copy taken from it can be sparse.
fn without_sparseness(diffs: Vec<String>) -> Vec<String> {
    diffs.into_iter().filter(|d| !d.contains("sparse file")).collect()
}

fn assert_no_diffs(diffs: &[String], what: &str) {
    assert!(diffs.is_empty(), "{what}: {} difference(s):\n  {}", diffs.len(), diffs.join("\n  "));
}

/// A tree with every kind of entry, backed up; returns the source path and the summary.
fn backed_up_tree(c: &Coffer) -> (PathBuf, Value) {
    c.init();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    let summary = c.backup(&[&src]);
    (src, summary)
}

/// Runs `tool` from the source and from the mount into two fresh folders, and asserts the copy
/// taken from the mount equals the source in everything the tool reproduces: a difference from
/// the source is accepted only when the copy taken from the source shows the same one (a limit
/// of the tool, not of the mount). Sparseness is never expected from a mount.
fn assert_tool_copies(
    c: &Coffer,
    name: &str,
    src: &Path,
    mounted: &Path,
    copy: impl Fn(&Path, &Path) -> Result<(), String>,
) {
    let slug: String = name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' }).collect();
    let from_src = c.path(&format!("{slug}-from-src"));
    let from_mnt = c.path(&format!("{slug}-from-mount"));
    copy(src, &from_src).unwrap_or_else(|e| panic!("{name} from the source tree failed: {e}"));
    copy(mounted, &from_mnt).unwrap_or_else(|e| panic!("{name} from the mount failed: {e}"));
    let opts = CompareOptions::default();
    let tool_limits: BTreeSet<String> = without_sparseness(compare_trees(src, &from_src, &opts)).into_iter().collect();
    let from_mount = without_sparseness(compare_trees(src, &from_mnt, &opts));
    let unexplained: Vec<String> = from_mount.iter().filter(|d| !tool_limits.contains(*d)).cloned().collect();
    if !tool_limits.is_empty() {
        eprintln!("note: {name} does not reproduce (from a real tree either): {tool_limits:?}");
    }
    assert_no_diffs(&unexplained, &format!("`{name}` out of the mount differs from the source"));
}

fn cmd_result(c: &mut Command) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every path under `root` (root included), not following symlinks.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if m.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&p)
                .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
                .map(|e| e.expect("entry").path())
                .collect();
            children.sort();
            out.extend(children);
        }
    }
    out
}

fn snapshot_id_of(v: &Value) -> (String, String) {
    (string(v, "snapshot_id"), string(v, "short_id"))
}

// ---------------------------------------------------------------------------------------------
// 1. A full tree through the mount
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_shows_the_layout_and_the_tree_as_backed_up() {
    if !can_mount("mount_shows_the_layout_and_the_tree_as_backed_up") {
        return;
    }
    let c = Coffer::new();
    let (src, summary) = backed_up_tree(&c);
    let (_, short) = snapshot_id_of(&summary);
    let mnt = c.dir("mnt");
    let mut m = Mounted::start(&c, &mnt, &[]);

    // The root: snapshots hosts tags signers ids latest, and latest -> snapshots/<the only snapshot>.
    let root: BTreeSet<String> = str_names(&mnt);
    let want: BTreeSet<String> = ["snapshots", "hosts", "tags", "signers", "ids", "latest"].map(String::from).into();
    assert_eq!(root, want, "mount root");
    // The snapshot under the key that signed it: the repository key here.
    let signers = str_names(&mnt.join("signers"));
    assert_eq!(signers.len(), 1, "{signers:?}");
    assert!(signers.iter().all(|s| s == "repository key"), "{signers:?}");
    let signed = str_names(&mnt.join("signers").join("repository key"));
    assert_eq!(signed.len(), 1, "{signed:?}");
    let snaps = str_names(&mnt.join("snapshots"));
    assert_eq!(snaps.len(), 1, "one snapshot, one folder: {snaps:?}");
    let snap_name = snaps.iter().next().expect("one").clone();
    let latest = fs::read_link(mnt.join("latest")).expect("readlink latest");
    assert_eq!(latest, Path::new("snapshots").join(&snap_name), "latest symlink target");
    assert!(fs::symlink_metadata(mnt.join("latest")).expect("lstat latest").file_type().is_symlink());
    assert_eq!(str_names(&mnt.join("ids")), BTreeSet::from([short.clone()]), "ids/");
    let host = nix::unistd::gethostname().expect("hostname").into_string().expect("UTF-8 hostname");
    assert_eq!(str_names(&mnt.join("hosts")), BTreeSet::from([host.clone()]), "hosts/");
    assert_eq!(str_names(&mnt.join("hosts").join(&host)), BTreeSet::from([snap_name.clone()]));
    assert!(str_names(&mnt.join("tags")).is_empty(), "no tags given, tags/ must be empty");
    // Virtual folders are read-only directories.
    for d in ["snapshots", "hosts", "tags", "ids"] {
        let md = fs::metadata(mnt.join(d)).expect("stat virtual dir");
        assert!(md.is_dir(), "{d} is a directory");
        assert_eq!(md.mode() & 0o222, 0, "{d} has write bits: {:o}", md.mode());
    }

    let mounted = m.latest(&src);
    assert!(mounted.is_dir(), "{} is not a directory", mounted.display());
    // The same tree under ids/<short>/ and snapshots/<name>/.
    let by_id = mnt.join("ids").join(&short).join(src.strip_prefix("/").expect("abs"));
    assert_eq!(names_in(&by_id), names_in(&mounted), "ids/<short>/ and latest/ differ");

    // The comparator: everything except sparseness (see `without_sparseness`).
    let diffs = without_sparseness(compare_trees(&src, &mounted, &CompareOptions::default()));
    assert_no_diffs(&diffs, "the mounted snapshot differs from the source");

    // diff -r: no output, exit 0. The special files are left out: diff never compares fifos, and
    // takes two device nodes for equal only when their ctimes match too, which no mount can
    // reproduce (the comparator above checked their types, modes, owners and device numbers).
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", "-x", "fifo", "-x", "chardev", "-x", "blockdev"])
        .arg(&src)
        .arg(&mounted)
        .stdin(Stdio::null())
        .output()
        .expect("run diff");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "diff -r source mount: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // `ls -lR` and `stat` walk everything without an error message.
    let out = Command::new("ls").arg("-laR").arg(&mnt).stdin(Stdio::null()).output().expect("ls");
    assert!(out.status.success() && out.stderr.is_empty(), "ls -laR: {}", String::from_utf8_lossy(&out.stderr));
    let mut c_stat = Command::new("stat");
    c_stat.arg("-f").arg(&mnt);
    sh_ok(c_stat);

    // stat of every regular file: size, mode, owner, mtime, nlink, st_blocks ≈ size/512.
    let mut checked = 0;
    for p in walk(&src) {
        let sm = fs::symlink_metadata(&p).expect("lstat source");
        let rel = p.strip_prefix(&src).expect("prefix");
        let mm = fs::symlink_metadata(mounted.join(rel)).unwrap_or_else(|e| panic!("lstat {rel:?} in the mount: {e}"));
        if !sm.is_file() {
            continue;
        }
        let what = format!("stat {rel:?}");
        assert_eq!(mm.size(), sm.size(), "{what}: size");
        assert_eq!(mm.mode(), sm.mode(), "{what}: mode {:o} vs {:o}", mm.mode(), sm.mode());
        assert_eq!((mm.uid(), mm.gid()), (sm.uid(), sm.gid()), "{what}: owner");
        assert_eq!((mm.mtime(), mm.mtime_nsec()), (sm.mtime(), sm.mtime_nsec()), "{what}: mtime");
        assert_eq!(mm.nlink(), sm.nlink(), "{what}: nlink");
        let want_blocks = sm.size().div_ceil(512);
        assert!(
            mm.blocks() >= want_blocks && mm.blocks() <= want_blocks + 8,
            "{what}: st_blocks {} for {} bytes (want about {want_blocks})",
            mm.blocks(),
            sm.size()
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} files checked");

    // Hardlinks share one inode (and only those).
    let ino = |rel: &str| fs::symlink_metadata(mounted.join(rel)).expect("lstat").ino();
    assert_eq!(ino("hard/a"), ino("hard/b"), "hard/a and hard/b must share an inode");
    assert_eq!(ino("hard/a"), ino("hard/sub/c"), "hard/a and hard/sub/c must share an inode");
    assert_eq!(ino("hard/x"), ino("hard/sub/y"), "hard/x and hard/sub/y must share an inode");
    assert_ne!(ino("hard/a"), ino("hard/x"), "two hardlink sets merged into one inode");
    assert_ne!(ino("random.bin"), ino("random-copy.bin"), "identical contents are not hardlinks");

    // xattrs through the xattr crate and getfattr.
    let xf = mounted.join("xattrs/file");
    let names: BTreeSet<OsString> = xattr::list(&xf).expect("listxattr").collect();
    let want: BTreeSet<OsString> =
        ["user.comment", "user.binary", "user.empty", "user.large"].iter().map(OsString::from).collect();
    assert_eq!(names, want, "listxattr on xattrs/file");
    assert_eq!(xattr::get(&xf, "user.comment").expect("getxattr"), Some(b"hello xattr".to_vec()));
    assert_eq!(xattr::get(&xf, "user.binary").expect("getxattr"), Some(vec![0, 255, 1, 254, 0]));
    assert_eq!(xattr::get(&xf, "user.empty").expect("getxattr"), Some(vec![]));
    assert_eq!(xattr::get(&xf, "user.large").expect("getxattr"), Some(vec![b'x'; 2000]));
    assert_eq!(xattr::get(&xf, "user.missing").expect("getxattr of a missing name"), None, "ENODATA expected");
    assert_eq!(
        xattr::get(mounted.join("xattrs"), "user.on-dir").expect("getxattr on a dir"),
        Some(b"directory attribute".to_vec())
    );
    for link in ["hard/a", "hard/b", "hard/sub/c"] {
        assert_eq!(
            xattr::get(mounted.join(link), "user.shared").expect("getxattr"),
            Some(b"on all three links".to_vec()),
            "{link}"
        );
    }
    let mut gf = Command::new("getfattr");
    gf.args(["-d", "-m", "-", "--absolute-names"]).arg(&xf);
    let out = String::from_utf8_lossy(&sh_ok(gf)).into_owned();
    assert!(out.contains("user.comment=\"hello xattr\""), "getfattr -d output:\n{out}");
    assert!(out.contains("user.large="), "getfattr -d output:\n{out}");

    // Symlinks: readlink gives the stored target; a relative one resolves inside the snapshot.
    assert_eq!(fs::read_link(mounted.join("links/relative")).expect("readlink"), Path::new("../small.txt"));
    assert_eq!(fs::read_link(mounted.join("links/dangling")).expect("readlink"), Path::new("does/not/exist"));
    assert_eq!(fs::read(mounted.join("links/relative")).expect("read via symlink"), b"hello coffer\n");

    // Non-UTF-8 names are listed and can be opened.
    let nm = names_in(&mounted.join("names"));
    assert!(nm.contains(OsStr::from_bytes(b"not-utf8-\xff\xfe.txt")), "non-UTF-8 file name missing: {nm:?}");
    assert!(nm.contains(OsStr::from_bytes(b"dir-\xff\xfe")), "non-UTF-8 dir name missing: {nm:?}");
    let inner =
        mounted.join("names").join(OsStr::from_bytes(b"dir-\xff\xfe")).join(OsStr::from_bytes(b"inner-\xe9.txt"));
    assert_eq!(fs::read(&inner).expect("read non-UTF-8 path"), b"inside a non-UTF-8 dir\n");
    assert!(nm.contains(OsStr::new(".hidden")), "names/.hidden missing");

    // Names that file managers probe answer ENOENT, quickly.
    let t = Instant::now();
    let snapdir = mnt.join("snapshots").join(&snap_name);
    for dir in [mnt.clone(), mnt.join("snapshots"), snapdir, mounted.clone(), mounted.join("nested")] {
        for probe in [".Trash", ".Trash-0", "autorun.inf", ".hidden", ".xdg-volume-info", ".thumbnails", "desktop.ini"]
        {
            assert_errno(
                fs::symlink_metadata(dir.join(probe)),
                libc::ENOENT,
                &format!("lstat {}/{probe}", dir.display()),
            );
        }
    }
    assert!(t.elapsed() < Duration::from_secs(2), "35 missing-name lookups took {:?}", t.elapsed());

    // Every write-like operation is refused with EROFS.
    let file = mounted.join("small.txt");
    let dir = mounted.join("nested");
    let erofs = libc::EROFS;
    assert_errno(fs::File::create(mounted.join("new-file")), erofs, "create a file");
    assert_errno(fs::File::create(mnt.join("new-file")), erofs, "create a file at the root");
    assert_errno(fs::File::create(mnt.join("snapshots/new-file")), erofs, "create a file in snapshots/");
    assert_errno(fs::OpenOptions::new().write(true).open(&file), erofs, "open for writing");
    assert_errno(fs::OpenOptions::new().append(true).open(&file), erofs, "open for appending");
    assert_errno(fs::OpenOptions::new().read(true).write(true).open(&file), erofs, "open read-write");
    assert_errno(fs::set_permissions(&file, fs::Permissions::from_mode(0o600)), erofs, "chmod");
    assert_errno(std::os::unix::fs::chown(&file, Some(1), Some(1)), erofs, "chown");
    assert_errno(fs::remove_file(&file), erofs, "unlink");
    assert_errno(fs::remove_dir(mounted.join("empty-top")), erofs, "rmdir");
    assert_errno(fs::create_dir(dir.join("new-dir")), erofs, "mkdir");
    assert_errno(fs::rename(&file, dir.join("moved")), erofs, "rename");
    assert_errno(std::os::unix::fs::symlink("x", dir.join("new-link")), erofs, "symlink");
    assert_errno(fs::hard_link(&file, dir.join("new-hardlink")), erofs, "link");
    assert_errno(xattr::set(&file, "user.new", b"v"), erofs, "setxattr");
    assert_errno(xattr::remove(mounted.join("xattrs/file"), "user.comment"), erofs, "removexattr");
    assert_errno(fs::remove_file(mnt.join("latest")), erofs, "unlink latest");
    assert_errno(fs::remove_dir(mnt.join("snapshots").join(&snap_name)), erofs, "rmdir a snapshot");
    // Nothing changed.
    assert_eq!(fs::read(&file).expect("read"), b"hello coffer\n");

    // mmap reads (python3's mmap module) give the file's bytes.
    if have("python3") {
        let script = "import hashlib, mmap, sys\n\
                      with open(sys.argv[1], 'rb') as f:\n    \
                      m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n    \
                      print(hashlib.sha256(m[:]).hexdigest(), len(m))\n";
        for rel in ["random.bin", "text.txt", "hard/sub/c"] {
            let hash = |p: &Path| {
                let mut py = Command::new("python3");
                py.arg("-c").arg(script).arg(p);
                String::from_utf8(sh_ok(py)).expect("utf8")
            };
            assert_eq!(hash(&mounted.join(rel)), hash(&src.join(rel)), "mmap of {rel}");
        }
    } else {
        skip("mmap part", "python3 is not installed");
    }

    assert!(m.alive(), "the mount process died");
    let out = m.stop();
    out.assert_no_panic();
}

#[test]
fn cp_rsync_tar_and_gio_copy_the_tree_out_of_the_mount() {
    if !can_mount("cp_rsync_tar_and_gio_copy_the_tree_out_of_the_mount") {
        return;
    }
    let c = Coffer::new();
    let (src, _) = backed_up_tree(&c);
    let mnt = c.dir("mnt");
    let m = Mounted::start(&c, &mnt, &[]);
    let mounted = m.latest(&src);

    assert_tool_copies(&c, "cp -a", &src, &mounted, |from, to| {
        cmd_result(Command::new("cp").arg("-a").arg(from).arg(to))
    });

    if have("rsync") {
        assert_tool_copies(&c, "rsync -aHX", &src, &mounted, |from, to| {
            let mut from = from.as_os_str().to_owned();
            from.push("/");
            cmd_result(Command::new("rsync").arg("-aHX").arg(from).arg(to))
        });
    } else {
        skip("rsync part", "rsync is not installed");
    }

    assert_tool_copies(&c, "tar c | tar x", &src, &mounted, |from, to| {
        fs::create_dir(to).map_err(|e| e.to_string())?;
        let script = "tar --format=posix --xattrs --xattrs-include='*' -C \"$1\" -cf - . \
                      | tar --xattrs --xattrs-include='*' --numeric-owner -xpf - -C \"$2\"";
        cmd_result(Command::new("sh").arg("-ec").arg(script).arg("sh").arg(from).arg(to))
    });

    if have("gio") {
        let help = Command::new("gio").args(["help", "copy"]).output().expect("gio help copy");
        let help = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
        if help.contains("--recursive") || help.contains("-r,") {
            assert_tool_copies(&c, "gio copy -r", &src, &mounted, |from, to| {
                cmd_result(Command::new("gio").args(["copy", "-r", "--preserve", "-P"]).arg(from).arg(to))
            });
        } else {
            // This gio cannot copy folders: do what a file manager does instead, listing every
            // folder with all attributes and copying each regular file with --preserve.
            skip("gio copy -r", "this gio has no -r (added in GLib 2.80); listing and copying files one by one");
            let out_dir = c.dir("gio-files");
            for (i, p) in walk(&mounted).into_iter().enumerate() {
                let md = fs::symlink_metadata(&p).expect("lstat");
                if md.is_dir() {
                    let mut g = Command::new("gio");
                    g.args(["list", "-h", "-a", "*"]).arg(&p);
                    sh_ok(g);
                } else if md.is_file() && md.nlink() == 1 && md.size() < MIB {
                    let rel = p.strip_prefix(&mounted).expect("prefix");
                    let dest = out_dir.join(format!("file-{i}"));
                    let mut g = Command::new("gio");
                    g.args(["copy", "--preserve", "-P"]).arg(&p).arg(&dest);
                    sh_ok(g);
                    let sm = fs::symlink_metadata(src.join(rel)).expect("lstat source");
                    let dm = fs::symlink_metadata(&dest).expect("lstat gio copy");
                    assert_eq!(
                        fs::read(&dest).expect("read"),
                        fs::read(src.join(rel)).expect("read"),
                        "gio copy {rel:?}"
                    );
                    assert_eq!(dm.mode() & 0o7777, sm.mode() & 0o7777, "gio copy {rel:?}: mode");
                    // GIO keeps times to the microsecond.
                    assert_eq!(dm.mtime(), sm.mtime(), "gio copy {rel:?}: mtime");
                    assert_eq!(dm.mtime_nsec() / 1000, sm.mtime_nsec() / 1000, "gio copy {rel:?}: mtime µs");
                }
            }
        }
    } else {
        skip("gio part", "gio is not installed (package libglib2.0-bin)");
    }
    m.stop();
}

// ---------------------------------------------------------------------------------------------
// 2-4. Naming, live refresh, hosts and tags
// ---------------------------------------------------------------------------------------------

fn is_snapshot_name(n: &str) -> bool {
    let (base, suffix) = match n.split_once('.') {
        Some((b, s)) => (b, Some(s)),
        None => (n, None),
    };
    let b = base.as_bytes();
    let shape = b.len() == 19
        && b.iter().enumerate().all(|(i, ch)| match i {
            4 | 7 => *ch == b'-',
            10 => *ch == b'T',
            13 | 16 => *ch == b':',
            _ => ch.is_ascii_digit(),
        });
    shape && suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
}

#[test]
fn snapshots_in_the_same_second_get_distinct_names() {
    if !can_mount("snapshots_in_the_same_second_get_distinct_names") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_file(&src.join("f"), b"tiny\n");
    // Back-to-back backups; with a tiny tree several land in one second.
    for _ in 0..4 {
        c.backup(&[&src]);
    }
    let snaps = c.snapshots();
    let times: Vec<String> = snaps.iter().map(|s| string(s, "time")).collect();
    let same_second = times.iter().collect::<BTreeSet<_>>().len() < times.len();
    if !same_second {
        eprintln!("note: the backups landed in different seconds ({times:?}); checking uniqueness only");
    }
    let mnt = c.dir("mnt");
    let m = Mounted::start(&c, &mnt, &[]);
    let listed: Vec<OsString> =
        fs::read_dir(mnt.join("snapshots")).expect("ls snapshots").map(|e| e.expect("entry").file_name()).collect();
    let unique: BTreeSet<String> = listed.iter().map(|n| n.to_str().expect("UTF-8").to_string()).collect();
    assert_eq!(listed.len(), snaps.len(), "snapshots/ lists {listed:?} for {} snapshots", snaps.len());
    assert_eq!(unique.len(), snaps.len(), "snapshot folder names are not unique: {listed:?}");
    for n in &unique {
        assert!(is_snapshot_name(n), "{n:?} is not a local ISO-8601 time (with an optional .N)");
        let inside = mnt.join("snapshots").join(n).join(src.strip_prefix("/").expect("abs")).join("f");
        assert_eq!(fs::read(&inside).unwrap_or_else(|e| panic!("{}: {e}", inside.display())), b"tiny\n");
    }
    if same_second {
        assert!(unique.iter().any(|n| n.contains('.')), "same-second snapshots but no .N suffix: {unique:?}");
    }
    assert_eq!(names_in(&mnt.join("ids")).len(), snaps.len(), "ids/ entries");
    // latest points at one of them, the newest.
    let latest = fs::read_link(mnt.join("latest")).expect("readlink latest");
    let newest = unique.iter().max_by(|a, b| name_order(a).cmp(&name_order(b))).expect("some");
    assert_eq!(latest, Path::new("snapshots").join(newest), "latest");
    m.stop();
}

/// Orders `2026-01-01T00:00:00`, `….1`, `….2`, `….10` by time then suffix.
fn name_order(n: &str) -> (String, u64) {
    match n.split_once('.') {
        Some((b, s)) => (b.to_string(), s.parse::<u64>().unwrap_or(0) + 1),
        None => (n.to_string(), 0),
    }
}

#[test]
fn a_snapshot_made_while_mounted_appears_without_a_remount() {
    if !can_mount("a_snapshot_made_while_mounted_appears_without_a_remount") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_file(&src.join("version"), b"one\n");
    let first = c.backup(&[&src]);
    let mnt = c.dir("mnt");
    let mut m = Mounted::start(&c, &mnt, &[]);
    let before = str_names(&mnt.join("snapshots"));
    assert_eq!(before.len(), 1);
    assert_eq!(fs::read(m.latest(&src.join("version"))).expect("read latest/version"), b"one\n");
    let old_latest = fs::read_link(mnt.join("latest")).expect("readlink");

    // A second, different snapshot, a second later so the name differs in any case.
    std::thread::sleep(Duration::from_millis(1100));
    write_file(&src.join("version"), b"two\n");
    write_file(&src.join("added"), b"new file\n");
    let second = c.backup(&[&src]);
    let (_, short2) = snapshot_id_of(&second);
    let t = Instant::now();
    let mut seen_after = None;
    while t.elapsed() < Duration::from_secs(20) {
        let now = str_names(&mnt.join("snapshots"));
        let latest = fs::read_link(mnt.join("latest")).expect("readlink");
        if now.len() == 2 && latest != old_latest {
            seen_after = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = seen_after.unwrap_or_else(|| {
        panic!("the new snapshot did not appear within 20 s: snapshots/ = {:?}", str_names(&mnt.join("snapshots")))
    });
    assert!(after <= Duration::from_secs(6), "the new snapshot took {after:?} to appear (want ≤ ~5 s)");
    let now = str_names(&mnt.join("snapshots"));
    let new_name = now.difference(&before).next().expect("a new name").clone();
    assert_eq!(fs::read_link(mnt.join("latest")).expect("readlink"), Path::new("snapshots").join(&new_name));
    assert_eq!(fs::read(m.latest(&src.join("version"))).expect("read"), b"two\n", "latest/ shows the new tree");
    assert_eq!(fs::read(m.latest(&src.join("added"))).expect("read"), b"new file\n");
    // The old snapshot is unchanged, and the new one is under ids/ and hosts/ too.
    let (_, short1) = snapshot_id_of(&first);
    let old = mnt.join("ids").join(&short1).join(src.strip_prefix("/").expect("abs"));
    assert_eq!(fs::read(old.join("version")).expect("read old"), b"one\n");
    assert_errno(fs::symlink_metadata(old.join("added")), libc::ENOENT, "added in the old snapshot");
    assert!(mnt.join("ids").join(&short2).is_dir(), "ids/{short2} missing");
    let host = nix::unistd::gethostname().expect("hostname").into_string().expect("UTF-8");
    assert_eq!(names_in(&mnt.join("hosts").join(&host)).len(), 2, "hosts/{host}/");
    assert!(m.alive());
    m.stop();
}

#[test]
fn tags_hosts_and_ids_folders() {
    if !can_mount("tags_hosts_and_ids_folders") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    let mut shorts = Vec::new();
    let runs: [(&str, &[&str]); 3] = [
        ("first", &["--tag", "daily", "--tag", "work", "--host", "alpha"]),
        ("second", &["--tag", "weekly", "--host", "beta"]),
        ("third", &["--tag", "daily", "--host", "alpha"]),
    ];
    for (content, extra) in runs {
        write_file(&src.join("which"), content.as_bytes());
        let s = c.backup_with(&[&src], extra);
        shorts.push(snapshot_id_of(&s).1);
    }
    let mnt = c.dir("mnt");
    let m = Mounted::start(&c, &mnt, &[]);
    let rel = src.strip_prefix("/").expect("abs").join("which");
    let contents_of = |dir: &Path| -> BTreeSet<String> {
        names_in(dir)
            .into_iter()
            .map(|n| String::from_utf8(fs::read(dir.join(&n).join(&rel)).expect("read which")).expect("utf8"))
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();

    assert_eq!(str_names(&mnt.join("tags")), set(&["daily", "weekly", "work"]), "tags/");
    assert_eq!(contents_of(&mnt.join("tags/daily")), set(&["first", "third"]), "tags/daily/");
    assert_eq!(contents_of(&mnt.join("tags/weekly")), set(&["second"]), "tags/weekly/");
    assert_eq!(contents_of(&mnt.join("tags/work")), set(&["first"]), "tags/work/");
    assert_eq!(str_names(&mnt.join("hosts")), set(&["alpha", "beta"]), "hosts/");
    assert_eq!(contents_of(&mnt.join("hosts/alpha")), set(&["first", "third"]), "hosts/alpha/");
    assert_eq!(contents_of(&mnt.join("hosts/beta")), set(&["second"]), "hosts/beta/");
    // Folder names under tags/ and hosts/ are the names under snapshots/.
    let all = str_names(&mnt.join("snapshots"));
    for sub in ["tags/daily", "tags/weekly", "tags/work", "hosts/alpha", "hosts/beta"] {
        let names = str_names(&mnt.join(sub));
        assert!(names.is_subset(&all), "{sub}: {names:?} not among snapshots/ {all:?}");
    }
    let ids = str_names(&mnt.join("ids"));
    assert_eq!(ids, shorts.iter().cloned().collect::<BTreeSet<_>>(), "ids/");
    for (short, want) in shorts.iter().zip(["first", "second", "third"]) {
        let got = fs::read(mnt.join("ids").join(short).join(&rel)).expect("read ids/<short>/…/which");
        assert_eq!(got, want.as_bytes(), "ids/{short}");
    }
    // Unknown tags, hosts and ids are ENOENT.
    for p in ["tags/nope", "hosts/nope", "ids/00000000", "snapshots/2000-01-01T00:00:00"] {
        assert_errno(fs::symlink_metadata(mnt.join(p)), libc::ENOENT, p);
    }
    m.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Faults
// ---------------------------------------------------------------------------------------------

/// Backs up `dir` (holding one file) and returns the biggest pack that backup added: the pack
/// with that file's data (trees are tiny and go in their own packs).
fn backup_alone(c: &Coffer, dir: &Path) -> (PathBuf, String) {
    let before: BTreeSet<PathBuf> = c.repo_files("data").into_iter().collect();
    let s = c.backup(&[dir]);
    let added: Vec<PathBuf> = c.repo_files("data").into_iter().filter(|p| !before.contains(p)).collect();
    assert!(!added.is_empty(), "backup of {} wrote no pack", dir.display());
    let biggest = added.into_iter().max_by_key(|p| fs::metadata(p).expect("stat pack").len()).expect("a pack");
    (biggest, snapshot_id_of(&s).1)
}

#[test]
fn a_corrupt_or_missing_pack_fails_that_read_with_eio_and_the_mount_stays_up() {
    if !can_mount("a_corrupt_or_missing_pack_fails_that_read_with_eio_and_the_mount_stays_up") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let (a, b, d) = (c.dir("a"), c.dir("b"), c.dir("d"));
    write_random(&a.join("good.bin"), 11, 300 * KIB);
    write_random(&b.join("corrupt.bin"), 12, 300 * KIB);
    write_random(&d.join("deleted.bin"), 13, 300 * KIB);
    let (_, short_a) = backup_alone(&c, &a);
    let (pack_b, short_b) = backup_alone(&c, &b);
    let (pack_d, short_d) = backup_alone(&c, &d);
    flip_byte(&pack_b, None);
    fs::remove_file(&pack_d).expect("delete pack");

    let mnt = c.dir("mnt");
    let mut m = Mounted::start(&c, &mnt, &[]);
    let in_snap = |short: &str, p: &Path| mnt.join("ids").join(short).join(p.strip_prefix("/").expect("abs"));
    let good = in_snap(&short_a, &a.join("good.bin"));
    let corrupt = in_snap(&short_b, &b.join("corrupt.bin"));
    let deleted = in_snap(&short_d, &d.join("deleted.bin"));

    // Listing and attributes do not need the data packs.
    for p in [&good, &corrupt, &deleted] {
        let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        assert_eq!(md.size(), 300 * KIB);
    }
    for (p, what) in [(&corrupt, "a flipped byte in its pack"), (&deleted, "its pack deleted")] {
        for attempt in 1..=2 {
            let t = Instant::now();
            let got = errno(read_all(p), &format!("reading a file with {what}"));
            assert_eq!(got, libc::EIO, "reading a file with {what} (attempt {attempt}): {}", errno_name(got));
            assert!(t.elapsed() < Duration::from_secs(30), "the failing read took {:?}", t.elapsed());
        }
        assert!(m.alive(), "the mount process died after a read of a file with {what}");
        assert_eq!(str_names(&mnt.join("ids")).len(), 3, "ls ids/ after a failed read");
        assert_eq!(
            read_all(&good).expect("a healthy file still reads"),
            random_bytes(11, 300 * KIB),
            "the healthy file's bytes"
        );
    }
    // Reading from the middle of the corrupt file fails too (no garbage, no zeros).
    let mut f = fs::File::open(&corrupt).expect("open succeeds; reads fail");
    let mut buf = vec![0u8; 4096];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(150 * KIB)).expect("seek");
    assert_errno(f.read(&mut buf), libc::EIO, "read in the middle of the corrupt file");
    drop(f);
    let mut ls = Command::new("ls");
    ls.arg("-lR").arg(&mnt);
    sh_ok(ls);

    let out = m.stop();
    let log = out.stderr();
    // Each failure is logged with the snapshot, the path and the object.
    for (name, short, pack) in [("corrupt.bin", &short_b, &pack_b), ("deleted.bin", &short_d, &pack_d)] {
        let line = log.lines().find(|l| l.contains(name)).unwrap_or_else(|| {
            panic!("the mount's log does not name the failing file {name}:\n{log}");
        });
        assert!(line.contains(short.as_str()), "the log line does not name the snapshot {short}: {line}");
        assert_names_object(line, pack, &format!("the log line for {name}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Mount errors
// ---------------------------------------------------------------------------------------------

/// A repository with one small snapshot, for the error and unmount tests.
fn small_repo() -> Coffer {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_file(&src.join("f"), b"x");
    c.backup(&[&src]);
    c
}

fn nonempty_lines(out: &Out) -> Vec<String> {
    out.stderr().lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

#[test]
fn mounting_on_a_missing_mountpoint_is_a_one_line_error() {
    if !can_mount("mounting_on_a_missing_mountpoint_is_a_one_line_error") {
        return;
    }
    let c = small_repo();
    let missing = c.path("no-such-dir");
    let out = c.cmd(&[OsStr::new("mount"), missing.as_os_str()]);
    out.assert_failed();
    assert!(out.stderr().contains("no-such-dir"), "the error does not name the mountpoint\n{out}");
    assert!(!missing.exists() && !is_mounted(&missing));
    assert_eq!(nonempty_lines(&out).len(), 1, "expected exactly one line on stderr\n{out}");
}

#[test]
fn mounting_on_a_file_is_a_clear_error() {
    if !can_mount("mounting_on_a_file_is_a_clear_error") {
        return;
    }
    let c = small_repo();
    let file = c.path("a-file");
    write_file(&file, b"not a directory");
    let out = c.cmd(&[OsStr::new("mount"), file.as_os_str()]);
    out.assert_failed();
    let err = out.stderr().to_lowercase();
    assert!(err.contains("a-file") && err.contains("not a directory"), "unclear error\n{out}");
    assert!(!is_mounted(&file));
    assert_eq!(fs::read(&file).expect("read"), b"not a directory", "the file was touched");
}

#[test]
fn mounting_with_a_wrong_password_exits_12() {
    if !can_mount("mounting_with_a_wrong_password_exits_12") {
        return;
    }
    let c = small_repo();
    let mnt = c.dir("mnt");
    let mut wrong = c.command();
    wrong.env("COFFER_PASSWORD", "not the password").arg("mount").arg(&mnt);
    let out = run(wrong, DEFAULT_TIMEOUT);
    out.assert_one_line_error(12);
    assert!(!is_mounted(&mnt), "a wrong password left a mount behind");
}

#[test]
fn mounting_on_a_busy_mountpoint_is_a_one_line_error() {
    if !can_mount("mounting_on_a_busy_mountpoint_is_a_one_line_error") {
        return;
    }
    let c = small_repo();
    let mnt = c.dir("mnt");
    let mut m = Mounted::start(&c, &mnt, &[]);
    let out = c.cmd(&[OsStr::new("mount"), mnt.as_os_str()]);
    out.assert_failed();
    assert!(out.stderr().contains(&*mnt.to_string_lossy()), "the error does not name the mountpoint\n{out}");
    assert!(m.alive(), "the first mount process died");
    assert_eq!(names_in(&mnt.join("snapshots")).len(), 1, "the first mount still works");
    assert_eq!(nonempty_lines(&out).len(), 1, "expected exactly one line on stderr\n{out}");
    m.stop();
}

#[test]
fn sigint_and_sigterm_unmount_and_exit_0() {
    if !can_mount("sigint_and_sigterm_unmount_and_exit_0") {
        return;
    }
    let c = small_repo();
    let mnt = c.dir("mnt");
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        let mut m = Mounted::start(&c, &mnt, &[]);
        let proc = m.proc.take().expect("process");
        proc.signal(sig);
        let out = proc.wait(EXIT_AFTER_UNMOUNT);
        out.assert_code(0);
        assert!(!is_mounted(&mnt), "{sig}: still mounted after the process exited");
        let noise: Vec<String> =
            nonempty_lines(&out).into_iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        assert!(noise.is_empty(), "{sig}: a clean unmount logged warnings\n{out}");
    }
    // Busy (a process has its cwd inside): SIGINT detaches lazily, and the process ends once the
    // last user has left.
    let mut m = Mounted::start(&c, &mnt, &[]);
    let mut holder = Command::new("sleep")
        .arg("2")
        .current_dir(m.latest(&c.path("src")))
        .spawn()
        .expect("start a process inside the mount");
    let proc = m.proc.take().expect("process");
    proc.signal(nix::sys::signal::Signal::SIGINT);
    let out = proc.wait(Duration::from_secs(30));
    out.assert_code(0);
    let _ = holder.wait();
    assert!(!is_mounted(&mnt), "still mounted after a busy SIGINT");
}

#[test]
fn fusermount_unmount_is_quiet_and_exits_0() {
    if !can_mount("fusermount_unmount_is_quiet_and_exits_0") {
        return;
    }
    let c = small_repo();
    let mnt = c.dir("mnt");
    let m = Mounted::start(&c, &mnt, &[]);
    let out = m.stop();
    assert!(!is_mounted(&mnt));
    let noise: Vec<String> =
        nonempty_lines(&out).into_iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(noise.is_empty(), "a clean fusermount3 -u logged warnings\n{out}");
}

// ---------------------------------------------------------------------------------------------
// 7. Memory
// ---------------------------------------------------------------------------------------------

/// Memory figures of the mount process around one sequential read, in KiB.
struct MemoryUse {
    /// VmRSS right before the read (after mounting; the key derivation's peak is long gone).
    rss_before: u64,
    /// Highest VmRSS seen during the read (sampled after every 1 MiB).
    rss_peak: u64,
    /// VmHWM at the end: the highest RSS of the whole process life, Argon2 included.
    hwm: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Backs up a `size`-byte random file, mounts with `--cache-size cache`, reads the file once
/// sequentially (checking its bytes) and returns the mount process's memory figures.
fn read_large_file(size: u64, cache: &str) -> MemoryUse {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_random(&src.join("big.bin"), 77, size);
    c.backup(&[&src]);
    let mnt = c.dir("mnt");
    let mut m = Mounted::start(&c, &mnt, &["--cache-size", cache]);
    let pid = m.pid();
    let rss_before = status_kib(pid, "VmRSS:");
    let mut f = fs::File::open(m.latest(&src.join("big.bin"))).expect("open big.bin");
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let (mut total, mut rss_peak) = (0u64, rss_before);
    loop {
        let n = f.read(&mut buf).expect("sequential read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        rss_peak = rss_peak.max(status_kib(pid, "VmRSS:"));
    }
    drop(f);
    assert_eq!(total, size);
    assert_eq!(hasher.finalize(), blake3::hash(&random_bytes(77, size)), "big.bin read through the mount differs");
    let hwm = status_kib(pid, "VmHWM:");
    eprintln!(
        "mount memory reading {} MiB with --cache-size {cache}: VmRSS {rss_before} KiB before, \
         peak {rss_peak} KiB during; VmHWM {hwm} KiB",
        size / MIB
    );
    assert!(m.alive());
    m.stop();
    MemoryUse { rss_before, rss_peak, hwm }
}

#[test]
fn reading_a_large_file_stays_within_the_cache_size() {
    if !can_mount("reading_a_large_file_stays_within_the_cache_size") {
        return;
    }
    // Cache 32 MiB + 64 MiB + the binary and the key derivation's peak (Argon2 takes ~64 MiB at
    // open, so VmHWM starts near 80 MiB).
    const LIMIT_KIB: u64 = 200 * 1024;
    let mem = read_large_file(64 * MIB, "32MiB");
    assert!(
        mem.hwm < LIMIT_KIB,
        "the mount process peaked at {} KiB reading a 64 MiB file with --cache-size 32MiB (limit {LIMIT_KIB} KiB)",
        mem.hwm
    );
}

#[test]
fn memory_growth_while_reading_stays_within_cache_plus_64_mib() {
    if !can_mount("memory_growth_while_reading_stays_within_cache_plus_64_mib") {
        return;
    }
    let mem = read_large_file(64 * MIB, "32MiB");
    let growth = mem.rss_peak.saturating_sub(mem.rss_before);
    let limit = (32 + 64) * 1024;
    assert!(
        growth <= limit,
        "RSS grew by {growth} KiB ({} -> {} KiB) reading a 64 MiB file with --cache-size 32MiB; \
         limit cache + 64 MiB = {limit} KiB",
        mem.rss_before,
        mem.rss_peak
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Browsing from the local tree cache
// ---------------------------------------------------------------------------------------------

/// Moves `repo/data` aside and puts it back when dropped.
struct DataAway {
    data: PathBuf,
    aside: PathBuf,
}

impl Drop for DataAway {
    fn drop(&mut self) {
        if self.aside.exists() {
            fs::rename(&self.aside, &self.data).expect("put repo/data back");
        }
    }
}

fn find_and_stat(root: &Path) -> usize {
    let mut find = Command::new("find");
    find.arg(root).args(["-printf", "%y %m %u %g %s %T@ %n %p\\0"]);
    let listed = sh_ok(find);
    let mut count = 0;
    for p in walk(root) {
        fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        xattr::list(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())).for_each(drop);
        count += 1;
    }
    assert_eq!(listed.split(|b| *b == 0).filter(|l| !l.is_empty()).count(), count, "find and walk disagree");
    count
}

#[test]
fn browsing_a_snapshot_seen_before_needs_no_data_packs() {
    if !can_mount("browsing_a_snapshot_seen_before_needs_no_data_packs") {
        return;
    }
    let c = Coffer::new();
    let (src, _) = backed_up_tree(&c);
    let mnt = c.dir("mnt");

    let m = Mounted::start(&c, &mnt, &[]);
    let first = find_and_stat(&m.latest(&src));
    m.stop();

    let away = DataAway { data: c.repo.join("data"), aside: c.path("data-aside") };
    fs::rename(&away.data, &away.aside).expect("move repo/data away");
    let mut m = Mounted::start(&c, &mnt, &[]);
    let second = find_and_stat(&m.latest(&src));
    assert_eq!(first, second, "entries seen with and without repo/data");
    // The mounted snapshot equals the source in everything but content (which needs the packs).
    let src_scan = common::compare::scan(&src);
    let mnt_scan = common::compare::scan(&m.latest(&src));
    assert_eq!(src_scan.keys().collect::<Vec<_>>(), mnt_scan.keys().collect::<Vec<_>>(), "names");
    for (p, a) in &src_scan {
        let b = &mnt_scan[p];
        assert_eq!((a.kind, a.perm, a.uid, a.gid, a.mtime), (b.kind, b.perm, b.uid, b.gid, b.mtime), "{p:?}");
        assert_eq!((&a.target, a.rdev, &a.xattrs), (&b.target, b.rdev, &b.xattrs), "{p:?}");
        if a.kind != common::compare::Kind::Dir {
            assert_eq!(a.size, b.size, "{p:?}: size");
        }
    }
    // Contents do need the packs: the read fails cleanly, and the mount stays up.
    assert_errno(read_all(&m.latest(&src.join("random.bin"))), libc::EIO, "reading without repo/data");
    assert!(m.alive(), "the mount died reading without repo/data");
    m.stop();

    // Control: with an empty local database the same browsing does need repo/data, so the
    // success above came from the tree cache.
    let fresh_cache = c.dir("fresh-cache");
    let mut m = Mounted::start(&c, &mnt, &["--cache-dir", fresh_cache.to_str().expect("UTF-8 path")]);
    let got = errno(fs::read_dir(m.latest(&src)).and_then(|d| d.collect::<io::Result<Vec<_>>>()), "control");
    assert_eq!(got, libc::EIO, "listing without repo/data and without a tree cache: {}", errno_name(got));
    assert!(m.alive());
    m.stop();
    drop(away);
    assert!(c.repo.join("data").is_dir());
}

#[test]
fn a_forgotten_snapshot_leaves_a_running_mount() {
    if !can_mount("a_forgotten_snapshot_leaves_a_running_mount") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_file(&src.join("version"), b"one\n");
    c.backup(&[&src]);
    std::thread::sleep(Duration::from_millis(1100));
    write_file(&src.join("version"), b"two\n");
    c.backup(&[&src]);
    let mnt = c.dir("mnt");
    let m = Mounted::start(&c, &mnt, &[]);
    assert_eq!(str_names(&mnt.join("snapshots")).len(), 2);

    c.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(c.snapshots().len(), 1, "`snapshots` still lists the forgotten snapshot");
    // The mount re-lists at most every 2 s and the kernel keeps top-level entries for 1 s.
    let t = Instant::now();
    while str_names(&mnt.join("snapshots")).len() != 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "the forgotten snapshot is still mounted after 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.elapsed() <= Duration::from_secs(4), "the forgotten snapshot took {:?} to go", t.elapsed());
    assert_eq!(str_names(&mnt.join("ids")).len(), 1);
    assert_eq!(fs::read(m.latest(&src.join("version"))).expect("read latest/version"), b"two\n");
    c.ok(&["prune"]);
    assert_eq!(fs::read(m.latest(&src.join("version"))).expect("read after prune"), b"two\n");
    m.stop();
}

/// Bit rot at many places of a data pack (header, blobs, table, trailer): through the mount,
/// every read either returns the exact bytes or fails with EIO, never other bytes.
#[test]
fn bit_rot_anywhere_in_a_pack_never_reaches_a_reader_of_the_mount() {
    if !can_mount("bit_rot_anywhere_in_a_pack_never_reaches_a_reader_of_the_mount") {
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    write_random(&src.join("one.bin"), 21, 200 * KIB);
    write_random(&src.join("two.bin"), 22, 90 * KIB);
    write_file(&src.join("small.txt"), b"a small file in the same pack\n");
    let (pack, short) = backup_alone(&c, &src);
    let len = fs::metadata(&pack).expect("stat pack").len() as usize;
    // Flips in the header or a blob fail reads; flips in the blob table do not matter to reads
    // (the index locates blobs), only to `check --read-data`.
    let mut flips_noticed = 0;
    for at in [0, 20, 100, 101, 130, len / 3, len / 2, len - 40, len - 12, len - 1] {
        let original = fs::read(&pack).expect("read pack");
        flip_byte(&pack, Some(at));
        let mnt = c.dir(&format!("mnt-{at}"));
        // An empty cache, so nothing read before the flip is served from memory.
        let cache = c.dir(&format!("cache-{at}"));
        let cache_arg = cache.to_string_lossy().into_owned();
        let m = Mounted::start(&c, &mnt, &["--cache-dir", &cache_arg]);
        let mut noticed = false;
        for (name, want) in [
            ("one.bin", random_bytes(21, 200 * KIB)),
            ("two.bin", random_bytes(22, 90 * KIB)),
            ("small.txt", b"a small file in the same pack\n".to_vec()),
        ] {
            let p = mnt.join("ids").join(&short).join(src.join(name).strip_prefix("/").expect("abs"));
            match read_all(&p) {
                Ok(got) => assert!(got == want, "byte {at} flipped: {name} read through the mount differs"),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EIO), "byte {at} flipped: {name}: {e}");
                    noticed = true;
                }
            }
        }
        drop(m);
        fs::write(&pack, original).expect("put the pack back");
        flips_noticed += usize::from(noticed);
    }
    assert!(flips_noticed >= 5, "only {flips_noticed} flips made a read fail: the flips went unnoticed");
}
