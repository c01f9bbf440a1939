//! Request counts, for benchmarks: with `COFFER_STORE_STATS=1` in the environment, every store
//! request is counted below the retry layer (so a retried request counts each time it is
//! sent) and one line per store goes to stderr when the store is closed:
//!
//! `coffer: store requests: reads=… read_bytes=… writes=… write_bytes=… stats=… lists=… deletes=… other=…`
//!
//! A `read` is one ranged or whole read (one GET on S3), a `write` one object (one PUT for
//! objects under 5 MiB·parts; packs are single PUTs), `lists` counts listing calls, not pages.
//!
//! `COFFER_STORE_STATS=trace` also prints each request as it leaves, with the milliseconds since
//! the store opened (to see which requests wait for one another across a round trip). Paths
//! are object names (content hashes), never secrets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opendal::Operator;

use super::intercept::{Hooks, InterceptLayer, Request, Verdict};

pub const ENV: &str = "COFFER_STORE_STATS";

#[derive(Debug, Default)]
pub struct Counts {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub stats: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub other: AtomicU64,
}

impl Counts {
    pub fn line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "reads={} read_bytes={} writes={} write_bytes={} stats={} lists={} deletes={} other={}",
            get(&self.reads),
            get(&self.read_bytes),
            get(&self.writes),
            get(&self.write_bytes),
            get(&self.stats),
            get(&self.lists),
            get(&self.deletes),
            get(&self.other)
        )
    }
}

impl Hooks for Counts {
    fn on(&self, request: &Request<'_>) -> Verdict {
        let counter = match request {
            Request::Read { .. } => &self.reads,
            Request::Write { bytes, .. } => {
                self.write_bytes.fetch_add(*bytes, Ordering::Relaxed);
                &self.writes
            }
            Request::Stat { .. } => &self.stats,
            Request::List { .. } => &self.lists,
            Request::Delete { .. } => &self.deletes,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Verdict::Pass
    }

    fn read_bytes(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Prints the counts when the last handle to the store goes away.
#[derive(Debug)]
struct PrintOnDrop(Arc<Counts>);

impl Drop for PrintOnDrop {
    fn drop(&mut self) {
        eprintln!("coffer: store requests: {}", self.0.line());
    }
}

#[derive(Debug)]
struct Counting {
    counts: Arc<Counts>,
    /// Set in trace mode: when the store opened.
    trace: Option<std::time::Instant>,
    _print: PrintOnDrop,
}

impl Hooks for Counting {
    fn on(&self, request: &Request<'_>) -> Verdict {
        if let Some(start) = self.trace {
            eprintln!("coffer: store trace: {:>8.1} ms {request:?}", start.elapsed().as_secs_f64() * 1e3);
        }
        self.counts.on(request)
    }

    fn read_bytes(&self, bytes: u64) {
        self.counts.read_bytes(bytes)
    }
}

/// Adds the counting layer when `COFFER_STORE_STATS` is set to something other than `0`.
pub fn maybe_count(op: Operator) -> Operator {
    match std::env::var(ENV) {
        Ok(value) if !value.is_empty() && value != "0" => {
            let counts = Arc::new(Counts::default());
            let trace = (value == "trace").then(std::time::Instant::now);
            let hooks = Counting { counts: Arc::clone(&counts), trace, _print: PrintOnDrop(counts) };
            op.layer(InterceptLayer::new(Arc::new(hooks)))
        }
        _ => op,
    }
}
