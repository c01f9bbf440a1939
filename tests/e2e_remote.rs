//! End-to-end through the real binary against remote repositories on real servers on
//! 127.0.0.1, started by the tests: S3 (moto_server), SFTP (OpenSSH sshd), WebDAV (`rclone
//! serve webdav`). Backup, restore, check, mount; an Object Lock bucket (append-only by
//! construction); many clients backing up into one S3 repository at once; secrets by reference.
//!
//! A server that cannot start fails the test (tests/install-deps.sh installs them).

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::servers::{S3Server, SftpServer, WebdavServer, S3_SECRET, S3_SECRET_ENV};
use common::*;

fn s3_remote(server: &S3Server, bucket: &str, prefix: &str) -> RemoteRepo {
    let (url, options) = server.repo(bucket, prefix);
    RemoteRepo { url, options, env: vec![(S3_SECRET_ENV.into(), S3_SECRET.into())] }
}

/// init, backup, snapshots, restore (compared), an unchanged second backup that adds
/// nothing, check --read-data, all against `c`'s remote repository.
fn round_trip(c: &Coffer, options: TreeOptions) -> PathBuf {
    c.init();
    let src = c.path("src");
    make_tree(&src, &options);
    let first = c.backup(&[&src]);
    assert!(num(&first, "bytes_added") > 0, "{first}");
    assert!(!c.repo.exists(), "a remote repository must not write to the local folder");
    let target = c.path("restored");
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
    let second = c.backup(&[&src]);
    // Nothing read; only the folders above the source (whose mtimes the restore changed)
    // make a new small tree.
    assert_eq!(num(&second, "bytes_read"), 0, "unchanged backup read data: {second}");
    assert_eq!(num(&second, "files_new") + num(&second, "files_changed"), 0, "{second}");
    assert!(num(&second, "bytes_added") < 4096, "unchanged backup stored data: {second}");
    assert_eq!(c.snapshots().len(), 2);
    c.ok(&["check", "--read-data"]);
    src
}

#[test]
fn s3_backup_restore_check() {
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.bucket("backups");
    let c = Coffer { remote: Some(s3_remote(&server, "backups", "home/repo")), ..c };
    round_trip(&c, TreeOptions::full());
    // The repository lives under the prefix, laid out as a local one is.
    let listing = list_bucket(&server, "backups");
    assert!(listing.iter().any(|k| k == "home/repo/config"), "{listing:?}");
    assert!(listing.iter().any(|k| k.starts_with("home/repo/data/")), "{listing:?}");
    assert!(listing.iter().all(|k| k.starts_with("home/repo/")), "{listing:?}");
    // The request counter for benchmarks: one line on stderr, and check never deletes.
    let mut counted = c.command();
    counted.env("COFFER_STORE_STATS", "1").args(["check"]);
    let out = run(counted, DEFAULT_TIMEOUT);
    out.assert_code(0);
    let line = out.stderr().lines().find(|l| l.contains("store requests:")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no request count on stderr:\n{out}"));
    assert!(line.contains("deletes=0") && line.contains("writes=0") && !line.contains("lists=0"), "{line}");
    // No secret in argv and none in the local cache.
    let secret_hits = grep_dir(&c.root, S3_SECRET.as_bytes());
    assert!(secret_hits.iter().all(|p| p.to_string_lossy().contains("moto-")), "secret found in {secret_hits:?}");
}

#[test]
fn sftp_backup_restore_check() {
    let c = Coffer::new();
    let server = SftpServer::start(&c.root);
    let on_server = c.root.join("sftp-repo");
    let remote = RemoteRepo { url: server.repo(&on_server), options: vec![], env: server.env() };
    let c = Coffer { remote: Some(remote), ..c };
    round_trip(&c, TreeOptions::small());
    assert!(on_server.join("config").is_file(), "no config on the SFTP server");
    assert!(fs::read_dir(on_server.join("data")).expect("data/ on the server").next().is_some());
}

#[test]
fn webdav_backup_restore_check() {
    let c = Coffer::new();
    let server = WebdavServer::start(&c.root);
    let remote = RemoteRepo { url: server.repo("dav/repo"), options: vec![], env: vec![] };
    let c = Coffer { remote: Some(remote), ..c };
    round_trip(&c, TreeOptions::small());
    assert!(c.root.join("webdav-root/dav/repo/config").is_file(), "no config on the WebDAV server");
}

#[test]
fn s3_mount_reads_what_was_backed_up() {
    if !can_mount() {
        return;
    }
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.bucket("mount-bucket");
    let c = Coffer { remote: Some(s3_remote(&server, "mount-bucket", "")), ..c };
    c.init();
    let src = c.path("src");
    make_tree(&src, &TreeOptions::small());
    c.backup(&[&src]);
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

fn can_mount() -> bool {
    let ok = is_root() && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipping: mounting needs root and /dev/fuse");
    }
    ok
}

/// Object Lock with a default COMPLIANCE retention: the bucket itself refuses to delete or
/// replace any object version. Backups, check and mount still work, and afterwards every
/// object has exactly one version and no delete marker: Coffer never tried to delete or
/// overwrite anything.
#[test]
fn s3_object_lock_bucket_append_only() {
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.locked_bucket("locked", 30);
    let c = Coffer { remote: Some(s3_remote(&server, "locked", "repo")), ..c };
    let src = round_trip(&c, TreeOptions::small());
    fs::write(src.join("new-file.txt"), b"added later\n").expect("write");
    c.backup(&[&src]);
    c.ok(&["check"]);
    let versions = object_versions(&server, "locked");
    assert!(!versions.is_empty());
    assert!(!versions.iter().any(|(_, delete_marker)| *delete_marker), "a delete marker exists: {versions:?}");
    let mut keys: Vec<&String> = versions.iter().map(|(k, _)| k).collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "some object has more than one version (was overwritten): {versions:?}");
}

/// Four clients (separate caches, as four machines) back up into one S3 repository at once:
/// three different trees and one the same tree as another. All finish, every snapshot restores
/// identical, and content that was in the repository before they started is not stored again.
#[test]
fn s3_many_clients_at_once() {
    let base = Coffer::new();
    let server = S3Server::start(&base.root);
    server.bucket("shared");
    let remote = s3_remote(&server, "shared", "repo");
    let first = Coffer { remote: Some(remote.clone()), ..Coffer::new() };
    first.init();
    // Content every client has, backed up before they start.
    let common = first.path("common");
    fs::create_dir_all(&common).expect("mkdir");
    tree::write_random(&common.join("shared.bin"), 77, 3 << 20);
    first.backup(&[&common]);

    let clients: Vec<Coffer> = (0..4).map(|_| Coffer { remote: Some(remote.clone()), ..Coffer::new() }).collect();
    let mut sources: Vec<PathBuf> = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        if i == 3 {
            // The fourth client backs up the very tree the third does.
            sources.push(sources[2].clone());
            continue;
        }
        let src = client.path("src");
        make_tree(&src, &TreeOptions { seed: 10 + i as u64, ..TreeOptions::small() });
        fs::copy(common.join("shared.bin"), src.join("shared.bin")).expect("copy shared");
        sources.push(src);
    }
    let running: Vec<Running> = clients
        .iter()
        .zip(&sources)
        .map(|(client, src)| client.spawn(&[OsString::from("backup"), "--json".into(), src.clone().into_os_string()]))
        .collect();
    let outs: Vec<Out> = running.into_iter().map(|r| r.wait(DEFAULT_TIMEOUT)).collect();
    for out in &outs {
        out.assert_code(0);
        let summary = out.json();
        // shared.bin (3 MiB of random bytes) was stored before: never again.
        assert!(num(&summary, "bytes_added") < 3 << 20, "stored the shared content again: {summary}");
    }
    let snapshots = first.snapshots();
    assert_eq!(snapshots.len(), 5, "{snapshots:?}");
    for (client, (src, out)) in clients.iter().zip(sources.iter().zip(&outs)) {
        let id = string(&out.json(), "short_id");
        let target = client.path("restored");
        client.restore(&id, &target);
        assert_trees_equal(src, &restored_path(&target, src));
    }
    first.ok(&["check", "--read-data"]);
}

#[test]
fn literal_secrets_are_refused() {
    let c = Coffer::new();
    let remote = RemoteRepo {
        url: "s3://bucket/prefix?endpoint=http://127.0.0.1:9&region=us-east-1".into(),
        options: vec!["secret_access_key=hunter2-literal".into()],
        env: vec![],
    };
    let c = Coffer { remote: Some(remote), ..c };
    let out = c.cmd(&["init"]);
    out.assert_one_line_error(1);
    let err = out.stderr();
    assert!(err.contains("secret_access_key") && err.contains("env:VAR"), "{err}");
    assert!(!err.contains("hunter2-literal"), "the secret was echoed: {err}");
    let url_secret = RemoteRepo { url: "webdav://user:hunter2-pw@127.0.0.1:9/dav".into(), ..Default::default() };
    let c = Coffer { remote: Some(url_secret), ..c };
    let out = c.cmd(&["snapshots"]);
    out.assert_failed();
    assert!(!out.stderr().contains("hunter2-pw"), "{}", out.stderr());
}

#[test]
fn unreachable_store_is_a_clear_error() {
    let c = Coffer::new();
    let port = common::servers::free_port();
    let remote = RemoteRepo { url: format!("webdav+http://127.0.0.1:{port}/dav"), ..Default::default() };
    let c = Coffer { remote: Some(remote), timeout: Duration::from_secs(170), ..c };
    let out = c.cmd(&["snapshots"]);
    out.assert_failed();
    assert!(out.stderr().contains(&format!("127.0.0.1:{port}")), "{}", out.stderr());
}

// ---------------------------------------------------------------------------------------------

/// Keys in a bucket (moto answers ListObjects without checking signatures).
fn list_bucket(server: &S3Server, bucket: &str) -> Vec<String> {
    let body = http_get(server.port, &format!("/{bucket}?list-type=2&max-keys=1000"));
    tags(&body, "Key")
}

/// (key, is a delete marker) for every version in a bucket.
fn object_versions(server: &S3Server, bucket: &str) -> Vec<(String, bool)> {
    let body = http_get(server.port, &format!("/{bucket}?versions&max-keys=1000"));
    let mut out = Vec::new();
    for (tag, delete_marker) in [("Version", false), ("DeleteMarker", true)] {
        for block in tags(&body, tag) {
            for key in tags(&block, "Key") {
                out.push((key, delete_marker));
            }
        }
    }
    out
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// Contents of every `<tag>…</tag>` in `text`.
fn tags(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
fn grep_dir(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// `coffer copy` from a local repository into an S3 one (other password, other keys): every
/// snapshot arrives and restores identical; copying again copies nothing; content shared by
/// the snapshots is stored once.
#[test]
fn copy_snapshots_between_repositories() {
    let source = Coffer::new();
    source.init();
    let src = source.path("src");
    make_tree(&src, &TreeOptions::small());
    source.backup(&[&src]);
    fs::write(src.join("later.txt"), b"only in the second snapshot\n").expect("write");
    source.backup_with(&[&src], &["--tag", "second"]);
    let password_file = source.password_file();

    let dest = Coffer::new();
    let server = S3Server::start(&dest.root);
    server.bucket("copies");
    let dest =
        Coffer { remote: Some(s3_remote(&server, "copies", "repo")), password: "another password".into(), ..dest };
    dest.init();
    let copy_args = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["copy".into(), "--json".into(), "--from".into(), source.repo.clone().into()];
        args.push("--from-password-file".into());
        args.push(password_file.clone().into());
        args.extend(extra.iter().map(OsString::from));
        args
    };
    let first = dest.ok(&copy_args(&[])).json();
    assert_eq!(first["copied"].as_array().map(Vec::len), Some(2), "{first}");
    // The second snapshot adds one small file: far less than twice the first's data.
    let added = num(&first, "bytes_added");
    let original = num(&source.snapshots()[0]["summary"], "bytes_added");
    assert!(added < original + original / 2, "shared content stored twice: {added} vs {original}");
    let again = dest.ok(&copy_args(&[])).json();
    assert_eq!(again["copied"].as_array().map(Vec::len), Some(0), "{again}");
    assert_eq!(again["skipped"].as_array().map(Vec::len), Some(2), "{again}");
    let snapshots = dest.snapshots();
    assert_eq!(snapshots.len(), 2);
    let target = dest.path("restored");
    dest.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
    assert!(snapshots.iter().any(|s| s["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "second"))));
    dest.ok(&["check", "--read-data"]);
    // Without the source's password there is nothing to copy with.
    let out = dest.cmd(&["copy", "--from", &source.repo.to_string_lossy()]);
    out.assert_failed();
    assert!(out.stderr().contains("source repository"), "{}", out.stderr());
}
