//! End-to-end: Coffer leaves folders that are not repositories alone. `--repo` on an ordinary
//! folder is "not a repository" without creating anything in it; `init` refuses a non-empty
//! folder that holds no repository; a failed `init` removes the folder it created.

mod common;

use common::*;

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_ordinary_folder_is_not_a_repository_and_stays_untouched() {
    let c = Coffer::new();
    let folder = c.dir("documents");
    std::fs::write(folder.join("letter.txt"), "dear").expect("write");
    let mut cmd = c.command();
    cmd.env("COFFER_REPOSITORY", &folder).arg("snapshots");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(10);
    assert_eq!(entries(&folder), ["letter.txt"], "the folder was changed");

    let src = c.dir("src");
    std::fs::write(src.join("f"), "x").expect("write");
    let mut cmd = c.command();
    cmd.env("COFFER_REPOSITORY", &folder).arg("backup").arg(&src);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(10);
    assert_eq!(entries(&folder), ["letter.txt"], "the folder was changed by backup");
}

#[test]
fn init_refuses_a_non_empty_folder_without_a_repository() {
    let c = Coffer::new();
    let folder = c.dir("documents");
    std::fs::write(folder.join("letter.txt"), "dear").expect("write");
    let mut cmd = c.command();
    cmd.env("COFFER_REPOSITORY", &folder).arg("init");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_failed();
    assert!(out.stderr().contains("not empty"), "{out}");
    assert_eq!(entries(&folder), ["letter.txt"]);

    // An empty folder is fine.
    let empty = c.dir("empty");
    let mut cmd = c.command();
    cmd.env("COFFER_REPOSITORY", &empty).arg("init");
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);
    assert!(empty.join("config").is_file());
}

#[test]
fn a_failed_init_removes_the_folder_it_created() {
    let c = Coffer::new();
    // No password source and no terminal: init fails after the folder would be created.
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).env("COFFER_CACHE_DIR", &c.cache).arg("init");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_failed();
    assert!(!c.repo.exists(), "a failed init left {}", c.repo.display());
    // The folder that existed before is kept, even when init fails.
    let existing = c.dir("existing");
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &existing).env("COFFER_CACHE_DIR", &c.cache).arg("init");
    run(cmd, DEFAULT_TIMEOUT).assert_failed();
    assert!(existing.is_dir());
}
