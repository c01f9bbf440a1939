//! Compares a source tree with its restored copy, entry by entry, without following symlinks.
//!
//! Owns: [`scan`] (a metadata snapshot of a tree), [`compare_trees`] (a list of human-readable
//! mismatches) and [`assert_trees_equal`] (panics with the first mismatches).
//! Compared: the set of names, file type, content bytes, permission bits including
//! setuid/setgid/sticky, uid/gid, mtime (seconds and nanoseconds) of every entry, symlink
//! targets, device numbers, xattrs (names and values), hardlink sets (paths sharing an inode in
//! one tree share one in the other, and only those), and sparseness (a file that is sparse in the
//! source must be sparse when restored). Not compared: atime, ctime, inode numbers themselves,
//! directory sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many mismatches the panic message lists.
const SHOW: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// Metadata of one entry, relative path as key.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub allocated: u64,
    pub rdev: u64,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    pub inode: (u64, u64),
}

#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Compare the metadata (mode, owner, mtime, xattrs) of the two roots themselves.
    pub root_metadata: bool,
    /// Compare uid/gid (off when the restoring process may not chown).
    pub ownership: bool,
    /// Compare mtimes.
    pub mtimes: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { root_metadata: true, ownership: true, mtimes: true }
    }
}

/// Every entry under `root` (including `root` itself as the empty path).
pub fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    scan_into(root, PathBuf::new(), &mut out);
    out
}

fn scan_into(abs: &Path, rel: PathBuf, out: &mut BTreeMap<PathBuf, Entry>) {
    let m = fs::symlink_metadata(abs).unwrap_or_else(|e| panic!("lstat {}: {e}", abs.display()));
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        assert!(ft.is_socket(), "unknown file type at {}", abs.display());
        Kind::Socket
    };
    let target = (kind == Kind::Symlink)
        .then(|| fs::read_link(abs).unwrap_or_else(|e| panic!("readlink {}: {e}", abs.display())));
    let entry = Entry {
        kind,
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: m.size(),
        allocated: m.blocks() * 512,
        rdev: m.rdev(),
        target,
        xattrs: read_xattrs(abs),
        inode: (m.dev(), m.ino()),
    };
    out.insert(rel.clone(), entry);
    if kind == Kind::Dir {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", abs.display()))
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for n in names {
            scan_into(&abs.join(&n), rel.join(&n), out);
        }
    }
}

/// All xattrs of an entry, not following symlinks.
pub fn read_xattrs(p: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(e) => panic!("listxattr {}: {e}", p.display()),
    };
    for n in names {
        let v =
            xattr::get(p, &n).unwrap_or_else(|e| panic!("getxattr {:?} {}: {e}", n, p.display())).unwrap_or_default();
        out.insert(n, v);
    }
    out
}

/// Panics with a readable list of differences unless `restored` equals `src`.
pub fn assert_trees_equal(src: &Path, restored: &Path) {
    assert_trees_equal_with(src, restored, &CompareOptions::default());
}

pub fn assert_trees_equal_with(src: &Path, restored: &Path, opts: &CompareOptions) {
    let diffs = compare_trees(src, restored, opts);
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<String> = diffs.iter().take(SHOW).map(|d| format!("  {d}")).collect();
    panic!(
        "restored tree differs from source\n  source:   {}\n  restored: {}\n{} difference(s){}:\n{}",
        src.display(),
        restored.display(),
        diffs.len(),
        if diffs.len() > SHOW { format!(", first {SHOW}") } else { String::new() },
        shown.join("\n")
    );
}

/// Every difference between the two trees, one line each.
pub fn compare_trees(src: &Path, restored: &Path, opts: &CompareOptions) -> Vec<String> {
    if !restored.exists() && fs::symlink_metadata(restored).is_err() {
        return vec![format!("restored root {} does not exist", restored.display())];
    }
    let a = scan(src);
    let b = scan(restored);
    let mut diffs = Vec::new();
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        diffs.push(format!("{}: missing from restored tree", show(p)));
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("{}: extra entry in restored tree", show(p)));
    }
    for (p, ea) in &a {
        let Some(eb) = b.get(p) else { continue };
        compare_entry(p, ea, eb, &src.join(p), &restored.join(p), opts, &mut diffs);
    }
    compare_hardlinks(&a, &b, &mut diffs);
    diffs
}

fn compare_entry(
    p: &Path,
    a: &Entry,
    b: &Entry,
    abs_a: &Path,
    abs_b: &Path,
    opts: &CompareOptions,
    diffs: &mut Vec<String>,
) {
    let name = show(p);
    if a.kind != b.kind {
        diffs.push(format!("{name}: type {:?} restored as {:?}", a.kind, b.kind));
        return;
    }
    let is_root = p.as_os_str().is_empty();
    if !is_root || opts.root_metadata {
        if a.perm != b.perm {
            diffs.push(format!("{name}: mode {:04o} restored as {:04o}", a.perm, b.perm));
        }
        if opts.ownership && (a.uid, a.gid) != (b.uid, b.gid) {
            diffs.push(format!("{name}: owner {}:{} restored as {}:{}", a.uid, a.gid, b.uid, b.gid));
        }
        if opts.mtimes && a.mtime != b.mtime {
            diffs.push(format!(
                "{name}: mtime {}.{:09} restored as {}.{:09}",
                a.mtime.0, a.mtime.1, b.mtime.0, b.mtime.1
            ));
        }
        if a.xattrs != b.xattrs {
            diffs.push(format!("{name}: xattrs {} restored as {}", show_xattrs(&a.xattrs), show_xattrs(&b.xattrs)));
        }
    }
    match a.kind {
        Kind::File => compare_content(&name, a, b, abs_a, abs_b, diffs),
        Kind::Symlink if a.target != b.target => {
            diffs.push(format!("{name}: symlink target {:?} restored as {:?}", a.target, b.target))
        }
        Kind::CharDev | Kind::BlockDev if a.rdev != b.rdev => diffs.push(format!(
            "{name}: device {}:{} restored as {}:{}",
            major(a.rdev),
            minor(a.rdev),
            major(b.rdev),
            minor(b.rdev)
        )),
        _ => {}
    }
}

fn compare_content(name: &str, a: &Entry, b: &Entry, abs_a: &Path, abs_b: &Path, diffs: &mut Vec<String>) {
    if a.size != b.size {
        diffs.push(format!("{name}: size {} restored as {}", a.size, b.size));
        return;
    }
    if let Some(off) = first_difference(abs_a, abs_b) {
        diffs.push(format!("{name}: content differs from byte {off} on"));
    }
    let sparse = |e: &Entry| e.size >= 1024 * 1024 && e.allocated < e.size / 4;
    if sparse(a) && !sparse(b) {
        diffs.push(format!(
            "{name}: sparse file ({} of {} bytes allocated) restored with {} bytes allocated",
            a.allocated, a.size, b.allocated
        ));
    }
}

/// Offset of the first differing byte of two files of equal size, if any.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if ba[..na] != bb[..nb] {
            let i = ba[..na].iter().zip(&bb[..nb]).take_while(|(x, y)| x == y).count();
            return Some(offset + i as u64);
        }
        if na == 0 {
            return None;
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Sets of paths that share an inode (non-directories with more than one name in the tree).
pub fn hardlink_sets(tree: &BTreeMap<PathBuf, Entry>) -> BTreeSet<Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (p, e) in tree {
        if e.kind != Kind::Dir {
            by_inode.entry(e.inode).or_default().push(p.clone());
        }
    }
    by_inode.into_values().filter(|v| v.len() > 1).collect()
}

fn compare_hardlinks(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>, diffs: &mut Vec<String>) {
    let sa = hardlink_sets(a);
    let sb = hardlink_sets(b);
    let fmt = |s: &Vec<PathBuf>| s.iter().map(|p| show(p)).collect::<Vec<_>>().join(" = ");
    for s in sa.difference(&sb) {
        diffs.push(format!("hardlink set not restored as one inode: {}", fmt(s)));
    }
    for s in sb.difference(&sa) {
        diffs.push(format!("restored paths share an inode but did not in source: {}", fmt(s)));
    }
}

fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "<root>".to_string()
    } else {
        format!("{:?}", p)
    }
}

fn show_xattrs(x: &BTreeMap<OsString, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| {
            let v =
                if v.len() > 24 { format!("<{} bytes>", v.len()) } else { format!("{:?}", String::from_utf8_lossy(v)) };
            format!("{}={v}", k.to_string_lossy())
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}
