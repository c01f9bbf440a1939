//! The storage seam: every byte Coffer reads from or writes to a repository goes through
//! [`Store`], a thin wrapper over an OpenDAL `Operator`. It is the only owner of the tokio
//! runtime; the rest of the engine is synchronous threads that call the blocking methods here,
//! or hand uploads to [`Store::spawn_publish`] to overlap them with work.
//!
//! Objects are immutable and content-named, so a write never replaces anything (DESIGN §3).
//! On a local folder, writes go to `<repo>/.tmp` first and are renamed into place after an
//! fsync, so a killed write never leaves a partial object under its final name.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use crate::id::Id;

pub mod counting;
pub mod intercept;
pub mod location;

pub use location::{Location, LocationError, Remote};

/// A read of a content-named object whose bytes don't hash to its name is tried this often
/// before the caller sees it (and reports the object as damaged): a transfer can go wrong.
const READ_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not found in the repository")]
    NotFound { path: String },
    /// One line (`describe`); the store's full error, with OpenDAL's context, is kept for `-v`
    /// (`full_detail`) rather than chained, which repeated that context in every message.
    #[error("repository storage failed on {path}: {}", describe(error, *waited))]
    Backend { path: String, error: opendal::Error, waited: Option<Duration> },
    #[error("cannot open storage at {location}: {detail}")]
    Open { location: String, detail: String },
    #[error(
        "{path} is {size} bytes, more than the {max} bytes such an object may have; it was not read (a damaged or \
         hostile store: move it out of the repository, then run `coffer check`)"
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{path}: the store reported the upload done, but {found}; nothing refers to it yet, run the backup again")]
    NotStored { path: String, found: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// A request made on a helper thread that panicked instead of answering.
    pub(crate) fn thread_panicked(path: &str) -> StoreError {
        StoreError::Backend {
            path: path.to_string(),
            error: opendal::Error::new(ErrorKind::Unexpected, "the thread making this request panicked"),
            waited: None,
        }
    }

    fn from_opendal(path: &str, error: opendal::Error) -> StoreError {
        if error.kind() == ErrorKind::NotFound {
            StoreError::NotFound { path: path.to_string() }
        } else {
            let waited = REQUEST_STARTED.get().map(|t| t.elapsed());
            StoreError::Backend { path: path.to_string(), error, waited }
        }
    }

    /// The store's own error in full (OpenDAL's context, the chain of causes), for `-v`.
    pub fn full_detail(&self) -> Option<String> {
        match self {
            StoreError::Backend { error, .. } => Some(format!("{error:?}")),
            _ => None,
        }
    }
}

thread_local! {
    // When the current blocking store call began: an error after retries says how long it took.
    static REQUEST_STARTED: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Tries per request: the first, and the retry layer's (see `Store::with_operator`).
const TRIES: usize = 1 + RETRIES;
const RETRIES: usize = 5;

/// One line for a store's error: what it said (an S3 error's code and message, or the innermost
/// cause such as "Connection refused"), a hint where the answer is a known misconfiguration,
/// and after how many tries over how long when the retries ran out.
fn describe(error: &opendal::Error, waited: Option<Duration>) -> String {
    let full = error.to_string();
    let message = error.message();
    let mut text = match (field(message, "code: \""), field(message, "message: \"")) {
        (Some(code), Some(said)) if !code.is_empty() => format!("the store refused it: {code}: {said}"),
        _ => {
            let mut innermost: Option<String> = None;
            let mut cause = std::error::Error::source(error);
            while let Some(c) = cause {
                innermost = Some(c.to_string());
                cause = c.source();
            }
            let status = full
                .split("status: ")
                .nth(1)
                .and_then(|t| t.get(..3))
                .filter(|t| t.bytes().all(|b| b.is_ascii_digit()));
            match (innermost, status) {
                (Some(cause), _) => format!("{message}: {}", cause.rsplit(": ").next().unwrap_or(&cause)),
                (None, Some(status)) if message.trim().is_empty() => format!("the store answered HTTP {status}"),
                (None, Some(status)) => format!("the store answered HTTP {status}: {}", message.trim()),
                (None, None) => message.trim().to_string(),
            }
        }
    };
    if full.contains("AuthorizationHeaderMalformed") || full.contains("region") || full.contains("status: 400") {
        text.push_str(" (for S3, check the region= option: it must be the bucket's region)");
    }
    if error.is_persistent() {
        match waited {
            Some(waited) => text.push_str(&format!("; gave up after {TRIES} tries over {:.0} s", waited.as_secs_f64())),
            None => text.push_str(&format!("; gave up after {TRIES} tries")),
        }
    }
    text
}

/// The text of `name"…"` in a Rust debug rendering (as OpenDAL formats an S3 error body).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(name)? + name.len();
    let end = text[start..].find('"')?;
    Some(&text[start..start + end])
}

/// Retries are reported once per store at warn level ("not answering, retrying"), each one
/// at debug: a dead endpoint used to print a warning (with a backtrace) per retry.
struct RetryNotice {
    location: String,
    warned: std::sync::atomic::AtomicBool,
}

impl opendal::layers::RetryInterceptor for RetryNotice {
    fn intercept(&self, event: opendal::layers::RetryEvent<'_>) {
        let what = describe(event.err, None);
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!("{}: {what}; retrying (up to {RETRIES} times per request; -vv shows each)", self.location);
        }
        log::debug!(
            "{}: retry {} of {:?} in {:.1} s: {what}",
            self.location,
            event.attempt,
            event.op,
            event.retry_after.as_secs_f64()
        );
    }
}

/// Requests to a remote store kept in flight by readers of many small objects (index files,
/// snapshots): each is a round trip, and one at a time they add up to seconds.
pub const SMALL_READS_IN_FLIGHT: usize = 8;

/// `f` of every item, up to `in_flight` at once on scoped threads (for store requests, which
/// block), results in the items' order.
pub fn map_in_flight<T: Sync, R: Send>(items: &[T], in_flight: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if in_flight <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<R>>> = items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..in_flight.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            });
        }
    });
    slots.into_iter().filter_map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner())).collect()
}

fn short_read(path: &str) -> StoreError {
    StoreError::Backend {
        path: path.to_string(),
        error: opendal::Error::new(ErrorKind::Unexpected, "short read: object is truncated"),
        waited: None,
    }
}

/// Ranged reads dominate restore and mount; on a local folder a plain `pread` serves them
/// without the runtime hop (and thread handoff) an OpenDAL read costs per call.
///
/// Large ranges (the data blobs of large files) are read with `O_DIRECT`: the disk fills
/// one reused buffer instead of fresh page-cache pages, which on this kind of virtual machine
/// cost more to touch than the read itself once the host has reclaimed them. Small ranges go
/// through the cache, whose readahead serves the neighbouring blobs of a pack.
fn read_local_range(path: &Path, offset: u64, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    if len >= DIRECT_READ_MIN {
        if let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
            match read_direct_range(&file, offset, len, out) {
                Ok(()) => return Ok(()),
                // This filesystem refuses direct reads after all: read through the cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let file = std::fs::File::open(path)?;
    out.clear();
    out.resize(len as usize, 0);
    file.read_exact_at(out, offset)
}

/// Ranges at least this long are read with `O_DIRECT`.
const DIRECT_READ_MIN: u64 = 256 << 10;
const DIRECT_ALIGN: u64 = 4096;

thread_local! {
    // Direct reads need an aligned buffer; one per thread, reused from read to read.
    static DIRECT_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `offset..offset + len` of a file opened with `O_DIRECT`, through the aligned pages
/// that cover it, into `out`.
fn read_direct_range(file: &std::fs::File, offset: u64, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let start = offset / DIRECT_ALIGN * DIRECT_ALIGN;
    let end = (offset + len).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    let span = (end - start) as usize;
    DIRECT_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let needed = span + DIRECT_ALIGN as usize;
        if buffer.len() < needed {
            *buffer = vec![0u8; needed];
        }
        let base = buffer.as_ptr().align_offset(DIRECT_ALIGN as usize).min(DIRECT_ALIGN as usize);
        let aligned = &mut buffer[base..base + span];
        // The last page may run past the end of the file: the read then stops short there.
        let mut got = 0usize;
        while (start + got as u64) < offset + len {
            match file.read_at(&mut aligned[got..], start + got as u64) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if !got.is_multiple_of(DIRECT_ALIGN as usize) && (start + got as u64) < offset + len {
                // A short read mid-file that is not whole pages cannot be continued directly.
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
        }
        let from = (offset - start) as usize;
        out.clear();
        out.extend_from_slice(&aligned[from..from + len as usize]);
        Ok(())
    })
}

/// Creates `dir` and its missing parents as 0700. In a local repository every folder is the
/// owner's alone, as every object is (packs are spooled 0600): names and sizes tell an
/// onlooker what is backed up and when (issue 15, item 14).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Makes an object OpenDAL wrote (with the umask's mode) the owner's alone. It lies in a 0700
/// folder meanwhile, so nobody else could open it before.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn local_read_error(path: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound { path: path.to_string() },
        std::io::ErrorKind::UnexpectedEof => short_read(path),
        _ => StoreError::Backend {
            path: path.to_string(),
            error: opendal::Error::new(ErrorKind::Unexpected, "reading from the local repository").set_source(e),
            waited: None,
        },
    }
}

/// Writes a new, content-named object. Objects are never replaced, so:
/// - a write that failed (after the retry layer's attempts) but whose object is there whole
///   counts as done: the bytes are the same by construction, and a store that refuses
///   overwrites (Object Lock, a no-overwrite policy) answers a retried upload with an error;
/// - with `verify`, a write reported done is checked with a stat (one small request per
///   object, i.e. per 8 MiB pack): a store or proxy that acknowledged an upload it dropped
///   must fail the backup here, before any index or snapshot refers to the object.
async fn store_object(op: &Operator, path: &str, bytes: Vec<u8>, verify: bool) -> Result<(), StoreError> {
    let len = bytes.len() as u64;
    let written = op.write(path, bytes).await;
    if written.is_ok() && !verify {
        return Ok(());
    }
    let found = match op.stat(path).await {
        Ok(meta) => Some(meta.content_length()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::from_opendal(path, written.err().unwrap_or(e))),
    };
    match (written, found) {
        (_, Some(size)) if size == len => Ok(()),
        (Err(e), _) => Err(StoreError::from_opendal(path, e)),
        (Ok(_), Some(size)) => {
            Err(StoreError::NotStored { path: path.to_string(), found: format!("it holds {size} of {len} bytes") })
        }
        (Ok(_), None) => Err(StoreError::NotStored { path: path.to_string(), found: "it is not there".into() }),
    }
}

/// Test hook for short listings: debug builds leave out of every listing the objects whose
/// path contains one of the comma-separated strings in `COFFER_TEST_HIDE_FROM_LISTING`.
fn hidden_by_test(path: &str) -> bool {
    #[cfg(debug_assertions)]
    if let Ok(hidden) = std::env::var("COFFER_TEST_HIDE_FROM_LISTING") {
        return hidden.split(',').any(|h| !h.is_empty() && path.contains(h));
    }
    let _ = path;
    false
}

/// An object [`Store::spawn_publish`] is storing, to hand back to [`Store::wait`]. Opaque, so
/// that the tokio task behind it stays inside `store/`: its holders are plain threads.
pub struct Publishing(tokio::task::JoinHandle<Result<(), StoreError>>);

/// Shared handle to a repository's storage. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    op: Operator,
    runtime: Arc<tokio::runtime::Runtime>,
    location: String,
    /// The folder of a local repository: packs spooled next to it are moved into place.
    local_root: Option<PathBuf>,
}

fn runtime() -> Result<Arc<tokio::runtime::Runtime>, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coffer-store")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| StoreError::Open { location: "tokio runtime".into(), detail: e.to_string() })
}

impl Store {
    /// A repository in a local folder. The folder is created only when `create` is set, so a
    /// mistyped path is reported instead of silently becoming a new, empty repository.
    pub fn open_local(path: &Path, create: bool) -> Result<Store, StoreError> {
        let location = path.display().to_string();
        if !create && !path.is_dir() {
            return Err(StoreError::Open { location, detail: "no such directory".into() });
        }
        // Building the operator creates its spool folder (`.tmp`): only in a repository, or
        // in a folder `init` may take, never in an ordinary folder named by mistake.
        let holds_repo = path.join(crate::layout::CONFIG).is_file();
        if !holds_repo {
            if !create {
                return Err(StoreError::Open { location, detail: "no config file in this folder".into() });
            }
            if std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(StoreError::Open {
                    location,
                    detail: "the folder is not empty and holds no repository; give a new or empty folder".into(),
                });
            }
        }
        let root = path.to_str().ok_or_else(|| StoreError::Open {
            location: location.clone(),
            detail: "repository path must be valid UTF-8".into(),
        })?;
        let tmp = path.join(".tmp");
        if create {
            // The folder and its spool folder private from the start (see `private_dir`).
            private_dir(&tmp).map_err(|e| StoreError::Open { location: location.clone(), detail: e.to_string() })?;
        }
        let builder = opendal::services::Fs::default().root(root).atomic_write_dir(&tmp.to_string_lossy());
        let op = Operator::new(builder)
            .map_err(|e| StoreError::Open { location: location.clone(), detail: e.to_string() })?;
        let mut store = Store::with_operator(op, location)?;
        store.local_root = Some(path.to_path_buf());
        Ok(store)
    }

    /// Opens the store a location names. `create` matters only for a local folder, which is
    /// created only when asked; a remote store has no folder to create.
    pub fn open(location: &Location, create: bool) -> Result<Store, StoreError> {
        match location {
            Location::Local(path) => Store::open_local(path, create),
            Location::Remote(remote) => Store::open_remote(remote),
        }
    }

    /// A repository in any OpenDAL service compiled in (S3, SFTP, WebDAV).
    pub fn open_remote(remote: &Remote) -> Result<Store, StoreError> {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            // Only one provider is compiled in; installing fails only if one is already set.
            let _ = rustls::crypto::ring::default_provider().install_default();
            opendal::init_default_registry();
            opendal_http_transport_reqwest::install_default();
        });
        let failed = |detail: String| StoreError::Open { location: remote.display.clone(), detail };
        let options = remote.resolved_options().map_err(|e| failed(e.to_string()))?;
        let pairs = options.iter().map(|(k, v)| (k.clone(), v.to_string()));
        let op = match &remote.uri {
            Some(uri) => Operator::from_uri((uri.as_str(), pairs)),
            None => Operator::via_iter(&remote.service, pairs),
        }
        .map_err(|e| failed(e.to_string()))?;
        drop(options);
        Store::with_operator(op, remote.display.clone())
    }

    /// An in-memory store, for tests.
    pub fn memory() -> Result<Store, StoreError> {
        let op = Operator::new(opendal::services::Memory::default())
            .map_err(|e| StoreError::Open { location: "memory".into(), detail: e.to_string() })?;
        Store::with_operator(op, "memory".into())
    }

    /// Wraps any operator with the standard layers: retries with backoff for temporary
    /// errors, a timeout per request (a dead server gives an error, not a hang), and a bound
    /// on concurrent requests.
    pub fn with_operator(op: Operator, location: String) -> Result<Store, StoreError> {
        let op = counting::maybe_count(op)
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)))
            .layer(
                RetryLayer::new()
                    .with_max_times(RETRIES)
                    .with_jitter()
                    .with_notify(RetryNotice { location: location.clone(), warned: false.into() }),
            )
            .layer(ConcurrentLimitLayer::new(32));
        Ok(Store { op, runtime: runtime()?, location, local_root: None })
    }

    /// Whether the repository is a local folder (cheap requests, no network latency).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        // Left set afterwards: the caller turns a failure into a `StoreError` after this returns.
        REQUEST_STARTED.set(Some(std::time::Instant::now()));
        self.runtime.block_on(future)
    }

    /// Reads a whole object. Remote reads are checked against the object's size (one small
    /// extra request; whole reads are only of small objects: config, keys, index files,
    /// snapshots), and read again when they come back short. Objects of the kinds
    /// [`crate::layout::size_cap`] bounds are refused, unread, when larger: a hostile store
    /// must not make a reader allocate what it likes.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        let read =
            || self.block_on(self.op.read(path)).map(|buf| buf.to_vec()).map_err(|e| StoreError::from_opendal(path, e));
        let cap = crate::layout::size_cap(path);
        let checked = |size: u64| match cap {
            Some(max) if size > max => Err(StoreError::TooLarge { path: path.to_string(), size, max }),
            _ => Ok(size),
        };
        if self.local_root.is_some() {
            if cap.is_some() {
                checked(self.size(path)?.ok_or_else(|| StoreError::NotFound { path: path.to_string() })?)?;
                // A file that grew since: refused the same.
                return read().and_then(|bytes| checked(bytes.len() as u64).map(|_| bytes));
            }
            return read();
        }
        let mut attempt = 1;
        loop {
            let (size, bytes) = self.stat_and_read(path, &checked)?;
            if bytes.len() as u64 == size {
                return Ok(bytes);
            }
            if attempt >= READ_ATTEMPTS {
                return Err(short_read(path));
            }
            log::info!("{path}: short read ({} of {size} bytes), reading it again", bytes.len());
            attempt += 1;
        }
    }

    /// A remote object's size and bytes, asked for together so the size check costs no round
    /// trip of its own (opening a repository, syncing its index and reading snapshots are
    /// chains of such reads). When the size arrives first and `checked` refuses it, the read is
    /// dropped unfinished, so an object over its cap is not downloaded.
    fn stat_and_read(
        &self,
        path: &str,
        checked: &dyn Fn(u64) -> Result<u64, StoreError>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let error = |e: opendal::Error| StoreError::from_opendal(path, e);
        self.block_on(async {
            let stat = self.op.stat(path);
            let read = self.op.read(path);
            tokio::pin!(stat, read);
            tokio::select! {
                biased;
                meta = &mut stat => {
                    let size = checked(meta.map_err(error)?.content_length())?;
                    let bytes = read.await.map_err(error)?;
                    Ok((size, bytes.to_vec()))
                }
                bytes = &mut read => {
                    let bytes = bytes.map_err(error)?;
                    let size = checked(stat.await.map_err(error)?.content_length())?;
                    Ok((size, bytes.to_vec()))
                }
            }
        })
    }

    /// Reads an object named by the hash of its bytes, reading again while what arrived does
    /// not match the name (a truncated or damaged transfer). The last bytes read are returned
    /// either way: the caller names the object as damaged.
    pub fn read_named(&self, path: &str, id: &Id) -> Result<Vec<u8>, StoreError> {
        let mut attempt = 1;
        loop {
            let bytes = self.read(path)?;
            if Id::of_bytes(&bytes) == *id || attempt >= READ_ATTEMPTS {
                return Ok(bytes);
            }
            log::info!("{path}: content does not match its name, reading it again");
            attempt += 1;
        }
    }

    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.read_range_into(path, offset, len, &mut out)?;
        Ok(out)
    }

    /// [`read_range`](Self::read_range) into `out`, replacing what it held, so a reader of
    /// many ranges reuses one buffer.
    pub fn read_range_into(&self, path: &str, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), StoreError> {
        if let Some(root) = &self.local_root {
            return read_local_range(&root.join(path), offset, len, out).map_err(|e| local_read_error(path, e));
        }
        let mut attempt = 1;
        loop {
            let data = self
                .block_on(async { self.op.read_with(path).range(offset..offset + len).await })
                .map_err(|e| StoreError::from_opendal(path, e))?;
            if data.len() as u64 == len {
                out.clear();
                data.into_iter().for_each(|piece| out.extend_from_slice(&piece));
                return Ok(());
            }
            if attempt >= READ_ATTEMPTS {
                return Err(short_read(path));
            }
            log::info!("{path}: short read at {offset}+{len}, reading it again");
            attempt += 1;
        }
    }

    /// Stores a new object; see [`store_object`] for what "stored" means.
    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let verify = self.local_root.is_none();
        if let Some(root) = &self.local_root {
            let dest = root.join(path);
            let io_error = |e: std::io::Error| StoreError::Backend {
                path: path.to_string(),
                error: opendal::Error::new(ErrorKind::Unexpected, "making a private folder or object").set_source(e),
                waited: None,
            };
            private_dir(dest.parent().unwrap_or(root)).map_err(io_error)?;
            self.block_on(store_object(&self.op, path, bytes, verify))?;
            return private_file(&dest).map_err(io_error);
        }
        self.block_on(store_object(&self.op, path, bytes, verify))
    }

    /// Where to spool objects before storing them: inside a local repository (so storing is
    /// a rename on the same filesystem), else the system's temporary folder.
    pub fn spool_dir(&self) -> PathBuf {
        match &self.local_root {
            Some(root) => root.join(".tmp"),
            None => std::env::temp_dir(),
        }
    }

    /// Stores a spooled file under `path` and removes the spool file, on the runtime. On a
    /// local repository: fsync, then rename into place (never a partial object under its
    /// final name). Elsewhere: upload its bytes.
    pub fn spawn_publish(&self, file: std::fs::File, spooled: PathBuf, path: String) -> Publishing {
        let io_error = {
            let path = path.clone();
            move |e: std::io::Error| StoreError::Backend {
                path: path.clone(),
                error: opendal::Error::new(ErrorKind::Unexpected, "storing a spooled object").set_source(e),
                waited: None,
            }
        };
        Publishing(match &self.local_root {
            Some(root) => {
                let dest = root.join(&path);
                self.runtime.spawn_blocking(move || {
                    let moved = file
                        .sync_all()
                        .inspect(|()| crate::crashpoint::hit("store-before-rename"))
                        .and_then(|()| private_dir(dest.parent().unwrap_or(Path::new("/"))))
                        .and_then(|()| std::fs::rename(&spooled, &dest));
                    if moved.is_err() {
                        let _ = std::fs::remove_file(&spooled);
                    }
                    moved.map_err(io_error)
                })
            }
            None => {
                let op = self.op.clone();
                self.runtime.spawn(async move {
                    drop(file);
                    let bytes = tokio::fs::read(&spooled).await;
                    let _ = tokio::fs::remove_file(&spooled).await;
                    store_object(&op, &path, bytes.map_err(io_error)?, true).await
                })
            }
        })
    }

    /// Waits, from a plain (non-runtime) thread, for an object that
    /// [`spawn_publish`](Self::spawn_publish) is storing.
    pub fn wait(&self, publishing: Publishing) -> Result<(), StoreError> {
        self.block_on(publishing.0).unwrap_or_else(|e| {
            Err(StoreError::Backend {
                path: "upload task".into(),
                error: opendal::Error::new(ErrorKind::Unexpected, e.to_string()),
                waited: None,
            })
        })
    }

    /// Size of an object, or `None` when it does not exist.
    pub fn size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        match self.block_on(self.op.stat(path)) {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::from_opendal(path, e)),
        }
    }

    /// Lists the objects under `dir` (recursively), as (path, size). A missing folder is empty.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let entries = match self.block_on(async { self.op.list_with(dir).recursive(true).await }) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::from_opendal(dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| !e.metadata().is_dir() && !e.path().ends_with('/'))
            .filter(|e| !hidden_by_test(e.path()))
            .map(|e| (e.path().to_string(), e.metadata().content_length()))
            .collect())
    }

    /// [`list_ids`](Self::list_ids) of several folders, listed at the same time (each listing
    /// is a round trip or more on a remote store), in the order given.
    pub fn list_ids_together<const N: usize>(&self, dirs: [&str; N]) -> Result<[Vec<(Id, u64)>; N], StoreError> {
        let listed: Vec<Result<Vec<(Id, u64)>, StoreError>> = std::thread::scope(|scope| {
            let running: Vec<_> = dirs.iter().map(|dir| scope.spawn(move || self.list_ids(dir))).collect();
            running
                .into_iter()
                .zip(dirs)
                .map(|(thread, dir)| thread.join().unwrap_or_else(|_| Err(StoreError::thread_panicked(dir))))
                .collect()
        });
        let listed: Vec<Vec<(Id, u64)>> = listed.into_iter().collect::<Result<_, _>>()?;
        Ok(listed.try_into().unwrap_or_else(|_| unreachable!("one listing per folder")))
    }

    /// Lists ids of the objects in a flat or fanned-out folder; names that are not ids are
    /// ignored (a stray file must not break listing).
    pub fn list_ids(&self, dir: &str) -> Result<Vec<(Id, u64)>, StoreError> {
        Ok(self
            .list(dir)?
            .into_iter()
            .filter_map(|(path, size)| {
                let name = path.rsplit('/').next()?;
                Some((Id::from_hex(name)?, size))
            })
            .collect())
    }

    pub fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.block_on(self.op.delete(path)).map_err(|e| StoreError::from_opendal(path, e))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn map_in_flight_keeps_the_items_order() {
        let items: Vec<u64> = (0..100).collect();
        // Later items finish first: the results must still come back in the items' order.
        let doubled = map_in_flight(&items, 8, |&n| {
            std::thread::sleep(std::time::Duration::from_micros(100 - n));
            n * 2
        });
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(map_in_flight(&items[..1], 8, |&n| n), vec![0]);
        assert!(map_in_flight(&items[..0], 8, |&n| n).is_empty());
    }

    use super::*;

    #[test]
    fn local_ranges_read_the_same_directly_or_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let len = (3 << 20) + 123;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4099) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut out = vec![9; 7];
        // Aligned, unaligned, ending at the end of the file, and small (through the cache).
        for (offset, n) in [(0, 1 << 20), (4095, 300_001), (len - 400_000, 400_000), (12_345, len - 12_345), (5, 100)] {
            read_local_range(&path, offset as u64, n as u64, &mut out).unwrap();
            assert!(out == bytes[offset..offset + n], "range {offset}+{n}");
        }
        let past_end = read_local_range(&path, (len - 1000) as u64, 300_000, &mut out);
        assert_eq!(past_end.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn memory_round_trip() {
        let store = Store::memory().unwrap();
        store.write("data/ab/abc", b"hello".to_vec()).unwrap();
        assert_eq!(store.read("data/ab/abc").unwrap(), b"hello");
        assert_eq!(store.read_range("data/ab/abc", 1, 3).unwrap(), b"ell");
        assert!(store.read_range("data/ab/abc", 3, 5).is_err());
        assert_eq!(store.size("data/ab/abc").unwrap(), Some(5));
        assert_eq!(store.size("nope").unwrap(), None);
        assert!(store.read("nope").unwrap_err().is_not_found());
        assert_eq!(store.list("data/").unwrap(), vec![("data/ab/abc".to_string(), 5)]);
        assert!(store.list("index/").unwrap().is_empty());
    }

    #[test]
    fn local_folder_is_not_created_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("repo");
        assert!(Store::open_local(&missing, false).is_err());
        // An ordinary folder is neither opened nor touched.
        let ordinary = dir.path().join("ordinary");
        std::fs::create_dir(&ordinary).unwrap();
        std::fs::write(ordinary.join("file"), b"x").unwrap();
        assert!(Store::open_local(&ordinary, false).is_err());
        assert!(Store::open_local(&ordinary, true).is_err());
        assert!(!ordinary.join(".tmp").exists());
        let store = Store::open_local(&missing, true).unwrap();
        store.write("index/x", b"1".to_vec()).unwrap();
        assert_eq!(store.list("index/").unwrap(), vec![("index/x".to_string(), 1)]);
    }
}
