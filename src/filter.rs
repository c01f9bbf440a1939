//! Which paths a backup skips and a restore selects, with restic's pattern rules (its `filter`
//! package), so that patterns people bring from restic select the same files:
//!
//! - A pattern is split at `/` and matched component by component; `*`, `?` and `[…]` never
//!   cross a `/` (globset with `literal_separator`), `**` stands for any number of components.
//! - A pattern starting with `/` is anchored at the root; any other matches a run of
//!   components at any depth (`git/contrib` matches `/home/me/src/git/contrib`).
//! - A pattern matches a path when it matches the path or one of its ancestors, so a match on a
//!   folder covers what it holds.
//! - `!pattern` takes back what the patterns before it matched (the last match wins).
//!
//! Beyond patterns, a backup can skip folders holding a marker file (`--exclude-if-present`,
//! `--exclude-caches`), files larger than a size, other filesystems (`-x`), and never reads
//! the contents of kernel pseudo filesystems (/proc, /sys and the like).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern { pattern: String, source: globset::Error },
    #[error("reading patterns from {path}: {source}")]
    PatternFile { path: PathBuf, source: std::io::Error },
    #[error("source {path}: {source}")]
    Source { path: PathBuf, source: std::io::Error },
}

/// The `Signature:` line a CACHEDIR.TAG starts with (https://bford.info/cachedir/).
pub const CACHEDIR_TAG_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// One `/`-separated component of a pattern.
#[derive(Clone, Debug)]
enum Part {
    /// `**`: any number of components, none included.
    AnyDepth,
    /// The root of an absolute pattern.
    Root,
    /// Any one component (what `**` expands to).
    AnyOne,
    Literal(Vec<u8>),
    Glob(GlobMatcher),
}

impl Part {
    fn matches(&self, component: &[u8]) -> bool {
        match self {
            Part::AnyDepth => true,
            Part::Root => component == b"/",
            Part::AnyOne => component != b"/",
            Part::Literal(text) => text == component,
            Part::Glob(glob) => component != b"/" && glob.is_match(OsStr::from_bytes(component)),
        }
    }
}

#[derive(Clone, Debug)]
struct Pattern {
    parts: Vec<Part>,
    negated: bool,
    case_insensitive: bool,
}

/// A list of patterns with restic's meaning (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    patterns: Vec<Pattern>,
    has_negated: bool,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, FilterError> {
        let mut list = Patterns::default();
        list.add(patterns, false)?;
        Ok(list)
    }

    /// Adds patterns, matched ignoring case when `case_insensitive` (restic's `--iexclude`).
    pub fn add(&mut self, patterns: &[String], case_insensitive: bool) -> Result<(), FilterError> {
        for text in patterns {
            if let Some(pattern) = parse(text, case_insensitive)? {
                self.has_negated |= pattern.negated;
                self.patterns.push(pattern);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (absolute) or one of its ancestors is matched.
    pub fn matches(&self, path: &Path) -> bool {
        self.matches_with_children(path).0
    }

    /// Whether a pattern matches `path` itself, ending at its last component, rather than an
    /// ancestor of it (`find`: a pattern names entries, not everything below them).
    pub fn matches_entry(&self, path: &Path) -> bool {
        let components = split(path.as_os_str().as_bytes());
        let lower: Vec<Vec<u8>> = components.iter().map(|c| c.to_ascii_lowercase()).collect();
        let lower: Vec<&[u8]> = lower.iter().map(|c| c.as_slice()).collect();
        let mut matched = false;
        for pattern in &self.patterns {
            let components = if pattern.case_insensitive { &lower } else { &components };
            let m = match_parts_to(&pattern.parts, components, true);
            if pattern.negated {
                matched &= !m;
            } else {
                matched |= m;
            }
        }
        matched
    }

    /// Whether `path` matches, and whether something below it might (restic's ListWithChild):
    /// a restore walks into a folder only then.
    pub fn matches_with_children(&self, path: &Path) -> (bool, bool) {
        if self.patterns.is_empty() {
            return (false, false);
        }
        let components = split(path.as_os_str().as_bytes());
        let lower: Vec<Vec<u8>> = if self.patterns.iter().any(|p| p.case_insensitive) {
            components.iter().map(|c| c.to_ascii_lowercase()).collect()
        } else {
            Vec::new()
        };
        let lower: Vec<&[u8]> = lower.iter().map(|c| c.as_slice()).collect();
        let (mut matched, mut child) = (false, false);
        for pattern in &self.patterns {
            let components = if pattern.case_insensitive { &lower } else { &components };
            let m = match_parts(&pattern.parts, components);
            let c = child_may_match(&pattern.parts, components);
            if pattern.negated {
                matched &= !m;
                child &= !m;
            } else {
                matched |= m;
                child |= c;
                if matched && child && !self.has_negated {
                    break;
                }
            }
        }
        (matched, child)
    }
}

/// Splits a path into components; an absolute path starts with the component `/`.
fn split(path: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    if path.starts_with(b"/") {
        parts.push(b"/");
    }
    parts.extend(path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b"."));
    parts
}

fn parse(text: &str, case_insensitive: bool) -> Result<Option<Pattern>, FilterError> {
    let (negated, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let body = if case_insensitive { body.to_lowercase() } else { body.to_string() };
    let components = split(body.as_bytes());
    if components.is_empty() {
        // restic ignores empty patterns.
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(components.len());
    for component in components {
        if component == b"/" {
            parts.push(Part::Root);
        } else if component == b"**" {
            // Consecutive `**` mean no more than one.
            if !matches!(parts.last(), Some(Part::AnyDepth)) {
                parts.push(Part::AnyDepth);
            }
        } else if !component.iter().any(|b| b"\\[]*?{}".contains(b)) {
            parts.push(Part::Literal(component.to_vec()));
        } else {
            let glob = std::str::from_utf8(component).unwrap_or_default();
            let matcher = GlobBuilder::new(glob)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|source| FilterError::Pattern { pattern: text.to_string(), source })?
                .compile_matcher();
            parts.push(Part::Glob(matcher));
        }
    }
    Ok(Some(Pattern { parts, negated, case_insensitive }))
}

/// restic's `match`: the pattern matches `len(parts)` consecutive components, anchored at the
/// root for an absolute pattern, else starting at any depth; so it also matches everything
/// below a matched path.
fn match_parts(parts: &[Part], path: &[&[u8]]) -> bool {
    match_parts_to(parts, path, false)
}

/// [`match_parts`]; with `at_end`, only matches that end at the path's last component count.
fn match_parts_to(parts: &[Part], path: &[&[u8]], at_end: bool) -> bool {
    if let Some(pos) = parts.iter().position(|p| matches!(p, Part::AnyDepth)) {
        // Expand `**` into 0, 1, 2, … single-component wildcards.
        let (before, after) = (&parts[..pos], &parts[pos + 1..]);
        let fixed = before.len() + after.len();
        for n in 0..=path.len().saturating_sub(fixed) {
            let mut expanded: Vec<Part> = before.to_vec();
            expanded.extend(std::iter::repeat_n(Part::AnyOne, n));
            expanded.extend(after.iter().cloned());
            if match_parts_to(&expanded, path, at_end) {
                return true;
            }
        }
        return false;
    }
    if parts.is_empty() {
        return path.is_empty();
    }
    if parts.len() > path.len() {
        return false;
    }
    let anchored = matches!(parts[0], Part::Root);
    let max_offset = if anchored { 0 } else { path.len() - parts.len() };
    let mut min_offset = if !anchored && path.first() == Some(&b"/".as_slice()) { 1 } else { 0 };
    if at_end {
        if max_offset != path.len() - parts.len() {
            return false;
        }
        min_offset = max_offset.max(min_offset);
    }
    (min_offset..=max_offset)
        .rev()
        .any(|offset| parts.iter().zip(&path[offset..]).all(|(part, component)| part.matches(component)))
}

/// restic's `childMatch`: could a path below `path` match? Only absolute patterns can say no:
/// the path must match the pattern's first components (those before a `**`).
fn child_may_match(parts: &[Part], path: &[&[u8]]) -> bool {
    if !matches!(parts.first(), Some(Part::Root)) {
        return true;
    }
    let mut path = path;
    if let Some(pos) = parts.iter().position(|p| matches!(p, Part::AnyDepth)) {
        if path.len() >= pos {
            path = &path[..pos];
        }
    }
    let n = path.len().min(parts.len());
    match_parts(&parts[..n], path)
}

/// Reads patterns from a file, one a line; blank lines and lines starting with `#` are skipped
/// (restic's `--exclude-file`).
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>, FilterError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| FilterError::PatternFile { path: path.to_path_buf(), source })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
}

/// What a backup leaves out besides `--exclude` patterns (all off by default).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Patterns matched ignoring case (`--iexclude`).
    pub iexcludes: Vec<String>,
    /// `NAME` or `NAME:HEADER`: a folder holding a file NAME (that starts with HEADER) keeps
    /// only that file (`--exclude-if-present`).
    pub exclude_if_present: Vec<String>,
    /// Folders with a CACHEDIR.TAG keep only that file (`--exclude-caches`).
    pub exclude_caches: bool,
    /// Files larger than this many bytes are left out (`--exclude-larger-than`).
    pub exclude_larger_than: Option<u64>,
    /// Folders on another filesystem than the sources are kept empty (`-x`).
    pub one_file_system: bool,
}

#[derive(Clone, Debug)]
struct Marker {
    name: Vec<u8>,
    header: Option<Vec<u8>>,
}

/// The backup's exclusion rules, built once for a backup.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    patterns: Patterns,
    markers: Vec<Marker>,
    larger_than: Option<u64>,
    /// With `-x`: the devices of the sources.
    devices: Option<HashSet<u64>>,
}

impl Excludes {
    /// Only patterns: what restore and the size estimate need.
    pub fn new(patterns: &[String]) -> Result<Excludes, FilterError> {
        Ok(Excludes { patterns: Patterns::new(patterns)?, ..Default::default() })
    }

    /// The full rules of a backup of `sources` (absolute paths).
    pub fn for_backup(
        patterns: &[String],
        selection: &Selection,
        sources: &[PathBuf],
    ) -> Result<Excludes, FilterError> {
        let mut excludes = Excludes::new(patterns)?;
        excludes.patterns.add(&selection.iexcludes, true)?;
        for spec in &selection.exclude_if_present {
            let (name, header) = match spec.split_once(':') {
                Some((name, header)) => (name, Some(header.as_bytes().to_vec())),
                None => (spec.as_str(), None),
            };
            excludes.markers.push(Marker { name: name.as_bytes().to_vec(), header });
        }
        if selection.exclude_caches {
            excludes.markers.push(Marker {
                name: b"CACHEDIR.TAG".to_vec(),
                header: Some(CACHEDIR_TAG_SIGNATURE.as_bytes().to_vec()),
            });
        }
        excludes.larger_than = selection.exclude_larger_than;
        if selection.one_file_system {
            let mut devices = HashSet::new();
            for source in sources {
                let meta = std::fs::symlink_metadata(source)
                    .map_err(|source_error| FilterError::Source { path: source.clone(), source: source_error })?;
                devices.insert(meta.dev());
            }
            excludes.devices = Some(devices);
        }
        Ok(excludes)
    }

    /// Whether the patterns exclude `path`.
    pub fn matches(&self, path: &Path) -> bool {
        self.patterns.matches(path)
    }

    /// Whether a file of `size` bytes is too large to back up.
    pub fn too_large(&self, size: u64) -> bool {
        self.larger_than.is_some_and(|limit| size > limit)
    }

    /// Whether the contents of folder `dir` are left out (the folder itself is kept, as a
    /// mount point is): another filesystem under `-x`, or a kernel pseudo filesystem, whose
    /// files are not data and may block a reader forever (/proc/kmsg).
    pub fn skips_contents(&self, dir: &Path) -> bool {
        if let Some(devices) = &self.devices {
            if std::fs::symlink_metadata(dir).is_ok_and(|m| !devices.contains(&m.dev())) {
                return true;
            }
        }
        is_pseudo_filesystem(dir)
    }

    /// Removes the entries of a folder that a marker file in it excludes: of a folder holding
    /// a marker (with the right header), only the marker itself stays (restic's rule).
    pub fn apply_markers<T>(&self, dir: &Path, entries: &mut Vec<T>, name: impl Fn(&T) -> &OsStr) {
        for marker in &self.markers {
            let present = entries.iter().any(|e| name(e).as_bytes() == marker.name.as_slice())
                && marker
                    .header
                    .as_ref()
                    .is_none_or(|header| starts_with(&dir.join(OsStr::from_bytes(&marker.name)), header));
            if present {
                entries.retain(|e| name(e).as_bytes() == marker.name.as_slice());
            }
        }
    }
}

fn starts_with(file: &Path, header: &[u8]) -> bool {
    let mut buffer = vec![0u8; header.len()];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut buffer)).is_ok() && buffer == header
}

/// Kernel filesystems whose files describe the running system rather than hold data.
const PSEUDO_FILESYSTEMS: &[i64] = &[
    0x9fa0,     // proc
    0x62656572, // sysfs
    0x1cd1,     // devpts
    0x27e0eb,   // cgroup
    0x63677270, // cgroup2
    0x64626720, // debugfs
    0x73636673, // securityfs
    0x74726163, // tracefs
    0x6165676c, // pstore
    0xcafe4a11, // bpf
    0x62656570, // configfs
    0x65735543, // fusectl
    0x19800202, // mqueue
    0x42494e4d, // binfmt_misc
    0x6e736673, // nsfs
];

/// Whether `dir` is on a kernel pseudo filesystem (statfs magic), e.g. /proc or /sys.
pub fn is_pseudo_filesystem(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| PSEUDO_FILESYSTEMS.contains(&(s.filesystem_type().0 as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Patterns::new(&patterns).expect("valid").matches(Path::new(path))
    }

    #[test]
    fn entry_matches_end_at_the_entry() {
        let e = |patterns: &[&str], path: &str| {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            Patterns::new(&patterns).expect("valid").matches_entry(Path::new(path))
        };
        assert!(e(&["*.txt"], "/a/b.txt"));
        assert!(!e(&["b.txt"], "/a/b.txt/inner"), "not below a match");
        assert!(!e(&["sub"], "/a/sub/x"));
        assert!(e(&["sub"], "/a/sub"));
        assert!(e(&["a/sub"], "/x/a/sub"));
        assert!(!e(&["/a"], "/x/a"));
        assert!(e(&["/x/**/f"], "/x/a/b/f"));
        assert!(!e(&["/x/**/f"], "/x/a/f/g"));
        assert!(!e(&["x"], "/"));
        let mut ci = Patterns::default();
        ci.add(&["*.TXT".to_string()], true).expect("valid");
        assert!(ci.matches_entry(Path::new("/A/b.txt")));
    }

    #[test]
    fn star_does_not_cross_slash() {
        assert!(m(&["/src/*.txt"], "/src/a.txt"));
        assert!(!m(&["/src/*.txt"], "/src/sub/a.txt"));
        assert!(m(&["/src/**/*.txt"], "/src/sub/deep/a.txt"));
        assert!(m(&["/src/**/*.txt"], "/src/a.txt"));
        assert!(!m(&["/src/**/*.txt"], "/other/a.txt"));
    }

    #[test]
    fn relative_patterns_match_at_any_depth() {
        assert!(m(&["git/contrib"], "/home/me/src/git/contrib"));
        assert!(m(&["git/contrib"], "/home/me/src/git/contrib/file"));
        assert!(!m(&["git/contrib"], "/home/me/src/git/contribution"));
        assert!(m(&["*.log"], "/var/log/syslog.log"));
        assert!(m(&["*.log"], "/a/x.log/inside"));
        assert!(!m(&["*.log"], "/a/log"));
        assert!(m(&["cache"], "/home/me/cache"));
        assert!(!m(&["/cache"], "/home/me/cache"));
        assert!(m(&["/home"], "/home/me/cache"));
    }

    #[test]
    fn question_mark_and_classes_stay_in_one_component() {
        assert!(m(&["/a?c"], "/abc"));
        assert!(!m(&["/a?c"], "/a/c"));
        assert!(m(&["/[ab]x"], "/bx"));
        assert!(!m(&["/[!ab]x"], "/bx"));
    }

    #[test]
    fn negation_takes_back_earlier_matches() {
        let set = ["/data/*", "!/data/keep"];
        assert!(m(&set, "/data/drop"));
        assert!(!m(&set, "/data/keep"));
        assert!(!m(&set, "/data/keep/inside"));
        // A later positive pattern matches again: the last one wins.
        assert!(m(&["/data/*", "!/data/keep", "*.tmp"], "/data/keep/x.tmp"));
    }

    #[test]
    fn case_insensitive_patterns() {
        let mut p = Patterns::default();
        p.add(&["*.JPG".to_string()], true).expect("valid");
        assert!(p.matches(Path::new("/photos/a.jpg")));
        assert!(p.matches(Path::new("/photos/B.Jpg")));
        assert!(!Patterns::new(&["*.JPG".to_string()]).expect("valid").matches(Path::new("/photos/a.jpg")));
    }

    #[test]
    fn children_of_absolute_patterns() {
        let p = Patterns::new(&["/home/me/docs/*.txt".to_string()]).expect("valid");
        assert_eq!(p.matches_with_children(Path::new("/home")), (false, true));
        assert_eq!(p.matches_with_children(Path::new("/home/me/docs")), (false, true));
        assert_eq!(p.matches_with_children(Path::new("/etc")), (false, false));
        assert_eq!(p.matches_with_children(Path::new("/home/me/docs/a.txt")), (true, true));
    }

    #[test]
    fn empty_and_invalid_patterns() {
        assert!(!m(&[""], "/a"));
        assert!(Patterns::new(&["/[a".to_string()]).is_err());
    }

    #[test]
    fn pattern_files_skip_comments_and_blanks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("excludes");
        std::fs::write(&file, "# caches\n*.tmp\n\n  /var/cache  \n!keep.tmp\n").expect("write");
        assert_eq!(read_pattern_file(&file).expect("read"), vec!["*.tmp", "/var/cache", "!keep.tmp"]);
        assert!(read_pattern_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn markers_keep_only_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("CACHEDIR.TAG"), format!("{CACHEDIR_TAG_SIGNATURE}\n")).expect("write");
        std::fs::write(dir.path().join(".nobackup"), "").expect("write");
        let names = |v: &[&str]| v.iter().map(|s| std::ffi::OsString::from(s)).collect::<Vec<_>>();
        let all = names(&["CACHEDIR.TAG", "a", "b"]);
        let caches = Selection { exclude_caches: true, ..Default::default() };
        let ex = Excludes::for_backup(&[], &caches, &[]).expect("valid");
        let mut entries = all.clone();
        ex.apply_markers(dir.path(), &mut entries, |e| e.as_os_str());
        assert_eq!(entries, names(&["CACHEDIR.TAG"]));
        // A tag without the signature is not a cache tag.
        std::fs::write(dir.path().join("CACHEDIR.TAG"), "not a tag\n").expect("write");
        let mut entries = all.clone();
        ex.apply_markers(dir.path(), &mut entries, |e| e.as_os_str());
        assert_eq!(entries, all);
        let present = Selection { exclude_if_present: vec![".nobackup".into()], ..Default::default() };
        let ex = Excludes::for_backup(&[], &present, &[]).expect("valid");
        let mut entries = names(&[".nobackup", "x"]);
        ex.apply_markers(dir.path(), &mut entries, |e| e.as_os_str());
        assert_eq!(entries, names(&[".nobackup"]));
    }

    #[test]
    fn proc_is_a_pseudo_filesystem() {
        if Path::new("/proc/self").exists() {
            assert!(is_pseudo_filesystem(Path::new("/proc")));
        }
        assert!(!is_pseudo_filesystem(&std::env::temp_dir()));
    }

    proptest! {
        /// A literal absolute path always matches itself and what lies below it, and never a
        /// sibling that only shares a prefix of its name.
        #[test]
        fn literal_paths_match_themselves(parts in proptest::collection::vec("[a-z]{1,6}", 1..5), extra in "[a-z]{1,4}") {
            let path = format!("/{}", parts.join("/"));
            prop_assert!(m(&[&path], &path));
            let below = format!("{path}/{extra}");
            prop_assert!(m(&[&path], &below));
            let sibling = format!("{path}{extra}");
            prop_assert!(!m(&[&path], &sibling));
            // The last name alone, relative, matches at its depth.
            let name = parts.last().cloned().unwrap_or_default();
            prop_assert!(m(&[&name], &path));
        }

        /// `*` alone never matches across a `/`: `/*` matches every absolute path (through its
        /// first component), `/*/x` only paths whose second component is x.
        #[test]
        fn star_is_one_component(parts in proptest::collection::vec("[a-z]{1,6}", 2..5)) {
            let path = format!("/{}", parts.join("/"));
            let second = format!("/*/{}", parts[1]);
            prop_assert!(m(&[&second], &path));
            let skipping = format!("/*/{}", parts[parts.len() - 1]);
            if parts.len() > 2 && parts[1] != parts[parts.len() - 1] {
                prop_assert!(!m(&[&skipping], &path));
            }
        }
    }
}
