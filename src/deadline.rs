//! A runtime-agnostic deadline for a wait on an in-flight owner: the
//! in-process store's [`Backend::wait`](crate::backend::Backend::wait), and
//! so the HTTP layer's waiting duplicates.
//!
//! The wait must be bounded, yet the in-process store depends on no async
//! runtime: its futures use only the task's waker, and so does this. One
//! lazily started thread keeps the registered deadlines in order and wakes
//! each task when its deadline passes.
//!
//! Protocol: the timer's state is one mutex over a map from
//! `(deadline, id)` to the waker to call. A [`Deadline`] inserts (or
//! refreshes) its entry when polled before its time and removes it when
//! dropped, so the map holds only live waits. The thread removes due
//! entries under the lock and wakes them after releasing it; it sleeps on
//! a condvar until the earliest deadline, and an insert that becomes the
//! earliest notifies it. The map and the condvar are `std`'s on purpose:
//! this timer guards no store state and sits outside the loom models.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A future that is ready once `Instant::now()` reaches its deadline.
pub(crate) struct Deadline {
    at: Instant,
    /// Set while an entry is registered with the timer.
    id: Option<u64>,
}

impl Deadline {
    pub(crate) fn at(at: Instant) -> Self {
        Deadline { at, id: None }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let Some(timer) = Timer::get() else {
            // No timer thread could start: the wait has no deadline and ends
            // when the owner finishes or its lease passes.
            return Poll::Pending;
        };
        let at = self.at;
        self.id = Some(timer.register(at, self.id, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            TIMER.lock().entries.remove(&(self.at, id));
        }
    }
}

struct Timer {
    state: Mutex<State>,
    earliest_changed: Condvar,
}

struct State {
    entries: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

static TIMER: Timer = Timer {
    state: Mutex::new(State {
        entries: BTreeMap::new(),
        next_id: 0,
    }),
    earliest_changed: Condvar::new(),
};

/// Whether the timer thread is running.
static STARTED: OnceLock<bool> = OnceLock::new();

impl Timer {
    /// The process's timer, starting its thread on first use; `None` if the
    /// thread could not be spawned.
    fn get() -> Option<&'static Timer> {
        let started = STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("idemstore-deadline".into())
                .spawn(|| TIMER.run())
                .is_ok()
        });
        started.then_some(&TIMER)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock; a poisoned map is
        // still a valid map.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers (or refreshes) the wake-up for `at`; returns the entry's id.
    fn register(&self, at: Instant, id: Option<u64>, waker: &Waker) -> u64 {
        let mut state = self.lock();
        let id = id.unwrap_or_else(|| {
            state.next_id += 1;
            state.next_id
        });
        let earliest = state
            .entries
            .keys()
            .next()
            .is_none_or(|&(first, _)| at < first);
        match state.entries.get_mut(&(at, id)) {
            Some(registered) if registered.will_wake(waker) => {}
            Some(registered) => registered.clone_from(waker),
            None => {
                state.entries.insert((at, id), waker.clone());
            }
        }
        drop(state);
        if earliest {
            self.earliest_changed.notify_one();
        }
        id
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = state.entries.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                // Wake outside the lock: a waker may poll, and so register.
                drop(state);
                due.into_iter().for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            state = match state.entries.keys().next() {
                Some(&(first, _)) => {
                    self.earliest_changed
                        .wait_timeout(state, first.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .earliest_changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// Awaits `future`, or gives up with `None` once `deadline` passes.
pub(crate) async fn until<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timeout = Deadline::at(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        Pin::new(&mut timeout).poll(cx).map(|()| None)
    })
    .await
}

// Not under miri: the timer thread lives as long as the process, by
// design, and miri fails a run whose threads outlive its main thread.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::test_util::{block_on, noop_waker};

    #[test]
    fn a_deadline_wakes_its_task_once_it_passes() {
        let start = Instant::now();
        let at = start + Duration::from_millis(20);
        assert_eq!(block_on(until(at, std::future::pending::<()>())), None);
        assert!(Instant::now() >= at);
    }

    #[test]
    fn a_ready_future_wins_and_unregisters() {
        let at = Instant::now() + Duration::from_secs(3600);
        assert_eq!(block_on(until(at, async { 7 })), Some(7));
        let pending = Instant::now() + Duration::from_secs(3600);
        {
            let mut deadline = Deadline::at(pending);
            let waker = noop_waker();
            let polled = Pin::new(&mut deadline).poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            let timer = Timer::get().expect("timer thread");
            assert!(timer
                .lock()
                .entries
                .contains_key(&(pending, deadline.id.unwrap())));
        }
        let timer = Timer::get().expect("timer thread");
        assert!(!timer.lock().entries.keys().any(|&(at, _)| at == pending));
    }
}
