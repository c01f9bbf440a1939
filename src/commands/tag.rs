//! `coffer tag`: changes the tags of snapshots (restic's `--add`, `--remove`, `--set`).
//!
//! A snapshot is signed, so changing it means writing a new one: same time, host, paths, tree
//! and summary, the new tags, signed by the repository key (which alone may do this: a
//! write-only key cannot retire snapshots). The old one is then retired the way `forget`
//! retires it, with a signed `Forgotten` record first, so `check`'s anchors (see
//! `repo::anchors`) do not take it for a snapshot the store hides. The new snapshot gets this
//! client's anchors, keeps the lock session its backup held (so prune still sees that backup
//! ended), and keeps who signed the original: a write-only key's snapshot stays attributed to
//! that key (`coffer.copied-signer`, as `copy` does), and restore keeps confining it.

use serde::Serialize;
use serde_bytes::ByteBuf;

pub use crate::format::snapshot::RETAGGED_FROM;
use crate::format::snapshot::{COPIED_SIGNER, PREVIOUS, SIGNERS_SEEN};
use crate::id::Id;
use crate::repo::{RepoError, Repository, SnapshotEntry};

/// The change asked for: `set` replaces the tags (then `add` and `remove` apply to it).
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags after the change, in order, without repeats.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for tag in self.set.as_deref().unwrap_or(tags).iter().chain(&self.add) {
            if !out.contains(tag) && !self.remove.contains(tag) {
                out.push(tag.clone());
            }
        }
        out
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TagReport {
    /// (old snapshot, its replacement)
    pub changed: Vec<(Id, Id)>,
    /// Snapshots whose tags the change left as they were.
    pub unchanged: Vec<Id>,
}

pub fn tag(repo: &Repository, snapshots: &[SnapshotEntry], change: &TagChange) -> Result<TagReport, RepoError> {
    repo.require_full_key("changing tags")?;
    let mut report = TagReport::default();
    for entry in snapshots {
        let tags = change.apply(&entry.snapshot.tags);
        if tags == entry.snapshot.tags {
            report.unchanged.push(entry.id);
            continue;
        }
        let mut snapshot = entry.snapshot.clone();
        snapshot.tags = tags;
        snapshot.extensions.retain(|(key, _)| key != SIGNERS_SEEN && key != PREVIOUS && key != RETAGGED_FROM);
        snapshot.extensions.extend(repo.anchor_extensions()?);
        snapshot.extensions.push((RETAGGED_FROM.to_string(), ByteBuf::from(entry.id.0.to_vec())));
        // A copy already names its original's signer; anything else names the key that signed it.
        if snapshot.copied_signer().is_none() && entry.signer != repo.keys().repo_verify.id() {
            snapshot.extensions.push((
                COPIED_SIGNER.to_string(),
                ByteBuf::from(crate::format::to_postcard(&(entry.signer, entry.signed_by.clone()))),
            ));
        }
        let id = repo.save_snapshot(&snapshot)?;
        // The new one is stored before the old one goes: killed in between, both exist (the
        // same data twice, tagged two ways), never neither.
        repo.record_forgotten(&[entry.id])?;
        repo.forget_local_snapshots(&[entry.id])?;
        repo.delete_snapshot_object(&entry.id)?;
        report.changed.push((entry.id, id));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_add_remove() {
        let tags = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let change = TagChange { set: None, add: tags(&["b", "c"]), remove: tags(&["a"]) };
        assert_eq!(change.apply(&tags(&["a", "b"])), tags(&["b", "c"]));
        let change = TagChange { set: Some(tags(&["x"])), add: tags(&["y"]), remove: vec![] };
        assert_eq!(change.apply(&tags(&["a"])), tags(&["x", "y"]));
        let change = TagChange { set: Some(vec![]), ..Default::default() };
        assert!(change.apply(&tags(&["a"])).is_empty());
    }
}
