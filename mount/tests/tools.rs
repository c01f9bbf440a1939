//! The usual tools agree that a mounted tree equals the real tree it was built from:
//! `diff -r`, `cp -a`, `tar c` (byte-identical archives), `rsync -aHX`.
//!
//! A real directory (files across several blocks, empty file, symlinks, hardlinks, fifo,
//! device node, xattrs, odd modes and times, non-UTF-8 name) is imported into a `MemorySource`
//! and mounted. Needs /dev/fuse and root (for mknod and chown); skips without /dev/fuse.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

use coffer_mount::memory::{MemorySource, Meta, NodeId};
use coffer_mount::{spawn, MountOptions, NodeKind};

const BLOCK: usize = 4096;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sh(script: &str, dir: &Path) {
    run(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
}

fn meta_of(md: &fs::Metadata) -> Meta {
    Meta::new().mode(md.mode() & 0o7777).owner(md.uid(), md.gid()).mtime(md.mtime(), md.mtime_nsec() as u32)
}

/// Copies the tree at `real` into `m` under `parent`, keeping modes, owners, times, links
/// and xattrs.
fn import(m: &MemorySource, parent: NodeId, real: &Path, seen: &mut HashMap<u64, NodeId>) {
    let mut entries: Vec<_> = fs::read_dir(real).expect("readdir").map(|e| e.expect("entry")).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let md = fs::symlink_metadata(&path).expect("lstat");
        let meta = meta_of(&md);
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(&id) = seen.get(&md.ino()) {
                m.hardlink(parent, name.as_bytes(), id);
                continue;
            }
        }
        let id = if ft.is_dir() {
            let id = m.dir(parent, name.as_bytes(), meta);
            import(m, id, &path, seen);
            id
        } else if ft.is_file() {
            m.file(parent, name.as_bytes(), &fs::read(&path).expect("read"), BLOCK, meta)
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            m.symlink(parent, name.as_bytes(), target.as_os_str().as_bytes(), meta)
        } else {
            let kind = if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() {
                NodeKind::CharDevice
            } else if ft.is_block_device() {
                NodeKind::BlockDevice
            } else {
                NodeKind::Socket
            };
            m.special(parent, name.as_bytes(), kind, md.rdev() as u32, meta)
        };
        for attr in xattr::list(&path).expect("listxattr") {
            if let Some(value) = xattr::get(&path, &attr).expect("getxattr") {
                m.set_xattr(id, attr.as_bytes(), value);
            }
        }
        if md.nlink() > 1 && !ft.is_dir() {
            seen.insert(md.ino(), id);
        }
    }
}

/// Asserts two archives are byte-identical, showing their verbose listings when not.
fn assert_same_tar(expected: &[u8], actual: &[u8], what: &str) {
    if expected == actual {
        return;
    }
    let listing = |archive: &[u8]| {
        let dir = tempfile::tempdir().expect("temp");
        let file = dir.path().join("a.tar");
        fs::write(&file, archive).expect("write archive");
        let out = run(Command::new("tar").args(["--numeric-owner", "--full-time", "--xattrs", "-tvvf"]).arg(&file));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (e, a) = (listing(expected), listing(actual));
    let differing: Vec<String> =
        e.lines().zip(a.lines()).filter(|(x, y)| x != y).map(|(x, y)| format!("- {x}\n+ {y}")).collect();
    panic!(
        "{what}: archives differ\n{}\n(expected {} lines, got {})",
        differing.join("\n"),
        e.lines().count(),
        a.lines().count()
    );
}

fn tar(dir: &Path) -> Vec<u8> {
    run(Command::new("tar")
        // atime and ctime can't be restored to a real tree, so they stay out of the archive.
        .args(["--sort=name", "--numeric-owner", "--xattrs", "--pax-option=delete=atime,delete=ctime"])
        .args(["-cf", "-", "."])
        .current_dir(dir))
    .stdout
}

#[test]
fn diff_cp_tar_and_rsync_see_the_same_tree() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is absent, no kernel mount possible");
        return;
    }
    let work = tempfile::tempdir().expect("temp");
    let real = work.path().join("real");
    let tree = real.join("tree");
    fs::create_dir_all(&tree).expect("tree");
    sh(
        "mkdir -p a/b/c empty-dir
         head -c 20000 /dev/urandom > a/multi-block.bin
         printf 'x' > a/b/one-byte
         : > a/b/c/empty
         printf 'shell' > a/run.sh && chmod 0751 a/run.sh
         printf 'secret' > a/private && chmod 0600 a/private && chown 1234:5678 a/private
         ln a/multi-block.bin a/b/hardlink.bin
         ln -s ../multi-block.bin a/b/rel-link
         ln -s /nonexistent/target dangling
         mkfifo a/pipe
         mknod a/null-dev c 1 3
         printf 'v' > \"$(printf 'caf\\351')\"
         printf 'tagged' > tagged && setfattr -n user.note -v hello tagged 2>/dev/null || true
         chmod 1777 empty-dir
         touch -h -d '2001-02-03 04:05:06.789' a/b/rel-link a/b/c/empty a/b/c a/b
         touch -d '1999-12-31 23:59:59' a
         # Nothing may keep a current mtime: rsync compares whole seconds and would skip
         # setting times on a copy made within the same second.
         find . -newermt '2020-01-01' -exec touch -h -d '2011-11-11 11:11:11.111111111' {} +",
        &tree,
    );
    if xattr::get(tree.join("tagged"), "user.note").ok().flatten().is_none() {
        xattr::set(tree.join("tagged"), "user.note", b"hello").expect("setxattr on the real tree");
    }

    let source = MemorySource::new();
    let imported = source.dir(source.root_id(), "tree", meta_of(&fs::metadata(&tree).expect("stat")));
    import(&source, imported, &tree, &mut HashMap::new());
    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).expect("mountpoint");
    let handle = spawn(source, &mnt, &MountOptions::default()).expect("mount");
    let mounted = mnt.join("tree");

    // diff -r: same names, same contents, same link targets. diff cannot compare fifos and
    // devices and reports each pair ("File A is a fifo while file B is a fifo"): those lines
    // are fine when both sides have the same type; any other line is a difference.
    let diff =
        Command::new("diff").arg("-r").arg("--no-dereference").arg(&tree).arg(&mounted).output().expect("diff runs");
    let report = String::from_utf8_lossy(&diff.stdout);
    let real_differences: Vec<&str> = report
        .lines()
        .filter(|line| {
            let same_special = line.split_once(" while file ").is_some_and(|(left, right)| {
                let kind = |s: &str| s.rsplit_once(" is a ").map(|(_, k)| k.to_string());
                left.starts_with("File ") && kind(left).is_some() && kind(left) == kind(right)
            });
            !same_special
        })
        .collect();
    assert!(diff.status.code() == Some(0) || diff.status.code() == Some(1), "{report}");
    assert!(real_differences.is_empty(), "diff -r found:\n{}", real_differences.join("\n"));

    // tar: byte-identical archives (modes, owners, mtimes, hardlinks, devices, xattrs).
    let original = tar(&tree);
    assert_same_tar(&original, &tar(&mounted), "tar of the mount");

    // cp -a out of the mount gives a tree tar can't tell from the original.
    let copy = work.path().join("copy");
    run(Command::new("cp").arg("-a").arg(&mounted).arg(&copy));
    assert_same_tar(&original, &tar(&copy), "cp -a copy");
    assert_eq!(xattr::get(copy.join("tagged"), "user.note").expect("getxattr"), Some(b"hello".to_vec()));

    if Command::new("rsync").arg("--version").output().is_ok() {
        let synced = work.path().join("synced");
        let mut src = mounted.clone().into_os_string();
        src.push("/");
        run(Command::new("rsync").args(["-aHX", "--numeric-ids"]).arg(&src).arg(&synced));
        assert_same_tar(&original, &tar(&synced), "rsync -aHX copy");
    } else {
        eprintln!("rsync not installed: skipping that part");
    }
    handle.unmount().expect("unmount");
}
