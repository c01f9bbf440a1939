//! Metadata at the target: owners, modes, times and xattrs, applied through an open file
//! (no path lookups, which matters with many small files) or by path (folders, symlinks, FIFOs
//! and devices, and folders last, deepest first); and what `confine_special` leaves out.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::time::TimeSpec;

use crate::format::tree::{Metadata, Node, NodeKind};

pub(super) enum Confined {
    Unchanged,
    Changed(Node),
    LeftOut,
}

/// `node` without what would grant privileges when restored as root: device nodes are left
/// out, set-id bits cleared, `security.*` and `trusted.*` xattrs (capabilities, labels) dropped.
pub(super) fn confine(node: &Node) -> Confined {
    if matches!(node.kind, NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. }) {
        return Confined::LeftOut;
    }
    let privileged = |name: &[u8]| name.starts_with(b"security.") || name.starts_with(b"trusted.");
    if node.meta.mode & 0o6000 == 0 && !node.meta.xattrs.iter().any(|x| privileged(&x.name)) {
        return Confined::Unchanged;
    }
    let mut safe = node.clone();
    safe.meta.mode &= !0o6000;
    safe.meta.xattrs.retain(|x| !privileged(&x.name));
    Confined::Changed(safe)
}

/// Like [`apply_metadata`], through the open file: no path lookups, which matters with
/// many small files.
pub(super) fn apply_file_metadata(file: &File, meta: &Metadata, as_root: bool) -> std::io::Result<()> {
    use xattr::FileExt as _;
    for attr in &meta.xattrs {
        let name = OsStr::from_bytes(&attr.name);
        file.set_xattr(name, &attr.value)
            .map_err(|e| std::io::Error::new(e.kind(), format!("setting xattr {}: {e}", name.to_string_lossy())))?;
    }
    if as_root {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
    }
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(meta.mode))?;
    let at = |secs: i64, nsec: u32| {
        let whole = std::time::Duration::from_secs(secs.unsigned_abs());
        let base = if secs >= 0 { std::time::UNIX_EPOCH + whole } else { std::time::UNIX_EPOCH - whole };
        base + std::time::Duration::from_nanos(nsec.into())
    };
    let modified = at(meta.mtime, meta.mtime_nsec);
    let accessed = if meta.atime == 0 && meta.atime_nsec == 0 { modified } else { at(meta.atime, meta.atime_nsec) };
    file.set_times(std::fs::FileTimes::new().set_accessed(accessed).set_modified(modified))
}

/// xattrs, then owner (which clears set-id bits), then mode, then times (last, since the
/// other steps change ctime only, but writing xattrs may touch mtime on some filesystems).
pub(super) fn apply_metadata(path: &Path, meta: &Metadata, as_root: bool, is_symlink: bool) -> std::io::Result<()> {
    for attr in &meta.xattrs {
        let name = OsStr::from_bytes(&attr.name);
        if let Err(e) = xattr::set(path, name, &attr.value) {
            // user.* xattrs are not allowed on symlinks; others may be unsupported here.
            if !is_symlink {
                return Err(std::io::Error::new(e.kind(), format!("setting xattr {}: {e}", name.to_string_lossy())));
            }
        }
    }
    if as_root {
        nix::unistd::fchownat(
            None,
            path,
            Some(meta.uid.into()),
            Some(meta.gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if !is_symlink {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(meta.mode))?;
    }
    let atime = if meta.atime == 0 && meta.atime_nsec == 0 {
        TimeSpec::new(meta.mtime, meta.mtime_nsec as i64)
    } else {
        TimeSpec::new(meta.atime, meta.atime_nsec as i64)
    };
    let mtime = TimeSpec::new(meta.mtime, meta.mtime_nsec as i64);
    nix::sys::stat::utimensat(None, path, &atime, &mtime, nix::sys::stat::UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}
