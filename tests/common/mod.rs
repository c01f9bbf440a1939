//! Shared harness for the end-to-end tests: runs the real `coffer` binary.
//!
//! Owns: the [`Coffer`] runner (a private repository, cache dir, home and password per test,
//! with a timeout on every command), output helpers, and re-exports of the tree generator
//! ([`tree`]) and the tree comparator ([`compare`]).
//! Must not touch: the engine's internals. Tests see Coffer only as a user would: argv, env,
//! exit code, stdout/stderr, and the files in the repository directory.
//!
//! Every test file does `mod common;` and uses what it needs, hence `allow(dead_code)`.
#![allow(dead_code, unused_imports)]

pub mod adversary;
pub mod compare;
pub mod servers;
pub mod tree;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use compare::{assert_trees_equal, assert_trees_equal_with, compare_trees, CompareOptions};
pub use tree::{make_tree, TreeOptions};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// The password every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Any single command that runs longer than this is killed and the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Directory under which every test creates its temporary directories.
///
/// `CARGO_TARGET_TMPDIR` (target/tmp, on the same disk as the workspace) is preferred; the
/// chosen directory must support `user.*` extended attributes, since the generated trees carry
/// them. /tmp may be a tmpfs without user xattrs on older kernels.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let candidates = [PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from("/var/tmp"), std::env::temp_dir()];
        for dir in candidates {
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let probe = dir.join(format!("xattr-probe-{}", std::process::id()));
            let ok = std::fs::write(&probe, b"x").is_ok() && xattr::set(&probe, "user.coffer-probe", b"1").is_ok();
            let _ = std::fs::remove_file(&probe);
            if ok {
                return dir.canonicalize().expect("canonicalize scratch root");
            }
        }
        panic!("no scratch directory supports user.* xattrs (tried target/tmp, /var/tmp, /tmp)");
    })
}

/// A fresh temporary directory (removed on drop), canonical path, mode 0755 so that a test may
/// run the binary as an unprivileged user inside it.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("coffer-test-").tempdir_in(scratch_root()).expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One test's Coffer world: repository, cache, home, password.
pub struct Coffer {
    pub tmp: tempfile::TempDir,
    /// Canonical path of `tmp`.
    pub root: PathBuf,
    /// The repository (does not exist until `init`).
    pub repo: PathBuf,
    /// The local state directory passed as COFFER_CACHE_DIR.
    pub cache: PathBuf,
    /// HOME and XDG dirs point here so nothing leaks into the real home.
    pub home: PathBuf,
    pub password: String,
    pub timeout: Duration,
    /// When set, the repository is this remote one instead of the folder `repo`.
    pub remote: Option<RemoteRepo>,
}

/// A remote repository: its URL, `--option`s, and environment Coffer needs to reach it.
#[derive(Clone, Debug, Default)]
pub struct RemoteRepo {
    pub url: String,
    pub options: Vec<String>,
    pub env: Vec<(String, OsString)>,
}

impl Default for Coffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coffer {
    pub fn new() -> Self {
        let tmp = tempdir();
        let root = tmp.path().canonicalize().expect("canonicalize temp dir");
        let home = root.join("home");
        let cache = root.join("cache");
        std::fs::create_dir_all(&home).expect("create home");
        std::fs::create_dir_all(&cache).expect("create cache dir");
        Coffer {
            repo: root.join("repo"),
            cache,
            home,
            root,
            tmp,
            password: PASSWORD.to_string(),
            timeout: DEFAULT_TIMEOUT,
            remote: None,
        }
    }

    /// A path inside this test's temp dir (for sources, targets, password files).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A new empty directory inside this test's temp dir.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).expect("create dir");
        p
    }

    /// The binary with a clean, isolated environment and no repository or password set.
    pub fn bare_command(&self) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("COFFER_") {
                c.env_remove(&k);
            }
        }
        c.env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// The binary with COFFER_REPOSITORY, COFFER_PASSWORD and COFFER_CACHE_DIR set.
    pub fn command(&self) -> Command {
        let mut c = self.bare_command();
        c.env("COFFER_PASSWORD", &self.password).env("COFFER_CACHE_DIR", &self.cache);
        match &self.remote {
            None => {
                c.env("COFFER_REPOSITORY", &self.repo);
            }
            Some(remote) => {
                c.env("COFFER_REPOSITORY", &remote.url);
                for option in &remote.options {
                    c.arg("--option").arg(option);
                }
                c.envs(remote.env.iter().map(|(k, v)| (k, v)));
            }
        }
        c
    }

    /// Runs `coffer ARGS` with the default environment; never panics on a non-zero exit.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        let mut c = self.command();
        c.args(args);
        run(c, self.timeout)
    }

    /// Runs `coffer ARGS` and asserts exit code 0.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        let out = self.cmd(args);
        out.assert_code(0);
        out
    }

    pub fn init(&self) {
        self.ok(&["init"]);
        if self.remote.is_none() {
            assert!(self.repo.join("config").is_file(), "init left no repo/config");
        }
    }

    /// `coffer backup --json PATHS EXTRA`, asserting exit 0; returns the summary object.
    pub fn backup(&self, paths: &[&Path]) -> Value {
        self.backup_with(paths, &[])
    }

    pub fn backup_with(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let out = self.backup_out(paths, extra);
        out.assert_code(0);
        let v = out.json();
        check_backup_summary(&v);
        v
    }

    /// `coffer backup --json PATHS EXTRA` without asserting anything.
    pub fn backup_out(&self, paths: &[&Path], extra: &[&str]) -> Out {
        let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
        args.extend(extra.iter().map(OsString::from));
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        self.cmd(&args)
    }

    /// `coffer restore SNAP --target TARGET EXTRA`, asserting exit 0.
    pub fn restore(&self, snap: &str, target: &Path) -> Out {
        self.restore_with(snap, target, &[])
    }

    pub fn restore_with(&self, snap: &str, target: &Path, extra: &[&str]) -> Out {
        let out = self.restore_out(snap, target, extra);
        out.assert_code(0);
        out
    }

    pub fn restore_out(&self, snap: &str, target: &Path, extra: &[&str]) -> Out {
        let mut args: Vec<OsString> =
            vec!["restore".into(), snap.into(), "--target".into(), target.as_os_str().to_owned()];
        args.extend(extra.iter().map(OsString::from));
        self.cmd(&args)
    }

    /// `coffer snapshots --json EXTRA` → the array.
    pub fn snapshots_with(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["snapshots", "--json"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    pub fn snapshots(&self) -> Vec<Value> {
        self.snapshots_with(&[])
    }

    /// `coffer ls --json SNAP [PATH]` → one object per line.
    pub fn ls(&self, snap: &str, path: Option<&Path>) -> Vec<Value> {
        let mut args: Vec<OsString> = vec!["ls".into(), "--json".into(), snap.into()];
        if let Some(p) = path {
            args.push(p.as_os_str().to_owned());
        }
        self.ok(&args).json_lines()
    }

    /// Runs `coffer ARGS` in the background (stdout/stderr collected) for signal tests.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Running {
        let mut c = self.command();
        c.args(args);
        Running::start(c)
    }

    /// `WRAPPER... coffer` with the environment of [`Coffer::command`], for running the binary
    /// through `setpriv`, `taskset`, `sh -c 'umask …; exec "$0" "$@"'` and the like. The
    /// wrapper must exec the binary (so signals and exit codes are the binary's own).
    pub fn wrapped(&self, wrapper: &[&str]) -> Command {
        let base = self.command();
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(base.get_program()).stdin(Stdio::null());
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Writes the password to a 0600 file and returns its path.
    pub fn password_file(&self) -> PathBuf {
        let p = self.path("password.txt");
        std::fs::write(&p, format!("{}\n", self.password)).expect("write password file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }

    /// Every file under `repo/<sub>` (recursive), sorted.
    pub fn repo_files(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect_files(&self.repo.join(sub), &mut out);
        out.sort();
        out
    }

    /// Total size of every file in the repository.
    pub fn repo_size(&self) -> u64 {
        self.repo_files("").iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.expect("read_dir entry");
        let ft = e.file_type().expect("file_type");
        if ft.is_dir() {
            collect_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// The place where `restore SNAP --target TARGET` recreates the absolute source path `src`.
pub fn restored_path(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("source paths are absolute"))
}

/// Flips one bit of the byte at `offset` (or the middle when `None`) in `file`.
/// Every regular file below `dir`, recursively (symlinks are not followed).
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Whether `needle` (not empty) occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn flip_byte(file: &Path, offset: Option<usize>) {
    let mut bytes = std::fs::read(file).expect("read object to corrupt");
    assert!(!bytes.is_empty(), "{} is empty", file.display());
    let at = offset.unwrap_or(bytes.len() / 2).min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    let perm = std::fs::metadata(file).expect("stat").permissions();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(file, &bytes).expect("write corrupted object");
    std::fs::set_permissions(file, perm).expect("chmod back");
}

pub fn file_name(p: &Path) -> String {
    p.file_name().expect("file name").to_string_lossy().into_owned()
}

/// Asserts that `text` names the repository object stored at `file`: its file name, or at least
/// its first 8 characters (a short id), appears.
pub fn assert_names_object(text: &str, file: &Path, what: &str) {
    let name = file_name(file);
    let short: String = name.chars().take(8).collect();
    assert!(
        text.contains(&name) || text.contains(&short),
        "{what}: output does not name the object {name} (nor its short id {short}):\n{text}"
    );
}

/// Checks the shape of a `backup --json` summary.
pub fn check_backup_summary(v: &Value) {
    for key in ["files_new", "files_changed", "files_unmodified", "dirs", "bytes_read", "bytes_added"] {
        assert!(v[key].is_u64(), "backup summary lacks numeric {key:?}: {v}");
    }
    assert!(v["errors"].is_array(), "backup summary lacks errors array: {v}");
    assert!(v["incomplete"].is_boolean(), "backup summary lacks incomplete: {v}");
    let id = v["snapshot_id"].as_str().unwrap_or_default();
    let short = v["short_id"].as_str().unwrap_or_default();
    assert!(is_hex(id, 64), "snapshot_id is not 64 hex chars: {v}");
    assert!(is_hex(short, 8), "short_id is not 8 hex chars: {v}");
    assert!(id.starts_with(short), "short_id is not a prefix of snapshot_id: {v}");
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Numeric field of a JSON object, with a useful panic.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key:?} is not an unsigned number in {v}"))
}

pub fn float(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key:?} is not a number in {v}"))
}

pub fn string(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("{key:?} is not a string in {v}")).to_string()
}

/// Output of one finished command.
pub struct Out {
    pub argv: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout and stderr together, for "does the output name X" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout(), self.stderr())
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code(), Some(code), "unexpected exit status\n{self}");
        self.assert_no_panic();
    }

    pub fn assert_failed(&self) {
        assert!(!self.status.success(), "command succeeded but should have failed\n{self}");
        assert!(self.code().is_some(), "killed by a signal\n{self}");
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        let err = self.stderr();
        assert!(!err.contains("panicked at") && !err.contains("RUST_BACKTRACE"), "the binary panicked\n{self}");
    }

    /// A fatal error: the given exit code and exactly one non-empty line on stderr.
    pub fn assert_one_line_error(&self, code: i32) {
        self.assert_code(code);
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected exactly one line on stderr\n{self}");
    }

    /// stdout parsed as exactly one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e})\n{self}"))
    }

    /// stdout parsed as one JSON value per non-empty line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l:?}\n{self}")))
            .collect()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".to_string(),
        };
        writeln!(f, "command: {}", self.argv)?;
        writeln!(f, "status:  {status} after {:.1?}", self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", clip(&self.stdout()))?;
        write!(f, "--- stderr ---\n{}", clip(&self.stderr()))
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 6000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n… ({} more bytes)", &s[..cut], s.len() - cut)
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A command running in the background with its output being collected.
pub struct Running {
    pub child: Child,
    argv: String,
    started: Instant,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    pub fn start(mut c: Command) -> Self {
        let argv = describe(&c);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start {argv}: {e}"));
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        Running { child, argv, started: Instant::now(), out, err }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Has the process exited already?
    pub fn finished(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("send signal");
    }

    /// Waits for exit; kills the process and panics after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Out {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.collect(ExitStatus::from_raw(9));
                panic!("command timed out after {timeout:?}\n{out}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Out {
        let join = |h: Option<JoinHandle<Vec<u8>>>| h.map(|h| h.join().unwrap_or_default());
        Out {
            argv: self.argv.clone(),
            status,
            stdout: join(self.out.take()).unwrap_or_default(),
            stderr: join(self.err.take()).unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs a prepared command to completion with a timeout.
pub fn run(c: Command, timeout: Duration) -> Out {
    Running::start(c).wait(timeout)
}

/// The first CPU this process may run on (for `taskset -c`), from /proc/self/status.
pub fn first_allowed_cpu() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| {
            let first = l.trim().split([',', '-']).next()?;
            first.parse().ok()
        })
        .unwrap_or(0)
}

/// Bytes a process has read through read(2) so far (`rchar` of /proc/PID/io).
pub fn bytes_read_by(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok())
}

/// Unmounts (lazily) when dropped; used for the small tmpfs of the full-disk test.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a note that a test was skipped, visible with `--nocapture` and in failure output.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
