//! The storage seam: every byte Coffer reads from or writes to a repository goes through
//! [`Store`], a thin wrapper over an OpenDAL `Operator`. It is the only owner of the tokio
//! runtime; the rest of the engine is synchronous threads that call the blocking methods here,
//! or hand uploads to [`Store::spawn_write`] to overlap them with work.
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not found in the repository")]
    NotFound { path: String },
    #[error("repository storage failed on {path}: {source}")]
    Backend { path: String, source: opendal::Error },
    #[error("cannot open storage at {location}: {detail}")]
    Open { location: String, detail: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    fn from_opendal(path: &str, source: opendal::Error) -> StoreError {
        if source.kind() == ErrorKind::NotFound {
            StoreError::NotFound { path: path.to_string() }
        } else {
            StoreError::Backend { path: path.to_string(), source }
        }
    }
}

/// Object names in the repository layout (DESIGN §3).
pub mod paths {
    use crate::id::Id;

    pub const CONFIG: &str = "config";
    pub const KEYS: &str = "keys/";
    pub const INDEX: &str = "index/";
    pub const SNAPSHOTS: &str = "snapshots/";
    pub const SIGNERS: &str = "signers/";
    pub const DATA: &str = "data/";

    pub fn pack(id: &Id) -> String {
        let hex = id.to_hex();
        format!("data/{}/{}", &hex[..2], hex)
    }

    pub fn in_dir(dir: &str, id: &Id) -> String {
        format!("{dir}{}", id.to_hex())
    }
}

fn short_read(path: &str) -> StoreError {
    StoreError::Backend {
        path: path.to_string(),
        source: opendal::Error::new(ErrorKind::Unexpected, "short read: object is truncated"),
    }
}

/// Ranged reads dominate restore and mount; on a local folder a plain `pread` serves them
/// without the runtime hop (and thread handoff) an OpenDAL read costs per call.
fn read_local_range(file: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(file)?;
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}

fn local_read_error(path: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound { path: path.to_string() },
        std::io::ErrorKind::UnexpectedEof => short_read(path),
        _ => StoreError::Backend {
            path: path.to_string(),
            source: opendal::Error::new(ErrorKind::Unexpected, "reading from the local repository").set_source(e),
        },
    }
}

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
        let root = path.to_str().ok_or_else(|| StoreError::Open {
            location: location.clone(),
            detail: "repository path must be valid UTF-8".into(),
        })?;
        let tmp = path.join(".tmp");
        let builder = opendal::services::Fs::default().root(root).atomic_write_dir(&tmp.to_string_lossy());
        let op = Operator::new(builder)
            .map_err(|e| StoreError::Open { location: location.clone(), detail: e.to_string() })?;
        let mut store = Store::with_operator(op, location)?;
        store.local_root = Some(path.to_path_buf());
        Ok(store)
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
        let op = op
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)))
            .layer(RetryLayer::new().with_max_times(5).with_jitter())
            .layer(ConcurrentLimitLayer::new(32));
        Ok(Store { op, runtime: runtime()?, location, local_root: None })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        self.block_on(self.op.read(path)).map(|buf| buf.to_vec()).map_err(|e| StoreError::from_opendal(path, e))
    }

    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        if let Some(root) = &self.local_root {
            return read_local_range(&root.join(path), offset, len).map_err(|e| local_read_error(path, e));
        }
        let data = self
            .block_on(async { self.op.read_with(path).range(offset..offset + len).await })
            .map(|buf| buf.to_vec())
            .map_err(|e| StoreError::from_opendal(path, e))?;
        if data.len() as u64 != len {
            return Err(short_read(path));
        }
        Ok(data)
    }

    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.block_on(self.op.write(path, bytes)).map(|_| ()).map_err(|e| StoreError::from_opendal(path, e))
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
    pub fn spawn_publish(
        &self,
        file: std::fs::File,
        spooled: PathBuf,
        path: String,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let io_error = {
            let path = path.clone();
            move |e: std::io::Error| StoreError::Backend {
                path: path.clone(),
                source: opendal::Error::new(ErrorKind::Unexpected, "storing a spooled object").set_source(e),
            }
        };
        match &self.local_root {
            Some(root) => {
                let dest = root.join(&path);
                self.runtime.spawn_blocking(move || {
                    let moved = file
                        .sync_all()
                        .inspect(|()| crate::crashpoint::hit("store-before-rename"))
                        .and_then(|()| std::fs::create_dir_all(dest.parent().unwrap_or(Path::new("/"))))
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
                    op.write(&path, bytes.map_err(io_error)?)
                        .await
                        .map(|_| ())
                        .map_err(|e| StoreError::from_opendal(&path, e))
                })
            }
        }
    }

    /// Waits for a spawned task from a plain (non-runtime) thread.
    pub fn wait<T>(&self, handle: tokio::task::JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
        self.block_on(handle).unwrap_or_else(|e| {
            Err(StoreError::Backend {
                path: "upload task".into(),
                source: opendal::Error::new(ErrorKind::Unexpected, e.to_string()),
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
            .map(|e| (e.path().to_string(), e.metadata().content_length()))
            .collect())
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
    use super::*;

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
        let store = Store::open_local(&missing, true).unwrap();
        store.write("index/x", b"1".to_vec()).unwrap();
        assert_eq!(store.list("index/").unwrap(), vec![("index/x".to_string(), 1)]);
    }
}
