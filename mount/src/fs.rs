//! The fuser adapter: each callback answers from memory or hands the work to the request pool.
//!
//! No callback calls the [`Source`]; they stay a few lines each and end in one reply. The
//! filesystem is read-only: every write-like operation answers EROFS (the kernel already does so
//! for an `ro` mount; these are the belt to its braces). Operations left at fuser's default
//! (`ioctl`, `poll`, `bmap`, `lseek`, locks, `copy_file_range`) answer ENOSYS, which for those
//! means "use the kernel's generic behaviour", not an error a user sees.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::source::{NodeKind, Source, Xattr};
use crate::state::MountState;

const GENERATION: Generation = Generation(0);
const STATFS_BLOCK: u32 = 4096;

/// The `Filesystem` fuser drives.
pub(crate) struct ReadOnlyFs<S: Source> {
    state: Arc<MountState<S>>,
}

impl<S: Source> ReadOnlyFs<S> {
    pub(crate) fn new(state: MountState<S>) -> Self {
        ReadOnlyFs { state: Arc::new(state) }
    }

    /// Runs `work` on the request pool.
    fn offload(&self, work: impl FnOnce(&Arc<MountState<S>>) + Send + 'static) {
        let state = Arc::clone(&self.state);
        self.state.requests.spawn(move || work(&state));
    }
}

fn reply_entry<S: Source>(state: &MountState<S>, parent: u64, found: Result<Option<u64>, Errno>, reply: ReplyEntry) {
    match found.and_then(|ino| ino.map(|ino| state.attr_now(ino)).transpose()) {
        Ok(Some((attr, ttl))) => reply.entry(&ttl, &attr, GENERATION),
        // A zero inode with a TTL is a negative entry the kernel caches: no more lookups of
        // `.Trash` or `autorun.inf` in a directory that never changes.
        Ok(None) => match state.negative_ttl(parent) {
            Some(ttl) => reply.entry(&ttl, &negative_attr(), GENERATION),
            None => reply.error(Errno::ENOENT),
        },
        Err(errno) => reply.error(errno),
    }
}

fn negative_attr() -> FileAttr {
    crate::state::file_attr(0, &crate::Attributes::new(NodeKind::File, 0))
}

/// What `getxattr`/`listxattr` answer for `value` given the caller's buffer `size`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum XattrAnswer<'a> {
    Size(u32),
    Data(&'a [u8]),
    Error(Errno),
}

pub(crate) fn xattr_answer(value: &[u8], size: u32) -> XattrAnswer<'_> {
    let Ok(len) = u32::try_from(value.len()) else {
        return XattrAnswer::Error(Errno::E2BIG);
    };
    match size {
        0 => XattrAnswer::Size(len),
        size if size < len => XattrAnswer::Error(Errno::ERANGE),
        _ => XattrAnswer::Data(value),
    }
}

fn send_xattr(answer: XattrAnswer<'_>, reply: ReplyXattr) {
    match answer {
        XattrAnswer::Size(n) => reply.size(n),
        XattrAnswer::Data(data) => reply.data(data),
        XattrAnswer::Error(errno) => reply.error(errno),
    }
}

/// The NUL-terminated name list `listxattr` returns.
pub(crate) fn xattr_names(xattrs: &[Xattr]) -> Vec<u8> {
    let mut names = Vec::new();
    for x in xattrs {
        names.extend_from_slice(&x.name);
        names.push(0);
    }
    names
}

/// `access` without `default_permissions`: anything but writing is allowed, except executing
/// a file that has no execute bit at all (as for root).
pub(crate) fn access_check(kind: NodeKind, mode: u32, mask: AccessFlags) -> Result<(), Errno> {
    if mask.contains(AccessFlags::W_OK) {
        return Err(Errno::EROFS);
    }
    if mask.contains(AccessFlags::X_OK) && kind != NodeKind::Directory && mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    Ok(())
}

impl<S: Source> Filesystem for ReadOnlyFs<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS always on (not AUTO): `find` and `ls -l` get attributes with the names.
        let wanted = [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_ASYNC_READ,
        ];
        for flag in wanted {
            if let Err(missing) = config.add_capabilities(flag) {
                log::debug!("kernel lacks {missing:?}");
            }
        }
        // More reads in flight lets the kernel's readahead overlap block fetches.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (parent, name) = (parent.0, name.as_bytes());
        match self.state.lookup_now(parent, name) {
            Some(found) => reply_entry(&self.state, parent, found, reply),
            None => {
                let name = name.to_vec();
                self.offload(move |s| reply_entry(s, parent, s.lookup(parent, &name), reply));
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state.attr_now(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.state.readlink_now(ino.0) {
            Ok(target) => reply.data(&target),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        self.offload(move |s| match s.open(ino.0) {
            Ok((fh, true)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Ok((fh, false)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state.file_handle(fh.0) {
            Ok(file) => self.offload(move |s| match s.read(&file, offset, size) {
                Ok(data) => reply.data(data.as_slice()),
                Err(errno) => reply.error(errno),
            }),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.release_file(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let send = |opened: Result<(u64, bool), Errno>, reply: ReplyOpen| match opened {
            Ok((fh, true)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE),
            Ok((fh, false)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        };
        match self.state.opendir_now(ino.0) {
            Some(opened) => send(Ok(opened), reply),
            None => self.offload(move |s| send(s.opendir(ino.0), reply)),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dir = match self.state.dir_handle(fh.0) {
            Ok(dir) => dir,
            Err(errno) => return reply.error(errno),
        };
        let mut index = usize::try_from(offset).unwrap_or(usize::MAX);
        while let Some((ino, name, attr, _)) = self.state.dir_entry(&dir, index) {
            index += 1;
            if reply.add(INodeNo(ino), index as u64, attr.kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let dir = match self.state.dir_handle(fh.0) {
            Ok(dir) => dir,
            Err(errno) => return reply.error(errno),
        };
        let mut index = usize::try_from(offset).unwrap_or(usize::MAX);
        while let Some((_, name, attr, ttl)) = self.state.dir_entry(&dir, index) {
            index += 1;
            if reply.add(attr.ino, index as u64, OsStr::from_bytes(&name), &ttl, &attr, GENERATION) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.state.release_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.offload(move |s| {
            let usage = s.usage();
            let blocks = usage.bytes.div_ceil(u64::from(STATFS_BLOCK)).max(1);
            let files = usage.files.max(1);
            reply.statfs(blocks, 0, 0, files, 0, STATFS_BLOCK, 255, STATFS_BLOCK);
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let xattrs = match self.state.xattrs_now(ino.0) {
            Ok(xattrs) => xattrs,
            Err(errno) => return reply.error(errno),
        };
        match xattrs.iter().find(|x| x.name == name.as_bytes()) {
            Some(x) => send_xattr(xattr_answer(&x.value, size), reply),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.state.xattrs_now(ino.0) {
            Ok(xattrs) => send_xattr(xattr_answer(&xattr_names(&xattrs), size), reply),
            Err(errno) => reply.error(errno),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.state.mode_now(ino.0).and_then(|(kind, mode)| access_check(kind, mode, mask)) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    // Everything below would modify the filesystem.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn create(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: ReplyCreate) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _o: u64, _l: u64, _m: i32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_size_probe_range_and_data() {
        assert_eq!(xattr_answer(b"abc", 0), XattrAnswer::Size(3));
        assert_eq!(xattr_answer(b"abc", 2), XattrAnswer::Error(Errno::ERANGE));
        assert_eq!(xattr_answer(b"abc", 3), XattrAnswer::Data(b"abc"));
        assert_eq!(xattr_answer(b"", 0), XattrAnswer::Size(0));
        let names = xattr_names(&[
            Xattr { name: b"user.a".to_vec(), value: vec![] },
            Xattr { name: b"user.bb".to_vec(), value: vec![1] },
        ]);
        assert_eq!(names, b"user.a\0user.bb\0");
    }

    #[test]
    fn access_refuses_writes_and_exec_without_x_bits() {
        let rx = AccessFlags::R_OK | AccessFlags::X_OK;
        assert_eq!(access_check(NodeKind::File, 0o644, AccessFlags::W_OK), Err(Errno::EROFS));
        assert_eq!(access_check(NodeKind::File, 0o644, rx), Err(Errno::EACCES));
        assert_eq!(access_check(NodeKind::File, 0o744, rx), Ok(()));
        assert_eq!(access_check(NodeKind::Directory, 0o600, rx), Ok(()));
        assert_eq!(access_check(NodeKind::File, 0o000, AccessFlags::F_OK), Ok(()));
    }

    #[test]
    fn negative_entries_have_inode_zero() {
        assert_eq!(negative_attr().ino, INodeNo(0));
    }
}
