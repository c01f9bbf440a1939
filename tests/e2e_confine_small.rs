//! End-to-end checks for issue 15's small confinement items: deep trees, planted key files,
//! host and tag strings, secrets in logs and the environment, password file modes, WebDAV over
//! plain HTTP, oversized objects, repository file modes, copy attribution, and restoring a
//! write-only key's special files.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;

/// Makes `levels` nested folders named `d` under `root` with a file at the bottom, each one
/// reached through `/proc/self/fd` of its parent, so the chain may be longer than PATH_MAX
/// allows as one path.
fn deep_folder(root: &Path, levels: usize) {
    use std::os::fd::AsRawFd;
    let mut dir = std::fs::File::open(root).expect("open the root");
    for _ in 0..levels {
        let next = format!("/proc/self/fd/{}/d", dir.as_raw_fd());
        std::fs::create_dir(&next).expect("mkdir");
        dir = std::fs::File::open(&next).expect("open");
    }
    std::fs::write(format!("/proc/self/fd/{}/bottom.txt", dir.as_raw_fd()), b"deep").expect("write the bottom file");
}

/// `rm -rf`: its fts walk removes a tree deeper than PATH_MAX, which a temp dir's drop may not.
fn remove_deep(path: &Path) {
    let _ = std::process::Command::new("rm").arg("-rf").arg(path).status();
}

fn assert_not_crashed(out: &Out) {
    assert!(out.code().is_some(), "killed by a signal (stack overflow?)\n{out}");
    assert_ne!(out.code(), Some(134), "aborted\n{out}");
    out.assert_no_panic();
}

/// A folder 2500 levels deep, backed up as it is on disk (what lies beyond PATH_MAX is
/// reported by the backup), then listed, compared, counted, checked and restored.
#[test]
fn deep_folders_are_listed_compared_and_restored_without_crashing() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("top.txt"), b"top").expect("write");
    let first = c.backup(&[&src]);
    let first = string(&first, "snapshot_id");
    deep_folder(&src, 2500);
    let out = c.cmd(&["backup", "--json", src.to_str().expect("utf-8")]);
    assert_not_crashed(&out);
    let second = c.snapshots().last().map(|s| string(s, "id")).expect("a second snapshot");
    assert_ne!(first, second);

    let ls = c.ok(&["ls", "--json", &second]);
    let deep = ls.json_lines().iter().filter(|e| string(e, "path").ends_with("/d/d")).count();
    assert!(deep > 1500, "only {deep} nested folders listed");
    c.ok(&["stats"]);
    let diff = c.ok(&["diff", &first, &second]);
    assert!(diff.stdout().lines().count() > 1500, "{}", diff.stdout().lines().count());
    c.ok(&["check", "--read-data"]);
    let target = c.path("restored");
    let out = c.restore_out(&second, &target, &[]);
    assert_not_crashed(&out);
    assert!(restored_path(&target, &src).join("top.txt").is_file(), "{out}");
    remove_deep(&target);
    remove_deep(&src);
}

// --- Item 6: planted key files --------------------------------------------------------------

/// Plants a copy of the repository's key file with other KDF parameters and creation time (it
/// does not open with any passphrase: its sealed key no longer matches its salt).
fn plant_key_file(c: &Coffer, memory_kib: u32, iterations: u32, created_unix: i64, n: u8) -> PathBuf {
    use coffer::format::keyfile::KeyFile;
    let keys = c.repo.join("keys");
    let original = std::fs::read_dir(&keys).expect("keys/").next().expect("a key file").expect("entry").path();
    let mut file = KeyFile::decode(&std::fs::read(original).expect("read")).expect("decode");
    file.kdf.memory_kib = memory_kib;
    file.kdf.iterations = iterations;
    file.created_unix = created_unix;
    file.salt = [n; 16];
    let bytes = file.encode();
    let path = keys.join(coffer::id::Id::of_bytes(&bytes).to_hex());
    std::fs::write(&path, bytes).expect("plant");
    path
}

#[test]
fn planted_key_files_cannot_stall_an_unlock() {
    let mut c = Coffer::new();
    c.init();
    // Argon2 at 1 GiB and 4 passes: allowed in a key file, refused at unlock.
    let heavy = plant_key_file(&c, 1 << 20, 4, 0, 1);
    let out = c.ok(&["snapshots"]);
    assert!(out.stderr().contains(&file_name(&heavy)) && out.stderr().contains("Argon2 cost"), "{out}");

    // Twenty cheap ones, all claiming to be older than the real key (so tried first).
    for n in 0..20 {
        plant_key_file(&c, 64, 1, 0, 10 + n);
    }
    // This machine opened the repository before: its key file is tried first.
    c.ok(&["snapshots"]);
    // A fresh machine tries at most 16 and says why it stopped.
    c.cache = c.dir("fresh-cache");
    let out = c.cmd(&["snapshots"]);
    out.assert_code(12);
    assert!(out.stderr().contains("16 key files") && out.stderr().contains("keys/ holds 22"), "{out}");
    c.password = "wrong".into();
    c.cmd(&["snapshots"]).assert_code(12);
}

// --- Item 8: host and tag strings -----------------------------------------------------------

/// Opens the test's local repository through the library, as another writer would.
fn open_library(c: &Coffer) -> coffer::repo::Repository {
    use coffer::repo::{OpenOptions, Repository};
    let store = coffer::store::Store::open_local(&c.repo, false).expect("store");
    let options = OpenOptions { data_dir: c.path("library-cache"), kdf: coffer::crypto::KdfParams::DEFAULT };
    Repository::open(store, c.password.as_bytes(), &options).expect("open")
}

const EVIL_HOST: &str = "evil/host\u{1b}[2J\u{1b}]0;owned\u{7}";
const EVIL_TAG: &str = "..";

/// A snapshot as some other writer made it: a host with `/` and escape sequences, a tag `..`.
fn plant_evil_snapshot(c: &Coffer) {
    let repo = open_library(c);
    let (entries, _) = repo.load_snapshots().expect("snapshots");
    let mut snapshot = entries[0].snapshot.clone();
    snapshot.hostname = EVIL_HOST.into();
    snapshot.tags = vec![EVIL_TAG.into(), "bell\u{7}".into()];
    repo.save_snapshot(&snapshot).expect("save");
}

#[test]
fn hosts_and_tags_are_validated_and_shown_escaped() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("a"), b"a").expect("write");
    let s = src.to_str().expect("utf-8");
    for (flag, value) in [("--host", "a/b"), ("--host", "x\u{1b}[31m"), ("--host", "")] {
        let out = c.cmd(&["backup", flag, value, s]);
        out.assert_one_line_error(1);
        assert!(!out.stderr().contains('\u{1b}'), "{out}");
    }
    assert!(c.snapshots().is_empty());
    c.backup_with(&[&src], &["--host", "office-laptop", "--tag", "daily run"]);

    plant_evil_snapshot(&c);
    for args in [&["snapshots"][..], &["snapshots", "--json"][..]] {
        let out = c.ok(args);
        assert!(!out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07), "raw control bytes in {out}");
    }
    let table = c.ok(&["snapshots"]).stdout();
    assert!(table.contains("evil/host\\x1b[2J\\x1b]0;owned\\x07"), "{table}");
    let json = c.snapshots();
    assert!(json.iter().any(|s| string(s, "hostname") == EVIL_HOST), "JSON keeps the exact value: {json:?}");
}

/// A snapshot's host and tags become folder names of the mount: they must be valid, distinct
/// names whatever they hold.
#[test]
fn the_mount_survives_hostile_hosts_and_tags() {
    if !(is_root() && Path::new("/dev/fuse").exists()) {
        eprintln!("skipping: mounting needs root and /dev/fuse");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("a"), b"a").expect("write");
    c.backup_with(&[&src], &["--host", "good", "--tag", "t"]);
    plant_evil_snapshot(&c);
    let mnt = c.dir("mnt");
    let mut proc = c.spawn(&[OsString::from("mount"), mnt.clone().into()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(mnt.join("hosts")).is_err() {
        assert!(!proc.finished() && std::time::Instant::now() < deadline, "mount not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let names = |dir: &str| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(mnt.join(dir))
            .unwrap_or_else(|e| panic!("ls {dir}: {e}"))
            .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    let hosts = names("hosts");
    let tags = names("tags");
    let listed_evil = std::fs::read_dir(mnt.join("hosts").join("evil%2Fhost%1B[2J%1B]0;owned%07")).map(|d| d.count());
    let _ = std::process::Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let out = proc.wait(std::time::Duration::from_secs(20));
    assert_eq!(hosts, vec![b"evil%2Fhost%1B[2J%1B]0;owned%07".to_vec(), b"good".to_vec()], "{out}");
    assert_eq!(tags, vec![b"%2E%2E".to_vec(), b"bell%07".to_vec(), b"t".to_vec()], "{out}");
    assert_eq!(listed_evil.expect("the evil host's folder lists"), 1);
}

// --- Item 9: no S3 secret in verbose logs ---------------------------------------------------

#[test]
fn verbose_logs_of_an_s3_backup_hold_no_secret() {
    use common::servers::{S3Server, S3_SECRET, S3_SECRET_ENV};
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.bucket("logs");
    let (url, options) = server.repo("logs", "repo");
    let remote = RemoteRepo { url, options, env: vec![(S3_SECRET_ENV.into(), S3_SECRET.into())] };
    let c = Coffer { remote: Some(remote), ..c };
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("a"), b"some data").expect("write");
    let s = src.to_str().expect("utf-8");
    let out = c.ok(&["-vv", "backup", s]);
    assert!(out.stderr().lines().count() > 3, "-vv logged nothing: {out}");
    assert!(!out.all().contains(S3_SECRET), "the S3 secret is in the -vv output");
    let mut cmd = c.command();
    cmd.env("RUST_LOG", "trace").args(["snapshots"]);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_code(0);
    assert!(!out.all().contains(S3_SECRET), "the S3 secret is in the RUST_LOG=trace output");
}

// --- Items 10 and 11: the password file's mode; COFFER_PASSWORD out of the environment -------

#[test]
fn a_password_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let c = Coffer::new();
    c.init();
    let pw = c.password_file();
    let by_flag = |extra: &[&str]| {
        let mut cmd = c.bare_command();
        cmd.env("COFFER_REPOSITORY", &c.repo).env("COFFER_CACHE_DIR", &c.cache).args(extra).arg("snapshots");
        cmd
    };
    let mut flag = by_flag(&["--password-file", pw.to_str().expect("utf-8")]);
    run(flag, DEFAULT_TIMEOUT).assert_code(0);
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    flag = by_flag(&["--password-file", pw.to_str().expect("utf-8")]);
    let out = run(flag, DEFAULT_TIMEOUT);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("chmod 600") && out.stderr().contains("password.txt"), "{out}");
    let mut env = by_flag(&[]);
    env.env("COFFER_PASSWORD_FILE", &pw);
    let out = run(env, DEFAULT_TIMEOUT);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("chmod 600"), "{out}");
}

#[test]
fn helpers_never_see_the_password_in_their_environment() {
    let c = Coffer::new();
    c.init();
    let dump = c.path("helper-env");
    // The helper prints the right password and records what it was given.
    let helper = format!("env > {} && echo '{}'", dump.display(), c.password);
    let out = c.ok(&["--password-command", &helper, "snapshots"]);
    let env = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("the helper did not run ({e})\n{out}"));
    assert!(env.contains("COFFER_REPOSITORY="), "the helper got an environment: {env}");
    assert!(!env.contains("COFFER_PASSWORD") && !env.contains(&c.password), "{env}");
}

// --- Item 12: WebDAV over plain HTTP --------------------------------------------------------

#[test]
fn webdav_over_http_stays_on_this_machine_unless_allowed() {
    let c = Coffer::new();
    let remote = RemoteRepo { url: "webdav+http://dav.example.invalid/dav".into(), ..Default::default() };
    let c = Coffer { remote: Some(remote), ..c };
    let out = c.cmd(&["snapshots"]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("allow_insecure_http=true"), "{out}");
    // With the option it goes on to connect (the store/location unit test covers that).
}

// --- Item 13: oversized objects -------------------------------------------------------------

#[test]
fn oversized_objects_are_refused_unread_and_named() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("a"), b"a").expect("write");
    c.backup(&[&src]);
    let big = vec![0u8; 17 << 20];
    let snapshot = c.repo.join("snapshots").join(coffer::id::Id::of_bytes(&big).to_hex());
    std::fs::write(&snapshot, &big).expect("plant");
    let out = c.cmd(&["snapshots"]);
    assert!(out.all().contains(&file_name(&snapshot)) && out.all().contains("more than"), "{out}");
    std::fs::remove_file(&snapshot).expect("remove");

    let key = c.repo.join("keys").join(coffer::id::Id::of_bytes(&big[..100 << 10]).to_hex());
    std::fs::write(&key, &big[..100 << 10]).expect("plant");
    let out = c.ok(&["snapshots"]);
    assert!(out.stderr().contains(&file_name(&key)) && out.stderr().contains("too large"), "{out}");

    let config = c.repo.join("config");
    let mut grown = std::fs::read(&config).expect("config");
    grown.resize(100 << 10, 0);
    std::fs::write(&config, grown).expect("grow");
    let out = c.cmd(&["snapshots"]);
    out.assert_failed();
    assert!(out.stderr().contains("config is 102400 bytes"), "{out}");
}

// --- Item 14: modes of a local repository ---------------------------------------------------

#[test]
fn a_local_repository_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("a"), b"a").expect("write");
    c.backup(&[&src]);
    c.ok(&["forget", "--keep-last", "1", "--prune"]);
    let mut seen = 0;
    let mut stack = vec![c.repo.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "{seen} objects");
}

/// Item 15: a new repository keys the chunker's whole gear table (config format v2); two
/// repositories cut the same data at different places, so chunk sizes don't fingerprint files.
#[test]
fn new_repositories_key_the_whole_gear_table() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut cuts = Vec::new();
    for _ in 0..2 {
        let c = Coffer::new();
        c.init();
        assert!(std::fs::read(c.repo.join("config")).expect("config").starts_with(b"CFCONF02"));
        let src = c.dir("src");
        std::fs::write(src.join("big"), &data).expect("write");
        c.backup(&[&src]);
        let repo = open_library(&c);
        let mut lengths = Vec::new();
        repo.for_each_blob(None, |_, at| {
            if at.entry.kind == coffer::format::pack::BlobKind::Data {
                lengths.push(at.entry.raw_len)
            }
        })
        .expect("index");
        lengths.sort();
        assert!(lengths.len() >= 3, "12 MiB in chunks of ~2 MiB: {lengths:?}");
        assert_eq!(lengths.iter().map(|&l| u64::from(l)).sum::<u64>(), data.len() as u64);
        cuts.push(lengths);
    }
    assert_ne!(cuts[0], cuts[1], "two repositories cut alike");
}
