//! The block cache: plaintext blocks by content key, bounded in bytes, one fetch per block.
//!
//! - An LRU (`lru` counts entries, so the byte total is tracked here) of `Arc<[u8]>`; a block
//!   larger than the whole budget is handed out but not kept.
//! - Concurrent misses on one key share one fetch: the first caller gets a [`FetchTicket`] and
//!   starts the fetch however it likes (the mount runs it on its fetch pool); everyone, first
//!   caller included, waits on the same [`Pending`] with a timeout.
//! - The cache lock is never held while fetching or waiting; a failed fetch is not cached, so
//!   the next read retries.
//!
//! Memory: `capacity` bytes plus the blocks in flight (at most one per fetch worker).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;

use crate::errors::SourceError;
use crate::source::{BlockData, BlockKey};

type FetchResult = Result<BlockData, SourceError>;

/// See the module documentation. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub(crate) struct BlockCache {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: u64,
    state: Mutex<State>,
}

struct State {
    lru: LruCache<BlockKey, BlockData>,
    bytes: u64,
    in_flight: HashMap<BlockKey, Arc<Slot>>,
}

#[derive(Default)]
struct Slot {
    result: Mutex<Option<FetchResult>>,
    ready: Condvar,
}

/// The outcome of [`BlockCache::lookup`].
pub(crate) enum Lookup {
    /// The block was cached.
    Ready(BlockData),
    /// A fetch is under way (perhaps just started by this lookup).
    Pending(Pending),
}

/// A block being fetched; wait for it with [`Pending::wait`].
pub(crate) struct Pending {
    key: BlockKey,
    slot: Arc<Slot>,
}

/// The duty to fetch one block and hand the result to [`FetchTicket::complete`]. Dropping it
/// unfulfilled (e.g. a panicking fetch) fails the waiters instead of leaving them hanging.
pub(crate) struct FetchTicket {
    shared: Arc<Shared>,
    key: BlockKey,
    slot: Arc<Slot>,
    done: bool,
}

impl BlockCache {
    /// An empty cache that keeps at most `capacity` bytes of blocks.
    pub(crate) fn new(capacity: u64) -> Self {
        BlockCache {
            shared: Arc::new(Shared {
                capacity,
                state: Mutex::new(State { lru: LruCache::unbounded(), bytes: 0, in_flight: HashMap::new() }),
            }),
        }
    }

    /// The cached block, or the pending fetch of it. On a miss with no fetch in flight, `start`
    /// is called (without the cache lock) with the ticket to fulfil.
    pub(crate) fn lookup(&self, key: &BlockKey, start: impl FnOnce(FetchTicket)) -> Lookup {
        let mut state = self.shared.lock();
        if let Some(data) = state.lru.get(key) {
            return Lookup::Ready(Arc::clone(data));
        }
        if let Some(slot) = state.in_flight.get(key) {
            return Lookup::Pending(Pending { key: *key, slot: Arc::clone(slot) });
        }
        let slot = Arc::new(Slot::default());
        state.in_flight.insert(*key, Arc::clone(&slot));
        drop(state);
        start(FetchTicket { shared: Arc::clone(&self.shared), key: *key, slot: Arc::clone(&slot), done: false });
        Lookup::Pending(Pending { key: *key, slot })
    }

    /// The block, fetched with `fetch` on this thread if no one else is fetching it.
    #[cfg(test)]
    pub(crate) fn get_or_fetch(
        &self,
        key: &BlockKey,
        timeout: Duration,
        fetch: impl FnOnce(&BlockKey) -> FetchResult,
    ) -> FetchResult {
        match self.lookup(key, |ticket| {
            let result = fetch(&ticket.key);
            ticket.complete(result);
        }) {
            Lookup::Ready(data) => Ok(data),
            Lookup::Pending(pending) => pending.wait(timeout),
        }
    }

    /// Whether `key` is cached or being fetched (does not touch the LRU order).
    pub(crate) fn knows(&self, key: &BlockKey) -> bool {
        let state = self.shared.lock();
        state.lru.contains(key) || state.in_flight.contains_key(key)
    }

    /// Caches a block that came along with another one's fetch (see
    /// `Source::read_block_with_companions`), within the same byte budget as every block.
    pub(crate) fn insert_companion(&self, key: &BlockKey, data: BlockData) {
        let mut state = self.shared.lock();
        if !state.lru.contains(key) {
            state.insert(*key, data, self.shared.capacity);
        }
    }

    /// Bytes currently held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.shared.lock().bytes
    }

    /// The byte budget.
    pub(crate) fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Whether `key` is cached (does not touch the LRU order).
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        self.shared.lock().lru.contains(key)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, key: &BlockKey, slot: &Arc<Slot>, result: FetchResult) {
        {
            let mut state = self.lock();
            if state.in_flight.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                state.in_flight.remove(key);
            }
            if let Ok(data) = &result {
                state.insert(*key, Arc::clone(data), self.capacity);
            }
        }
        let mut guard = slot.result.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(result);
        slot.ready.notify_all();
    }
}

impl State {
    fn insert(&mut self, key: BlockKey, data: BlockData, capacity: u64) {
        let len = data.len() as u64;
        if len > capacity {
            return;
        }
        if let Some(old) = self.lru.put(key, data) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += len;
        while self.bytes > capacity {
            match self.lru.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }
}

impl Pending {
    /// Waits up to `timeout` for the fetch; a timeout is an [`ErrorKind::TimedOut`] error
    /// (the fetch itself goes on and fills the cache when it ends).
    ///
    /// [`ErrorKind::TimedOut`]: crate::ErrorKind::TimedOut
    pub(crate) fn wait(&self, timeout: Duration) -> FetchResult {
        let guard = self.slot.result.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .slot
            .ready
            .wait_timeout_while(guard, timeout, |result| result.is_none())
            .unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(result) => result.clone(),
            None => {
                Err(SourceError::timed_out(format!("block {} not delivered within {timeout:?}", key_hex(&self.key))))
            }
        }
    }
}

impl FetchTicket {
    /// The key to fetch.
    pub(crate) fn key(&self) -> &BlockKey {
        &self.key
    }

    /// Hands the fetch result to the cache and to every waiter.
    pub(crate) fn complete(mut self, result: FetchResult) {
        self.done = true;
        self.shared.finish(&self.key, &self.slot, result);
    }
}

impl Drop for FetchTicket {
    fn drop(&mut self) {
        if !self.done {
            let error = SourceError::io(format!("fetch of block {} abandoned", key_hex(&self.key)));
            self.shared.finish(&self.key, &self.slot, Err(error));
        }
    }
}

/// The first bytes of a key in hex, enough to find it in logs.
pub(crate) fn key_hex(key: &BlockKey) -> String {
    key[..8].iter().fold(String::with_capacity(16), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::thread;

    const WAIT: Duration = Duration::from_secs(10);

    fn key(n: u8) -> BlockKey {
        [n; 32]
    }

    fn block(len: usize, fill: u8) -> FetchResult {
        Ok(Arc::new(vec![fill; len]))
    }

    #[test]
    fn stays_within_its_byte_budget_evicting_least_recently_used() {
        let cache = BlockCache::new(100);
        for n in 0..3 {
            cache.get_or_fetch(&key(n), WAIT, |_| block(40, n)).expect("fetch");
        }
        // 120 bytes asked for, 100 allowed: the oldest (0) went.
        assert_eq!(cache.bytes(), 80);
        assert!(!cache.contains(&key(0)));
        // Touch 1 so that 2 is now the least recently used.
        cache.get_or_fetch(&key(1), WAIT, |_| panic!("1 is cached")).expect("hit");
        cache.get_or_fetch(&key(3), WAIT, |_| block(40, 3)).expect("fetch");
        assert!(cache.contains(&key(1)) && cache.contains(&key(3)));
        assert!(!cache.contains(&key(2)));
        assert!(cache.bytes() <= cache.capacity());
    }

    #[test]
    fn companions_stay_within_the_byte_budget() {
        let cache = BlockCache::new(1000);
        cache.get_or_fetch(&key(0), WAIT, |_| block(300, 0)).expect("fetch");
        for n in 1..50 {
            cache.insert_companion(&key(n), Arc::new(vec![n; 70 + n as usize]));
            assert!(cache.bytes() <= cache.capacity(), "{} bytes after companion {n}", cache.bytes());
        }
        assert!(cache.knows(&key(49)) && !cache.knows(&key(0)));
        // A companion already cached is not counted twice.
        let before = cache.bytes();
        cache.insert_companion(&key(49), Arc::new(vec![49; 119]));
        assert_eq!(cache.bytes(), before);
    }

    #[test]
    fn hands_out_but_does_not_keep_a_block_larger_than_the_budget() {
        let cache = BlockCache::new(10);
        let data = cache.get_or_fetch(&key(1), WAIT, |_| block(11, 1)).expect("fetch");
        assert_eq!(data.len(), 11);
        assert_eq!(cache.bytes(), 0);
        assert!(!cache.contains(&key(1)));
    }

    #[test]
    fn concurrent_misses_fetch_once() {
        let cache = BlockCache::new(1 << 20);
        let fetches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches, barrier) = (cache.clone(), fetches.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    cache.get_or_fetch(&key(9), WAIT, |_| {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        // Long enough that every other thread arrives while in flight.
                        thread::sleep(Duration::from_millis(200));
                        block(1000, 9)
                    })
                })
            })
            .collect();
        for t in threads {
            let data = t.join().expect("thread").expect("block");
            assert_eq!(&data[..], &[9u8; 1000][..]);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failures_reach_every_waiter_and_are_not_cached() {
        let cache = BlockCache::new(1 << 20);
        let err = cache.get_or_fetch(&key(1), WAIT, |_| Err(SourceError::corrupt("bad"))).expect_err("fails");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        // The next read tries again.
        cache.get_or_fetch(&key(1), WAIT, |_| block(5, 1)).expect("retry works");
    }

    #[test]
    fn a_slow_fetch_times_out_for_the_waiter_then_still_fills_the_cache() {
        let cache = BlockCache::new(1 << 20);
        let (tx, rx) = std::sync::mpsc::channel();
        let Lookup::Pending(pending) = cache.lookup(&key(4), |ticket| {
            tx.send(ticket).expect("send");
        }) else {
            panic!("miss expected");
        };
        let err = pending.wait(Duration::from_millis(50)).expect_err("times out");
        assert_eq!(err.kind(), crate::ErrorKind::TimedOut);
        let ticket = rx.recv().expect("ticket");
        ticket.complete(block(3, 4));
        assert!(pending.wait(WAIT).is_ok());
        assert!(cache.contains(&key(4)));
    }

    #[test]
    fn an_abandoned_ticket_fails_its_waiters() {
        let cache = BlockCache::new(1 << 20);
        let Lookup::Pending(pending) = cache.lookup(&key(5), drop) else {
            panic!("miss expected");
        };
        assert_eq!(pending.wait(WAIT).expect_err("abandoned").kind(), crate::ErrorKind::Io);
    }
}
