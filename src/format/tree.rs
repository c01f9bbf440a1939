//! Tree blobs: one directory's entries with their metadata, stored as a blob of kind `Tree`
//! (so, like data, compressed, encrypted and named by keyed BLAKE3: a tree of ids is a Merkle
//! tree and file names are as secret as contents).
//!
//! Plaintext layout: `"CFTREE01" | postcard(Tree)`. Nodes are sorted by name bytes and names
//! are unique, non-empty, and free of `/` and NUL and not `.` or `..`, so a restore can never
//! be steered outside its target.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{from_postcard, strip_magic, to_postcard, FormatError};
use crate::id::Id;

pub const MAGIC: &[u8; 8] = b"CFTREE01";
const WHAT: &str = "tree";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: ByteBuf,
    pub kind: NodeKind,
    pub meta: Metadata,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File { size: u64, content: Vec<Id> },
    Dir { subtree: Id },
    Symlink { target: ByteBuf },
    Fifo,
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
    Socket,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Permission and special bits (`st_mode & 0o7777`); the type lives in `NodeKind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub atime: i64,
    pub atime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    /// Device and inode at backup time: files sharing both (with `nlink > 1`) were hardlinks.
    pub dev: u64,
    pub inode: u64,
    pub nlink: u64,
    pub xattrs: Vec<Xattr>,
    /// Named additions of later versions (e.g. file flags, ACLs); v1 writes none.
    pub extensions: Vec<(String, ByteBuf)>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: ByteBuf,
    pub value: ByteBuf,
}

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDevice { .. } => "chardev",
            NodeKind::BlockDevice { .. } => "blockdev",
            NodeKind::Socket => "socket",
        }
    }
}

/// Whether `name` is safe as one path component.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

impl Tree {
    /// Encodes a tree; nodes must already be sorted by name.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.nodes.windows(2).all(|w| w[0].name < w[1].name));
        [MAGIC.as_slice(), &to_postcard(self)].concat()
    }

    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let tree: Tree = from_postcard(strip_magic(bytes, MAGIC, WHAT)?, WHAT)?;
        if let Some(bad) = tree.nodes.iter().find(|n| !is_valid_name(&n.name)) {
            return Err(FormatError::Malformed {
                what: WHAT,
                detail: format!("invalid entry name {:?}", String::from_utf8_lossy(&bad.name)),
            });
        }
        if !tree.nodes.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(FormatError::Malformed { what: WHAT, detail: "entries not sorted or not unique".into() });
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = NodeKind> {
        prop_oneof![
            (any::<u64>(), proptest::collection::vec(any::<[u8; 32]>(), 0..4))
                .prop_map(|(size, c)| NodeKind::File { size, content: c.into_iter().map(Id).collect() }),
            any::<[u8; 32]>().prop_map(|s| NodeKind::Dir { subtree: Id(s) }),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(|t| NodeKind::Symlink { target: ByteBuf::from(t) }),
            Just(NodeKind::Fifo),
            any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
            any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
            Just(NodeKind::Socket),
        ]
    }

    fn meta() -> impl Strategy<Value = Metadata> {
        (
            any::<(u32, u32, u32, i64, u32, u64, u64)>(),
            ".{0,8}",
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..10), proptest::collection::vec(any::<u8>(), 0..10)),
                0..3,
            ),
        )
            .prop_map(|((mode, uid, gid, mtime, nsec, dev, inode), user, xattrs)| Metadata {
                mode,
                uid,
                gid,
                user,
                group: String::new(),
                mtime,
                mtime_nsec: nsec,
                dev,
                inode,
                nlink: 1,
                xattrs: xattrs
                    .into_iter()
                    .map(|(n, v)| Xattr { name: ByteBuf::from(n), value: ByteBuf::from(v) })
                    .collect(),
                ..Metadata::default()
            })
    }

    proptest! {
        #[test]
        fn round_trip(entries in proptest::collection::btree_map(proptest::collection::vec(1u8..=255, 1..20), (kind(), meta()), 0..10)) {
            let nodes: Vec<Node> = entries
                .into_iter()
                .filter(|(name, _)| is_valid_name(name))
                .map(|(name, (kind, meta))| Node { name: ByteBuf::from(name), kind, meta })
                .collect();
            let tree = Tree { nodes };
            prop_assert_eq!(&Tree::decode(&tree.encode()).unwrap(), &tree);
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&[MAGIC.as_slice(), &bytes].concat());
        }
    }

    #[test]
    fn rejects_traversal_names() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let tree = Tree {
                nodes: vec![Node {
                    name: ByteBuf::from(bad.to_vec()),
                    kind: NodeKind::Fifo,
                    meta: Metadata::default(),
                }],
            };
            let bytes = [MAGIC.as_slice(), &to_postcard(&tree)].concat();
            assert!(Tree::decode(&bytes).is_err(), "{bad:?} accepted");
        }
    }
}
