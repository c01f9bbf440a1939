//! `coffer dump SNAP PATH`: a file's content to a writer, or a folder as a tar stream (modes,
//! owners, mtimes, symlinks, devices and fifos). Data goes out one blob at a time, so memory
//! stays at one chunk however large the file; a file whose blobs do not add up to its size
//! stops the dump with an error rather than shifting every later tar member.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::commands::ls::find_node;
use crate::format::tree::{Metadata, Node, NodeKind};
use crate::id::Id;
use crate::repo::walk::{self, Visitor};
use crate::repo::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{path:?} is not in this snapshot; `coffer ls SNAP` shows its paths")]
    NoSuchPath { path: String },
    #[error("{path:?} is a {kind}: dump writes files and folders")]
    NotDumpable { path: String, kind: &'static str },
    #[error("{path}: its data adds up to {actual} bytes, not the {expected} the snapshot records; run `coffer check`")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What [`dump`] wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpReport {
    pub entries: u64,
    pub bytes: u64,
}

/// Writes `path` of the snapshot with root `tree`: a file's bytes, or a folder (or with
/// `archive` anything) as a tar archive whose names start at the entry's own name (`/home/me` gives
/// `me/…`; `/` gives the sources' full paths without the leading `/`).
pub fn dump(
    repo: &Repository,
    tree: &Id,
    path: &[u8],
    archive: bool,
    out: &mut dyn Write,
) -> Result<DumpReport, DumpError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let node = find_node(repo, tree, path)?.ok_or_else(|| DumpError::NoSuchPath { path: shown() })?;
    match &node.kind {
        NodeKind::File { size, content } if !archive => {
            let bytes = copy_content(repo, &shown(), *size, content, out)?;
            return Ok(DumpReport { entries: 1, bytes });
        }
        NodeKind::File { .. } | NodeKind::Dir { .. } => {}
        other if !archive => return Err(DumpError::NotDumpable { path: shown(), kind: other.type_name() }),
        _ => {}
    }
    let mut builder = tar::Builder::new(out);
    let mut dumper = Tarrer { repo, builder: &mut builder, report: DumpReport::default() };
    // The archive's names are relative to the folder holding the entry.
    let name: &[u8] = if node.name.is_empty() { b"" } else { &node.name };
    dumper.append(name, &node)?;
    if let NodeKind::Dir { subtree } = &node.kind {
        walk::walk(repo, &format!("dump of {}", shown()), subtree, name, (), &mut dumper)?;
    }
    let report = std::mem::take(&mut dumper.report);
    builder.finish().map_err(DumpError::Write)?;
    Ok(report)
}

/// Writes a file's blobs in order, checking they add up to `size`.
fn copy_content(
    repo: &Repository,
    path: &str,
    size: u64,
    content: &[Id],
    out: &mut dyn Write,
) -> Result<u64, DumpError> {
    let mut reader = ContentReader::new(repo, path, size, content);
    std::io::copy(&mut reader, out).map_err(|e| reader.error.take().unwrap_or(DumpError::Write(e)))
}

/// A file's content as a reader, one blob in memory at a time; exactly `size` bytes or an
/// error (kept in `error`, since `Read` can only return an `io::Error`).
struct ContentReader<'a> {
    repo: &'a Repository,
    path: &'a str,
    size: u64,
    blobs: std::slice::Iter<'a, Id>,
    current: Vec<u8>,
    at: usize,
    given: u64,
    error: Option<DumpError>,
}

impl<'a> ContentReader<'a> {
    fn new(repo: &'a Repository, path: &'a str, size: u64, content: &'a [Id]) -> ContentReader<'a> {
        ContentReader { repo, path, size, blobs: content.iter(), current: Vec::new(), at: 0, given: 0, error: None }
    }

    fn fail(&mut self, error: DumpError) -> std::io::Error {
        let text = error.to_string();
        self.error = Some(error);
        std::io::Error::other(text)
    }

    fn mismatch(&mut self, actual: u64) -> std::io::Error {
        let error = DumpError::SizeMismatch { path: self.path.to_string(), expected: self.size, actual };
        self.fail(error)
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            let Some(id) = self.blobs.next() else {
                if self.given != self.size {
                    return Err(self.mismatch(self.given));
                }
                return Ok(0);
            };
            self.current = match self.repo.load_blob(id) {
                Ok(data) => data,
                Err(e) => return Err(self.fail(e.into())),
            };
            self.at = 0;
        }
        let n = buf.len().min(self.current.len() - self.at);
        if self.given + n as u64 > self.size {
            let actual = self.given + (self.current.len() - self.at) as u64;
            return Err(self.mismatch(actual));
        }
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        self.given += n as u64;
        Ok(n)
    }
}

struct Tarrer<'a, 'w> {
    repo: &'a Repository,
    builder: &'a mut tar::Builder<&'w mut dyn Write>,
    report: DumpReport,
}

fn header(kind: tar::EntryType, meta: &Metadata, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode & 0o7777);
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    header.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
    header.set_size(size);
    // Names too long for the header are left out: the numeric ids are still there.
    let _ = header.set_username(&meta.user);
    let _ = header.set_groupname(&meta.group);
    header
}

impl Tarrer<'_, '_> {
    fn append(&mut self, name: &[u8], node: &Node) -> Result<(), DumpError> {
        let shown = String::from_utf8_lossy(name).into_owned();
        if name.is_empty() {
            // The snapshot's root has no name and no metadata of its own.
            return Ok(());
        }
        let path = Path::new(OsStr::from_bytes(name));
        let meta = &node.meta;
        let write = |e: std::io::Error| DumpError::Write(e);
        match &node.kind {
            NodeKind::File { size, content } => {
                let mut header = header(tar::EntryType::Regular, meta, *size);
                let mut reader = ContentReader::new(self.repo, &shown, *size, content);
                let result = self.builder.append_data(&mut header, path, &mut reader);
                if let Some(error) = reader.error.take() {
                    return Err(error);
                }
                result.map_err(write)?;
                self.report.bytes += size;
            }
            NodeKind::Dir { .. } => {
                let mut header = header(tar::EntryType::Directory, meta, 0);
                self.builder.append_data(&mut header, path, std::io::empty()).map_err(write)?;
            }
            NodeKind::Symlink { target } => {
                let mut header = header(tar::EntryType::Symlink, meta, 0);
                self.builder.append_link(&mut header, path, Path::new(OsStr::from_bytes(target))).map_err(write)?;
            }
            NodeKind::Fifo | NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } => {
                let (kind, rdev) = match node.kind {
                    NodeKind::CharDevice { rdev } => (tar::EntryType::Char, rdev),
                    NodeKind::BlockDevice { rdev } => (tar::EntryType::Block, rdev),
                    _ => (tar::EntryType::Fifo, 0),
                };
                let mut header = header(kind, meta, 0);
                header.set_device_major(libc::major(rdev as libc::dev_t)).map_err(write)?;
                header.set_device_minor(libc::minor(rdev as libc::dev_t)).map_err(write)?;
                self.builder.append_data(&mut header, path, std::io::empty()).map_err(write)?;
            }
            // tar has no sockets (GNU tar skips them too).
            NodeKind::Socket => return Ok(()),
        }
        self.report.entries += 1;
        Ok(())
    }
}

impl Visitor for Tarrer<'_, '_> {
    type Error = DumpError;
    type Dir = ();

    fn entry(&mut self, _: &mut (), path: &[u8], node: &Node) -> Result<Option<()>, DumpError> {
        // The walk's paths start with the dumped entry's name, or with `/` for the root.
        let name = path.strip_prefix(b"/").unwrap_or(path);
        self.append(name, node)?;
        Ok(matches!(node.kind, NodeKind::Dir { .. }).then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn files_and_folders() {
        let fx = fixture();
        let out = backup(&fx);
        let s = fx.src_path().to_str().unwrap().to_string();
        let mut bytes = Vec::new();
        let report =
            dump(&fx.repo, &out.snapshot.tree, format!("{s}/sub/b.txt").as_bytes(), false, &mut bytes).unwrap();
        assert_eq!(report.bytes, 11);
        assert_eq!(bytes.len(), 11);
        assert!(matches!(
            dump(&fx.repo, &out.snapshot.tree, format!("{s}/link").as_bytes(), false, &mut Vec::new()),
            Err(DumpError::NotDumpable { kind: "symlink", .. })
        ));
        assert!(matches!(
            dump(&fx.repo, &out.snapshot.tree, b"/nope", true, &mut Vec::new()),
            Err(DumpError::NoSuchPath { .. })
        ));

        let mut archive = Vec::new();
        dump(&fx.repo, &out.snapshot.tree, format!("{s}/sub").as_bytes(), false, &mut archive).unwrap();
        let mut names = Vec::new();
        for entry in tar::Archive::new(archive.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            names.push((name, content));
        }
        assert_eq!(names[0].0, "sub");
        assert_eq!(names[1].0, "sub/b.txt");
        assert_eq!(names[1].1.len(), 11);
    }
}
