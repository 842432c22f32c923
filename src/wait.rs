//! One rendezvous for the duplicates of an in-flight claim, threads and tasks
//! alike.
//!
//! # Protocol
//!
//! A [`Flight`] is created, under the shard lock, by the first duplicate that
//! finds a key in flight; later duplicates of the same claim share it. Its
//! state is `Waiting { waiters }` until the claim ends, then `Done(result)`
//! for good; exactly one `resolve` moves it (later ones are no-ops).
//!
//! * The owner's `complete`, `abandon`, a takeover, a removal or a sweep
//!   detaches the flight from the shard **under the shard lock**, and resolves
//!   it after dropping that lock. Since a duplicate finds and joins the flight
//!   under the same shard lock, a flight is either detached (and will be
//!   resolved) or still findable: no duplicate can join a flight nobody will
//!   resolve.
//! * A waiter checks the state and, if still `Waiting`, registers itself,
//!   both under the flight's own mutex. `resolve` swaps in `Done` and takes the
//!   waiter list under that mutex, then wakes each waiter after releasing it.
//!   So a waiter either sees `Done` or is in the list `resolve` takes: no lost
//!   wakeup (loom model `complete_racing_waiter_registration`).
//! * A waiter that gives up (timeout, dropped future) removes its own entry
//!   under the mutex; it never touches the owner or other waiters.
//!
//! Futures hold no intrusive links (waiters live in a `Vec` keyed by id), so
//! [`WaitFuture`] is `Unpin` and needs no pinning argument.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::WaitError;
use crate::sync::{self, Arc, Mutex, MutexGuard, Thread};

/// Something blocked on a flight: a parked thread or a task's waker.
enum Waiter {
    Thread(Thread),
    Task(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

enum State<V> {
    Waiting {
        waiters: Vec<(u64, Waiter)>,
        next_id: u64,
    },
    Done(Result<V, WaitError>),
}

/// The meeting point between one in-flight owner and its duplicates.
pub(crate) struct Flight<V> {
    state: Mutex<State<V>>,
}

impl<V> Flight<V> {
    /// Ends the flight with `result` and wakes every waiter. Only the first
    /// call has an effect.
    pub(crate) fn resolve(&self, result: Result<V, WaitError>) {
        let waiters = {
            let mut state = self.state.lock();
            match &mut *state {
                State::Done(_) => return,
                State::Waiting { waiters, .. } => {
                    let waiters = std::mem::take(waiters);
                    *state = State::Done(result);
                    waiters
                }
            }
        };
        for (_, waiter) in waiters {
            waiter.wake();
        }
    }

    /// Ends the flight without a value: the owner is gone.
    pub(crate) fn abandon(&self) {
        self.resolve(Err(WaitError::Abandoned));
    }

    /// Removes the waiter under `slot`, if any, and returns the locked state.
    fn withdraw(&self, slot: &mut Option<u64>) -> MutexGuard<'_, State<V>> {
        let mut state = self.state.lock();
        if let (Some(id), State::Waiting { waiters, .. }) = (slot.take(), &mut *state) {
            waiters.retain(|(i, _)| *i != id);
        }
        state
    }
}

impl<V: Clone> Flight<V> {
    pub(crate) fn new() -> Self {
        Flight {
            state: Mutex::new(State::Waiting {
                waiters: Vec::new(),
                next_id: 0,
            }),
        }
    }

    /// The result if the flight is done; otherwise registers (or refreshes)
    /// the waiter under `slot` and returns `None`.
    fn poll(
        &self,
        slot: &mut Option<u64>,
        waiter: impl FnOnce() -> Waiter,
    ) -> Option<Result<V, WaitError>> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Done(result) => Some(result.clone()),
            State::Waiting { waiters, next_id } => {
                match *slot {
                    Some(id) => {
                        if let Some(entry) = waiters.iter_mut().find(|(i, _)| *i == id) {
                            let fresh = waiter();
                            let stale = match (&entry.1, &fresh) {
                                (Waiter::Task(old), Waiter::Task(new)) => !old.will_wake(new),
                                _ => true,
                            };
                            if stale {
                                entry.1 = fresh;
                            }
                        }
                    }
                    None => {
                        let id = *next_id;
                        *next_id += 1;
                        waiters.push((id, waiter()));
                        *slot = Some(id);
                    }
                }
                None
            }
        }
    }

    /// Withdraws the waiter under `slot`; returns the result if the flight
    /// finished meanwhile.
    fn cancel(&self, slot: &mut Option<u64>) -> Option<Result<V, WaitError>> {
        match &*self.withdraw(slot) {
            State::Done(result) => Some(result.clone()),
            State::Waiting { .. } => None,
        }
    }

    /// Blocks the current thread until the flight ends or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<V, WaitError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut slot = None;
        loop {
            if let Some(result) = self.poll(&mut slot, || Waiter::Thread(sync::current_thread())) {
                return result;
            }
            match deadline {
                None | Some(None) => sync::park(),
                Some(Some(deadline)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return self.cancel(&mut slot).unwrap_or(Err(WaitError::Timeout));
                    }
                    sync::park_timeout(deadline - now);
                }
            }
        }
    }

    /// The number of registered waiters (for tests and models).
    #[cfg(idemstore_loom)]
    pub(crate) fn waiters(&self) -> usize {
        match &*self.state.lock() {
            State::Waiting { waiters, .. } => waiters.len(),
            State::Done(_) => 0,
        }
    }
}

/// The future of a duplicate waiting for its owner's result: what
/// `.await` on a [`Pending`](crate::Pending) runs.
///
/// It needs no particular runtime (it only uses the task's waker) and is
/// cancel-safe: dropping it withdraws this waiter and affects neither the
/// owner nor other waiters. It is `Unpin`.
#[must_use = "futures do nothing unless polled"]
pub struct WaitFuture<V> {
    flight: Arc<Flight<V>>,
    slot: Option<u64>,
}

impl<V> WaitFuture<V> {
    pub(crate) fn new(flight: Arc<Flight<V>>) -> Self {
        WaitFuture { flight, slot: None }
    }
}

impl<V: Clone> Future for WaitFuture<V> {
    type Output = Result<V, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this
            .flight
            .poll(&mut this.slot, || Waiter::Task(cx.waker().clone()))
        {
            Some(result) => {
                this.slot = None;
                Poll::Ready(result)
            }
            None => Poll::Pending,
        }
    }
}

impl<V> Drop for WaitFuture<V> {
    fn drop(&mut self) {
        if self.slot.is_some() {
            // Withdraw only: whatever the owner does next is not our business.
            drop(self.flight.withdraw(&mut self.slot));
        }
    }
}

impl<V> std::fmt::Debug for WaitFuture<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture")
            .field("registered", &self.slot.is_some())
            .finish()
    }
}
