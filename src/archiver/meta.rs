//! Turning what `lstat` and `listxattr` say about a path into tree metadata. Owner names are
//! looked up once per id, since a tree of many files has few owners.

use std::collections::HashMap;
use std::fs::Metadata as FsMetadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_bytes::ByteBuf;

use crate::format::tree::{Metadata, NodeKind, Xattr};

#[derive(Default)]
pub struct NameCache {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl NameCache {
    pub(super) fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name).unwrap_or_default()
            })
            .clone()
    }

    pub(super) fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into()).ok().flatten().map(|g| g.name).unwrap_or_default()
            })
            .clone()
    }
}

/// Reads the extended attributes of `path` itself (not a symlink's target). Filesystems
/// without xattr support simply have none.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: ByteBuf::from(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec()),
                value: ByteBuf::from(value),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn metadata(meta: &FsMetadata, xattrs: Vec<Xattr>, names: &mut NameCache) -> Metadata {
    Metadata {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        // Access times change on every read, so recording them would make every backup
        // store every tree anew. Restore sets atime to mtime.
        atime: 0,
        atime_nsec: 0,
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec() as u32,
        dev: meta.dev(),
        inode: meta.ino(),
        nlink: meta.nlink(),
        xattrs,
        extensions: Vec::new(),
    }
}

/// The node kind for everything but regular files and directories, whose content the
/// archiver fills in.
pub fn special_kind(path: &Path, meta: &FsMetadata) -> std::io::Result<Option<NodeKind>> {
    let ft = meta.file_type();
    Ok(Some(if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        NodeKind::Symlink { target: ByteBuf::from(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec()) }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: meta.rdev() }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { rdev: meta.rdev() }
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        return Ok(None);
    }))
}

/// Nanoseconds since the epoch, for the files cache.
pub fn mtime_ns(meta: &FsMetadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

pub fn ctime_ns(meta: &FsMetadata) -> i64 {
    meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec())
}
