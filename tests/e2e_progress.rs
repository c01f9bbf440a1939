//! End-to-end: progress and listing. Logs and pipes get plain lines (no bar, no control
//! characters); a terminal gets the bar; `backup -v` lists new and changed files; the summary
//! says how long it took.

mod common;

use std::process::Command;

use common::*;

fn control_characters(text: &str) -> Vec<char> {
    text.chars().filter(|&c| c.is_control() && c != '\n' && c != '\t').collect()
}

#[test]
fn output_to_a_pipe_has_no_control_characters() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    common::tree::write_random(&src.join("big.bin"), 5, 2 << 20);
    std::fs::write(src.join("small.txt"), "small\n").expect("write");
    let backup = c.ok(&["backup", "-v", src.to_str().expect("utf-8")]);
    let target = c.path("out");
    let restore = c.restore(&format!("latest:{}", src.display()), &target);
    for out in [&backup, &restore] {
        let found = control_characters(&out.all());
        assert!(found.is_empty(), "control characters {found:?} in output to a pipe\n{out}");
        assert!(!out.stderr().contains("backing up") && !out.stderr().contains("restoring"), "a bar on a pipe\n{out}");
    }
    let saved = backup.stdout().lines().find(|l| l.starts_with("snapshot ")).unwrap_or_default().to_string();
    assert!(saved.contains(" saved in ") && saved.ends_with(" s"), "no elapsed time: {saved:?}\n{backup}");
    assert!(restore.stdout().contains(" in "), "no elapsed time\n{restore}");
}

#[test]
fn verbose_backup_lists_new_and_changed_files() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    for name in ["keep.txt", "edit.txt"] {
        std::fs::write(src.join(name), name).expect("write");
    }
    // Old enough for the files cache to trust them next time.
    common::tree::set_times_recursively(&src, 1_600_000_000);
    c.backup(&[&src]);
    std::fs::write(src.join("edit.txt"), "edited, and longer\n").expect("write");
    std::fs::write(src.join("added.txt"), "added\n").expect("write");
    let out = c.ok(&["backup", "-v", src.to_str().expect("utf-8")]);
    let lines: Vec<String> = out.stdout().lines().map(str::to_string).collect();
    let changed = format!("changed {}", src.join("edit.txt").display());
    let new = format!("new     {}", src.join("added.txt").display());
    assert!(lines.contains(&changed), "{changed:?} not listed\n{out}");
    assert!(lines.contains(&new), "{new:?} not listed\n{out}");
    assert!(!out.stdout().contains("keep.txt"), "an unmodified file was listed\n{out}");
    // Without -v, or with --json, no listing.
    std::fs::write(src.join("added2.txt"), "added\n").expect("write");
    let quiet = c.ok(&["backup", src.to_str().expect("utf-8")]);
    assert!(!quiet.stdout().contains("added2.txt"), "{quiet}");
    std::fs::write(src.join("added3.txt"), "added\n").expect("write");
    let json = c.ok(&["backup", "-v", "--json", src.to_str().expect("utf-8")]);
    json.json();
}

#[test]
fn a_terminal_gets_the_bar() {
    if Command::new("script").arg("--version").output().map_or(true, |o| !o.status.success()) {
        skip("a_terminal_gets_the_bar", "script (util-linux) is missing; run tests/install-deps.sh");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    common::tree::write_random(&src.join("big.bin"), 6, 4 << 20);
    let inner = c.command();
    // `script` gives the command a pseudo-terminal; its output is what that terminal showed.
    let mut cmd = Command::new("script");
    cmd.args(["-qfec"]).arg(format!("'{}' backup '{}'", inner.get_program().to_string_lossy(), src.display()));
    cmd.arg("/dev/null");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    let shown = out.stdout();
    assert!(shown.contains("backing up"), "no progress bar on a terminal\n{out}");
    assert!(shown.contains("\u{1b}["), "the bar is not redrawn in place\n{out}");
    assert!(shown.contains(" saved in "), "{out}");
}
