//! What `restore` does with an entry already at the target (`--overwrite`, restic's values),
//! and `--verify`: reading restored files back against the snapshot's content ids.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::tree::{Node, NodeKind};
use crate::id::Id;

/// restic's `--overwrite`; the default is restic's too, `always`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace whatever is there.
    #[default]
    Always,
    /// Keep a file whose size and modification time match the snapshot's (its content may
    /// differ all the same: `--verify` finds that); replace anything else.
    IfChanged,
    /// Replace only what is older than the snapshot's entry.
    IfNewer,
    /// Keep everything that is there.
    Never,
}

impl Overwrite {
    pub fn parse(text: &str) -> Result<Overwrite, String> {
        match text {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!("{text:?} is not an overwrite policy: use always, if-changed, if-newer or never")),
        }
    }
}

/// Whether to write `node` at `dest` under `policy`. Folders are always entered (their
/// contents decide for themselves).
pub fn should_write(policy: Overwrite, dest: &Path, node: &Node) -> bool {
    if policy == Overwrite::Always || matches!(node.kind, NodeKind::Dir { .. }) {
        return true;
    }
    let Ok(existing) = std::fs::symlink_metadata(dest) else {
        // Nothing there (or nothing we can see): write it.
        return true;
    };
    let (mtime, mtime_nsec) = (node.meta.mtime, node.meta.mtime_nsec as i64);
    match policy {
        Overwrite::Always => true,
        Overwrite::Never => false,
        Overwrite::IfNewer => (mtime, mtime_nsec) > (existing.mtime(), existing.mtime_nsec()),
        Overwrite::IfChanged => match &node.kind {
            NodeKind::File { size, .. } => {
                !(existing.is_file()
                    && existing.size() == *size
                    && (existing.mtime(), existing.mtime_nsec()) == (mtime, mtime_nsec))
            }
            NodeKind::Symlink { target } => {
                std::fs::read_link(dest).map_or(true, |t| t.as_os_str().as_bytes() != target.as_slice())
            }
            _ => true,
        },
    }
}

/// Reads `path` back and checks it holds exactly the chunks `content` names, in order.
/// Returns what differs, for the report.
pub fn verify_file(repo: &dyn super::restore::RestoreSource, path: &Path, content: &[Id]) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("verify: cannot read it back: {e}"))?;
    let mut buffer = Vec::new();
    let mut offset = 0u64;
    for (i, id) in content.iter().enumerate() {
        let length = repo.locate(id).map_err(|e| format!("verify: chunk {i}: {e}"))?.entry.raw_len as usize;
        buffer.resize(length, 0);
        file.read_exact(&mut buffer).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                format!("verify: the file is shorter than the snapshot's ({offset}+ bytes)")
            }
            _ => format!("verify: reading at byte {offset}: {e}"),
        })?;
        if !repo.is_chunk(&buffer, id) {
            return Err(format!(
                "verify: content differs from the snapshot's at bytes {offset}..{}",
                offset + length as u64
            ));
        }
        offset += length as u64;
    }
    let mut extra = [0u8; 1];
    match file.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("verify: the file is longer than the snapshot's {offset} bytes")),
        Err(e) => Err(format!("verify: reading at byte {offset}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::Overwrite;

    #[test]
    fn parses_restics_names() {
        assert_eq!(Overwrite::parse("always"), Ok(Overwrite::Always));
        assert_eq!(Overwrite::parse("if-changed"), Ok(Overwrite::IfChanged));
        assert_eq!(Overwrite::parse("if-newer"), Ok(Overwrite::IfNewer));
        assert_eq!(Overwrite::parse("never"), Ok(Overwrite::Never));
        assert!(Overwrite::parse("sometimes").is_err());
    }
}
