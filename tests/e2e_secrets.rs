//! End-to-end: no secret is ever written down (DESIGN §1). After init, backup, restore and
//! check run verbosely, the passphrase appears in no file of the repository, the local
//! database folder or the home folder, and in none of the output.

mod common;

use common::*;

#[test]
fn the_passphrase_is_written_nowhere() {
    let mut c = Coffer::new();
    c.password = "s3cret-passphrase-7f2a9c1e-never-stored".into();
    let mut outputs = Vec::new();
    outputs.push(c.ok(&["init", "-v"]));
    let src = c.dir("src");
    std::fs::write(src.join("file.txt"), "content\n").expect("write");
    outputs.push(c.ok(&[std::ffi::OsStr::new("backup"), std::ffi::OsStr::new("-vv"), src.as_os_str()]));
    let target = c.dir("restore");
    outputs.push(c.restore_with("latest", &target, &["-v"]));
    outputs.push(c.ok(&["check", "--read-data", "-vv"]));
    outputs.push(c.ok(&["snapshots", "-v"]));
    let pw = c.password_file();
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).env("COFFER_CACHE_DIR", &c.cache).arg("-vv").arg("stats");
    cmd.arg("--password-file").arg(&pw);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    outputs.push(out);

    let secret = c.password.as_bytes();
    for out in &outputs {
        assert!(!contains(&out.stdout, secret) && !contains(&out.stderr, secret), "the passphrase was printed\n{out}");
    }
    let mut files = Vec::new();
    for dir in [&c.repo, &c.cache, &c.home] {
        files_under(dir, &mut files);
    }
    assert!(files.iter().any(|f| f.starts_with(&c.cache)), "no local database was written");
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        assert!(!contains(&bytes, secret), "the passphrase is stored in {}", f.display());
    }
}
