//! Passphrases given in the environment (`COFFER_PASSWORD`, `COFFER_FROM_PASSWORD`) are taken
//! out of it as the process starts, while it has one thread: every child (`command:` secret
//! helpers, `--password-command`, the `ssh` of an SFTP store) inherits the environment, and
//! none of them needs the repository's passphrase.

use std::sync::OnceLock;

use zeroize::Zeroizing;

const NAMES: [&str; 2] = ["COFFER_PASSWORD", "COFFER_FROM_PASSWORD"];

static TAKEN: OnceLock<[Option<Zeroizing<String>>; 2]> = OnceLock::new();

/// Moves the passphrase variables out of the environment. Call first thing in `main`, before
/// any thread exists (changing the environment races with threads reading it).
pub fn take() {
    let values = NAMES.map(|name| {
        let value = std::env::var_os(name)?;
        std::env::remove_var(name);
        // A value that is not UTF-8 is not a usable passphrase; keep it absent, as before.
        value.into_string().ok().map(Zeroizing::new)
    });
    let _ = TAKEN.set(values);
}

fn get(index: usize) -> Option<Zeroizing<String>> {
    TAKEN.get().and_then(|values| values[index].clone())
}

/// `COFFER_PASSWORD` as the process started with it.
pub fn password() -> Option<Zeroizing<String>> {
    get(0)
}

/// `COFFER_FROM_PASSWORD` (the source repository of `copy`) as the process started with it.
pub fn from_password() -> Option<Zeroizing<String>> {
    get(1)
}
