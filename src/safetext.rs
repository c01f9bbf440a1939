//! Strings a user or a store controls — host names, tags, paths in snapshots — on their way to
//! a terminal or a mount. A snapshot is written by whoever holds a key (a write-only key on a
//! machine that may be stolen), so nothing in it may steer the reader's terminal or break the
//! mount's folder names.
//!
//! - [`terminal`]: control characters (C0, DEL, C1) become `\xNN` / `\u{NNNN}` escapes, so an
//!   escape sequence shows as text instead of moving the cursor or retitling the window.
//! - [`mount_name`]: any string as one safe path component: `%`, `/`, NUL and control
//!   characters are percent-escaped, `.`, `..` and the empty string get a spelling of their
//!   own. The mapping is one-to-one, so two hosts never share a folder.
//! - [`check_label`]: what `backup --host` / `--tag` accept in the first place.

use std::borrow::Cow;

/// The longest host name or tag a backup accepts (a DNS name is at most 253 bytes).
pub const MAX_LABEL: usize = 255;

fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` with every control character escaped; borrowed when there is none.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if (c as u32) < 0x100 && is_control(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_control(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as one path component for the mount (see the module documentation).
pub fn mount_name(s: &str) -> Vec<u8> {
    match s {
        "" => return b"%".to_vec(),
        "." => return b"%2E".to_vec(),
        ".." => return b"%2E%2E".to_vec(),
        _ => {}
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == '/' || is_control(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// Why `value` is refused as a host name or tag (`what` names which), or `None` when it is
/// fine: not empty, at most [`MAX_LABEL`] bytes, no `/` (the mount's folders), no `,` in a
/// tag (lists of tags are comma-separated), no control characters or surrounding spaces.
pub fn check_label(what: &str, value: &str) -> Option<String> {
    let shown = terminal(value);
    if value.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if value.len() > MAX_LABEL {
        return Some(format!("{what} is {} bytes long, more than {MAX_LABEL}", value.len()));
    }
    if value.chars().any(is_control) {
        return Some(format!("{what} \"{shown}\" contains a control character"));
    }
    if value.contains('/') {
        return Some(format!("{what} \"{shown}\" contains '/'"));
    }
    if what == "tag" && value.contains(',') {
        return Some(format!("tag \"{shown}\" contains ',', which separates tags"));
    }
    if value.trim() != value {
        return Some(format!("{what} \"{shown}\" starts or ends with a space"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_control_characters() {
        assert_eq!(terminal("plain host"), "plain host");
        assert!(matches!(terminal("plain"), Cow::Borrowed(_)));
        assert_eq!(terminal("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(terminal("bell\x07\nnl\x7f"), "bell\\x07\\x0anl\\x7f");
        assert_eq!(terminal("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(terminal("ünïcode"), "ünïcode");
    }

    #[test]
    fn mount_names_are_single_safe_components() {
        assert_eq!(mount_name("laptop"), b"laptop");
        assert_eq!(mount_name("a/b"), b"a%2Fb");
        assert_eq!(mount_name("50%"), b"50%25");
        assert_eq!(mount_name("x\0y\x1b"), b"x%00y%1B");
        assert_eq!(mount_name(""), b"%");
        assert_eq!(mount_name("."), b"%2E");
        assert_eq!(mount_name(".."), b"%2E%2E");
    }

    #[test]
    fn labels() {
        assert_eq!(check_label("host", "office-laptop"), None);
        assert_eq!(check_label("tag", "weekly run"), None);
        for bad in ["", "a/b", "a\x1b[31m", "a\0b", " padded", "nl\n"] {
            assert!(check_label("host", bad).is_some(), "{bad:?}");
        }
        assert!(check_label("tag", "a,b").is_some());
        assert!(check_label("host", &"h".repeat(256)).is_some());
        let message = check_label("host", "evil\x1b]0;title\x07").unwrap();
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    proptest! {
        #[test]
        fn mount_names_are_valid_and_one_to_one(a in any::<String>(), b in any::<String>()) {
            let (x, y) = (mount_name(&a), mount_name(&b));
            prop_assert!(crate::format::tree::is_valid_name(&x));
            prop_assert!(!x.iter().any(|&c| c < 0x20 || c == 0x7f));
            prop_assert_eq!(x == y, a == b);
        }

        #[test]
        fn terminal_output_has_no_control_characters(s in any::<String>()) {
            prop_assert!(!terminal(&s).chars().any(char::is_control));
        }
    }
}
