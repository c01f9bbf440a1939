//! Errors of the mount crate: what a [`Source`](crate::Source) reports, and what mounting reports.
//!
//! A `SourceError` carries a [`ErrorKind`] so the FUSE layer maps it to an errno without string
//! matching. The mapping never yields `ENOSYS`: the kernel reads that as "this operation is not
//! implemented, never ask again" and would disable it for the whole mount.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use fuser::Errno;

/// What went wrong, in the terms the kernel understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The entry does not exist (ENOENT).
    NotFound,
    /// Storage failed to deliver the bytes (EIO).
    Io,
    /// The bytes arrived but failed verification (EIO).
    Corrupt,
    /// Storage did not answer in time (EIO: applications handle it; ETIMEDOUT confuses them).
    TimedOut,
    /// The caller may not see this entry (EACCES).
    PermissionDenied,
}

impl ErrorKind {
    /// The errno this kind is reported as.
    pub fn errno(self) -> Errno {
        match self {
            ErrorKind::NotFound => Errno::ENOENT,
            ErrorKind::Io | ErrorKind::Corrupt | ErrorKind::TimedOut => Errno::EIO,
            ErrorKind::PermissionDenied => Errno::EACCES,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Io => "I/O error",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::PermissionDenied => "permission denied",
        })
    }
}

/// An error from a [`Source`](crate::Source) call. Cheap to clone, because one failed block
/// fetch is handed to every reader that waited on it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct SourceError {
    kind: ErrorKind,
    message: Arc<str>,
}

impl SourceError {
    /// An error of `kind`; `message` should name the object (blob id, pack, snapshot).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SourceError { kind, message: Arc::from(message.into()) }
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Io`].
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// Shorthand for [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for [`ErrorKind::TimedOut`].
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TimedOut, message)
    }

    /// The kind, which decides the errno.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable detail.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The errno the kernel receives.
    pub fn errno(&self) -> Errno {
        self.kind.errno()
    }
}

/// Why a mount could not be made or ended.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint does not exist.
    #[error("mountpoint {0} does not exist")]
    MissingMountpoint(PathBuf),
    /// The mountpoint exists but is not a directory.
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Something is already mounted there (possibly a stale FUSE mount).
    #[error("{0} is already a mount point (unmount it first, e.g. `fusermount3 -u {0}`)")]
    AlreadyMounted(PathBuf),
    /// A FUSE mount whose server died is still there.
    #[error("{0} is a stale mount (\"transport endpoint is not connected\"): run `fusermount3 -u {0}`")]
    StaleMount(PathBuf),
    /// The source could not produce its root.
    #[error("cannot read the root of the filesystem: {0}")]
    Source(#[from] SourceError),
    /// Any other operating-system failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl MountError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MountError::Io { context: context.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_kind_maps_to_enosys() {
        for kind in
            [ErrorKind::NotFound, ErrorKind::Io, ErrorKind::Corrupt, ErrorKind::TimedOut, ErrorKind::PermissionDenied]
        {
            assert_ne!(kind.errno(), Errno::ENOSYS, "{kind}");
        }
        assert_eq!(SourceError::not_found("x").errno(), Errno::ENOENT);
        assert_eq!(SourceError::corrupt("x").errno(), Errno::EIO);
        assert_eq!(SourceError::timed_out("x").errno(), Errno::EIO);
    }
}
