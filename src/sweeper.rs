//! The background sweeper: a thread that holds only a `Weak` to the store,
//! so it never keeps a store alive, and exits once the last handle drops
//! (the store's `Drop` unparks it so that happens at once).

use std::hash::{BuildHasher, Hash};
use std::io;
use std::time::{Duration, Instant};

use crate::clock::CLOCK_TICK;

use crate::store::{Inner, Store};
use crate::sync::{self, Arc, Thread};

pub(crate) fn spawn<K, V, S>(inner: &Arc<Inner<K, V, S>>, interval: Duration) -> io::Result<Thread>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let weak = Arc::downgrade(inner);
    // Wake often enough to keep a cached clock fresh, sweep every `interval`.
    let wake = if inner.clock.is_cached() {
        interval.min(CLOCK_TICK)
    } else {
        interval
    };
    let handle = std::thread::Builder::new()
        .name("idemstore-sweeper".into())
        .spawn(move || {
            let mut last_sweep = Instant::now();
            loop {
                sync::park_timeout(wake);
                // Hold the store only while working, never while parked.
                let Some(inner) = weak.upgrade() else { return };
                inner.clock.tick();
                if last_sweep.elapsed() >= interval {
                    Store { inner }.sweep();
                    last_sweep = Instant::now();
                }
            }
        })?;
    Ok(handle.thread().clone())
}
