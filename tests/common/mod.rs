//! Helpers shared by the behaviour tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use idemstore::{Builder, ManualClock, Store};

pub const TTL: Duration = Duration::from_secs(100);
pub const LEASE: Duration = Duration::from_secs(10);

/// A store on a manual clock with no background sweeper: time moves only
/// when the test says so, and memory is reclaimed only by `sweep`.
pub fn manual_store<K, V>() -> (Store<K, V>, ManualClock)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let clock = ManualClock::new();
    let store = manual_builder(&clock).build().expect("valid config");
    (store, clock)
}

/// The settings of [`manual_store`], on `clock`, for a test to add to.
pub fn manual_builder<K, V>(clock: &ManualClock) -> Builder<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Store::builder()
        .ttl(TTL)
        .lease(LEASE)
        .clock(clock.clone())
        .background_sweeper(false)
}

/// Waits until `condition` holds, yielding the CPU between checks, and fails
/// the test if it does not within ten seconds. This waits for a state,
/// it does not paper over a race with a fixed delay.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Polls a future once with a waker that counts its wake-ups.
pub fn poll_once<F: Future + Unpin>(future: &mut F, wakes: &Arc<WakeCounter>) -> Poll<F::Output> {
    let waker = Waker::from(wakes.clone());
    std::pin::Pin::new(future).poll(&mut Context::from_waker(&waker))
}

#[derive(Default)]
pub struct WakeCounter(pub AtomicUsize);

impl Wake for WakeCounter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
