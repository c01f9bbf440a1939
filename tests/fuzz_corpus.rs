//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the decoder entry
//! points the fuzzers use, on stable Rust and without libFuzzer: an input that once crashed a
//! decoder, or that reached deep into one, keeps being checked in CI.

use std::path::Path;

use coffer::fuzz::{seeds, TARGETS};

#[test]
fn every_corpus_file_decodes_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "fuzz target {name} panicked on {}", path.display());
            count += 1;
        }
        assert!(count > 0, "corpus {} is empty", dir.display());
        replayed += count;
    }
    eprintln!("replayed {replayed} corpus files");
}

#[test]
fn seeds_decode_without_panicking() {
    for (name, seed) in seeds() {
        let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).expect("seed for a known target");
        target(&seed);
    }
}

/// Writes the seeds into `fuzz/corpus/` (run with `--ignored` when the formats change).
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (i, (name, seed)) in seeds().into_iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
    }
}
