//! Mounting and unmounting: options, mountpoint checks, signals, lazy-unmount fallback, and the
//! bdi readahead raise.
//!
//! [`mount_foreground`] serves until SIGINT/SIGTERM/SIGHUP (fuser installs no handlers; a
//! watcher thread receives them through `signal-hook`, safe code only) or until someone runs
//! `fusermount3 -u`. A busy mountpoint is detached lazily (`umount -l`); a second signal then
//! aborts the FUSE connection so the process can exit. [`spawn`] serves on a background thread
//! and returns a [`MountHandle`] (for tests and embedding).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL, SessionUnmounter};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::errors::MountError;
use crate::fs::ReadOnlyFs;
use crate::source::Source;
use crate::state::{MountState, Tuning};

/// How to mount. Start from `MountOptions::default()` and change what you need.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users see the mount (needs `user_allow_other` for non-root). The kernel then
    /// checks permissions against the backed-up modes and owners (`default_permissions`).
    pub allow_other: bool,
    /// Byte budget of the block cache (plaintext). Should hold well over `prefetch_blocks`
    /// blocks per concurrent reader.
    pub cache_bytes: u64,
    /// Threads for source calls; as many block fetches overlap (latency-bound storage).
    pub workers: usize,
    /// Threads reading requests from the kernel (callbacks are short; 1–2 suffice).
    pub fuse_threads: usize,
    /// Blocks fetched ahead of a sequential reader.
    pub prefetch_blocks: usize,
    /// How long the kernel trusts entries and attributes of immutable nodes.
    pub immutable_ttl: Duration,
    /// How long the kernel trusts volatile nodes, and how old a volatile listing may get.
    pub volatile_ttl: Duration,
    /// Longest a read waits for a block before failing with EIO.
    pub read_timeout: Duration,
    /// Readahead to set on the mount's bdi after mounting (`None` leaves the kernel's 128 KiB).
    pub read_ahead_kb: Option<u32>,
    /// Source name shown by `mount`/`df`.
    pub fs_name: String,
    /// Called once the filesystem is mounted (e.g. to tell the user), before serving.
    pub on_mounted: Option<fn(&Path)>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            cache_bytes: 256 << 20,
            workers: 16,
            fuse_threads: 2,
            prefetch_blocks: 8,
            immutable_ttl: Duration::from_secs(24 * 3600),
            volatile_ttl: Duration::from_secs(1),
            read_timeout: Duration::from_secs(60),
            read_ahead_kb: Some(1024),
            fs_name: "coffer".to_string(),
            on_mounted: None,
        }
    }
}

impl MountOptions {
    fn fuser_config(&self) -> Config {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::FSName(self.fs_name.clone()),
            MountOption::Subtype("coffer".to_string()),
        ];
        if self.allow_other {
            config.mount_options.push(MountOption::DefaultPermissions);
            config.acl = SessionACL::All;
        }
        config.n_threads = Some(self.fuse_threads.max(1));
        config.clone_fd = self.fuse_threads > 1;
        config
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            immutable_ttl: self.immutable_ttl,
            volatile_ttl: self.volatile_ttl,
            read_timeout: self.read_timeout,
            prefetch_blocks: self.prefetch_blocks,
        }
    }
}

fn filesystem<S: Source>(source: S, options: &MountOptions) -> Result<ReadOnlyFs<S>, MountError> {
    let state = MountState::new(source, options.cache_bytes, options.workers, options.tuning())?;
    Ok(ReadOnlyFs::new(state))
}

/// Mounts `source` read-only at `mountpoint` and serves it until SIGINT, SIGTERM or SIGHUP, or
/// until it is unmounted from outside (`fusermount3 -u`). Returns once unmounted.
///
/// The signal handlers stay installed (ignoring those signals) after this returns: call it as
/// the last thing a command does.
pub fn mount_foreground<S: Source>(
    source: S,
    mountpoint: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<(), MountError> {
    let mountpoint = check_mountpoint(mountpoint.as_ref())?;
    let fs = filesystem(source, options)?;
    let mut session = fuser::Session::new(fs, &mountpoint, &options.fuser_config())
        .map_err(|e| MountError::io(format!("mounting {}", mountpoint.display()), e))?;
    let device = device_of(&mountpoint);
    raise_read_ahead(device, options.read_ahead_kb);
    if let Some(announce) = options.on_mounted {
        announce(&mountpoint);
    }
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| MountError::io("installing signal handlers", e))?;
    let signals_handle = signals.handle();
    let mut unmounter = session.unmount_callable();
    let watched = mountpoint.clone();
    let watcher = thread::Builder::new()
        .name("coffer-mount-signals".to_string())
        .spawn(move || {
            for (n, signal) in signals.forever().enumerate() {
                if n == 0 {
                    log::info!("signal {signal}: unmounting {}", watched.display());
                    unmount_or_detach(&mut unmounter, &watched);
                } else {
                    abort_connection(device);
                }
            }
        })
        .map_err(|e| MountError::io("starting the signal thread", e))?;
    let served = session.run();
    signals_handle.close();
    let _ = watcher.join();
    served.map_err(|e| MountError::io(format!("serving {}", mountpoint.display()), e))
}

/// Mounts `source` read-only at `mountpoint`, serving it on background threads. The mount is
/// ready when this returns; dropping the handle unmounts.
pub fn spawn<S: Source>(
    source: S,
    mountpoint: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<MountHandle, MountError> {
    let mountpoint = check_mountpoint(mountpoint.as_ref())?;
    let fs = filesystem(source, options)?;
    let session = fuser::spawn_mount(fs, &mountpoint, &options.fuser_config())
        .map_err(|e| MountError::io(format!("mounting {}", mountpoint.display()), e))?;
    raise_read_ahead(device_of(&mountpoint), options.read_ahead_kb);
    Ok(MountHandle { session: Some(session), mountpoint })
}

/// A mount served in the background by [`spawn`].
#[derive(Debug)]
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl MountHandle {
    /// The (canonical) mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether serving has ended, e.g. after an outside `fusermount3 -u`.
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the serving thread; a busy mountpoint is detached lazily instead
    /// (serving then ends when its last user closes).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                log::warn!("{} is busy: detaching it", self.mountpoint.display());
                detach(&self.mountpoint)
                    .map_err(|e| MountError::io(format!("detaching {}", self.mountpoint.display()), e))
            }
            // Already unmounted from outside (`fusermount3 -u`): nothing left to do.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && device_of(&self.mountpoint).is_none() => Ok(()),
            Err(e) => Err(MountError::io(format!("unmounting {}", self.mountpoint.display()), e)),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{e}");
        }
    }
}

fn unmount_or_detach(unmounter: &mut SessionUnmounter, mountpoint: &Path) {
    let Err(e) = unmounter.unmount() else {
        return;
    };
    if e.raw_os_error() == Some(libc::EBUSY) {
        log::warn!(
            "{} is busy: detached; the mount ends when its last open file is closed \
             (signal again to end it now)",
            mountpoint.display()
        );
    } else {
        log::error!("unmounting {}: {e}; detaching it", mountpoint.display());
    }
    if let Err(e) = detach(mountpoint) {
        log::error!("detaching {}: {e}", mountpoint.display());
    }
}

fn detach(mountpoint: &Path) -> io::Result<()> {
    nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Ends a FUSE connection outright (through fusectl), failing whatever still uses it.
fn abort_connection(device: Option<(u32, u32)>) {
    let Some((_, minor)) = device else {
        return;
    };
    let path = format!("/sys/fs/fuse/connections/{minor}/abort");
    match fs::write(&path, "1") {
        Ok(()) => log::warn!("aborted the FUSE connection"),
        Err(e) => log::error!("aborting the FUSE connection ({path}): {e}"),
    }
}

/// Refuses a missing mountpoint, a non-directory, a stale or existing mount.
fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MountError::MissingMountpoint(path.to_path_buf())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Err(MountError::StaleMount(path.to_path_buf())),
        Err(e) => return Err(MountError::io(format!("checking {}", path.display()), e)),
    }
    let canonical = path.canonicalize().map_err(|e| MountError::io(format!("resolving {}", path.display()), e))?;
    if device_of(&canonical).is_some() {
        return Err(MountError::AlreadyMounted(canonical));
    }
    Ok(canonical)
}

/// The `major:minor` of what is mounted at `mountpoint` (the topmost mount), if anything is.
fn device_of(mountpoint: &Path) -> Option<(u32, u32)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_device(&mountinfo, mountpoint)
}

/// Parses `/proc/self/mountinfo`: field 3 is `major:minor`, field 5 the (octal-escaped)
/// mount point; later lines are mounted on top of earlier ones.
pub(crate) fn mount_device(mountinfo: &str, mountpoint: &Path) -> Option<(u32, u32)> {
    use std::os::unix::ffi::OsStrExt;
    let wanted = mountpoint.as_os_str().as_bytes();
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            (unescape(point) == wanted).then_some(device)
        })
        .next_back()
        .and_then(|device| {
            let (major, minor) = device.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
}

fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// The kernel lets a FUSE server only lower readahead; raising it (128 KiB → 1 MiB roughly
/// doubles cold sequential throughput) takes the mount's bdi knob.
fn raise_read_ahead(device: Option<(u32, u32)>, kb: Option<u32>) {
    let (Some((major, minor)), Some(kb)) = (device, kb) else {
        return;
    };
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match fs::write(&path, kb.to_string()) {
        Ok(()) => log::debug!("{path} = {kb}"),
        Err(e) => log::info!("could not raise readahead ({path}): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:45 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:2 - fuse.coffer coffer ro
41 40 0:46 / /tmp/my\\040mnt rw,nosuid - fuse.coffer coffer ro
";

    #[test]
    fn finds_the_topmost_device_of_a_mount_point() {
        assert_eq!(mount_device(MOUNTINFO, Path::new("/tmp/my mnt")), Some((0, 46)));
        assert_eq!(mount_device(MOUNTINFO, Path::new("/")), Some((8, 1)));
        assert_eq!(mount_device(MOUNTINFO, Path::new("/tmp")), None);
        assert_eq!(mount_device(MOUNTINFO, Path::new("/tmp/my\\040mnt")), None);
    }

    #[test]
    fn refuses_bad_mountpoints() {
        let dir = std::env::temp_dir().join(format!("coffer-mount-check-{}", std::process::id()));
        let missing = dir.join("missing");
        assert!(matches!(check_mountpoint(&missing), Err(MountError::MissingMountpoint(_))));
        fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("file");
        fs::write(&file, b"x").expect("file");
        assert!(matches!(check_mountpoint(&file), Err(MountError::NotADirectory(_))));
        assert!(matches!(check_mountpoint(Path::new("/")), Err(MountError::AlreadyMounted(_))));
        assert!(check_mountpoint(&dir).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }
}
