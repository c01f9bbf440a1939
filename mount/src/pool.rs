//! A fixed pool of named worker threads running boxed jobs.
//!
//! FUSE callbacks hand every [`Source`](crate::Source) call to a pool and return at once; the
//! job replies when done (fuser replies are `Send`). A panicking job fails only its own
//! request: the unanswered reply is dropped, which fuser turns into EIO. Workers exit when the
//! pool is dropped and the queue drains; they are not joined, so a source call that never
//! returns cannot hang an unmount.

use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crossbeam_channel::{Receiver, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// See the module documentation.
pub(crate) struct Pool {
    name: &'static str,
    jobs: Sender<Job>,
}

impl Pool {
    /// Starts `threads` workers named `<name>-<n>`.
    pub(crate) fn new(name: &'static str, threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue: Receiver<Job> = queue.clone();
            thread::Builder::new().name(format!("{name}-{n}")).spawn(move || {
                for job in queue {
                    if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                        log::error!("a {name} job panicked; its request fails with EIO");
                    }
                }
            })?;
        }
        Ok(Pool { name, jobs })
    }

    /// Queues `job`.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if self.jobs.send(Box::new(job)).is_err() {
            // Only if every worker died, which catch_unwind prevents.
            log::error!("{} pool has no workers", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn runs_jobs_in_parallel_and_survives_a_panic() {
        let pool = Pool::new("test", 4).expect("threads");
        pool.spawn(|| panic!("this job fails alone"));
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        for _ in 0..4 {
            let tx = tx.clone();
            pool.spawn(move || {
                thread::sleep(Duration::from_millis(300));
                tx.send(()).expect("send");
            });
        }
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).expect("job ran");
        }
        assert!(started.elapsed() < Duration::from_millis(1100), "jobs overlapped");
    }
}
