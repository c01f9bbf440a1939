//! The storage seam, in-process through the library API:
//!
//! - one conformance suite run against the local folder, the in-memory store, S3 (moto_server),
//!   SFTP (sshd) and WebDAV (rclone), each server started by the test on 127.0.0.1;
//! - append-only by construction: backup, check, restore, orphan-pack adoption and snapshot
//!   listing through an OpenDAL layer that fails every delete and every overwrite;
//! - storage faults: a layer that fails a fraction of writes, reads and lists, truncates
//!   reads, or drops a write while reporting success. Backups succeed through retries or fail
//!   clearly; no snapshot ever references data that is not stored (check --read-data and a
//!   restore prove it); the next run succeeds.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coffer::archiver::{self, BackupOptions};
use coffer::commands::check::{self, CheckOptions, ReadData};
use coffer::commands::restore::{self, RestoreOptions};
use coffer::crypto::KdfParams;
use coffer::id::Id;
use coffer::layout as paths;
use coffer::repo::{OpenOptions, Repository};
use coffer::store::intercept::{temporary, Hooks, InterceptLayer, Request, Verdict};
use coffer::store::{Location, Store};
use common::servers::{S3Server, SftpServer, WebdavServer, S3_SECRET, S3_SECRET_ENV};
use common::{assert_trees_equal, make_tree, restored_path, tempdir, TreeOptions};
use opendal::{ErrorKind, Operator};

// ---------------------------------------------------------------------------------------------
// Conformance
// ---------------------------------------------------------------------------------------------

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left((i % 7) as u32)).collect()
}

/// What Coffer relies on from any store.
fn conformance(store: &Store) {
    // An empty repository.
    assert!(store.list(paths::DATA).expect("list missing folder").is_empty());
    assert!(store.list_ids(paths::INDEX).expect("list_ids missing folder").is_empty());
    assert_eq!(store.size(paths::CONFIG).expect("stat missing"), None);
    assert!(store.read(paths::CONFIG).expect_err("read missing").is_not_found());

    // Objects of several sizes in several folders.
    let pack = bytes(1, (1 << 20) + 13);
    let pack_id = Id::of_bytes(&pack);
    let pack_path = paths::pack(&pack_id);
    let index = bytes(2, 300);
    let index_id = Id::of_bytes(&index);
    let index_path = paths::in_dir(paths::INDEX, &index_id);
    store.write(paths::CONFIG, b"config bytes".to_vec()).expect("write config");
    store.write(&pack_path, pack.clone()).expect("write pack");
    store.write(&index_path, index.clone()).expect("write index");

    assert_eq!(store.read(paths::CONFIG).expect("read config"), b"config bytes");
    assert_eq!(store.read(&pack_path).expect("read pack"), pack);
    assert_eq!(store.read_named(&index_path, &index_id).expect("read index"), index);
    let len = pack.len() as u64;
    assert_eq!(store.read_range(&pack_path, 0, 10).expect("range at 0"), pack[..10]);
    assert_eq!(store.read_range(&pack_path, len - 10, 10).expect("range at end"), pack[pack.len() - 10..]);
    assert_eq!(store.read_range(&pack_path, 4096, 65536).expect("range inside"), pack[4096..4096 + 65536]);
    assert!(store.read_range(&pack_path, len - 5, 10).is_err(), "a range past the end must fail, not come back short");
    assert!(store.read_range(&paths::pack(&Id::of_bytes(b"nope")), 0, 1).expect_err("missing").is_not_found());
    assert_eq!(store.size(&pack_path).expect("stat"), Some(len));

    // Listings: objects only (no folder entries), recursive through the fan-out, with sizes.
    assert_eq!(store.list(paths::DATA).expect("list data"), vec![(pack_path.clone(), len)]);
    assert_eq!(store.list_ids(paths::DATA).expect("list_ids data"), vec![(pack_id, len)]);
    assert_eq!(store.list_ids(paths::INDEX).expect("list_ids index"), vec![(index_id, 300)]);
    store.write("data/zz/stray-file", b"x".to_vec()).expect("write stray");
    assert_eq!(store.list(paths::DATA).expect("list").len(), 2);
    assert_eq!(store.list_ids(paths::DATA).expect("list_ids ignores stray names"), vec![(pack_id, len)]);

    // Writing an object again with the same bytes (a retried upload) is fine.
    store.write(&index_path, index.clone()).expect("write the same object again");
    assert_eq!(store.read(&index_path).expect("read"), index);

    // Spooled uploads, many at once, into many fan-out folders (WebDAV creates them with
    // MKCOL, which fails with 423 Locked when concurrent, and must be retried).
    let spool = store.spool_dir();
    std::fs::create_dir_all(&spool).expect("spool dir");
    let mut handles = Vec::new();
    let mut expected = Vec::new();
    for i in 0..12u8 {
        let content = bytes(10 + i, 200_000 + i as usize);
        let id = Id::of_bytes(&content);
        let spooled = spool.join(format!("conformance-{i}-{}", std::process::id()));
        std::fs::write(&spooled, &content).expect("spool");
        let file = std::fs::File::open(&spooled).expect("open spool");
        handles.push(store.spawn_publish(file, spooled.clone(), paths::pack(&id)));
        expected.push((id, content, spooled));
    }
    for handle in handles {
        store.wait(handle).expect("publish");
    }
    for (id, content, spooled) in &expected {
        assert_eq!(&store.read(&paths::pack(id)).expect("read published"), content);
        assert!(!spooled.exists(), "spool file {} left behind", spooled.display());
    }
    assert_eq!(store.list_ids(paths::DATA).expect("list").len(), 13);

    // Deleting (prune's business, not backup's): a missing object deletes fine.
    store.delete("data/zz/stray-file").expect("delete");
    assert_eq!(store.size("data/zz/stray-file").expect("stat deleted"), None);
    store.delete("data/zz/stray-file").expect("delete a missing object");
}

#[test]
fn conformance_local_folder() {
    let dir = tempdir();
    let store = Store::open(&Location::parse(&dir.path().join("repo").to_string_lossy(), &[]).unwrap(), true)
        .expect("open local");
    conformance(&store);
    let url = format!("file://{}", dir.path().join("repo2").display());
    conformance(&Store::open(&Location::parse(&url, &[]).unwrap(), true).expect("open file://"));
}

/// The in-memory store, on which the library's unit tests build their repositories, keeps
/// the same contract (issue 18).
#[test]
fn conformance_memory() {
    conformance(&Store::memory().expect("memory store"));
}

fn open_url(url: &str, options: &[String]) -> Store {
    let location = Location::parse(url, options).unwrap_or_else(|e| panic!("{url}: {e}"));
    Store::open(&location, false).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn s3_store(server: &S3Server, bucket: &str, prefix: &str) -> Store {
    std::env::set_var(S3_SECRET_ENV, S3_SECRET);
    let (url, options) = server.repo(bucket, prefix);
    open_url(&url, &options)
}

#[test]
fn conformance_s3() {
    let dir = tempdir();
    let server = S3Server::start(dir.path());
    server.bucket("conformance");
    conformance(&s3_store(&server, "conformance", "some/prefix"));
}

#[test]
fn conformance_sftp() {
    let dir = tempdir();
    let server = SftpServer::start(dir.path());
    for (key, value) in server.env() {
        std::env::set_var(key, value);
    }
    let store = open_url(&server.repo(&dir.path().join("on-server/repo")), &[]);
    conformance(&store);
    drop(store);
    assert!(dir.path().join("on-server/repo/config").is_file());
}

#[test]
fn conformance_webdav() {
    let dir = tempdir();
    let server = WebdavServer::start(dir.path());
    conformance(&open_url(&server.repo("dav/repo"), &[]));
    assert!(dir.path().join("webdav-root/dav/repo/config").is_file());
}

// ---------------------------------------------------------------------------------------------
// Layers for the tests
// ---------------------------------------------------------------------------------------------

/// Refuses every delete and every overwrite, as a bucket policy or Object Lock would, and
/// counts the attempts.
#[derive(Debug)]
struct AppendOnly {
    root: PathBuf,
    deletes: AtomicU64,
    overwrites: AtomicU64,
    renames: AtomicU64,
}

impl Hooks for AppendOnly {
    fn on(&self, request: &Request<'_>) -> Verdict {
        let refuse = |counter: &AtomicU64, what: &str| {
            counter.fetch_add(1, Ordering::Relaxed);
            Verdict::Fail(opendal::Error::new(ErrorKind::PermissionDenied, what.to_string()))
        };
        match request {
            Request::Delete { .. } => refuse(&self.deletes, "append-only: deletes are forbidden"),
            Request::Write { path, .. } if self.root.join(path).exists() => {
                refuse(&self.overwrites, "append-only: overwrites are forbidden")
            }
            Request::Rename { .. } | Request::Copy { .. } => refuse(&self.renames, "append-only: no renames"),
            _ => Verdict::Pass,
        }
    }
}

/// Random storage faults, from a seeded generator.
#[derive(Debug)]
struct Faults {
    state: Mutex<u64>,
    fail_writes: f64,
    fail_reads: f64,
    fail_lists: f64,
    truncate_reads: f64,
    /// Paths whose write is dropped (reported done, not stored): those starting with this.
    drop_writes_under: Option<&'static str>,
    drop_first_only: AtomicBool,
    dropped: Mutex<Vec<String>>,
    injected: AtomicU64,
}

impl Faults {
    fn new(seed: u64) -> Faults {
        Faults {
            state: Mutex::new(seed | 1),
            fail_writes: 0.0,
            fail_reads: 0.0,
            fail_lists: 0.0,
            truncate_reads: 0.0,
            drop_writes_under: None,
            drop_first_only: AtomicBool::new(false),
            dropped: Mutex::new(Vec::new()),
            injected: AtomicU64::new(0),
        }
    }

    fn chance(&self, p: f64) -> bool {
        let mut s = self.state.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        let hit = (*s % 1_000_000) as f64 / 1_000_000.0 < p;
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

impl Hooks for Faults {
    fn on(&self, request: &Request<'_>) -> Verdict {
        match request {
            Request::Write { path, .. } => {
                if let Some(prefix) = self.drop_writes_under {
                    let first =
                        !self.drop_first_only.load(Ordering::Relaxed) || self.dropped.lock().unwrap().is_empty();
                    if path.starts_with(prefix) && first {
                        self.dropped.lock().unwrap().push(path.to_string());
                        return Verdict::DropWrite;
                    }
                }
                if self.chance(self.fail_writes) {
                    return Verdict::Fail(temporary("injected write failure"));
                }
            }
            Request::Read { len, .. } => {
                if self.chance(self.fail_reads) {
                    return Verdict::Fail(temporary("injected read failure"));
                }
                if self.chance(self.truncate_reads) {
                    return Verdict::Truncate(len.map_or(7, |l| (l / 2) as usize));
                }
            }
            Request::List { .. } if self.chance(self.fail_lists) => {
                return Verdict::Fail(temporary("injected list failure"));
            }
            _ => {}
        }
        Verdict::Pass
    }
}

/// A store over the folder `root` through `hooks`, as a remote store is used (no local fast
/// paths: spooled packs are uploaded, ranged reads go through OpenDAL).
fn hooked_store(root: &Path, hooks: Arc<dyn Hooks>) -> Store {
    std::fs::create_dir_all(root).unwrap();
    let tmp = root.with_extension("tmp");
    let builder =
        opendal::services::Fs::default().root(&root.to_string_lossy()).atomic_write_dir(&tmp.to_string_lossy());
    let op = Operator::new(builder).unwrap().layer(InterceptLayer::new(hooks));
    Store::with_operator(op, format!("hooked {}", root.display())).unwrap()
}

fn plain_store(root: &Path) -> Store {
    let op = Operator::new(opendal::services::Fs::default().root(&root.to_string_lossy())).unwrap();
    Store::with_operator(op, format!("plain {}", root.display())).unwrap()
}

const PASSWORD: &[u8] = b"store seam test";

fn options(cache: &Path) -> OpenOptions {
    OpenOptions { data_dir: cache.to_path_buf(), kdf: KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 } }
}

fn backup(repo: &Arc<Repository>, src: &Path) -> Result<Id, archiver::BackupError> {
    let options = BackupOptions { paths: vec![src.to_path_buf()], ..Default::default() };
    archiver::backup(repo, &options, &AtomicBool::new(false)).map(|outcome| outcome.id)
}

/// Opens the repository on a fault-free view of the same folder, with a fresh cache, and
/// proves every snapshot's data is stored: check --read-data, and a restore of each snapshot.
fn verify_clean(root: &Path, scratch: &Path, sources: &[(Id, PathBuf)]) {
    let cache = tempfile::tempdir_in(scratch).unwrap();
    let repo = Repository::open(plain_store(root), PASSWORD, &options(cache.path())).expect("open clean");
    let report = check::check(&repo, &CheckOptions { read_data: ReadData::All }, |_| {}).expect("check runs");
    assert!(report.is_ok(), "check --read-data found errors: {:?}", report.errors);
    let (snapshots, rejected) = repo.load_snapshots().unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let ids: HashSet<Id> = snapshots.iter().map(|e| e.id).collect();
    for (id, src) in sources {
        assert!(ids.contains(id), "snapshot {id} reported written is not in the repository");
        let entry = snapshots.iter().find(|e| e.id == *id).unwrap();
        let target = tempfile::tempdir_in(scratch).unwrap();
        let options = RestoreOptions { target: target.path().to_path_buf(), ..Default::default() };
        let report =
            restore::restore(&repo, &entry.snapshot.tree, None, &options, &AtomicBool::new(false)).expect("restore");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_trees_equal(src, &restored_path(target.path(), src));
    }
}

fn source_tree(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    make_tree(&src, &TreeOptions { seed, random_size: 5 << 20, text_size: 256 << 10, ..TreeOptions::small() });
    src
}

// ---------------------------------------------------------------------------------------------
// Append-only
// ---------------------------------------------------------------------------------------------

#[test]
fn append_only_store_backup_check_restore_adopt() {
    let dir = tempdir();
    let root = dir.path().join("repo");
    let hooks = Arc::new(AppendOnly {
        root: root.clone(),
        deletes: AtomicU64::new(0),
        overwrites: AtomicU64::new(0),
        renames: AtomicU64::new(0),
    });
    let store = hooked_store(&root, hooks.clone());
    let cache = dir.path().join("cache");
    let repo = Arc::new(Repository::init(store, PASSWORD, &options(&cache)).expect("init"));
    let src = source_tree(dir.path(), 3);
    let first = backup(&repo, &src).expect("first backup");
    std::fs::write(src.join("changed.txt"), b"second run\n").unwrap();
    let second = backup(&repo, &src).expect("second backup");
    let report = check::check(&repo, &CheckOptions { read_data: ReadData::All }, |_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(repo.load_snapshots().unwrap().0.len(), 2);
    // Orphan-pack adoption (what follows an interrupted backup) writes only a new index.
    assert_eq!(repo.adopt_orphan_packs(&Default::default()).expect("adopt"), 0);
    let (snapshots, _) = repo.load_snapshots().unwrap();
    let target = dir.path().join("restored");
    let options_restore = RestoreOptions { target: target.clone(), ..Default::default() };
    let latest = snapshots.iter().find(|e| e.id == second).unwrap();
    restore::restore(&repo, &latest.snapshot.tree, None, &options_restore, &AtomicBool::new(false)).expect("restore");
    assert_trees_equal(&src, &restored_path(&target, &src));
    // Reading through the mount's source.
    let source = coffer::vfs::RepoSource::new(Arc::clone(&repo)).expect("vfs");
    drop(source);
    drop(repo);
    assert_eq!(hooks.deletes.load(Ordering::Relaxed), 0, "something tried to delete");
    assert_eq!(hooks.overwrites.load(Ordering::Relaxed), 0, "something tried to overwrite");
    assert_eq!(hooks.renames.load(Ordering::Relaxed), 0, "something tried to rename");
    assert!(snapshots.iter().any(|e| e.id == first));
    verify_clean(&root, dir.path(), &[(second, src)]);
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[test]
fn random_faults_never_leave_a_snapshot_without_its_data() {
    let dir = tempdir();
    let root = dir.path().join("repo");
    let cache = dir.path().join("cache");
    Repository::init(plain_store(&root), PASSWORD, &options(&cache)).expect("init");
    let mut written = Vec::new();
    let mut failures = 0;
    let mut injected = 0;
    for round in 0..3u64 {
        let mut faults = Faults::new(round + 11);
        faults.fail_writes = 0.2;
        faults.fail_reads = 0.1;
        faults.fail_lists = 0.2;
        faults.truncate_reads = 0.1;
        let faults = Arc::new(faults);
        let src = source_tree(dir.path(), 20 + round);
        let result = Repository::open(hooked_store(&root, faults.clone()), PASSWORD, &options(&cache))
            .map_err(archiver::BackupError::from)
            .and_then(|repo| backup(&Arc::new(repo), &src));
        injected += faults.injected.load(Ordering::Relaxed);
        match result {
            Ok(id) => written.push((id, src)),
            Err(e) => {
                failures += 1;
                eprintln!("backup failed: {e}");
                let message = e.to_string();
                assert!(message.contains("injected") || message.contains("storage"), "unclear error: {message}");
            }
        }
        verify_clean(&root, dir.path(), &written);
    }
    assert!(injected > 0, "no fault was injected: the test proves nothing");
    eprintln!("{injected} faults injected, {failures} of 3 backups failed");
    // With the faults gone, the next run succeeds.
    let repo = Arc::new(Repository::open(plain_store(&root), PASSWORD, &options(&cache)).unwrap());
    let src = source_tree(dir.path(), 99);
    written.push((backup(&repo, &src).expect("backup without faults"), src));
    drop(repo);
    verify_clean(&root, dir.path(), &written);
}

#[test]
fn a_dropped_upload_fails_the_backup_and_no_snapshot_refers_to_it() {
    let dir = tempdir();
    let root = dir.path().join("repo");
    let cache = dir.path().join("cache");
    Repository::init(plain_store(&root), PASSWORD, &options(&cache)).expect("init");
    let src = source_tree(dir.path(), 40);
    for prefix in ["data/", "index/", "snapshots/"] {
        let mut faults = Faults::new(5);
        faults.drop_writes_under = Some(prefix);
        faults.drop_first_only = AtomicBool::new(true);
        let faults = Arc::new(faults);
        let repo = Arc::new(Repository::open(hooked_store(&root, faults.clone()), PASSWORD, &options(&cache)).unwrap());
        let error = backup(&repo, &src).expect_err("a backup whose upload was dropped must fail").to_string();
        let dropped = faults.dropped.lock().unwrap().clone();
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(error.contains(&dropped[0]) && error.contains("not there"), "{prefix}: unclear error: {error}");
        drop(repo);
        verify_clean(&root, dir.path(), &[]);
    }
    // The next run, on a sound store, succeeds, though the cache remembered the lost objects.
    let repo = Arc::new(Repository::open(plain_store(&root), PASSWORD, &options(&cache)).unwrap());
    let id = backup(&repo, &src).expect("backup after the faults");
    drop(repo);
    verify_clean(&root, dir.path(), &[(id, src)]);
}
