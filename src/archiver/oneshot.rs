//! Hands one file's outcome from its reader to the builder. The builder holds one of these
//! for every file of the folders it has not finished, thousands in a large folder; a channel
//! each cost a few KiB, this a few dozen bytes.

use std::sync::{Arc, Condvar, Mutex};

enum State<T> {
    Waiting,
    Sent(T),
    /// The sender went away without sending, or the value was received.
    Closed,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

pub struct Sender<T>(Arc<Slot<T>>);
pub struct Receiver<T>(Arc<Slot<T>>);

/// The sender was dropped without sending.
#[derive(Debug)]
pub struct Closed;

pub fn pair<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Waiting), changed: Condvar::new() });
    (Sender(Arc::clone(&slot)), Receiver(slot))
}

impl<T> Slot<T> {
    fn set(&self, to: State<T>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Waiting) {
            *state = to;
            self.changed.notify_one();
        }
    }
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        self.0.set(State::Sent(value));
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.set(State::Closed);
    }
}

impl<T> Receiver<T> {
    /// Waits for the value.
    pub fn recv(self) -> Result<T, Closed> {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match std::mem::replace(&mut *state, State::Closed) {
                State::Sent(value) => return Ok(value),
                State::Closed => return Err(Closed),
                State::Waiting => {
                    *state = State::Waiting;
                    state = self.0.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_across_threads_and_reports_a_dropped_sender() {
        let (tx, rx) = pair();
        let sender = std::thread::spawn(move || tx.send(7));
        assert_eq!(rx.recv().unwrap(), 7);
        sender.join().unwrap();
        let (tx, rx) = pair::<u8>();
        std::thread::spawn(move || drop(tx)).join().unwrap();
        assert!(rx.recv().is_err());
    }
}
