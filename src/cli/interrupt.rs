//! SIGINT and SIGTERM. The first asks long operations to stop cleanly (they check a flag, so
//! nothing half-written is left); a second exits at once, for an operation stuck in a read
//! that never returns (a FIFO, a hung network filesystem). Before exiting that way, the lock
//! markers of backups still running are marked ended, so a prune need not wait for them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The signal that stopped this run (0: none), set in the handler itself so that the exit
/// code is right however soon the work stops.
static SIGNAL: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// Starts watching SIGINT/SIGTERM; the flag goes up on the first.
pub fn flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Raised in the handler itself, so work checking it stops as soon as possible (the
        // thread below may run a little later).
        signal_hook::flag::register(signal, Arc::clone(&flag)).context("installing signal handlers")?;
        let which = Arc::clone(SIGNAL.get_or_init(Arc::default));
        signal_hook::flag::register_usize(signal, which, signal as usize).context("installing signal handlers")?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("coffer-signals".into())
        .spawn(move || {
            // Signals arriving back to back may be seen as one: that only asks for another.
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    coffer::repo::locks::end_running_backups();
                    eprintln!("coffer: stopped at once by a second signal; what was being written is left incomplete");
                    std::process::exit(128 + signal);
                }
                eprintln!("coffer: stopping (signal again to quit at once)…");
            }
        })
        .context("starting the signal thread")?;
    Ok(flag)
}

/// The exit code for a run a signal stopped: 128 + its number (130 for Ctrl-C, 143 for TERM).
pub fn exit_code() -> u8 {
    match SIGNAL.get().map_or(0, |s| s.load(Ordering::SeqCst)) {
        0 => super::exit::INTERRUPTED,
        signal => (128 + signal.min(127)) as u8,
    }
}
