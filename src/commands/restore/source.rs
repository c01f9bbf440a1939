//! What a restore needs from a repository, declared here by the consumer (as the mount's
//! `Source` and the archiver's `SaveBlobs` are): trees, where each chunk is stored, the chunk's
//! plaintext (alone, or a pack region's worth with one request), whether storage is a round
//! trip away, and whether bytes read back from the target are the chunk they should be
//! (`--verify`). [`Repository`] is the one real implementation; the unit tests give a map, so
//! the walk, the workers and their bookkeeping are tested without storage.

use crate::id::Id;
use crate::repo::walk::Trees;
use crate::repo::{BlobLocation, Copies, RepoError, Repository};

pub trait RestoreSource: Trees + Sync {
    /// Where the chunk `id` is read from.
    fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError>;
    /// Storage is a local folder: no round trip to save, chunks are read one by one.
    fn is_local(&self) -> bool;
    /// The chunk at `location`, verified, into `out` (`sealed`: a buffer for its stored bytes).
    fn read_chunk(&self, location: &BlobLocation, sealed: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), RepoError>;
    /// The chunks at `locations` (neighbours in one pack) with one request; `each` gets every
    /// chunk's plaintext or failure by its index in `locations`.
    fn read_region(
        &self,
        locations: &[BlobLocation],
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
        each: &mut dyn FnMut(usize, Result<&[u8], RepoError>),
    );
    /// `plaintext` is the chunk `id` (a file read back from the target, for `--verify`).
    fn is_chunk(&self, plaintext: &[u8], id: &Id) -> bool;
}

impl RestoreSource for Repository {
    fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError> {
        Repository::locate(self, id)
    }

    fn is_local(&self) -> bool {
        Repository::is_local(self)
    }

    fn read_chunk(&self, location: &BlobLocation, sealed: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), RepoError> {
        // Another copy may serve, and a pack gone since the index was read sends it back to
        // storage's index once: a restore should get every byte there is.
        self.read_blob_into(location, Copies::Current, sealed, out)
    }

    fn read_region(
        &self,
        locations: &[BlobLocation],
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
        each: &mut dyn FnMut(usize, Result<&[u8], RepoError>),
    ) {
        Repository::read_region(self, locations, sealed, out, each)
    }

    fn is_chunk(&self, plaintext: &[u8], id: &Id) -> bool {
        self.domain_naming(plaintext, id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::commands::restore::{restore_from, RestoreOptions};
    use crate::format::pack::{BlobKind, PackEntry};
    use crate::format::tree::{Metadata, Node, NodeKind, Tree};
    use crate::repo::walk::Trees;

    /// A repository as maps: trees and chunks by id, each chunk at its own offset of one pack.
    /// `damaged` chunks fail to read; `remote` sends the restore down its batched, by-region
    /// path, whose requests are counted.
    #[derive(Default)]
    struct MapSource {
        trees: HashMap<Id, Tree>,
        chunks: HashMap<Id, (BlobLocation, Vec<u8>)>,
        damaged: Vec<Id>,
        remote: bool,
        requests: AtomicUsize,
    }

    impl MapSource {
        fn chunk(&mut self, n: u8, bytes: Vec<u8>) -> Id {
            let id = Id([n; 32]);
            let offset = self.chunks.len() as u32 * 100_000;
            let length = bytes.len() as u32;
            let entry = PackEntry { id, kind: BlobKind::Data, offset, length, raw_len: length };
            self.chunks.insert(id, (BlobLocation { pack: Id([9; 32]), entry, domain: Id([0; 32]) }, bytes));
            id
        }

        fn plaintext(&self, id: &Id) -> Result<&[u8], RepoError> {
            match self.chunks.get(id) {
                Some((_, bytes)) if !self.damaged.contains(id) => Ok(bytes),
                _ => Err(RepoError::MissingBlob(*id)),
            }
        }
    }

    impl Trees for MapSource {
        fn load_tree(&self, id: &Id) -> Result<Tree, RepoError> {
            self.trees.get(id).cloned().ok_or(RepoError::MissingBlob(*id))
        }
    }

    impl RestoreSource for MapSource {
        fn locate(&self, id: &Id) -> Result<BlobLocation, RepoError> {
            self.chunks.get(id).map(|(l, _)| *l).ok_or(RepoError::MissingBlob(*id))
        }
        fn is_local(&self) -> bool {
            !self.remote
        }
        fn read_chunk(&self, l: &BlobLocation, _: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), RepoError> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            out.clear();
            out.extend_from_slice(self.plaintext(&l.entry.id)?);
            Ok(())
        }
        fn read_region(
            &self,
            locations: &[BlobLocation],
            _: &mut Vec<u8>,
            _: &mut Vec<u8>,
            each: &mut dyn FnMut(usize, Result<&[u8], RepoError>),
        ) {
            self.requests.fetch_add(1, Ordering::SeqCst);
            for (i, l) in locations.iter().enumerate() {
                each(i, self.plaintext(&l.entry.id));
            }
        }
        fn is_chunk(&self, plaintext: &[u8], id: &Id) -> bool {
            self.plaintext(id).is_ok_and(|bytes| bytes == plaintext)
        }
    }

    fn node(name: &str, kind: NodeKind, mode: u32) -> Node {
        Node {
            name: ByteBuf::from(name.as_bytes().to_vec()),
            kind,
            meta: Metadata { mode, mtime: 1_000_000, ..Metadata::default() },
        }
    }

    /// `/docs/a` (two chunks), `/docs/empty`, `/docs/link -> a`, `/bad` (a damaged chunk).
    fn source(remote: bool) -> (MapSource, Id) {
        let mut source = MapSource { remote, ..MapSource::default() };
        let first = source.chunk(1, vec![b'a'; 70_000]);
        let second = source.chunk(2, (0..50_000u32).map(|i| i as u8).collect());
        let bad = source.chunk(3, vec![b'x'; 10]);
        source.damaged.push(bad);
        let docs = Tree {
            nodes: vec![
                node("a", NodeKind::File { size: 120_000, content: vec![first, second] }, 0o640),
                node("empty", NodeKind::File { size: 0, content: vec![] }, 0o600),
                node("link", NodeKind::Symlink { target: ByteBuf::from(b"a".to_vec()) }, 0o777),
            ],
        };
        let root = Tree {
            nodes: vec![
                node("bad", NodeKind::File { size: 10, content: vec![bad] }, 0o644),
                node("docs", NodeKind::Dir { subtree: Id([101; 32]) }, 0o750),
            ],
        };
        source.trees.insert(Id([101; 32]), docs);
        source.trees.insert(Id([100; 32]), root);
        (source, Id([100; 32]))
    }

    #[test]
    fn a_restore_from_a_map_writes_every_readable_file_and_names_the_one_it_cannot() {
        for remote in [false, true] {
            let (source, root) = source(remote);
            let dir = tempfile::tempdir().unwrap();
            let options =
                RestoreOptions { target: dir.path().to_path_buf(), verify: true, ..RestoreOptions::default() };
            let report = restore_from(&source, &root, None, &options, &AtomicBool::new(false)).unwrap();

            let a = std::fs::read(dir.path().join("docs/a")).unwrap();
            let mut expected = vec![b'a'; 70_000];
            expected.extend((0..50_000u32).map(|i| i as u8));
            assert!(a == expected, "remote {remote}: docs/a differs");
            assert_eq!(std::fs::metadata(dir.path().join("docs/a")).unwrap().mode() & 0o7777, 0o640);
            assert_eq!(std::fs::metadata(dir.path().join("docs")).unwrap().mtime(), 1_000_000);
            assert_eq!(std::fs::read(dir.path().join("docs/empty")).unwrap(), b"");
            assert_eq!(std::fs::read_link(dir.path().join("docs/link")).unwrap(), std::path::Path::new("a"));
            // The file whose chunk cannot be read is reported and not left behind.
            assert!(!dir.path().join("bad").exists(), "remote {remote}");
            assert_eq!(report.errors.len(), 1, "remote {remote}: {:?}", report.errors);
            assert_eq!(report.errors[0].0, dir.path().join("bad").display().to_string());
            assert_eq!(report.verified, 2, "remote {remote}: a and empty read back");
            assert_eq!(report.bytes, 120_000);
            // Locally each chunk is its own read; over a network the two chunks of `a` (one
            // pack, 30 kB apart) and the damaged one are one region's request.
            let requests = source.requests.load(Ordering::SeqCst);
            if remote {
                assert_eq!(requests, 1, "one region for the whole snapshot");
            } else {
                assert_eq!(requests, 3);
            }
        }
    }

    #[test]
    fn a_subfolder_is_restored_into_the_target_and_a_missing_path_is_named() {
        let (source, root) = source(false);
        let dir = tempfile::tempdir().unwrap();
        let options = RestoreOptions { target: dir.path().to_path_buf(), ..RestoreOptions::default() };
        let report = restore_from(&source, &root, Some(b"/docs"), &options, &AtomicBool::new(false)).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
        assert!(dir.path().join("a").is_file() && !dir.path().join("bad").exists());
        let missing = restore_from(&source, &root, Some(b"/nope"), &options, &AtomicBool::new(false));
        assert!(matches!(missing, Err(crate::commands::restore::RestoreError::NoSuchPath(p)) if p == "/nope"));
    }
}
