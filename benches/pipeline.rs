//! Per-MiB throughput of each backup stage and of the whole pipeline.
//!
//! `cargo bench --bench pipeline` (a few minutes). Each group reports bytes/s through
//! `Throughput::Bytes`, so stages compare directly with each other and with the end-to-end
//! figures of `benches/compare.sh`. Sample sizes are kept small on purpose; add
//! `-- --sample-size N` for tighter intervals.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use coffer::archiver::{backup, BackupOptions};
use coffer::chunker::{Chunker, Gear};
use coffer::crypto::{IdKey, KdfParams, SymKey};
use coffer::format::config::{ChunkerParams, GearKeying};
use coffer::format::pack::compress;
use coffer::repo::{OpenOptions, Repository};
use coffer::store::Store;

const MIB: usize = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, no dedup within the buffer.
fn random_data(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like data: words from a small vocabulary in pseudo-random order, in lines. Compresses
/// roughly like source code or documentation (zstd -3 gets about 3-4x), without repeating
/// whole blocks (which would make dedup or zstd's long matches flatter the figure).
fn text_data(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "backup",
        "repository",
        "snapshot",
        "chunk",
        "index",
        "pack",
        "file",
        "restore",
        "encrypt",
        "compress",
        "of",
        "and",
        "to",
        "a",
        "in",
        "is",
        "for",
        "with",
        "data",
        "fn",
        "let",
        "mut",
        "return",
        "struct",
        "impl",
        "self",
        "Result",
        "Ok",
        "Err",
        "0x7f",
        "{",
        "}",
        "(",
        ");",
        "//",
        "=",
        "==",
        "if",
        "else",
        "match",
        "=>",
        "Some",
        "None",
        "usize",
        "u64",
    ];
    let rand = random_data(len / 2 + 64, seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        let r = rand[i % rand.len()] as usize | (rand[(i + 1) % rand.len()] as usize) << 8;
        i += 2;
        out.extend_from_slice(WORDS[r % WORDS.len()].as_bytes());
        out.push(if r.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = random_data(16 * MIB, 1);
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    let gear = Gear::new(ChunkerParams::DEFAULT, GearKeying::KeyedTable, &IdKey::random());
    group.bench_function("fastcdc_keyed_16MiB", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(&data[..], &gear);
            let mut n = 0usize;
            while let Some(chunk) = chunker.next_chunk().unwrap() {
                n += chunk.len();
            }
            assert_eq!(n, data.len());
            black_box(n)
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let key = IdKey::random();
    let data = random_data(4 * MIB, 2);
    let mut group = c.benchmark_group("hashing");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("blake3_keyed_4MiB", |b| b.iter(|| black_box(key.blob_id(black_box(&data)))));
    // A typical small file (most of /usr/share is under 16 KiB).
    let small = &data[..8192];
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("blake3_keyed_8KiB", |b| b.iter(|| black_box(key.blob_id(black_box(small)))));
    group.finish();
}

fn compression(c: &mut Criterion) {
    let text = text_data(4 * MIB, 3);
    let random = random_data(4 * MIB, 4);
    let mut group = c.benchmark_group("compression");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("zstd3_text_4MiB", |b| b.iter(|| black_box(compress(black_box(&text), 3))));
    group.throughput(Throughput::Bytes(random.len() as u64));
    group.bench_function("zstd3_random_4MiB", |b| b.iter(|| black_box(compress(black_box(&random), 3))));
    group.finish();
    let ratio = text.len() as f64 / compress(&text, 3).len() as f64;
    eprintln!("compression: text-like data compresses {ratio:.2}x at level 3");
}

fn encryption(c: &mut Criterion) {
    let key = SymKey::random();
    let data = random_data(4 * MIB, 5);
    let aad = [7u8; 32];
    let mut group = c.benchmark_group("encryption");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("aes256gcm_seal_4MiB", |b| b.iter(|| black_box(key.seal(black_box(&data), &aad))));
    let sealed = key.seal(&data, &aad);
    group.bench_function("aes256gcm_open_4MiB", |b| b.iter(|| black_box(key.open(black_box(&sealed), &aad).unwrap())));
    group.finish();
}

/// A source folder of ~64 MiB: a few large files (half random, half text-like) and 512 small
/// text files, so both the large-file and the per-file paths are exercised.
fn make_source(dir: &Path) -> u64 {
    let mut total = 0u64;
    for i in 0..3u64 {
        let data = if i % 2 == 0 { random_data(16 * MIB, 10 + i) } else { text_data(16 * MIB, 10 + i) };
        std::fs::write(dir.join(format!("big{i}.bin")), &data).unwrap();
        total += data.len() as u64;
    }
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let text = text_data(16 * MIB, 20);
    for (i, piece) in text.chunks(32 * 1024).enumerate() {
        let mut f = std::fs::File::create(small.join(format!("f{i:04}.txt"))).unwrap();
        f.write_all(piece).unwrap();
        total += piece.len() as u64;
    }
    total
}

fn fresh_repo(cache: &Path) -> Arc<Repository> {
    let options =
        OpenOptions { data_dir: cache.to_path_buf(), kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 } };
    Arc::new(Repository::init(Store::memory().unwrap(), b"pw", &options).unwrap())
}

fn whole_pipeline(c: &mut Criterion) {
    // Not in /tmp: the memory store spools its packs there, and a folder above the source that
    // changes is a new prefix tree, stored and indexed by every backup: the unchanged re-backup
    // would then list one more index file each iteration and time the bench's own history.
    let source = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let total = make_source(source.path());
    let options = BackupOptions { paths: vec![source.path().to_path_buf()], ..Default::default() };
    let interrupted = AtomicBool::new(false);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(total));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(2));

    // Initial backup into a fresh in-memory repository (source pages stay cached: this
    // measures the CPU side of the pipeline, not the disk).
    group.bench_function("backup_initial_64MiB_memory_store", |b| {
        b.iter_batched(
            || {
                let cache = tempfile::tempdir().unwrap();
                let repo = fresh_repo(cache.path());
                (cache, repo)
            },
            |(cache, repo)| {
                let outcome = backup(&repo, &options, &interrupted).unwrap();
                assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
                (cache, repo)
            },
            BatchSize::PerIteration,
        )
    });

    // Unchanged re-backup: the files cache should make this read no file content.
    let cache = tempfile::tempdir().unwrap();
    let repo = fresh_repo(cache.path());
    backup(&repo, &options, &interrupted).unwrap();
    group.bench_function("backup_unchanged_64MiB_memory_store", |b| {
        b.iter(|| black_box(backup(&repo, &options, &interrupted).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, chunking, hashing, compression, encryption, whole_pipeline);
criterion_main!(benches);
