//! An OpenDAL layer that shows every request to a [`Hooks`] value before it reaches the
//! store, and lets it fail the request, drop a write while reporting success, or truncate a
//! read. Coffer uses it to count requests (`COFFER_STORE_STATS`, see [`super::counting`]); the
//! tests use it to inject storage faults and to refuse deletes and overwrites.

use std::fmt::Debug;
use std::sync::Arc;

use opendal::raw::oio;
use opendal::raw::*;
use opendal::{Buffer, Capability, Error, ErrorKind, Metadata, OperationContext, Result};

/// One request, as the hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A read of `len` bytes at `offset` (`None`: to the end).
    Read {
        path: &'a str,
        offset: u64,
        len: Option<u64>,
    },
    /// Completing the upload of an object of `bytes` bytes.
    Write {
        path: &'a str,
        bytes: u64,
    },
    Stat {
        path: &'a str,
    },
    List {
        path: &'a str,
    },
    Delete {
        path: &'a str,
    },
    CreateDir {
        path: &'a str,
    },
    Rename {
        from: &'a str,
        to: &'a str,
    },
    Copy {
        from: &'a str,
        to: &'a str,
    },
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    Pass,
    Fail(Error),
    /// Writes only: discard the object but report success.
    DropWrite,
    /// Reads only: return at most this many bytes.
    Truncate(usize),
}

pub trait Hooks: Send + Sync + Debug + 'static {
    fn on(&self, request: &Request<'_>) -> Verdict;
    /// Bytes that a read returned.
    fn read_bytes(&self, _bytes: u64) {}
}

/// The layer; `op.layer(InterceptLayer::new(hooks))`.
#[derive(Debug, Clone)]
pub struct InterceptLayer {
    hooks: Arc<dyn Hooks>,
}

impl InterceptLayer {
    pub fn new(hooks: Arc<dyn Hooks>) -> InterceptLayer {
        InterceptLayer { hooks }
    }
}

impl Layer for InterceptLayer {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(InterceptService { inner, hooks: Arc::clone(&self.hooks) })
    }
}

#[derive(Debug)]
pub struct InterceptService {
    inner: Servicer,
    hooks: Arc<dyn Hooks>,
}

fn check(hooks: &Arc<dyn Hooks>, request: &Request<'_>) -> Result<()> {
    match hooks.on(request) {
        Verdict::Fail(e) => Err(e),
        _ => Ok(()),
    }
}

impl Service for InterceptService {
    type Reader = InterceptReader;
    type Writer = InterceptWriter;
    type Lister = oio::Lister;
    type Deleter = InterceptDeleter;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(&self, ctx: &OperationContext, path: &str, args: OpCreateDir) -> Result<RpCreateDir> {
        check(&self.hooks, &Request::CreateDir { path })?;
        self.inner.create_dir(ctx, path, args).await
    }

    async fn stat(&self, ctx: &OperationContext, path: &str, args: OpStat) -> Result<RpStat> {
        check(&self.hooks, &Request::Stat { path })?;
        self.inner.stat(ctx, path, args).await
    }

    fn read(&self, ctx: &OperationContext, path: &str, args: OpRead) -> Result<Self::Reader> {
        let inner = self.inner.read(ctx, path, args)?;
        Ok(InterceptReader { inner, path: path.to_string(), hooks: Arc::clone(&self.hooks) })
    }

    fn write(&self, ctx: &OperationContext, path: &str, args: OpWrite) -> Result<Self::Writer> {
        let inner = self.inner.write(ctx, path, args)?;
        Ok(InterceptWriter { inner, path: path.to_string(), bytes: 0, hooks: Arc::clone(&self.hooks) })
    }

    fn delete(&self, ctx: &OperationContext) -> Result<Self::Deleter> {
        Ok(InterceptDeleter { inner: self.inner.delete(ctx)?, hooks: Arc::clone(&self.hooks) })
    }

    fn list(&self, ctx: &OperationContext, path: &str, args: OpList) -> Result<Self::Lister> {
        check(&self.hooks, &Request::List { path })?;
        self.inner.list(ctx, path, args)
    }

    fn copy(&self, ctx: &OperationContext, from: &str, to: &str, args: OpCopy) -> Result<Self::Copier> {
        check(&self.hooks, &Request::Copy { from, to })?;
        self.inner.copy(ctx, from, to, args)
    }

    fn compose(&self, ctx: &OperationContext, to: &str, args: OpCompose) -> Result<Self::Composer> {
        self.inner.compose(ctx, to, args)
    }

    async fn rename(&self, ctx: &OperationContext, from: &str, to: &str, args: OpRename) -> Result<RpRename> {
        check(&self.hooks, &Request::Rename { from, to })?;
        self.inner.rename(ctx, from, to, args).await
    }

    async fn presign(&self, ctx: &OperationContext, path: &str, args: OpPresign) -> Result<RpPresign> {
        self.inner.presign(ctx, path, args).await
    }
}

pub struct InterceptReader {
    inner: oio::Reader,
    path: String,
    hooks: Arc<dyn Hooks>,
}

impl InterceptReader {
    fn verdict(&self, range: &opendal::BytesRange) -> Result<Option<usize>> {
        match self.hooks.on(&Request::Read { path: &self.path, offset: range.offset(), len: range.size() }) {
            Verdict::Fail(e) => Err(e),
            Verdict::Truncate(n) => Ok(Some(n)),
            _ => Ok(None),
        }
    }
}

impl oio::Read for InterceptReader {
    async fn open(&self, range: opendal::BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let truncate = self.verdict(&range)?;
        let (rp, stream) = self.inner.open(range).await?;
        let stream = InterceptStream { inner: stream, left: truncate, hooks: Arc::clone(&self.hooks) };
        Ok((rp, Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
    }

    async fn read(&self, range: opendal::BytesRange) -> Result<(RpRead, Buffer)> {
        let truncate = self.verdict(&range)?;
        let (rp, mut buffer) = self.inner.read(range).await?;
        if let Some(n) = truncate {
            buffer.truncate(n);
        }
        self.hooks.read_bytes(buffer.len() as u64);
        Ok((rp, buffer))
    }
}

struct InterceptStream {
    inner: Box<dyn oio::ReadStreamDyn>,
    /// Bytes still to hand out when truncating.
    left: Option<usize>,
    hooks: Arc<dyn Hooks>,
}

impl oio::ReadStream for InterceptStream {
    async fn read(&mut self) -> Result<Buffer> {
        if self.left == Some(0) {
            return Ok(Buffer::new());
        }
        let mut buffer = self.inner.read_dyn().await?;
        if let Some(left) = &mut self.left {
            buffer.truncate(*left);
            *left -= buffer.len();
        }
        self.hooks.read_bytes(buffer.len() as u64);
        Ok(buffer)
    }
}

pub struct InterceptWriter {
    inner: oio::Writer,
    path: String,
    bytes: u64,
    hooks: Arc<dyn Hooks>,
}

impl oio::Write for InterceptWriter {
    async fn write(&mut self, bs: Buffer) -> Result<()> {
        self.bytes += bs.len() as u64;
        self.inner.write(bs).await
    }

    async fn close(&mut self) -> Result<Metadata> {
        match self.hooks.on(&Request::Write { path: &self.path, bytes: self.bytes }) {
            // As a request that never reached the store: the writer keeps its data, so the
            // retry layer can send it again.
            Verdict::Fail(e) => Err(e),
            Verdict::DropWrite => {
                let _ = self.inner.abort().await;
                Ok(opendal::MetadataBuilder::file(self.bytes).build())
            }
            _ => self.inner.close().await,
        }
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

pub struct InterceptDeleter {
    inner: oio::Deleter,
    hooks: Arc<dyn Hooks>,
}

impl oio::Delete for InterceptDeleter {
    async fn delete(&mut self, path: &str, args: OpDelete) -> Result<()> {
        check(&self.hooks, &Request::Delete { path })?;
        self.inner.delete(path, args).await
    }

    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
}

/// An error the retry layer retries, as a flaky network or server gives.
pub fn temporary(what: &str) -> Error {
    Error::new(ErrorKind::Unexpected, what.to_string()).set_temporary()
}
