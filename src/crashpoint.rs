//! Named crash points for the crash-matrix tests: `crashpoint::hit("backup-after-pack-upload")`
//! kills the process with SIGKILL when the environment variable `COFFER_CRASH_AT` names that
//! point (`NAME`, or `NAME:N` for its Nth hit, counting from 1). Only debug builds look at the
//! variable; in release builds `hit` is empty and compiles away.
//!
//! SIGKILL rather than a panic or `exit`: no destructor, flush or signal handler runs, exactly
//! as when the machine loses power after the kernel took the writes (kill -9 or the OOM killer).

/// Dies here if `COFFER_CRASH_AT` asks for it (debug builds only).
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    armed::hit(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The point to die at and on which hit, parsed once.
    fn target() -> Option<&'static (String, u64)> {
        static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let spec = std::env::var("COFFER_CRASH_AT").ok()?;
                Some(match spec.rsplit_once(':') {
                    Some((name, n)) if n.parse::<u64>().is_ok_and(|n| n > 0) => {
                        (name.to_string(), n.parse().unwrap_or(1))
                    }
                    _ => (spec, 1),
                })
            })
            .as_ref()
    }

    pub fn hit(name: &str) {
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some((wanted, nth)) = target() else { return };
        if wanted != name {
            return;
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; should raise fail, leave no chance of running on.
            std::process::abort();
        }
    }
}
