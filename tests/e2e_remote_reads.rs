//! The read path across a network (issue 16): restore and the mount read a remote repository by
//! pack region, so the requests they send are bounded by the packs touched, not by the files.
//! Counted with `COFFER_STORE_STATS=1` against moto_server on 127.0.0.1, and checked for
//! correctness through `benches/delay_proxy.py` (a TCP proxy that delays each direction).

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::servers::{DelayProxy, S3Server, S3_SECRET, S3_SECRET_ENV};
use common::*;

/// A Coffer on a fresh bucket of its own moto server (kept alive by the returned handle).
fn on_s3(bucket: &str) -> (Coffer, S3Server) {
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.bucket(bucket);
    let c = Coffer { remote: Some(s3_remote(&server.endpoint(), &server, bucket)), ..c };
    (c, server)
}

fn s3_remote(endpoint: &str, server: &S3Server, bucket: &str) -> RemoteRepo {
    let (url, options) = server.repo(bucket, "repo");
    let url = url.replace(&server.endpoint(), endpoint);
    RemoteRepo { url, options, env: vec![(S3_SECRET_ENV.into(), S3_SECRET.into())] }
}

/// `folders` folders of `files` small files each, every file different (so nothing dedups).
fn small_files(root: &Path, folders: usize, files: usize) {
    for d in 0..folders {
        let dir = root.join(format!("folder-{d:03}"));
        fs::create_dir_all(&dir).expect("create folder");
        for f in 0..files {
            let n = d * files + f;
            let len = 1000 + (n * 37) % 3000;
            let bytes: Vec<u8> = (0..len).map(|i| ((i * 31 + n * 7) % 251) as u8 ^ (n as u8)).collect();
            fs::write(dir.join(format!("file-{f:03}")), bytes).expect("write file");
        }
    }
}

/// The value of `name=` in the `store requests:` line a command printed.
fn requests(out: &Out, name: &str) -> u64 {
    let line = out.stderr().lines().find(|l| l.contains("store requests:")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no request count on stderr:\n{out}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{name}="))?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

fn forget_local_cache(c: &Coffer) {
    fs::remove_dir_all(&c.cache).expect("remove cache");
    fs::create_dir_all(&c.cache).expect("recreate cache");
}

/// 400 files in 20 folders fit in one data pack and one tree pack. Restoring them with a cold
/// local cache reads config, key, index, snapshot and the two packs' regions; one GET per file
/// and per folder (as before, 420 reads) would fail this.
#[test]
fn s3_restore_reads_by_pack_not_by_file() {
    let (c, _server) = on_s3("reads");
    c.init();
    let src = c.path("src");
    small_files(&src, 20, 20);
    c.backup(&[&src]);
    forget_local_cache(&c);
    let target = c.path("restored");
    let mut restore = c.command();
    restore.env("COFFER_STORE_STATS", "1").args(["restore", "latest", "--target"]).arg(&target);
    let out = run(restore, DEFAULT_TIMEOUT);
    out.assert_code(0);
    assert_trees_equal(&src, &restored_path(&target, &src));
    // Stated bound: config, key, index file and snapshot, plus one region per pack touched
    // (one of trees, one of data; each takes its pack's header along): 6 to 7 reads. At most
    // 12, so a few more small objects do not break it; one read per file cannot pass.
    let reads = requests(&out, "reads");
    assert!(reads <= 12, "restore of 400 files sent {reads} reads:\n{}", out.stderr());
}

/// A restore and a mount read through a proxy that delays each direction by 5 ms give back
/// exactly what was backed up (regions, concurrency and the delay do not reorder bytes).
#[test]
fn restore_and_mount_through_a_delay_proxy_read_back_identical() {
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.bucket("slow");
    let proxy = DelayProxy::start(&c.root, server.port, 5);
    let c = Coffer { remote: Some(s3_remote(&proxy.endpoint(), &server, "slow")), ..c };
    c.init();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    small_files(&src.join("many"), 5, 30);
    c.backup(&[&src]);
    forget_local_cache(&c);
    let target = c.path("restored");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));

    if !(is_root() && Path::new("/dev/fuse").exists()) {
        eprintln!("skipping the mount half: mounting needs root and /dev/fuse");
        return;
    }
    forget_local_cache(&c);
    let mnt = c.dir("mnt");
    let mut running = c.spawn(&[OsString::from("mount"), mnt.clone().into_os_string()]);
    let started = Instant::now();
    while fs::read_dir(mnt.join("latest")).is_err() {
        assert!(!running.finished(), "coffer mount exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "mount not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounted = mnt.join("latest").join(src.strip_prefix("/").expect("absolute"));
    let options = CompareOptions { root_metadata: false, ..Default::default() };
    let diffs: Vec<String> = compare_trees(&src, &mounted, &options)
        .into_iter()
        .filter(|d| !d.contains("sparse") && !d.contains("allocated"))
        .collect();
    let unmounted = Command::new("fusermount3").arg("-u").arg(&mnt).status().map(|s| s.success()).unwrap_or(false);
    if !unmounted {
        let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
    }
    let out = running.wait(Duration::from_secs(30));
    assert!(diffs.is_empty(), "mounted snapshot differs:\n{}", diffs.join("\n"));
    out.assert_code(0);
}

/// Mounts `c`'s repository with `extra` mount arguments, copies `folder` (inside the latest
/// snapshot) out with `cp -r`, unmounts, and returns the copy's path and the mount's output.
fn copy_out_of_mount(c: &Coffer, src: &Path, extra: &[&str], name: &str) -> (std::path::PathBuf, Out) {
    let mnt = c.dir(&format!("mnt-{name}"));
    let mut args = vec![OsString::from("mount"), mnt.clone().into_os_string()];
    args.extend(extra.iter().map(OsString::from));
    let mut mount = c.command();
    mount.env("COFFER_STORE_STATS", "1").args(&args);
    let mut running = Running::start(mount);
    let started = Instant::now();
    while fs::read_dir(mnt.join("latest")).is_err() {
        assert!(!running.finished(), "coffer mount exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "mount not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounted = mnt.join("latest").join(src.strip_prefix("/").expect("absolute"));
    let copy = c.path(&format!("copy-{name}"));
    let copied = Command::new("cp").arg("-r").arg(&mounted).arg(&copy).status().map(|s| s.success());
    let unmounted = Command::new("fusermount3").arg("-u").arg(&mnt).status().map(|s| s.success()).unwrap_or(false);
    if !unmounted {
        let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
    }
    let out = running.wait(Duration::from_secs(30));
    assert!(copied.unwrap_or(false), "cp -r out of the mount failed:\n{out}");
    out.assert_code(0);
    (copy, out)
}

/// `cp -r` of a folder of 400 small files out of a mounted S3 repository: each miss fetches the
/// run of the pack around it, so the copy costs a few region reads, not one per file (400+).
/// With a cache far smaller than the folder, the copy is still exact: companions are evicted
/// within the byte budget, never served wrong.
#[test]
fn s3_folder_copy_out_of_the_mount_reads_by_region() {
    if !(is_root() && Path::new("/dev/fuse").exists()) {
        eprintln!("skipping: mounting needs root and /dev/fuse");
        return;
    }
    let (c, _server) = on_s3("browse");
    c.init();
    let src = c.path("src");
    small_files(&src, 20, 20);
    c.backup(&[&src]);

    forget_local_cache(&c);
    let (copy, out) = copy_out_of_mount(&c, &src, &[], "default");
    assert_trees_equal_with(&src, &copy, &CompareOptions { root_metadata: false, ownership: false, mtimes: false });
    // Stated bound: the mount's own small objects and listings (config, key, index, snapshot),
    // one tree region and a few data regions (400 files, ~1 MiB): at most 24 reads.
    let reads = requests(&out, "reads");
    assert!(reads <= 24, "cp -r of 400 files out of the mount sent {reads} reads:\n{}", out.stderr());

    // A 1 MiB cache (768 KiB of blocks, companions at most 96 KiB per miss) for ~1 MiB of files.
    forget_local_cache(&c);
    let (copy, _) = copy_out_of_mount(&c, &src, &["--cache-size", "1MiB"], "small-cache");
    assert_trees_equal_with(&src, &copy, &CompareOptions { root_metadata: false, ownership: false, mtimes: false });
}

/// `check` walks every folder's tree: on S3 it reads them by pack region, several in flight,
/// instead of a round trip per folder (the 60 folders here were 60+ sequential reads).
#[test]
fn s3_check_reads_trees_by_region() {
    let (c, _server) = on_s3("check");
    c.init();
    let src = c.path("src");
    small_files(&src, 60, 2);
    c.backup(&[&src]);
    let mut check = c.command();
    check.env("COFFER_STORE_STATS", "1").args(["check"]);
    let out = run(check, DEFAULT_TIMEOUT);
    out.assert_code(0);
    // Stated bound: index file, snapshot (and its signer records), config and key, plus the
    // one tree pack's region(s): at most 12 reads.
    let reads = requests(&out, "reads");
    assert!(reads <= 12, "check of 60 folders sent {reads} reads:\n{}", out.stderr());
}

/// Answers every HTTP request on a free port with `status` and an S3 error body, as an S3
/// endpoint refusing a request signed for another region does. Runs until the test ends.
fn refusing_s3(status: u16, code: &str, message: &str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                request.push(byte[0]);
            }
            let head = if request.starts_with(b"HEAD") { String::new() } else { body.clone() };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Bad Request\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                body.len()
            );
        }
    });
    port
}

fn s3_at(port: u16, region: Option<&str>) -> RemoteRepo {
    let region = region.map(|r| format!("&region={r}")).unwrap_or_default();
    RemoteRepo {
        url: format!("s3://bucket/repo?endpoint=http://127.0.0.1:{port}{region}"),
        options: vec![
            format!("access_key_id={}", common::servers::S3_ACCESS_KEY),
            format!("secret_access_key=env:{S3_SECRET_ENV}"),
        ],
        env: vec![(S3_SECRET_ENV.into(), S3_SECRET.into())],
    }
}

/// A store that refuses with 400 (as S3 does for a wrong region) is named with a hint at the
/// region, in one line, not as "not a Coffer repository" (`-v` adds the store's full error);
/// a missing region says so.
#[test]
fn refusals_and_a_missing_region_say_why() {
    let port =
        refusing_s3(400, "AuthorizationHeaderMalformed", "the region 'us-east-1' is wrong; expecting 'eu-west-3'");
    let c = Coffer { remote: Some(s3_at(port, Some("us-east-1"))), ..Coffer::new() };
    let out = c.cmd(&["snapshots"]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("region=") && out.stderr().contains("HTTP 400"), "{out}");
    assert!(!out.stderr().contains("not a Coffer repository"), "{out}");
    let verbose = c.cmd(&["-v", "snapshots"]);
    assert!(verbose.stderr().contains("the store's error in full"), "{verbose}");

    let c = Coffer { remote: Some(s3_at(port, None)), ..Coffer::new() };
    let mut cmd = c.command();
    cmd.env_remove("AWS_REGION").env_remove("AWS_DEFAULT_REGION").arg("snapshots");
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("region"), "{out}");
    assert!(!out.stderr().contains("not a Coffer repository"), "{out}");
}

/// A dead endpoint: after the retries, one error line says what failed, where, after how many
/// tries over how long; before it, one warning, not one per retry; no backtrace, no repeated
/// OpenDAL context.
#[test]
fn a_dead_endpoint_says_so_in_one_line() {
    let port = common::servers::free_port();
    let c = Coffer { remote: Some(s3_at(port, Some("us-east-1"))), timeout: Duration::from_secs(170), ..Coffer::new() };
    let out = c.cmd(&["snapshots"]);
    out.assert_code(1);
    let stderr = out.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() <= 2, "more than a warning and an error:\n{out}");
    let error = lines.last().expect("an error line");
    assert!(error.starts_with("coffer: ") && error.contains("config"), "{out}");
    assert!(error.contains("gave up after 6 tries over") && error.contains("Connection refused"), "{out}");
    assert!(error.len() < 300 && !stderr.contains("Backtrace") && !stderr.contains("Context:"), "{out}");
}

/// Runs `coffer ARGS` with request counting and returns the output (asserting exit 0).
fn counted(c: &Coffer, args: &[&std::ffi::OsStr]) -> Out {
    let mut command = c.command();
    command.env("COFFER_STORE_STATS", "1").args(args);
    let out = run(command, DEFAULT_TIMEOUT);
    out.assert_code(0);
    out
}

/// The requests a command sent, all kinds together.
fn total_requests(out: &Out) -> u64 {
    ["reads", "writes", "stats", "lists", "deletes", "other"].iter().map(|kind| requests(out, kind)).sum()
}

/// A backup to S3 sends requests per pack and per repository object, never per file: 400 new
/// files, then 10 more backups (one changed file each, so 11 index files), then a machine with
/// an empty local database reads all 11 index files (several at a time) and restores exactly,
/// and `check` (with and without `--read-data`) reads per object and per pack, not per blob.
#[test]
fn s3_backup_requests_are_per_pack_not_per_file() {
    let (c, _server) = on_s3("backup");
    c.init();
    let src = c.path("src");
    small_files(&src, 20, 20);
    forget_local_cache(&c);
    let out = counted(&c, &["backup".as_ref(), src.as_os_str()]);
    // Stated bound: reads of config and key; lists of keys, signers, index (twice), plans and
    // data; writes of the lock, one data and one tree pack, the index file, the snapshot and the
    // ended marker, each checked with a stat (plus the config's and key's): 22 requests. At
    // most 30; a request per file (400) or per folder (20 more) cannot pass.
    let total = total_requests(&out);
    assert!(total <= 30, "backup of 400 files sent {total} requests:\n{}", out.stderr());
    assert!(requests(&out, "writes") <= 8, "backup of 400 files wrote too many objects:\n{}", out.stderr());

    for round in 0..10 {
        fs::write(src.join("folder-000").join("file-000"), format!("round {round}")).expect("change a file");
        let out = counted(&c, &["backup".as_ref(), src.as_os_str()]);
        // Unchanged files come from the files cache: the same objects as above, no more.
        let total = total_requests(&out);
        assert!(total <= 30, "backup of one changed file sent {total} requests:\n{}", out.stderr());
    }
    forget_local_cache(&c);
    let target = c.path("restored");
    let out = counted(&c, &["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_trees_equal(&src, &restored_path(&target, &src));
    // 11 index files, 11 snapshots, config, key, and the packs' regions: at most 40 reads.
    let reads = requests(&out, "reads");
    assert!(reads <= 40, "restore after 11 backups sent {reads} reads:\n{}", out.stderr());

    // check from a machine with an empty database: the index files (read by the sync and by
    // the check itself), the snapshots, and the trees by region, several at a time.
    forget_local_cache(&c);
    let out = counted(&c, &["check".as_ref()]);
    // Stated bound: 11 index files twice, 11 snapshots, config and key, a region per tree
    // pack (11): 46. At most 50; a read per folder or per file cannot pass.
    let reads = requests(&out, "reads");
    assert!(reads <= 50, "check after 11 backups sent {reads} reads:\n{}", out.stderr());
    // --read-data (the database now synced): index files, snapshots, config, key and tree
    // regions once, and every pack (22) once, whole: 58. At most 64.
    let out = counted(&c, &["check".as_ref(), "--read-data".as_ref()]);
    let reads = requests(&out, "reads");
    assert!(reads <= 64, "check --read-data after 11 backups sent {reads} reads:\n{}", out.stderr());
}

/// Prune's repack reads the live blobs of each pack it rewrites by region: 400 files in one
/// data pack, half of them forgotten, then `prune --max-unused 0` rewrites that pack. A read
/// per live blob (200 reads and more, as before) cannot pass the bound; the snapshot that
/// stays restores exactly from a machine with an empty database.
#[test]
fn s3_prune_repacks_by_region_not_by_blob() {
    let (c, _server) = on_s3("prune");
    c.init();
    let src = c.path("src");
    small_files(&src, 20, 20);
    c.backup(&[&src]);
    for d in 10..20 {
        fs::remove_dir_all(src.join(format!("folder-{d:03}"))).expect("remove folder");
    }
    c.backup(&[&src]);
    counted(&c, &[&"forget".as_ref(), &"--keep-last".as_ref(), &"1".as_ref()]);
    let out = counted(&c, &[&"prune".as_ref(), &"--max-unused".as_ref(), &"0".as_ref()]);
    assert!(out.stdout().contains("repack") || out.stderr().contains("repack"), "nothing repacked:\n{out}");
    // Stated bound: config, key, index files, snapshots, signer records, the pack tables it
    // reads and the repacked packs' regions: well under 40; one per live blob is over 200.
    let reads = requests(&out, "reads");
    assert!(reads <= 40, "prune sent {reads} reads:\n{}", out.stderr());
    forget_local_cache(&c);
    let target = c.path("restored");
    c.restore_with("latest", &target, &[]);
    assert_trees_equal(&src, &restored_path(&target, &src));
}
