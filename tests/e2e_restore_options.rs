//! End-to-end: restore `--dry-run`, `--overwrite always|if-changed|if-newer|never`, `--verify`,
//! `--iinclude`/`--iexclude`.

mod common;

use std::path::{Path, PathBuf};

use common::tree::set_mtime;
use common::*;

/// A snapshot of `src/` with `a.txt`, `b.txt` and `Docs/README.TXT`; returns the short id.
fn snapshot(c: &Coffer) -> (PathBuf, String) {
    c.init();
    let src = c.dir("src");
    std::fs::create_dir_all(src.join("Docs")).expect("mkdir");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(src.join("b.txt"), "bravo\n").expect("write");
    std::fs::write(src.join("Docs/README.TXT"), "read me\n").expect("write");
    let v = c.backup(&[&src]);
    (src, string(&v, "short_id"))
}

fn spec(id: &str, src: &Path) -> String {
    format!("{id}:{}", src.display())
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    files_under(dir, &mut out);
    let mut names: Vec<String> =
        out.iter().map(|p| p.strip_prefix(dir).expect("under dir").display().to_string()).collect();
    names.sort();
    names
}

#[test]
fn dry_run_lists_what_it_would_write_and_writes_nothing() {
    let c = Coffer::new();
    let (src, id) = snapshot(&c);
    let target = c.path("out");
    let out = c.restore_with(&spec(&id, &src), &target, &["--dry-run"]);
    assert!(!target.exists(), "a dry run created the target");
    let listed: Vec<&str> = out.stdout.split(|&b| b == b'\n').filter_map(|l| std::str::from_utf8(l).ok()).collect();
    for name in ["a.txt", "b.txt", "Docs/", "Docs/README.TXT"] {
        let line = format!("would write {}", target.join(name).display());
        assert!(listed.iter().any(|l| *l == line), "{line:?} not listed\n{out}");
    }
    assert!(out.stdout().contains("nothing was written"), "{out}");

    // JSON: the same plan, as data.
    let json = c.cmd(&["--json", "restore", &spec(&id, &src), "--target", target.to_str().expect("utf-8"), "-n"]);
    json.assert_code(0);
    let v = json.json();
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(num(&v, "files"), 3, "{v}");
    assert_eq!(v["planned"].as_array().map(Vec::len), Some(4), "{v}");
    assert!(!target.exists());

    // Over an earlier restore with the policy `never`, nothing would be written.
    c.restore(&spec(&id, &src), &target);
    let again = c.restore_with(&spec(&id, &src), &target, &["--dry-run", "--overwrite", "never"]);
    assert!(!again.stdout().lines().any(|l| l.starts_with("would write ")), "{again}");
    assert!(again.stdout().contains("3 kept"), "{again}");
}

#[test]
fn overwrite_policies_and_verify() {
    let c = Coffer::new();
    let (src, id) = snapshot(&c);
    let target = c.path("out");
    let snap = spec(&id, &src);
    let out = c.restore_with(&snap, &target, &["--verify"]);
    assert!(out.stdout().contains("3 files read back and verified"), "{out}");

    // a.txt: changed content, same size and time as the snapshot's ("if-changed" keeps it).
    // b.txt: changed and newer. Docs/README.TXT: removed.
    let a = target.join("a.txt");
    let b = target.join("b.txt");
    let backed_up_mtime = std::fs::metadata(src.join("a.txt")).expect("stat");
    std::fs::write(&a, "ALPHA\n").expect("write");
    std::fs::write(&b, "BRAVO!\n").expect("write");
    {
        use std::os::unix::fs::MetadataExt;
        set_mtime(&a, backed_up_mtime.mtime(), backed_up_mtime.mtime_nsec());
        set_mtime(&b, backed_up_mtime.mtime() + 3600, 0);
    }
    std::fs::remove_file(target.join("Docs/README.TXT")).expect("rm");

    // never: only the missing file comes back.
    c.restore_with(&snap, &target, &["--overwrite", "never"]);
    assert_eq!(std::fs::read_to_string(&a).expect("a"), "ALPHA\n");
    assert_eq!(std::fs::read_to_string(&b).expect("b"), "BRAVO!\n");
    assert_eq!(std::fs::read_to_string(target.join("Docs/README.TXT")).expect("readme"), "read me\n");

    // if-newer: b.txt at the target is newer than the snapshot's: kept.
    c.restore_with(&snap, &target, &["--overwrite", "if-newer"]);
    assert_eq!(std::fs::read_to_string(&b).expect("b"), "BRAVO!\n");

    // if-changed: b.txt differs in size and time: replaced; a.txt looks unchanged: kept, and
    // --verify finds that its content is not the snapshot's (exit 1, the file named).
    let out = c.restore_out(&snap, &target, &["--overwrite", "if-changed", "--verify"]);
    out.assert_code(1);
    assert_eq!(std::fs::read_to_string(&b).expect("b"), "bravo\n");
    assert_eq!(std::fs::read_to_string(&a).expect("a"), "ALPHA\n");
    let err = out.stderr();
    assert!(err.contains(&format!("error: {}: verify: content differs", a.display())), "{out}");
    assert!(err.contains("coffer: --verify: 1 file is not as in the snapshot"), "{out}");

    // always (the default, as in restic): everything is as in the snapshot again.
    let out = c.restore_with(&snap, &target, &["--verify"]);
    assert!(out.stdout().contains("3 files read back and verified"), "{out}");
    assert_eq!(std::fs::read_to_string(&a).expect("a"), "alpha\n");
}

#[test]
fn iinclude_and_iexclude_ignore_case() {
    let c = Coffer::new();
    let (src, id) = snapshot(&c);
    let snap = spec(&id, &src);

    let inc = c.path("inc");
    c.restore_with(&snap, &inc, &["--iinclude", "*.txt"]);
    assert_eq!(files(&inc), ["Docs/README.TXT", "a.txt", "b.txt"]);
    let case_sensitive = c.path("inc-cs");
    c.restore_with(&snap, &case_sensitive, &["--include", "*.TXT"]);
    assert_eq!(files(&case_sensitive), ["Docs/README.TXT"]);

    let exc = c.path("exc");
    c.restore_with(&snap, &exc, &["--iexclude", "readme.txt"]);
    assert_eq!(files(&exc), ["a.txt", "b.txt"]);

    // An --iinclude that matches nothing fails and says which pattern.
    let none = c.path("none");
    let out = c.restore_out(&snap, &none, &["--iinclude", "*.PDF"]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("matches --iinclude *.PDF"), "{out}");
}
