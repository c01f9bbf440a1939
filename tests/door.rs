//! The repository's door (issue 18), kept shut: no file under `src/commands/`, `src/archiver/`,
//! `src/cli/` or `src/vfs.rs` names the storage seam or the local database directly — no
//! `store::`/`db::` path (`crate::store::…`, `coffer::db::…`, `use crate::{store, …}`) and no
//! reach through a repository's `store` field. What they need is a named operation on
//! `Repository` (`src/repo/door.rs` and its siblings), and the few types those operations
//! return are re-exported by `repo`. The compiler already keeps `Repository`'s other fields
//! private; this test covers paths, which privacy cannot.
//!
//! The scan reads source text (comments stripped), so it needs no build of the crate's
//! internals and names the offending line.

use std::path::{Path, PathBuf};

/// Where the door applies.
const GUARDED: &[&str] = &["src/commands", "src/archiver", "src/cli", "src/vfs.rs"];

/// Files allowed to reach past the door for a while (a change under way). An entry that no
/// longer reaches past the door fails the test, so the list cannot go stale. Empty: every
/// guarded file goes through the door.
const PENDING: &[&str] = &[];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
        return;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in entries {
        rust_files(&entry, out);
    }
}

/// The code of a line, without its `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `word` occurs in `text` as a whole identifier followed by `after`.
fn names(text: &str, word: &str, after: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before_ok = text[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        before_ok && text[at + word.len()..].starts_with(after)
    })
}

/// What a line does that reaches past the door, if anything.
fn reach(line: &str) -> Option<&'static str> {
    let line = code(line);
    if names(line, "store", "::") {
        return Some("names a `store::` path");
    }
    if names(line, "db", "::") {
        return Some("names a `db::` path");
    }
    // A grouped import of the modules themselves: `use crate::{db, store};`.
    let trimmed = line.trim_start();
    let is_use = ["use ", "pub use ", "pub(crate) use "].iter().any(|u| trimmed.starts_with(u));
    if is_use && line.contains('{') {
        let first_word = |item: &str| item.split_whitespace().next().map(str::to_owned);
        let items: Vec<_> = line.split(['{', '}', ',', ';']).filter_map(first_word).collect();
        if items.iter().any(|i| i == "store" || i == "db") {
            return Some("imports the `store` or `db` module");
        }
    }
    // The one `Repository` field still crate-visible (for the pending files).
    if line.contains(".store.") {
        return Some("reaches through a repository's `store` field");
    }
    None
}

fn reaches(root: &Path, file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let relative = file.strip_prefix(root).unwrap_or(file).display().to_string();
    let mut found = Vec::new();
    // A `use` spread over several lines is read as one statement, from its first line.
    let mut statement: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = code(line);
        let (start, whole) = match statement.take() {
            Some((start, mut so_far)) => {
                so_far.push(' ');
                so_far.push_str(line.trim());
                (start, so_far)
            }
            None => (n, line.to_string()),
        };
        let trimmed = whole.trim_start();
        let is_use = ["use ", "pub use ", "pub(crate) use "].iter().any(|u| trimmed.starts_with(u));
        if is_use && !whole.contains(';') {
            statement = Some((start, whole));
            continue;
        }
        if let Some(why) = reach(&whole) {
            found.push(format!("{relative}:{}: {why}: {}", start + 1, whole.trim()));
        }
    }
    found
}

#[test]
fn no_file_outside_repo_reaches_past_the_door() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for guarded in GUARDED {
        rust_files(&root.join(guarded), &mut files);
    }
    assert!(files.len() > 40, "the scan found only {} files: has the tree moved?", files.len());
    let mut offences = Vec::new();
    let mut cleared = Vec::new();
    for file in &files {
        let found = reaches(root, file);
        let pending = PENDING.iter().any(|p| root.join(p) == *file);
        match (pending, found.is_empty()) {
            (false, false) => offences.extend(found),
            (true, true) => cleared.push(file.strip_prefix(root).unwrap_or(file).display().to_string()),
            _ => {}
        }
    }
    assert!(
        offences.is_empty(),
        "these lines reach past the repository's door; use (or add) a named operation on \
         `Repository` (src/repo/door.rs), or a type `repo` re-exports:\n{}",
        offences.join("\n")
    );
    assert!(cleared.is_empty(), "no longer reaching past the door: remove from PENDING in tests/door.rs: {cleared:?}");
}

#[test]
fn the_scan_tells_paths_from_lookalikes() {
    assert!(reach("use crate::store::paths;").is_some());
    assert!(reach("use coffer::db::FilesCacheReader;").is_some());
    assert!(reach("let x = crate::store::map_in_flight(&a, 8, f);").is_some());
    assert!(reach("use crate::{db, id::Id};").is_some());
    assert!(reach("use crate::{store as storage};").is_some());
    assert!(reach("pub use crate::{\n    db,\n    id::Id,\n};").is_some());
    assert!(reach("match kind { db => 1, _ => 2 }").is_none());
    assert!(reach("if self.repo.store.is_local() {").is_some());
    // `restore::` is not `store::`, an atomic's `store(` is not the field, comments are not code.
    assert!(reach("use coffer::commands::restore::{self, RestoreOptions};").is_none());
    assert!(reach("flag.store(true, Ordering::Relaxed);").is_none());
    assert!(reach("/// See `store::paths` for the layout.").is_none());
    assert!(reach("let n = repo.list_object_ids(layout::DATA)?; // not store::list_ids").is_none());
    assert!(reach("use crate::repo::{DbError, StoreError};").is_none());
}
