//! End-to-end: a fatal error is one line that says its cause once. Our error types quote their
//! cause and chain it too, and contexts quote what they wrap; these messages once repeated the
//! OS error two or three times ("…: Not a directory (os error 20): Not a directory (os error 20)").

mod common;

use common::*;

/// The one stderr line of a failed command, which must say each OS error at most once.
fn fatal_line(out: &Out) -> String {
    out.assert_one_line_error(1);
    let line = out.stderr().trim_end().to_string();
    if let Some(at) = line.find("(os error") {
        assert!(!line[at + 1..].contains("(os error"), "the OS error is repeated:\n{line}");
    }
    line
}

#[test]
fn missing_source() {
    let c = Coffer::new();
    c.init();
    let missing = c.path("gone");
    let out = c.backup_out(&[&missing], &[]);
    assert_eq!(
        fatal_line(&out),
        format!("coffer: source {}: No such file or directory (os error 2)", missing.display())
    );
}

#[test]
fn restore_target_that_cannot_be_made() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "f\n").expect("write");
    c.backup(&[&src]);
    let file = c.path("a-file");
    std::fs::write(&file, "not a folder\n").expect("write");
    let target = file.join("r");
    let out = c.restore_out("latest", &target, &[]);
    assert_eq!(fatal_line(&out), format!("coffer: restore target {}: Not a directory (os error 20)", target.display()));
}

#[test]
fn local_database_folder_that_cannot_be_made() {
    let c = Coffer::new();
    c.init();
    let file = c.path("a-file");
    std::fs::write(&file, "not a folder\n").expect("write");
    let cache = file.join("cache");
    let out = c.cmd(&["--cache-dir", cache.to_str().expect("utf-8"), "snapshots"]);
    let line = fatal_line(&out);
    let prefix = format!("coffer: local database: cannot create directory {}/", cache.display());
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.ends_with(": Not a directory (os error 20)"), "{line}");
    assert_eq!(line.matches("local database").count(), 1, "{line}");
}

#[test]
fn unreadable_lists_and_password_files() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    let nope = c.path("nope");
    let n = nope.display();
    let out = c.cmd(&["backup", "--exclude-file", nope.to_str().expect("utf-8"), src.to_str().expect("utf-8")]);
    assert_eq!(fatal_line(&out), format!("coffer: reading patterns from {n}: No such file or directory (os error 2)"));
    let out = c.cmd(&["backup", "--files-from", nope.to_str().expect("utf-8")]);
    assert_eq!(
        fatal_line(&out),
        format!("coffer: reading the list of paths {n}: No such file or directory (os error 2)")
    );
    let mut cmd = c.command();
    cmd.env_remove("COFFER_PASSWORD").args(["--password-file", nope.to_str().expect("utf-8"), "snapshots"]);
    let out = run(cmd, DEFAULT_TIMEOUT);
    let line = fatal_line(&out);
    assert_eq!(line.matches(&n.to_string()).count(), 1, "the file is named more than once:\n{line}");
    assert!(line.ends_with("No such file or directory (os error 2)"), "{line}");
}

/// A tmpfs this test mounted; unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_during_restore() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    common::tree::write_random(&src.join("big.bin"), 3, 1 << 20);
    c.backup(&[&src]);
    let small = c.dir("small");
    let mounted = is_root()
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&small)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        skip("full_disk_during_restore", "needs root to mount a small tmpfs");
        return;
    }
    let _guard = Tmpfs(small.clone());
    let target = small.join("r");
    let out = c.restore_out("latest", &target, &[]);
    let written = restored_path(&target, &src).join("big.bin");
    assert_eq!(
        fatal_line(&out),
        format!(
            "coffer: no space left on the restore target while writing {}; free space and run the restore again",
            written.display()
        )
    );
}
