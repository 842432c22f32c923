//! Counters behind [`Stats`].

use crate::sync::{Counter, Ordering};

/// A snapshot of a store's counters, from [`Store::stats`](crate::Store::stats).
///
/// Counters only grow; `entries` and `in_flight` are gauges. The snapshot is
/// not atomic across fields: under load, fields may be read microseconds apart.
///
/// ```
/// use idemstore::{Claim, Store};
/// let store: Store<u32, u32> = Store::new();
/// if let Ok(Claim::Owner(t)) = store.claim(1) {
///     t.complete(10).unwrap();
/// }
/// assert!(matches!(store.claim(1), Ok(Claim::Completed(10))));
/// let stats = store.stats();
/// assert_eq!((stats.entries, stats.claims, stats.replays), (1, 1, 1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Entries held, in flight or completed (expired ones not yet swept too).
    pub entries: usize,
    /// Entries in flight.
    pub in_flight: usize,
    /// Claims that made the caller the owner.
    pub claims: u64,
    /// Claims answered with a stored, completed value.
    pub replays: u64,
    /// Claims and lookups that found the key in flight and got a handle to
    /// wait on.
    pub waits: u64,
    /// Claims released without a result (error, panic, drop, cancellation).
    pub abandons: u64,
    /// Claims that took a key over from an owner whose lease had passed.
    pub takeovers: u64,
    /// Entries removed or replaced because their retention or lease passed.
    pub expirations: u64,
    /// Claims refused because the fingerprint differed.
    pub mismatches: u64,
    /// Claims refused because the store was full (after trying to make room
    /// from expired entries).
    pub refusals: u64,
}

/// Which counter an event bumps.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    Claim,
    Replay,
    Wait,
    Abandon,
    Takeover,
    Expiration,
    Mismatch,
    Refusal,
}

impl Event {
    /// The event's name in metrics and traces.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Event::Claim => "claim",
            Event::Replay => "replay",
            Event::Wait => "wait",
            Event::Abandon => "abandon",
            Event::Takeover => "takeover",
            Event::Expiration => "expiration",
            Event::Mismatch => "mismatch",
            Event::Refusal => "refusal",
        }
    }
}

const EVENTS: usize = 8;

/// The store's counters, striped per thread: each thread bumps its own
/// slots, so replays on many threads never contend on a shared cache line.
/// [`sum_into`](Self::sum_into) adds every thread's slots up.
#[derive(Default)]
pub(crate) struct Counters {
    #[cfg(not(idemstore_loom))]
    per_thread: thread_local::ThreadLocal<Slots>,
    // Under loom all modelled threads share one OS thread, hence one slot.
    #[cfg(idemstore_loom)]
    shared: Slots,
}

/// One thread's counters. `ThreadLocal` keeps the threads' values side by
/// side in one array, so without the alignment two threads' slots would share
/// a cache line and every bump would take it from the other core (at 16
/// threads, a replay took 1.5 to 1.7 times as long; BENCHMARKS.md). 128
/// bytes: a line and the neighbour the prefetcher pairs with it, as in
/// `table::Padded`; wrapping `Slots` in that instead changed what the
/// compiler inlined into the epoch pin, 6 more instructions on every `get`.
#[derive(Default)]
#[repr(align(128))]
struct Slots([Counter; EVENTS]);

impl Counters {
    pub(crate) fn bump(&self, event: Event) {
        self.add(event, 1);
    }

    /// Counts `n` occurrences of `event`, and traces them with the
    /// `tracing` feature (target `idemstore::store`, level TRACE).
    pub(crate) fn add(&self, event: Event, n: u64) {
        self.count(event, n);
        #[cfg(feature = "tracing")]
        tracing::trace!(target: "idemstore::store", event = event.name(), count = n);
    }

    #[cfg(not(idemstore_loom))]
    fn count(&self, event: Event, n: u64) {
        let slot = &self.per_thread.get_or_default().0[event as usize];
        // A load and a store, not a read-modify-write: `ThreadLocal` gives
        // this slot to one thread at a time, so no increment is lost.
        // Relaxed: counters order no other memory.
        slot.store(slot.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[cfg(idemstore_loom)]
    fn count(&self, event: Event, n: u64) {
        self.shared.0[event as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds every thread's counts into `stats`.
    pub(crate) fn sum_into(&self, stats: &mut Stats) {
        #[cfg(not(idemstore_loom))]
        let slots = self.per_thread.iter();
        #[cfg(idemstore_loom)]
        let slots = std::iter::once(&self.shared);
        for slots in slots {
            let get = |e: Event| slots.0[e as usize].load(Ordering::Relaxed);
            stats.claims += get(Event::Claim);
            stats.replays += get(Event::Replay);
            stats.waits += get(Event::Wait);
            stats.abandons += get(Event::Abandon);
            stats.takeovers += get(Event::Takeover);
            stats.expirations += get(Event::Expiration);
            stats.mismatches += get(Event::Mismatch);
            stats.refusals += get(Event::Refusal);
        }
    }
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_threads_counters_have_their_own_lines() {
        // `ThreadLocal` lays its entries out as `(present flag, value)`
        // back to back, so only the value's alignment keeps one thread's
        // counters off the lines of its neighbours in the array.
        assert_eq!(std::mem::align_of::<Slots>(), 128);
        assert_eq!(std::mem::size_of::<Slots>(), 128);
    }
}
