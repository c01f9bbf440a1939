//! The crash matrix: backups killed with SIGKILL at named points (through `COFFER_CRASH_AT`,
//! see `src/crashpoint.rs`) and at random moments, over a hundred times in one run. After each
//! kill: `check --read-data` finds no error, the next backup completes, and at the end every
//! snapshot that ever completed (including those written just before a kill) restores
//! bit-identically to the source as it was when that snapshot was taken.
//!
//! Every named point is tried first, then named points and random moments alternate.
//! Crash points exist only in debug builds, which is what the test suite runs. The trees are
//! tiny, so each kill costs a few process starts; the cost is mostly the passphrase KDF.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tree::{write_random, write_text};
use common::*;
use nix::sys::signal::Signal;

/// Every named point, with the hits worth trying (a backup of a small change uploads one data
/// and one tree pack, and commits to the local database several times).
const POINTS: &[&str] = &[
    "store-before-rename:1",
    "store-before-rename:2",
    "backup-after-pack-upload:1",
    "backup-after-pack-upload:2",
    "backup-before-index-write",
    "backup-after-index-write",
    "backup-before-snapshot-write",
    "backup-after-snapshot-write",
    "db-commit:1",
    "db-commit:2",
    "db-commit:3",
    "db-commit:4",
    "db-commit:5",
    "db-commit:7",
];

/// Kills, named and random, that the matrix must reach: over a hundred in the long lane
/// (`COFFER_LONG_TESTS=1`, which `tests/run.sh` and CI set), each point once and a few random
/// ones in the fast lane.
fn kills_wanted() -> usize {
    if std::env::var("COFFER_LONG_TESTS").is_ok_and(|v| v == "1") {
        100
    } else {
        POINTS.len() + 6
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic from the seed printed at the start, so a failure replays.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Matrix {
    c: Coffer,
    src: PathBuf,
    /// Snapshot id → copy of the source as it was when that snapshot was taken.
    expected: BTreeMap<String, PathBuf>,
    copies: usize,
    rng: Rng,
    step: u64,
}

impl Matrix {
    /// A small change: one new incompressible file (new data pack), one rewritten text file
    /// (new tree pack), now and then a file removed.
    fn mutate(&mut self) {
        self.step += 1;
        let len = 1024 + self.rng.below(48 * 1024);
        write_random(&self.src.join(format!("new-{:04}.bin", self.step)), 5000 + self.step, len);
        write_text(&self.src.join("notes/changing.txt"), 100 + self.rng.below(5000));
        if self.step.is_multiple_of(7) {
            let _ = std::fs::remove_file(self.src.join(format!("new-{:04}.bin", self.step - 3)));
        }
    }

    fn snapshot_ids(&self) -> Vec<String> {
        self.c.snapshots().iter().map(|s| string(s, "id")).collect()
    }

    /// Records the source's current state for snapshots not seen before.
    fn remember_new_snapshots(&mut self) {
        let new: Vec<String> = self.snapshot_ids().into_iter().filter(|id| !self.expected.contains_key(id)).collect();
        if new.is_empty() {
            return;
        }
        self.copies += 1;
        let copy = self.c.path(&format!("expected/{:04}", self.copies));
        std::fs::create_dir_all(copy.parent().expect("has a parent")).expect("create expected/");
        let st = Command::new("cp").arg("-a").arg(&self.src).arg(&copy).status().expect("run cp -a");
        assert!(st.success(), "cp -a failed");
        for id in new {
            self.expected.insert(id, copy.clone());
        }
    }

    /// After a kill: the repository checks clean, byte for byte.
    fn assert_clean(&self, what: &str) {
        let out = self.c.cmd(&["check", "--read-data"]);
        assert_eq!(out.code(), Some(0), "check --read-data after {what}:\n{out}");
        out.assert_no_panic();
    }

    fn backup_killed_at(&self, point: &str) -> Out {
        let mut cmd = self.c.command();
        cmd.env("COFFER_CRASH_AT", point).arg("backup").arg(&self.src);
        run(cmd, DEFAULT_TIMEOUT)
    }

    fn backup_killed_after(&self, delay: Duration) -> Out {
        let mut cmd = self.c.command();
        cmd.arg("backup").arg(&self.src);
        let mut running = Running::start(cmd);
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && !running.finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !running.finished() {
            running.signal(Signal::SIGKILL);
        }
        running.wait(DEFAULT_TIMEOUT)
    }
}

fn killed(out: &Out) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(Signal::SIGKILL as i32)
}

#[test]
fn kill_9_at_every_crash_point_and_at_random_moments() {
    let seed = std::env::var("COFFER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9 + 1);
    eprintln!("crash matrix seed {seed} (COFFER_CRASH_SEED={seed} replays it)");
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::create_dir(src.join("notes")).expect("mkdir notes");
    write_text(&src.join("notes/changing.txt"), 300);
    write_text(&src.join("notes/stable.txt"), 20_000);
    write_random(&src.join("stable.bin"), 1, 200 * 1024);
    let mut m = Matrix { c, src, expected: BTreeMap::new(), copies: 0, rng: Rng(seed | 1), step: 0 };
    m.c.backup(&[&m.src]);
    m.remember_new_snapshots();

    let mut kills = 0;
    let mut named_kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = 0usize;
    // Random delays start wide and adapt to how long a backup takes here.
    let mut backup_time = Duration::from_millis(400);
    let wanted = kills_wanted();
    while kills < wanted {
        round += 1;
        assert!(round < 4 * wanted, "only {kills} of {round} attempted backups were killed");
        m.mutate();
        let (what, out) = if round <= POINTS.len() || round.is_multiple_of(2) {
            let point = POINTS[(round - 1) % POINTS.len()];
            (point.to_string(), m.backup_killed_at(point))
        } else {
            let delay = Duration::from_micros(m.rng.below(backup_time.as_micros() as u64 + 1));
            (format!("a random moment ({delay:?} in)"), m.backup_killed_after(delay))
        };
        if killed(&out) {
            kills += 1;
            if let Some(point) = POINTS.iter().find(|p| **p == what) {
                *named_kills.entry(point).or_default() += 1;
            }
        } else {
            out.assert_code(0);
            if what.starts_with('a') {
                backup_time = out.elapsed;
            }
        }
        m.remember_new_snapshots();
        m.assert_clean(&what);
        let next = m.c.backup(&[&m.src]);
        assert!(!next["incomplete"].as_bool().unwrap_or(true), "backup after {what} is incomplete: {next}");
        m.remember_new_snapshots();
    }
    eprintln!("{kills} kills in {round} rounds; named: {named_kills:?}");
    for point in POINTS {
        assert!(named_kills.contains_key(point), "crash point {point} was never reached: {named_kills:?}");
    }

    // Every snapshot ever completed restores exactly as its source was.
    let ids: Vec<String> = m.snapshot_ids();
    assert_eq!(ids.len(), m.expected.len(), "snapshots listed vs remembered");
    for (i, id) in ids.iter().enumerate() {
        let target = m.c.path(&format!("restored/{i:04}"));
        m.c.restore(id, &target);
        let expected = &m.expected[id];
        assert_trees_equal(expected, &restored_path(&target, &m.src));
        std::fs::remove_dir_all(&target).expect("clean restore");
    }
    m.assert_clean("the whole matrix");
}
