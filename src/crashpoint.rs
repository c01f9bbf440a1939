//! Named crash points for the kill tests: `hit("prune-after-index")` SIGKILLs this process
//! when `COFFER_CRASHPOINT` names that point. Only in debug builds; a release build ignores it.

/// Kills the process with SIGKILL when the test environment asks for a crash here.
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("COFFER_CRASHPOINT").is_ok_and(|wanted| wanted.split(',').any(|w| w == name)) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
