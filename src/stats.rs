//! Counters behind [`Stats`].

use crate::sync::{Counter, Epoch, Ordering};

/// A snapshot of a store's counters, from [`Store::stats`](crate::Store::stats).
///
/// Counters only grow; `entries`, `in_flight` and `bytes` are gauges, and
/// `max_entries` and `max_bytes` the bounds they are held to. The snapshot
/// is not atomic across fields: under load, fields may be read
/// microseconds apart.
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
    /// What the completed entries weigh, as the store's weigher counts them
    /// (expired ones not yet swept too); 0 unless
    /// [`max_bytes`](crate::Builder::max_bytes) or a
    /// [`weigher`](crate::Builder::weigher) was set. It exceeds `max_bytes`
    /// only by completions of claims admitted below it.
    pub bytes: usize,
    /// The bound on `bytes`, if set.
    pub max_bytes: Option<usize>,
    /// The bound on `entries`, if set.
    pub max_entries: Option<usize>,
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
    /// Claims refused because the store was full, at `max_entries` or
    /// `max_bytes` (after trying to make room from expired entries).
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

/// One thread's counts of the store's events. Each thread bumps its own
/// (they live beside its epoch handle, in `sync::Epoch`), so replays on many
/// threads never contend on a shared cache line; [`sum_into`] adds every
/// thread's up.
#[derive(Default)]
pub(crate) struct Counts([Counter; EVENTS]);

impl Counts {
    /// Inline, as [`add`](Self::add).
    #[inline]
    pub(crate) fn bump(&self, event: Event) {
        self.add(event, 1);
    }

    /// Counts `n` occurrences of `event`, and traces them with the
    /// `tracing` feature (target `idemstore::store`, level TRACE). Inline
    /// across crates, for the generic operations that count.
    #[inline]
    pub(crate) fn add(&self, event: Event, n: u64) {
        let slot = &self.0[event as usize];
        // A load and a store, not a read-modify-write: `Epoch` gives these
        // counts to one thread at a time, so no increment is lost.
        // Relaxed: counters order no other memory.
        slot.store(slot.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        tracing::trace!(target: "idemstore::store", event = event.name(), count = n);
    }
}

/// Adds every thread's counts into `stats`.
pub(crate) fn sum_into(threads: &Epoch, stats: &mut Stats) {
    threads.for_each(|counts| {
        let get = |e: Event| counts.0[e as usize].load(Ordering::Relaxed);
        stats.claims += get(Event::Claim);
        stats.replays += get(Event::Replay);
        stats.waits += get(Event::Wait);
        stats.abandons += get(Event::Abandon);
        stats.takeovers += get(Event::Takeover);
        stats.expirations += get(Event::Expiration);
        stats.mismatches += get(Event::Mismatch);
        stats.refusals += get(Event::Refusal);
    });
}
