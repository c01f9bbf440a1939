//! The repository layout (DESIGN §3): what each object is called in storage. A leaf of the
//! crate (it knows only ids), so both the store, which caps the size of what it reads by kind,
//! and the repository, which names the objects it reads and writes, use it without importing
//! each other. Code outside `repo/` names objects with these when it calls the repository's
//! object operations (`Repository::read_object` and friends); it never reaches the store.

use crate::id::Id;

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const INDEX: &str = "index/";
pub const SNAPSHOTS: &str = "snapshots/";
pub const SIGNERS: &str = "signers/";
pub const DATA: &str = "data/";
/// Backup lock markers (`<session>-<seq>`) and prune plans: see docs/design.md, "Prune protocol".
pub const LOCKS: &str = "locks/";
pub const PLANS: &str = "plans/";

pub fn pack(id: &Id) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

pub fn in_dir(dir: &str, id: &Id) -> String {
    format!("{dir}{}", id.to_hex())
}

/// The largest whole object of the kind `path` names that a reader accepts; `None` for
/// packs (read in ranges) and anything else. Each is far above what Coffer writes: a key
/// file or signer record is under 1 KiB, a snapshot under 1 KiB plus its paths and tags,
/// an index file lists at most a few thousand packs (about 8 MiB at most), a plan lists
/// packs to delete.
pub fn size_cap(path: &str) -> Option<u64> {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let cap = if path == CONFIG {
        64 * KIB
    } else if path.starts_with(KEYS) || path.starts_with(SIGNERS) || path.starts_with(LOCKS) {
        64 * KIB
    } else if path.starts_with(SNAPSHOTS) {
        16 * MIB
    } else if path.starts_with(INDEX) || path.starts_with(PLANS) {
        256 * MIB
    } else {
        return None;
    };
    Some(cap)
}
