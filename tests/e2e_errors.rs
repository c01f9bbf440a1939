//! End-to-end: bad input. Each case checks the exit code, a clear message, and that nothing
//! wrong was written: missing source paths, unreadable files (exit 3, incomplete snapshot), a
//! file growing while it is read, wrong passphrase (12), not a repository (10), init over an
//! existing repository, unknown snapshots.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::tree::{self, random_bytes, write_random, MIB};
use common::*;

#[test]
fn missing_source_path_is_an_error_and_writes_no_snapshot() {
    let c = Coffer::new();
    c.init();
    let missing = c.path("does-not-exist");
    let out = c.backup_out(&[&missing], &[]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("does-not-exist"), "message does not name the path\n{out}");
    assert!(c.snapshots().is_empty(), "a snapshot was written for a missing path");
}

#[test]
fn one_missing_path_among_several_is_not_silently_ignored() {
    let c = Coffer::new();
    c.init();
    let present = c.dir("present");
    std::fs::write(present.join("f"), "f\n").expect("write");
    let missing = c.path("missing");
    let out = c.backup_out(&[&present, &missing], &[]);
    out.assert_failed();
    assert!(out.stderr().contains("missing"), "message does not name the path\n{out}");
    let snaps = c.snapshots();
    match out.code() {
        // Either refuse entirely (as for a single missing path)…
        Some(1) => assert!(snaps.is_empty(), "exit 1 but a snapshot was written: {snaps:?}"),
        // …or back up the rest and say the snapshot is incomplete.
        Some(3) => {
            assert_eq!(snaps.len(), 1, "{snaps:?}");
            assert_eq!(snaps[0]["incomplete"], true, "exit 3 but snapshot not incomplete");
        }
        _ => panic!("expected exit 1 or 3\n{out}"),
    }
}

fn have_setpriv() -> bool {
    Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs coffer as uid/gid 65534 when we are root (root reads every file regardless of mode).
fn run_unprivileged(c: &Coffer, args: &[&std::ffi::OsStr]) -> Out {
    let mut cmd = if is_root() {
        c.wrapped(&["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"])
    } else {
        c.command()
    };
    cmd.args(args);
    run(cmd, DEFAULT_TIMEOUT)
}

#[test]
fn unreadable_file_gives_exit_3_and_an_incomplete_snapshot() {
    if is_root() && !have_setpriv() {
        skip("unreadable_file", "setpriv (util-linux) is missing; run tests/install-deps.sh");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("readable.txt"), "fine\n").expect("write");
    std::fs::write(src.join("secret.txt"), "no access\n").expect("write");
    tree::chmod(&src.join("secret.txt"), 0o000);
    std::fs::create_dir(src.join("locked-dir")).expect("mkdir");
    std::fs::write(src.join("locked-dir/inner.txt"), "hidden\n").expect("write");
    tree::chmod(&src.join("locked-dir"), 0o000);
    let target = c.dir("restore");
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .args([&c.repo, &c.cache, &c.home, &target])
            .status()
            .expect("chown");
        assert!(st.success(), "chown -R failed");
    }

    let os = std::ffi::OsStr::new;
    let out = run_unprivileged(&c, &[os("backup"), os("--json"), src.as_os_str()]);
    out.assert_code(3);
    let err = out.stderr();
    assert!(err.contains("secret.txt"), "no warning names secret.txt\n{out}");
    assert!(err.contains("locked-dir"), "no warning names locked-dir\n{out}");
    let summary = out.json();
    check_backup_summary(&summary);
    assert_eq!(summary["incomplete"], true, "{summary}");
    let errors = summary["errors"].as_array().expect("errors array");
    for name in ["secret.txt", "locked-dir"] {
        assert!(
            errors.iter().any(|e| e["path"].as_str().is_some_and(|p| p.ends_with(name))
                && e["message"].as_str().is_some_and(|m| !m.is_empty())),
            "errors[] lacks {name}: {summary}"
        );
    }

    let snaps = run_unprivileged(&c, &[os("snapshots"), os("--json")]);
    snaps.assert_code(0);
    let snaps = snaps.json();
    assert_eq!(snaps[0]["incomplete"], true, "snapshot not marked incomplete: {snaps}");

    let out = run_unprivileged(&c, &[os("restore"), os("latest"), os("--target"), target.as_os_str()]);
    out.assert_code(0);
    let got = std::fs::read(restored_path(&target, &src).join("readable.txt")).expect("read");
    assert_eq!(got, b"fine\n");
}

#[test]
fn file_growing_while_read_is_backed_up_consistently() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    let file = src.join("growing.log");
    write_random(&file, 3, 4 * MIB);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let chunk = random_bytes(4, 64 * 1024);
            let mut f = std::fs::OpenOptions::new().append(true).open(&file).expect("open");
            let mut written = 0u64;
            // An append every millisecond: the read (milliseconds long) always overlaps one,
            // so the engine must notice the change.
            while !stop.load(Ordering::Relaxed) && written < 64 * MIB {
                f.write_all(&chunk).expect("append");
                written += chunk.len() as u64;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = c.backup_out(&[&src], &[]);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");

    out.assert_no_panic();
    assert!(matches!(out.code(), Some(0 | 3)), "backup of a growing file failed\n{out}");
    let summary = out.json();
    check_backup_summary(&summary);
    assert!(
        out.stderr().contains("growing.log") || summary["errors"].to_string().contains("growing.log"),
        "no warning that growing.log changed while it was read\n{out}"
    );
    assert_eq!(c.snapshots().len(), 1);

    let target = c.dir("restore");
    c.restore("latest", &target);
    let restored = std::fs::read(restored_path(&target, &file)).expect("read restored");
    let now = std::fs::read(&file).expect("read source");
    assert!(restored.len() as u64 >= 4 * MIB, "restored only {} bytes", restored.len());
    assert!(
        now.starts_with(&restored),
        "restored content ({} bytes) is not a prefix of the file: torn or garbled read",
        restored.len()
    );
}

#[test]
fn wrong_password_exits_12() {
    let mut c = Coffer::new();
    c.init();
    c.password = "not the password".into();
    for args in [&["snapshots"][..], &["check"][..], &["backup", "/etc/hostname"][..]] {
        c.cmd(args).assert_one_line_error(12);
    }
    let empty = c.path("empty-password");
    std::fs::write(&empty, "").expect("write");
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).arg("--password-file").arg(&empty).arg("snapshots");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_failed();
}

#[test]
fn not_a_repository_exits_10() {
    let mut c = Coffer::new();
    let junk = c.dir("junk");
    std::fs::write(junk.join("config"), "this is not a coffer config").expect("write");
    std::fs::write(junk.join("notes.txt"), "hello").expect("write");
    let cases = [c.path("nothing-here"), c.dir("empty"), junk.clone()];
    for repo in cases {
        c.repo = repo.clone();
        for args in [&["snapshots"][..], &["check"][..], &["backup", "/etc/hostname"][..]] {
            let out = c.cmd(args);
            out.assert_one_line_error(10);
            let name = file_name(&repo);
            assert!(out.stderr().contains(&name), "message does not name the repository\n{out}");
        }
        assert!(
            !repo.join("keys").exists() && !repo.join("data").exists(),
            "a failed command created repository structure in {}",
            repo.display()
        );
    }
}

#[test]
fn init_on_an_existing_repository_fails_and_keeps_it() {
    let c = Coffer::new();
    c.init();
    let config = std::fs::read(c.repo.join("config")).expect("read config");
    let keys = c.repo_files("keys");
    let out = c.cmd(&["init"]);
    out.assert_one_line_error(1);
    assert_eq!(std::fs::read(c.repo.join("config")).expect("read config"), config);
    assert_eq!(c.repo_files("keys"), keys, "init added or removed key files");
    c.ok(&["snapshots"]);
}

/// Whether init accepts a non-empty folder is a policy choice; destroying its files is not.
#[test]
fn init_in_a_non_empty_directory_keeps_its_files() {
    let mut c = Coffer::new();
    let dir = c.dir("has-files");
    std::fs::write(dir.join("precious.txt"), "do not touch").expect("write");
    c.repo = dir.clone();
    c.cmd(&["init"]).assert_no_panic();
    assert_eq!(std::fs::read(dir.join("precious.txt")).expect("read"), b"do not touch");
}

#[test]
fn unknown_snapshot_is_one_clear_error() {
    let c = Coffer::new();
    c.init();
    let out = c.cmd(&["ls", "latest"]);
    out.assert_one_line_error(1);
    let target = c.path("t");
    let out = c.restore_out("0123abcd", &target, &[]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("0123abcd"), "{out}");
    assert!(!target.join("anything").exists());
}

#[test]
fn missing_password_without_a_terminal_fails_cleanly() {
    let c = Coffer::new();
    c.init();
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).arg("snapshots");
    let out = run(cmd, std::time::Duration::from_secs(30));
    out.assert_failed();
    assert_ne!(out.code(), Some(0));
}
