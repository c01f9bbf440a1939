//! End-to-end: Ctrl-C and SIGTERM. A restore stops inside a large file (exit 130/143, a line
//! saying what was left); a backup stuck in a read that never returns exits at the second
//! signal, marks its lock ended, and a prune right after does not wait for it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer_mount::memory::{Fault, MemorySource, Meta};
use common::tree::{write_random, MIB};
use common::*;
use nix::sys::signal::{kill, Signal};

const LARGE: u64 = 48 * MIB;

/// Starts `restore` of a one-large-file snapshot and delivers `sig` while the file is being
/// written: the process is stopped as soon as the file appears, signalled, then continued, so
/// the signal lands mid-file however fast the machine is.
fn interrupt_restore(c: &Coffer, src: &Path, sig: Signal) -> (Out, std::path::PathBuf) {
    let target = c.dir("target");
    let restored = restored_path(&target, src).join("large.bin");
    let cpu = first_allowed_cpu().to_string();
    let mut cmd = c.wrapped(&["taskset", "-c", &cpu]);
    cmd.args(["restore", "latest", "--target"]).arg(&target);
    let mut running = Running::start(cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !restored.exists() {
        assert!(!running.finished(), "restore ended before the large file appeared");
        assert!(Instant::now() < deadline, "the large file never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = running.pid();
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    kill(pid, sig).expect("signal");
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    (running.wait(Duration::from_secs(60)), restored)
}

fn large_source(c: &Coffer) -> std::path::PathBuf {
    let src = c.dir("src");
    write_random(&src.join("large.bin"), 7, LARGE);
    src
}

#[test]
fn sigint_stops_a_restore_inside_a_large_file() {
    let c = Coffer::new();
    c.init();
    let src = large_source(&c);
    c.backup(&[&src]);
    let (out, restored) = interrupt_restore(&c, &src, Signal::SIGINT);
    assert_eq!(out.code(), Some(130), "expected exit 130 after SIGINT\n{out}");
    out.assert_no_panic();
    assert!(out.stderr().contains("stopped after") && out.stderr().contains("run the same restore again"), "{out}");
    let original = std::fs::read(src.join("large.bin")).expect("read source");
    let partial = std::fs::read(&restored).unwrap_or_default();
    assert_ne!(partial, original, "the whole file was restored despite the signal");

    // The same restore again finishes the job.
    let target = c.path("target");
    c.restore("latest", &target);
    assert_eq!(std::fs::read(&restored).expect("read restored"), original);
}

#[test]
fn sigterm_stops_a_restore_with_exit_143() {
    let c = Coffer::new();
    c.init();
    let src = large_source(&c);
    c.backup(&[&src]);
    let (out, _) = interrupt_restore(&c, &src, Signal::SIGTERM);
    assert_eq!(out.code(), Some(143), "expected exit 143 after SIGTERM\n{out}");
    out.assert_no_panic();
}

/// A source file whose read blocks (a FUSE file whose only block takes 30 s to arrive): the
/// first SIGINT cannot stop the read; the second exits at once. The lock is marked ended, so a
/// prune right after finishes instead of waiting half an hour for a dead backup.
#[test]
fn second_sigint_stops_a_backup_blocked_in_a_read_and_prune_does_not_wait() {
    if !is_root() {
        panic!("this test mounts a FUSE filesystem and must run as root (/dev/fuse is 0600 here)");
    }
    let c = Coffer::new();
    c.init();
    // Something for prune to do: a forgotten snapshot's data.
    let old = c.dir("old");
    write_random(&old.join("old.bin"), 3, MIB);
    c.backup(&[&old]);
    let kept = c.dir("kept");
    std::fs::write(kept.join("k.txt"), "kept").expect("write");
    c.backup(&[&kept]);
    c.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    assert_eq!(c.snapshots().len(), 1);

    let source = MemorySource::new();
    let root = source.root_id();
    let stuck = source.file(root, "stuck.bin", &[7u8; 4096], 4096, Meta::new());
    let key = source.file_blocks(stuck)[0];
    source.set_fault(&key, Some(Fault::Delay(Duration::from_secs(30))));
    let mountpoint = c.dir("fuse");
    let options = coffer_mount::MountOptions { read_timeout: Duration::from_secs(60), ..Default::default() };
    let mount = coffer_mount::spawn(source.clone(), &mountpoint, &options).expect("mount the test filesystem");

    let mut cmd = c.command();
    cmd.arg("backup").arg(&mountpoint);
    let mut running = Running::start(cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    while source.block_reads(&key) == 0 {
        assert!(!running.finished(), "backup ended before reading the stuck file");
        assert!(Instant::now() < deadline, "backup never read the stuck file");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Signals sent back to back may merge into one: keep pressing Ctrl-C, as a user would,
    // until it exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running.finished() && Instant::now() < deadline {
        running.signal(Signal::SIGINT);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = running.wait(Duration::from_secs(5));
    assert_eq!(out.code(), Some(130), "expected exit 130 after two SIGINTs\n{out}");
    assert!(out.stderr().contains("second signal"), "{out}");
    assert_eq!(c.snapshots().len(), 1, "the stopped backup wrote a snapshot");
    // Every backup's lock, the stopped one's included, ends with its ended marker.
    let names: Vec<String> = c.repo_files("locks").iter().map(|p| file_name(p)).collect();
    let started: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix("-00000000")).collect();
    assert!(!started.is_empty(), "no lock markers: {names:?}");
    for session in started {
        assert!(names.contains(&format!("{session}-99999999")), "session {session} has no ended marker: {names:?}");
    }

    // Prune finishes (exit 0) without waiting for the stopped backup.
    let out = c.ok(&["prune", "--json"]);
    let report = out.json();
    assert_eq!(report["waiting_for"].as_array().map(Vec::len), Some(0), "{report}");
    assert!(report["packs_deleted"].as_u64().unwrap_or(0) >= 1, "{report}");
    drop(mount);
}
