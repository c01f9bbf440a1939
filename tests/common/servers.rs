//! Storage servers on 127.0.0.1 for the remote-repository tests: S3 (moto_server), SFTP
//! (OpenSSH sshd with keys made here) and WebDAV (`rclone serve webdav`). Each is started on a
//! free port, waited for until it answers, and killed when dropped. A server that cannot start
//! panics: in CI a missing server is a failure, never a silent skip (tests/install-deps.sh
//! installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(60);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

struct Process {
    child: Child,
    what: &'static str,
    log: PathBuf,
}

impl Process {
    fn spawn(what: &'static str, mut command: Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).expect("create server log");
        let err = out.try_clone().expect("clone log handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({e}); tests/install-deps.sh installs it: {command:?}"));
        Process { child, what, log }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{} did not start: {why}\n--- its output ---\n{log}", self.what);
    }

    /// Waits until `ready` holds, failing if the process exits or takes too long.
    fn wait_until(&mut self, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("exited with {status}"));
            }
            if start.elapsed() > STARTUP {
                self.fail("not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 request to 127.0.0.1:port; returns the status code.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// moto's S3 on a free port. Buckets are made with [`S3Server::bucket`].
pub struct S3Server {
    pub port: u16,
    _process: Process,
}

/// The credentials moto accepts (it checks none); the secret is passed by reference.
pub const S3_ACCESS_KEY: &str = "coffer-test";
pub const S3_SECRET_ENV: &str = "COFFER_TEST_S3_SECRET";
pub const S3_SECRET: &str = "coffer-test-secret";

impl S3Server {
    pub fn start(dir: &Path) -> S3Server {
        let port = free_port();
        let mut command = Command::new("python3");
        command.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = Process::spawn("moto_server (S3)", command, dir.join(format!("moto-{port}.log")));
        process.wait_until(|| http(port, "GET", "/", &[], b"").is_some_and(|code| code < 500));
        S3Server { port, _process: process }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (plain).
    pub fn bucket(&self, name: &str) {
        let code = http(self.port, "PUT", &format!("/{name}"), &[], b"");
        assert_eq!(code, Some(200), "creating bucket {name}");
    }

    /// Creates a bucket with Object Lock and a default COMPLIANCE retention of `days`: no
    /// object version can be deleted or replaced in that time.
    pub fn locked_bucket(&self, name: &str, days: u32) {
        let code = http(self.port, "PUT", &format!("/{name}"), &[("x-amz-bucket-object-lock-enabled", "true")], b"");
        assert_eq!(code, Some(200), "creating locked bucket {name}");
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
             <Mode>COMPLIANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
        );
        let code = http(self.port, "PUT", &format!("/{name}?object-lock"), &[], body.as_bytes());
        assert_eq!(code, Some(200), "setting the object lock of {name}");
    }

    /// The repository URL and options for a bucket and prefix.
    pub fn repo(&self, bucket: &str, prefix: &str) -> (String, Vec<String>) {
        (
            format!("s3://{bucket}/{prefix}?endpoint={}&region=us-east-1", self.endpoint()),
            vec![format!("access_key_id={S3_ACCESS_KEY}"), format!("secret_access_key=env:{S3_SECRET_ENV}")],
        )
    }
}

/// OpenSSH's sshd on a free port, with a host key and a client key made for it, and an `ssh`
/// wrapper (first on PATH for Coffer) that trusts only that host key.
pub struct SftpServer {
    pub port: u16,
    pub dir: PathBuf,
    _process: Process,
}

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl SftpServer {
    pub fn start(dir: &Path) -> SftpServer {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(dir.join("bin")).expect("sshd dir");
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"]).arg(dir.join(key)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        // sshd refuses to run without its privilege-separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {host_key}")).expect("known_hosts");
        let ssh_config = format!(
            "Host *\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  LogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("ssh_config"), ssh_config).expect("ssh_config");
        // What a user's ~/.ssh/config does; ssh reads ~ from the password database, not $HOME,
        // so a test cannot give it a private home.
        let wrapper = dir.join("bin/ssh");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec /usr/bin/ssh -F {}/ssh_config \"$@\"\n", dir.display()))
            .expect("ssh wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("sshd");
        let mut command = Command::new(sshd);
        command.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
        let mut process = Process::spawn("sshd (SFTP)", command, dir.join("sshd.log"));
        process.wait_until(|| {
            let mut banner = [0u8; 4];
            TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.read_exact(&mut banner)
                })
                .is_ok_and(|()| &banner == b"SSH-")
        });
        SftpServer { port, dir, _process: process }
    }

    pub fn user() -> String {
        nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name).unwrap_or("root".into())
    }

    /// The repository URL for a folder on the server.
    pub fn repo(&self, path: &Path) -> String {
        format!("sftp://{}@127.0.0.1:{}{}", Self::user(), self.port, path.display())
    }

    /// PATH for Coffer, with the ssh wrapper first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut path = std::ffi::OsString::from(self.dir.join("bin"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }

    /// Environment for a process that talks to this server: the ssh wrapper on PATH, and
    /// ssh's control sockets in a short folder (socket paths are limited to 108 bytes).
    pub fn env(&self) -> Vec<(String, std::ffi::OsString)> {
        let state = PathBuf::from("/tmp").join(format!("coffer-ssh-{}", self.port));
        let _ = std::fs::create_dir_all(&state);
        vec![("PATH".into(), self.path_env()), ("XDG_STATE_HOME".into(), state.into_os_string())]
    }
}

impl Drop for SftpServer {
    /// Ends ssh control masters a killed Coffer may have left (they outlive the server).
    fn drop(&mut self) {
        let state = PathBuf::from("/tmp").join(format!("coffer-ssh-{}", self.port));
        for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let socket = entry.path().join("master");
            if socket.exists() {
                let _ = Command::new("/usr/bin/ssh")
                    .arg("-S")
                    .arg(&socket)
                    .args(["-O", "exit", "coffer-test"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&state);
    }
}

/// `rclone serve webdav` of a local folder on a free port (plain http).
pub struct WebdavServer {
    pub port: u16,
    _process: Process,
}

impl WebdavServer {
    pub fn start(dir: &Path) -> WebdavServer {
        let root = dir.join("webdav-root");
        std::fs::create_dir_all(&root).expect("webdav root");
        let config = dir.join("rclone.conf");
        std::fs::write(&config, "").expect("rclone config");
        let port = free_port();
        let mut command = Command::new("rclone");
        command.args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}"), "--config"]).arg(&config).arg(&root);
        let mut process = Process::spawn("rclone serve webdav", command, dir.join(format!("rclone-{port}.log")));
        process.wait_until(|| http(port, "OPTIONS", "/", &[], b"").is_some_and(|code| code < 500));
        WebdavServer { port, _process: process }
    }

    pub fn repo(&self, path: &str) -> String {
        format!("webdav+http://127.0.0.1:{}/{path}", self.port)
    }
}

/// `benches/delay_proxy.py` in front of a server on 127.0.0.1: each direction is delayed by
/// `delay_ms`, so a request costs a round trip of twice that, as to a distant store.
pub struct DelayProxy {
    pub port: u16,
    _process: Process,
}

impl DelayProxy {
    pub fn start(dir: &Path, upstream_port: u16, delay_ms: u32) -> DelayProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/delay_proxy.py");
        let log = dir.join(format!("delay-proxy-{upstream_port}.log"));
        let mut command = Command::new("python3");
        command.arg(&script).args([
            "--upstream",
            &format!("127.0.0.1:{upstream_port}"),
            "--delay-ms",
            &delay_ms.to_string(),
            // A test never needs it longer; a proxy left behind by a killed test goes away.
            "--max-seconds",
            "1800",
        ]);
        let mut process = Process::spawn("delay proxy", command, log.clone());
        let mut port = None;
        process.wait_until(|| {
            port = std::fs::read_to_string(&log).ok().and_then(|text| {
                text.lines().find_map(|l| l.strip_prefix("listening on ")?.rsplit(':').next()?.parse().ok())
            });
            port.is_some()
        });
        DelayProxy { port: port.expect("proxy port"), _process: process }
    }

    /// `server`'s endpoint as seen through this proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
