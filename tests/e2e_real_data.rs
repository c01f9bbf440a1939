//! Long lane (`COFFER_LONG_TESTS=1`; `tests/run.sh` sets it): back up, restore, mount and
//! `diff -r` real trees nobody here wrote — this machine's `/usr/share/doc` and its Python
//! standard library — and check every byte. Skipped with a note in the fast lane.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn long_lane(test: &str) -> bool {
    let on = std::env::var("COFFER_LONG_TESTS").is_ok_and(|v| v == "1");
    if !on {
        skip(test, "long lane: set COFFER_LONG_TESTS=1 (tests/run.sh does)");
    }
    on
}

/// Real trees present on this machine (any may be missing on another).
fn real_sources() -> Vec<PathBuf> {
    let mut sources = vec![PathBuf::from("/usr/share/doc")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3.")))
            .collect();
        pythons.sort();
        sources.extend(pythons.pop());
    }
    sources.retain(|p| p.is_dir());
    sources
}

/// `diff -r --no-dereference a b` (dangling symlinks compared as links): empty output.
fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().expect("run diff");
    assert!(
        out.status.success(),
        "diff -r {} {} found differences:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout).chars().take(4000).collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mnt.to_string_lossy().into_owned();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

#[test]
fn real_trees_back_up_restore_and_mount_bit_identically() {
    if !long_lane("real_trees_back_up_restore_and_mount_bit_identically") {
        return;
    }
    let sources = real_sources();
    assert!(!sources.is_empty(), "no real tree to back up on this machine");
    let c = Coffer::new();
    c.init();
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let first = c.backup(&refs);
    eprintln!("backed up {:?}: {first}", sources);
    assert!(num(&first, "total_bytes") > 20 << 20, "the real trees are suspiciously small: {first}");
    // Unchanged: nothing read, nothing added.
    let second = c.backup(&refs);
    assert_eq!(num(&second, "bytes_read"), 0, "{second}");
    c.ok(&["check", "--read-data"]);

    let target = c.dir("restore");
    c.restore("latest", &target);
    for src in &sources {
        let restored = restored_path(&target, src);
        assert_trees_equal(src, &restored);
        diff_r(src, &restored);
    }
    std::fs::remove_dir_all(&target).expect("clean up the restore");

    if !is_root() || !Path::new("/dev/fuse").exists() {
        skip("real trees through the mount", "needs root and /dev/fuse");
        return;
    }
    let mnt = c.dir("mnt");
    let args: Vec<OsString> = vec!["mount".into(), mnt.as_os_str().to_owned()];
    let mut mount = c.spawn(&args);
    let started = Instant::now();
    while !(is_mounted(&mnt) && mnt.join("latest").exists()) {
        assert!(!mount.finished(), "coffer mount exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "mount not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let compared = std::panic::catch_unwind(|| {
        for src in &sources {
            let mounted = mnt.join("latest").join(src.strip_prefix("/").expect("absolute"));
            diff_r(src, &mounted);
        }
    });
    let unmounted = Command::new("fusermount3").arg("-u").arg(&mnt).status().is_ok_and(|s| s.success());
    if !unmounted {
        let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
    }
    let out = mount.wait(Duration::from_secs(30));
    if let Err(panic) = compared {
        std::panic::resume_unwind(panic);
    }
    assert!(unmounted, "fusermount3 -u failed");
    out.assert_code(0);
}
