//! End-to-end: write-only keys, passphrase management, signed snapshots, profiles and the OS
//! keychain (a real Secret Service on a private D-Bus, real kernel keyutils), through the binary.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WRITE_ONLY: &str = "this key can only write";

fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `coffer` with repository and cache set but no password.
fn keyless(c: &Coffer) -> Command {
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &c.repo).env("COFFER_CACHE_DIR", &c.cache);
    cmd
}

fn go(mut cmd: Command, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    for a in args {
        cmd.arg(a.as_ref());
    }
    run(cmd, DEFAULT_TIMEOUT)
}

fn private_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}

fn source(c: &Coffer) -> PathBuf {
    let src = c.dir("src");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).expect("write");
    src
}

fn write_only_key_file(c: &Coffer, name: &str) -> PathBuf {
    let path = c.path(name);
    c.ok(&[OsString::from("key"), "write-only".into(), "--output".into(), path.clone().into()]);
    path
}

#[test]
fn write_only_clients_back_up_with_dedup_read_nothing_and_the_full_key_restores_all() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let key = write_only_key_file(&c, "laptop.key");
    let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file must be private");
    let text = std::fs::read_to_string(&key).expect("read key");
    assert!(text.starts_with("coffer-write-only-key-v2:"), "{text}");

    let with_key = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--key-file", &key];
        args.extend_from_slice(extra);
        go(keyless(&c), &args)
    };
    // Made before the first backup: the folders above the source are backed up with their times.
    let other_cache = c.dir("other-cache");
    let target = c.path("target");
    let mnt = c.dir("mnt");
    let first = with_key(&[&"backup", &"--json", &src]);
    first.assert_code(0);
    let first = first.json();
    assert!(num(&first, "bytes_added") > 0);

    // A second write-only client with an empty local database: dedup against the repository.
    let mut cmd = keyless(&c);
    cmd.env("COFFER_CACHE_DIR", &other_cache);
    let second = go(cmd, &[&"--key-file", &key, &"backup", &"--json", &src]);
    second.assert_code(0);
    // No data: at most a tree of a folder above the source, since other tests running at the
    // same time change the shared scratch folder.
    assert!(num(&second.json(), "bytes_added") < 4096, "stored the content again: {}", second.stdout());
    // And against the local database: nothing read again.
    let third = with_key(&[&"backup", &"--json", &src]);
    third.assert_code(0);
    assert!(num(&third.json(), "bytes_added") < 4096, "stored the content again: {}", third.stdout());

    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", target.to_str().expect("utf-8")],
        vec!["mount", mnt.to_str().expect("utf-8")],
        vec!["diff", "latest", "latest"],
        vec!["stats"],
        vec!["check", "--read-data"],
        vec!["key", "add"],
        vec!["key", "write-only", "--output", c.path("x.key").to_str().expect("utf-8")],
    ] {
        let mut cmd = keyless(&c);
        cmd.arg("--key-file").arg(&key).args(&args);
        let out = run(cmd, DEFAULT_TIMEOUT);
        out.assert_failed();
        assert!(out.stderr().contains(WRITE_ONLY), "{args:?} did not refuse clearly:\n{out}");
        let named = match args[0] {
            "snapshots" => "listing snapshots needs".to_string(),
            "check" => "check --read-data needs".to_string(),
            "key" if args[1] == "add" => "adding a passphrase needs".to_string(),
            "key" => "creating a write-only key needs".to_string(),
            other => format!("{other} needs"),
        };
        assert!(out.stderr().contains(&named), "{args:?} does not name what needs the full key:\n{out}");
        assert!(!target.exists(), "restore wrote something");
    }
    assert!(!c.path("x.key").exists());
    // Structure checks still work.
    go(keyless(&c), &[&"--key-file", &key, &"check"]).assert_code(0);

    // The full key sees and restores everything written by write-only clients.
    assert_eq!(c.snapshots().len(), 3);
    c.restore("latest", &target);
    assert_trees_equal(&src, &restored_path(&target, &src));
    c.ok(&["check", "--read-data"]);
}

#[test]
fn a_key_file_must_be_private_and_hold_a_write_only_key() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let pw = private_file(&c.path("pw.key"), &format!("{}\n", c.password));
    let out = go(keyless(&c), &[&"--key-file", &pw, &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("does not hold a write-only key"), "{out}");
    assert!(out.stderr().contains("--allow-full-key-file"), "{out}");
    go(keyless(&c), &[&"--key-file", &pw, &"--allow-full-key-file", &"backup", &src]).assert_code(0);

    let key = write_only_key_file(&c, "laptop.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = go(keyless(&c), &[&"--key-file", &key, &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("chmod 600"), "{out}");

    // The key itself on the command line is refused (argv is public).
    let text = std::fs::read_to_string(&key).expect("read");
    let out = go(keyless(&c), &[&"--key", &text.trim(), &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("never the key itself"), "{out}");
    assert!(!out.stderr().contains(text.trim()), "the key was echoed");

    // A key of another repository.
    let other = Coffer::new();
    other.init();
    let foreign = write_only_key_file(&other, "foreign.key");
    let out = go(keyless(&c), &[&"--key-file", &foreign, &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("belongs to repository"), "{out}");
}

#[test]
fn systemd_credentials_directory_provides_the_key() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let creds = c.dir("creds");
    let key = write_only_key_file(&c, "k");
    std::fs::copy(&key, creds.join("coffer-key")).expect("copy");
    let mut cmd = keyless(&c);
    cmd.env("CREDENTIALS_DIRECTORY", &creds);
    go(cmd, &[&"backup", &src]).assert_code(0);
    // A passphrase as the credential is refused unless allowed.
    private_file(&creds.join("coffer-key"), &c.password);
    let mut cmd = keyless(&c);
    cmd.env("CREDENTIALS_DIRECTORY", &creds);
    let out = go(cmd, &[&"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("does not hold a write-only key"), "{out}");
    assert_eq!(c.snapshots().len(), 1);
}

#[test]
fn passphrases_can_be_added_changed_and_removed() {
    let mut c = Coffer::new();
    c.init();
    let second = private_file(&c.path("second"), "second passphrase\n");
    c.ok(&[OsString::from("key"), "add".into(), "--new-password-file".into(), second.clone().into()]);
    let keys = c.ok(&["key", "list", "--json"]).json();
    let keys = keys.as_array().expect("array");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let first_id =
        keys.iter().find(|k| k["current"] == true).expect("current key")["id"].as_str().expect("id").to_string();

    let original = c.password.clone();
    c.password = "second passphrase".into();
    c.ok(&["key", "remove", &first_id[..12]]);
    c.password = original;
    c.cmd(&["snapshots"]).assert_code(12);

    c.password = "second passphrase".into();
    let third = private_file(&c.path("third"), "third passphrase\n");
    c.ok(&[OsString::from("key"), "passwd".into(), "--new-password-file".into(), third.into()]);
    c.cmd(&["snapshots"]).assert_code(12);
    c.password = "third passphrase".into();
    c.ok(&["snapshots"]);
    assert_eq!(c.repo_files("keys").len(), 1, "passwd rewrites only that key file");
    let last = c.ok(&["key", "list", "--json"]).json()[0]["id"].as_str().expect("id").to_string();
    let out = c.cmd(&["key", "remove", &last]);
    out.assert_failed();
    assert!(out.stderr().contains("cannot be removed"), "{out}");
}

#[test]
fn removing_a_write_only_key_distrusts_its_later_snapshots() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let key = write_only_key_file(&c, "laptop.key");
    go(keyless(&c), &[&"--key-file", &key, &"backup", &src]).assert_code(0);
    // The thief's copy of the repository (and a client that would ignore a removal).
    let stolen = c.path("stolen-repo");
    assert!(Command::new("cp").arg("-a").arg(&c.repo).arg(&stolen).status().expect("cp").success());

    let listed = c.ok(&["key", "list", "--json"]).json();
    let signer = listed.as_array().expect("array").iter().find(|k| k["kind"] == "write-only").expect("write-only key")
        ["id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = c.ok(&["key", "remove", &signer[..10]]);
    assert!(out.stderr().contains("1 snapshots"), "{out}");
    let out = go(keyless(&c), &[&"--key-file", &key, &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("was removed"), "{out}");

    // A snapshot the key writes after its removal, planted into the real repository.
    let mut cmd = keyless(&c);
    cmd.env("COFFER_REPOSITORY", &stolen).env("COFFER_CACHE_DIR", c.dir("thief-cache"));
    let planted = go(cmd, &[&"--key-file", &key, &"backup", &"--json", &src]);
    planted.assert_code(0);
    let planted = string(&planted.json(), "snapshot_id");
    std::fs::copy(stolen.join("snapshots").join(&planted), c.repo.join("snapshots").join(&planted)).expect("plant");

    let snapshots = c.snapshots();
    assert_eq!(snapshots.len(), 1, "the later snapshot must be ignored: {snapshots:?}");
    assert!(!snapshots.iter().any(|s| s.to_string().contains(&planted)));
    let out = c.cmd(&["check"]);
    out.assert_failed();
    assert!(out.all().contains(&planted[..8]) && out.all().contains("after it was removed"), "{out}");
    assert!(c.cmd(&["restore", &planted[..12], "--target", c.path("t").to_str().expect("utf-8")]).code() != Some(0));
}

#[test]
fn snapshots_forged_with_storage_access_or_replayed_from_another_repository_are_ignored() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    c.backup(&[&src]);
    // Another repository's genuine snapshot, and one made of junk named by its hash.
    let other = Coffer::new();
    other.init();
    let foreign = string(&other.backup(&[&src]), "snapshot_id");
    std::fs::copy(other.repo.join("snapshots").join(&foreign), c.repo.join("snapshots").join(&foreign)).expect("copy");
    let mut junk = b"CFSNAP01".to_vec();
    junk.extend(std::iter::repeat_n(0x5a, 400));
    let junk_id = blake3::hash(&junk).to_hex().to_string();
    std::fs::write(c.repo.join("snapshots").join(&junk_id), &junk).expect("write");

    assert_eq!(c.snapshots().len(), 1);
    let out = c.cmd(&["check"]);
    out.assert_failed();
    for id in [&foreign, &junk_id] {
        assert!(out.all().contains(&id[..8]), "check does not report {id}:\n{out}");
    }
}

#[test]
fn profiles_supply_repository_sources_and_secret_references() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let profiles = c.home.join(".config/coffer/profiles");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    for dir in [c.home.join(".config"), c.home.join(".config/coffer"), profiles.clone()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let pwfile = c.password_file();
    let text = format!(
        "repository = {:?}\npassword = \"file:{}\"\nsources = [{:?}]\nexcludes = [\"*.bin\"]\ntags = [\"home\"]\n\
         host = \"profiled\"\n[options]\nsecret_access_key = \"keychain:s3-home\"\n[retention]\nkeep_daily = 7\n",
        c.repo.to_str().expect("utf-8"),
        pwfile.display(),
        src.to_str().expect("utf-8"),
    );
    let profile = private_file(&profiles.join("home.toml"), &text);
    let mut cmd = c.bare_command();
    cmd.env("COFFER_CACHE_DIR", &c.cache);
    let out = go(cmd, &[&"backup", &"--profile", &"home", &"--json"]);
    out.assert_code(0);
    let snaps = c.snapshots();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].to_string().contains("profiled") && snaps[0].to_string().contains("home"), "{snaps:?}");
    let listed = c.ls("latest", None);
    assert!(!listed.iter().any(|e| e.to_string().contains("b.bin")), "excludes not applied");

    // `init` takes the repository and the new passphrase from a profile too.
    let fresh = c.path("fresh-repo");
    private_file(
        &profiles.join("fresh.toml"),
        &format!("repository = {:?}\npassword = \"file:{}\"\n", fresh.to_str().expect("utf-8"), pwfile.display()),
    );
    go(c.bare_command(), &[&"init", &"--profile", &"fresh"]).assert_code(0);
    assert!(fresh.join("config").is_file());
    let mut cmd = c.bare_command();
    cmd.env("COFFER_REPOSITORY", &fresh).env("COFFER_PASSWORD", &c.password);
    go(cmd, &[&"snapshots"]).assert_code(0);

    let out = go(c.bare_command(), &[&"profile", &"show", &"home"]);
    out.assert_code(0);
    assert!(out.stdout().contains("keychain:s3-home") && out.stdout().contains("keep_daily = 7"), "{out}");

    // Looser permissions, or a literal secret, are refused with a message.
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = go(c.bare_command(), &[&"backup", &"--profile", &"home"]);
    out.assert_failed();
    assert!(out.stderr().contains("chmod 600"), "{out}");
    private_file(&profile, &text.replace("keychain:s3-home", "literal-secret-123"));
    let out = go(c.bare_command(), &[&"backup", &"--profile", &"home"]);
    out.assert_failed();
    assert!(out.stderr().contains("literal secret"), "{out}");
    let out = go(c.bare_command(), &[&"profile", &"show", &"home"]);
    assert!(!out.all().contains("literal-secret-123"), "show printed the secret:\n{out}");
}

#[test]
fn a_profile_gives_forget_its_policy_and_an_append_only_profile_refuses_to_delete() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    for n in 0..3 {
        std::fs::write(src.join("changing.txt"), format!("version {n}\n")).expect("write");
        c.backup(&[&src]);
    }
    let profiles = c.home.join(".config/coffer/profiles");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    for dir in [c.home.join(".config"), c.home.join(".config/coffer"), profiles.clone()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let pwfile = c.password_file();
    let profile = |append_only: bool| {
        format!(
            "repository = {:?}\npassword = \"file:{}\"\nappend_only = {append_only}\n[retention]\nkeep_last = 1\n",
            c.repo.to_str().expect("utf-8"),
            pwfile.display(),
        )
    };
    private_file(&profiles.join("laptop.toml"), &profile(true));
    private_file(&profiles.join("admin.toml"), &profile(false));
    let mut cmd = c.bare_command();
    cmd.env("COFFER_CACHE_DIR", &c.cache);
    let out = go(cmd, &[&"forget", &"--profile", &"laptop"]);
    out.assert_failed();
    assert!(out.stderr().contains("append-only"), "{out}");
    let mut cmd = c.bare_command();
    cmd.env("COFFER_CACHE_DIR", &c.cache);
    go(cmd, &[&"prune", &"--profile", &"laptop"]).assert_failed();
    assert_eq!(c.snapshots().len(), 3, "an append-only profile deleted snapshots");

    let mut cmd = c.bare_command();
    cmd.env("COFFER_CACHE_DIR", &c.cache);
    go(cmd, &[&"forget", &"--profile", &"admin", &"--prune"]).assert_code(0);
    assert_eq!(c.snapshots().len(), 1, "the profile's keep_last = 1 was not applied");
    c.ok(&["check", "--read-data"]);
}

// ---------------------------------------------------------------------------------------------
// The OS keychain.

/// Starts a private session bus that activates no services (so no Secret Service appears on
/// it unless a test starts one); returns it and its address.
fn private_bus(c: &Coffer, name: &str) -> (Child, String) {
    let socket = c.path(name);
    let address = format!("unix:path={}", socket.display());
    let config = c.path(&format!("{name}.conf"));
    std::fs::write(
        &config,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><type>session</type><listen>{address}</listen>\
             <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
             <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n"
        ),
    )
    .expect("bus config");
    let bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dbus-daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "dbus-daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (bus, address)
}

/// A private D-Bus session with gnome-keyring's Secret Service, unlocked.
struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
}

impl SecretService {
    fn start(c: &Coffer) -> Option<SecretService> {
        if !has("dbus-daemon") || !has("gnome-keyring-daemon") {
            skip("secret service", "dbus-daemon or gnome-keyring-daemon missing (tests/install-deps.sh)");
            return None;
        }
        let (bus, address) = private_bus(c, "bus");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", &c.home)
            .env("XDG_DATA_HOME", c.home.join(".local/share"))
            .env("XDG_RUNTIME_DIR", c.dir("runtime"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().expect("stdin");
            stdin.write_all(b"keyring unlock password").expect("unlock password");
        }
        let service = SecretService { bus, keyring, address };
        // Ready once the service name is owned on the bus.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let owned = Command::new("dbus-send")
                .env("DBUS_SESSION_BUS_ADDRESS", &service.address)
                .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
                .args(["org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"));
            if owned {
                break;
            }
            assert!(Instant::now() < deadline, "gnome-keyring-daemon did not register org.freedesktop.secrets");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(service)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address).env("COFFER_KEYCHAIN", "secret-service");
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn secret_set(mut cmd: Command, name: &str, secret: &str) -> Out {
    use std::io::Write;
    cmd.args(["secret", "set", name]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(format!("{secret}\n").as_bytes()).expect("write secret");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "secret set failed: {}", String::from_utf8_lossy(&output.stderr));
    Out {
        argv: format!("secret set {name}"),
        status: output.status,
        stdout: output.stdout,
        stderr: output.stderr,
        elapsed: Duration::ZERO,
    }
}

#[test]
fn secret_service_holds_the_write_only_key_and_storage_secrets() {
    let c = Coffer::new();
    let Some(ss) = SecretService::start(&c) else { return };
    c.init();
    let src = source(&c);
    let mut cmd = c.command();
    ss.env(&mut cmd);
    go(cmd, &[&"key", &"write-only", &"--save-to-keychain", &"laptop"]).assert_code(0);
    // Interchangeable with secret-tool.
    if has("secret-tool") {
        let found = Command::new("secret-tool")
            .env("DBUS_SESSION_BUS_ADDRESS", &ss.address)
            .args(["lookup", "service", "coffer", "username", "laptop"])
            .output()
            .expect("secret-tool");
        assert!(String::from_utf8_lossy(&found.stdout).starts_with("coffer-write-only-key-v2:"));
    }
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    go(cmd, &[&"--key", &"keychain:laptop", &"backup", &src]).assert_code(0);
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    let out = go(cmd, &[&"--key", &"keychain:laptop", &"ls", &"latest"]);
    out.assert_failed();
    assert!(out.stderr().contains(WRITE_ONLY), "{out}");

    let mut cmd = c.bare_command();
    ss.env(&mut cmd);
    secret_set(cmd, "repo-pw", &c.password);
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    go(cmd, &[&"--key", &"keychain:repo-pw", &"--allow-full-key-file", &"snapshots"]).assert_code(0);
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    let out = go(cmd, &[&"--key", &"keychain:missing-entry", &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("coffer secret set missing-entry"), "{out}");

    // A keychain that never answers (as a locked one waiting for an unlock prompt): the command
    // gives up after COFFER_KEYCHAIN_TIMEOUT, naming the cause, instead of hanging.
    let keyring_pid = nix::unistd::Pid::from_raw(ss.keyring.id() as i32);
    nix::sys::signal::kill(keyring_pid, nix::sys::signal::Signal::SIGSTOP).expect("stop the keyring");
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    cmd.env("COFFER_KEYCHAIN_TIMEOUT", "2");
    let out = go(cmd, &[&"--key", &"keychain:laptop", &"backup", &src]);
    nix::sys::signal::kill(keyring_pid, nix::sys::signal::Signal::SIGCONT).expect("continue the keyring");
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("did not answer within 2 s"), "{out}");

    let mut cmd = c.bare_command();
    ss.env(&mut cmd);
    go(cmd, &[&"secret", &"delete", &"laptop"]).assert_code(0);
    let mut cmd = keyless(&c);
    ss.env(&mut cmd);
    let out = go(cmd, &[&"--key", &"keychain:laptop", &"backup", &src]);
    out.assert_failed();
    assert_eq!(c.snapshots().len(), 1);
}

#[test]
fn kernel_keyutils_holds_the_write_only_key() {
    if !has("keyctl") {
        skip("kernel_keyutils_holds_the_write_only_key", "keyctl missing (tests/install-deps.sh)");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    // Each command in its own new session keyring: keys live in the user's persistent keyring.
    let name = format!("coffer-test-{}", std::process::id());
    let in_session = |base: Command| {
        let mut cmd = Command::new("keyctl");
        cmd.args(["session", "-"]).arg(base.get_program());
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("COFFER_KEYCHAIN", "keyutils").env_remove("DBUS_SESSION_BUS_ADDRESS").stdin(Stdio::null());
        cmd
    };
    go(in_session(c.command()), &[&"key", &"write-only", &"--save-to-keychain", &name]).assert_code(0);
    go(in_session(keyless(&c)), &[&"--key", &format!("keychain:{name}"), &"backup", &src]).assert_code(0);
    go(in_session(c.bare_command()), &[&"secret", &"delete", &name]).assert_code(0);
    let out = go(in_session(keyless(&c)), &[&"--key", &format!("keychain:{name}"), &"backup", &src]);
    out.assert_failed();
    assert!(out.stderr().contains("does not exist"), "{out}");
    assert_eq!(c.snapshots().len(), 1);
}

#[test]
fn an_unavailable_keychain_fails_closed_at_once() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    // No bus at all, then a bus without a Secret Service.
    let mut cmd = keyless(&c);
    cmd.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", c.path("no-bus").display()))
        .env("COFFER_KEYCHAIN", "secret-service");
    let started = Instant::now();
    let out = go(cmd, &[&"--key", &"keychain:laptop", &"backup", &src]);
    out.assert_one_line_error(1);
    assert!(out.stderr().contains("keychain is not available") && out.stderr().contains("COFFER_KEYCHAIN"), "{out}");
    assert!(started.elapsed() < DEFAULT_TIMEOUT);

    if has("dbus-daemon") {
        let (mut bus, address) = private_bus(&c, "bare-bus");
        let mut cmd = keyless(&c);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &address).env("COFFER_KEYCHAIN", "secret-service");
        let out = go(cmd, &[&"secret", &"delete", &"x"]);
        let _ = bus.kill();
        let _ = bus.wait();
        out.assert_one_line_error(1);
        assert!(out.stderr().contains("keychain is not available"), "{out}");
    }
    assert!(c.repo_files("snapshots").is_empty(), "nothing may be backed up");
}

// ---------------------------------------------------------------------------------------------
// Nothing secret at rest or in sight.

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn no_secret_at_rest_or_in_sight() {
    let mut c = Coffer::new();
    c.password = "pass-9d1c7e55-never-anywhere".into();
    let Some(ss) = SecretService::start(&c) else { return };
    let storage_secret = "s3-secret-6a0f3b2e-never-anywhere";
    let mut outputs: Vec<Out> = Vec::new();
    let ss_cmd = |base: Command| {
        let mut cmd = base;
        ss.env(&mut cmd);
        cmd
    };
    outputs.push(go(ss_cmd(c.command()), &[&"init", &"-vv", &"--json"]));
    outputs.push(secret_set(ss_cmd(c.bare_command()), "repo-pw", &c.password));
    outputs.push(secret_set(ss_cmd(c.bare_command()), "s3-home", storage_secret));
    outputs.push(go(ss_cmd(c.command()), &[&"key", &"write-only", &"--save-to-keychain", &"laptop", &"--json"]));
    let key_file = write_only_key_file(&c, "server.key");
    let key_text = std::fs::read_to_string(&key_file).expect("read key").trim().to_string();
    let laptop_key = Command::new("secret-tool")
        .env("DBUS_SESSION_BUS_ADDRESS", &ss.address)
        .args(["lookup", "service", "coffer", "username", "laptop"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let src = source(&c);
    let profiles = c.home.join(".config/coffer/profiles");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    for dir in [c.home.join(".config"), c.home.join(".config/coffer"), profiles.clone()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    private_file(
        &profiles.join("home.toml"),
        &format!(
            "repository = {:?}\npassword = \"keychain:repo-pw\"\nsources = [{:?}]\n[options]\nsecret_access_key = \"keychain:s3-home\"\n",
            c.repo.to_str().expect("utf-8"),
            src.to_str().expect("utf-8")
        ),
    );
    private_file(
        &profiles.join("laptop.toml"),
        &format!(
            "repository = {:?}\nkey = \"keychain:laptop\"\nsources = [{:?}]\n",
            c.repo.to_str().expect("utf-8"),
            src.to_str().expect("utf-8")
        ),
    );

    // Backups of every kind: passphrase (env), profile (passphrase from the keychain),
    // write-only key from the keychain (profile), write-only key file.
    outputs.push(go(c.command(), &[&"backup", &"-vv", &"--json", &src]));
    outputs.push(go(ss_cmd(keyless(&c)), &[&"backup", &"--profile", &"home", &"-vv", &"--json"]));
    outputs.push(go(ss_cmd(keyless(&c)), &[&"backup", &"--profile", &"laptop", &"-vv", &"--json"]));
    outputs.push(go(keyless(&c), &[&"--key-file", &key_file, &"backup", &"-vv", &"--json", &src]));
    // A running backup: its argv and environment, read while it runs (a large sparse file
    // keeps it busy long enough; the reads happen after exec, checked by /proc/PID/exe).
    let big = c.dir("big");
    let sparse = std::fs::File::create(big.join("sparse")).expect("create");
    sparse.set_len(1 << 30).expect("sparse file");
    let mut cmd = ss_cmd(keyless(&c));
    cmd.args(["backup", "--profile", "laptop", "-vv", "--json"]).arg(&big);
    let mut running = Running::start(cmd);
    let mut proc_seen: Vec<Vec<u8>> = Vec::new();
    let exe = std::fs::canonicalize(BIN).expect("binary");
    while !running.finished() {
        let pid = running.pid();
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe) {
            for what in ["cmdline", "environ"] {
                if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}")) {
                    if !bytes.is_empty() {
                        proc_seen.push(bytes);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    outputs.push(running.wait(DEFAULT_TIMEOUT));
    assert!(
        proc_seen.iter().any(|b| contains(b, b"COFFER_KEYCHAIN")),
        "never read the environment of the running backup"
    );
    // Restore, mount, and a failing run.
    let target = c.path("target");
    outputs.push(go(
        ss_cmd(keyless(&c)),
        &[&"--profile", &"home", &"restore", &"latest", &"--target", &target, &"-vv", &"--json"],
    ));
    let mnt = c.dir("mnt");
    if Path::new("/dev/fuse").exists() && has("fusermount3") {
        let mut cmd = ss_cmd(keyless(&c));
        cmd.args(["--profile", "home", "mount", "-vv"]).arg(&mnt);
        let mount = Running::start(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !mnt.join("latest").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(mnt.join("latest").exists(), "the mount did not come up");
        assert_eq!(std::fs::read_dir(mnt.join("snapshots")).expect("snapshots/").count(), 5);
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
        let out = mount.wait(DEFAULT_TIMEOUT);
        out.assert_code(0);
        outputs.push(out);
    }
    let failing =
        go(ss_cmd(keyless(&c)), &[&"--profile", &"laptop", &"restore", &"latest", &"--target", &target, &"-vv"]);
    failing.assert_failed();
    outputs.push(failing);
    outputs.push(go(ss_cmd(keyless(&c)), &[&"--profile", &"home", &"snapshots", &"--json", &"-vv"]));
    outputs.push(go(ss_cmd(keyless(&c)), &[&"--profile", &"home", &"key", &"list", &"--json"]));
    outputs.push(go(ss_cmd(keyless(&c)), &[&"--profile", &"home", &"check", &"--read-data", &"--json"]));
    outputs.push(go(c.bare_command(), &[&"profile", &"show", &"home", &"--json"]));

    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("passphrase".into(), c.password.as_bytes().to_vec()),
        ("storage secret".into(), storage_secret.as_bytes().to_vec()),
    ];
    for (name, text) in [("key file", key_text.clone()), ("keychain key", laptop_key.clone())] {
        assert!(text.len() > 100, "{name} not read");
        let hex_part = text.trim_start_matches("coffer-write-only-key-v2:").to_string();
        let bytes = hex::decode(&hex_part).expect("hex");
        needles.push((format!("{name} text"), hex_part.as_bytes().to_vec()));
        // Each 32-byte key inside it (id_key, index_key, signing seed), raw, hex and base64.
        // (A version-2 key holds its domain secret where id_key was; index_key's place is zero.)
        for (i, part) in bytes[8 + 3 * 32..8 + 6 * 32].chunks(32).enumerate().filter(|(_, p)| p.iter().any(|b| *b != 0))
        {
            needles.push((format!("{name} part {i} raw"), part.to_vec()));
            needles.push((format!("{name} part {i} hex"), hex::encode(part).into_bytes()));
            needles.push((format!("{name} part {i} HEX"), hex::encode_upper(part).into_bytes()));
            needles.push((format!("{name} part {i} base64"), base64(part).as_bytes()[..40].to_vec()));
        }
    }
    for out in &outputs {
        for (name, needle) in &needles {
            assert!(!contains(&out.stdout, needle) && !contains(&out.stderr, needle), "{name} printed by {}", out.argv);
        }
    }
    for (i, seen) in proc_seen.iter().enumerate() {
        for (name, needle) in &needles {
            assert!(!contains(seen, needle), "{name} in /proc of the running backup (read {i})");
        }
    }
    let mut files = Vec::new();
    for dir in [&c.repo, &c.cache, &c.home.join(".config"), &c.home.join(".cache"), &c.home.join(".local/share/coffer")]
    {
        files_under(dir, &mut files);
    }
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().ends_with("state.db-wal") || f.to_string_lossy().ends_with("state.db")));
    assert!(files.iter().any(|f| f.starts_with(&c.repo)));
    // The key file written on purpose is the one place a key may be.
    files.retain(|f| *f != key_file);
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for (name, needle) in &needles {
            assert!(!contains(&bytes, needle), "{name} is stored in {}", f.display());
        }
    }
}
