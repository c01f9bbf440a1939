//! Tests of the test harness itself: the generator makes every kind of entry, and the
//! comparator sees every kind of difference. A comparator that misses a difference would let
//! every round-trip test pass vacuously. Uses `cp -a` as the reference copier; no coffer.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::compare::{scan, Kind};
use common::tree::{self, chmod, set_mtime, set_xattr};
use common::*;

fn copy(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status().expect("run cp -a");
    assert!(st.success(), "cp -a failed");
}

#[test]
fn generated_tree_has_every_kind() {
    let c = Coffer::new();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    let t = scan(&src);
    let mut kinds = vec![Kind::File, Kind::Dir, Kind::Symlink, Kind::Fifo];
    if is_root() {
        kinds.extend([Kind::CharDev, Kind::BlockDev]);
        assert!(t.values().any(|e| e.uid == tree::UID), "no entry owned by {}", tree::UID);
    }
    for k in kinds {
        assert!(t.values().any(|e| e.kind == k), "no {k:?} in the generated tree");
    }
    assert!(t.values().any(|e| e.perm & 0o4000 != 0), "no setuid file");
    assert!(t.values().any(|e| e.perm & 0o1000 != 0), "no sticky directory");
    assert!(t.values().any(|e| e.mtime.1 != 0), "no nanosecond mtimes");
    assert!(t.values().any(|e| !e.xattrs.is_empty()), "no xattrs");
    assert!(t.keys().any(|p| std::str::from_utf8(p.as_os_str().as_encoded_bytes()).is_err()), "no non-UTF-8 name");
    assert!(t.keys().any(|p| p.as_os_str().len() > 1000), "no path over 1000 bytes");
    assert!(t.keys().any(|p| p.file_name().is_some_and(|n| n.len() == 255)), "no 255-byte name");
    assert!(t.values().any(|e| e.kind == Kind::File && e.allocated < e.size / 4), "no sparse file");
    assert!(common::compare::hardlink_sets(&t).iter().any(|s| s.len() == 3), "no hardlink set of 3");
}

#[test]
fn comparator_accepts_an_exact_copy_and_reports_every_difference() {
    let c = Coffer::new();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    let dst = c.path("dst");
    copy(&src, &dst);
    let same = compare_trees(&src, &dst, &CompareOptions::default());
    assert!(same.is_empty(), "cp -a copy reported different:\n{}", same.join("\n"));

    chmod(&dst.join("modes/setuid-4755"), 0o755);
    set_mtime(&dst.join("small.txt"), 1, 2);
    std::fs::remove_file(dst.join("hard/b")).expect("rm");
    std::fs::copy(dst.join("hard/a"), dst.join("hard/b")).expect("cp");
    xattr::remove(dst.join("xattrs/file"), "user.empty").expect("removexattr");
    set_xattr(&dst.join("xattrs"), "user.on-dir", b"changed");
    std::fs::write(dst.join("sparse.img"), vec![0u8; 4 << 20]).expect("fill holes");
    std::fs::remove_file(dst.join("links/dangling")).expect("rm");
    symlink("elsewhere", dst.join("links/dangling")).expect("symlink");
    std::fs::write(dst.join("extra"), b"").expect("write");
    std::fs::remove_file(dst.join("names/.hidden")).expect("rm");
    std::fs::write(dst.join("nested/a/one.txt"), b"ONE\n").expect("write");
    if is_root() {
        std::os::unix::fs::lchown(dst.join("owned/link"), Some(0), Some(0)).expect("lchown");
    }

    let diffs = compare_trees(&src, &dst, &CompareOptions::default()).join("\n");
    for want in [
        "\"modes/setuid-4755\": mode 4755 restored as 0755",
        "\"small.txt\": mtime",
        "hardlink set not restored as one inode: \"hard/a\" = \"hard/b\" = \"hard/sub/c\"",
        "\"xattrs/file\": xattrs",
        "\"xattrs\": xattrs",
        "\"sparse.img\": sparse file",
        "\"links/dangling\": symlink target",
        "\"extra\": extra entry",
        "\"names/.hidden\": missing",
        "\"nested/a/one.txt\": content differs from byte 0",
    ] {
        assert!(diffs.contains(want), "comparator missed {want:?}; it said:\n{diffs}");
    }
    if is_root() {
        assert!(diffs.contains("\"owned/link\": owner 1234:5678 restored as 0:0"), "{diffs}");
    }
    let r = std::panic::catch_unwind(|| assert_trees_equal(&src, &dst));
    assert!(r.is_err(), "assert_trees_equal did not panic on different trees");
}

#[test]
fn generator_is_deterministic() {
    let c = Coffer::new();
    make_tree(&c.path("a"), &TreeOptions::small());
    make_tree(&c.path("b"), &TreeOptions::small());
    assert_trees_equal(&c.path("a"), &c.path("b"));
}
