//! The store's optional bounds: entries (`max_entries`) and the weight of
//! completed entries (`max_bytes`).
//!
//! # Protocol
//!
//! * Only a bounded store keeps a store-wide entry count, and only a store
//!   with a byte bound or a weigher keeps a byte count: without them, a
//!   claim or a completion would pay a contended atomic for nothing (`len`
//!   sums the shards' own counts instead).
//! * Entries: a claim of a key that holds nothing takes a slot with one
//!   atomic check-and-increment, so concurrent claims on different shards
//!   never overshoot `max_entries`. An entry that replaces an expired one
//!   takes over its slot; every unlink gives its slot back.
//! * Bytes count completed entries only, each as the weigher weighs its key
//!   and value: an in-flight entry has no value yet (`max_entries` bounds
//!   those). A claim that would link a new entry is admitted only while the
//!   count is below `max_bytes`; a completion adds its weight whatever the
//!   count, before its value is linked, since its operation already ran and
//!   dropping its result would let a retry run it again. A completion that
//!   turns out superseded takes its weight back. So the count exceeds the
//!   bound by less than the weights of the completions of claims admitted
//!   before it reached the bound: at most the values of the claims in flight
//!   when it crossed the bound.
//! * An entry's weight is given back after it is unlinked and before it is
//!   freed, outside the shard lock (an unlinked node stays valid while its
//!   unlinker is pinned; a swept batch is weighed before it goes to the
//!   epoch). So the weigher must be a pure function of the key and value: it
//!   must weigh an entry the same at completion and at its end. It runs
//!   outside every lock.
//! * Every count is `Relaxed`: it orders no memory, only its value matters.
//!   A completed entry's weight is added before the shard lock that links
//!   its value and taken away after the shard lock that unlinks it, so the
//!   count never goes below the true sum (a weigher that is not pure could
//!   make it, so a release saturates at zero rather than wrap).
//! * With feature `tracing`, a warning fires when a count reaches 90% of its
//!   bound, once per crossing: it re-arms when the count drops below 80%.

use crate::sync::{AtomicUsize, Ordering};
use crate::table::Padded;

/// The weigher: what a completed entry costs against `max_bytes`.
pub(crate) type Weigher<K, V> = Box<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// The bounds on entries and bytes, where set.
pub(crate) struct Capacity {
    /// On its own lines: every claim of a new key writes it.
    entries: Option<Padded<Bound>>,
    /// On its own lines: every completion and every unlink of a completed
    /// entry writes it.
    bytes: Option<Padded<Bound>>,
}

/// One count and its bound.
struct Bound {
    held: AtomicUsize,
    /// `usize::MAX` for bytes counted without a bound.
    max: usize,
    #[cfg(feature = "tracing")]
    warning: Warning,
}

/// The "nearly full" warning of one bound.
#[cfg(feature = "tracing")]
struct Warning {
    /// What the bound is called in the warning.
    name: &'static str,
    /// 90% of the bound: the count at which the warning fires.
    high: usize,
    /// 80% of the bound: below it, the warning fires again at 90%.
    low: usize,
    given: crate::sync::Flag,
}

impl Bound {
    fn new(max: usize, _name: &'static str) -> Self {
        Bound {
            held: AtomicUsize::new(0),
            max,
            #[cfg(feature = "tracing")]
            warning: Warning {
                name: _name,
                high: max - max / 10,
                low: max - max / 5,
                given: crate::sync::Flag::new(false),
            },
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The count went up to `held`.
    #[inline]
    fn rose(&self, _held: usize) {
        #[cfg(feature = "tracing")]
        if _held >= self.warning.high {
            self.warn(_held);
        }
    }

    /// The count went down to `held`.
    #[inline]
    fn fell(&self, _held: usize) {
        #[cfg(feature = "tracing")]
        if _held < self.warning.low && self.warning.given.load(Ordering::Relaxed) {
            self.warning.given.store(false, Ordering::Relaxed);
        }
    }

    #[cfg(feature = "tracing")]
    #[cold]
    fn warn(&self, held: usize) {
        let warning = &self.warning;
        // Relaxed: the flag only keeps the warning to once per crossing.
        if !warning.given.load(Ordering::Relaxed) && !warning.given.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "idemstore::store",
                bound = warning.name,
                held,
                max = self.max,
                "the store is at 90% of its {}: at the bound, new claims are refused",
                warning.name,
            );
        }
    }

    /// Takes `n` off the count, saturating at zero.
    fn release(&self, n: usize) {
        let before = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(n))
            })
            .unwrap_or_else(|held| held);
        self.fell(before.saturating_sub(n));
    }
}

impl Capacity {
    /// Bytes are counted where `count_bytes` (the store has a weigher); a
    /// byte bound always comes with one.
    pub(crate) fn new(
        max_entries: Option<usize>,
        max_bytes: Option<usize>,
        count_bytes: bool,
    ) -> Self {
        let bytes = match (max_bytes, count_bytes) {
            (Some(max), _) => Some(max),
            (None, true) => Some(usize::MAX),
            (None, false) => None,
        };
        Capacity {
            entries: max_entries.map(|max| Padded(Bound::new(max, "max_entries"))),
            bytes: bytes.map(|max| Padded(Bound::new(max, "max_bytes"))),
        }
    }

    /// Takes a slot for a new entry, or fails if the store is full. The
    /// check and the increment are one atomic step, so concurrent claims on
    /// different shards can never overshoot the bound. Inline across
    /// crates, for the generic claim.
    #[inline]
    pub(crate) fn reserve(&self) -> bool {
        let Some(Padded(bound)) = &self.entries else {
            return true;
        };
        let max = bound.max;
        match bound
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(before) => {
                bound.rose(before + 1);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back the slots of `n` unlinked entries.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if let Some(Padded(bound)) = &self.entries {
            bound.release(n);
        }
    }

    /// Whether a claim that links a new entry is admitted by the byte
    /// bound: the completed entries weigh less than it.
    #[inline]
    pub(crate) fn admits_bytes(&self) -> bool {
        match &self.bytes {
            None => true,
            Some(Padded(bound)) => bound.held() < bound.max,
        }
    }

    /// Counts a completion's weight, whatever the bound (see the protocol).
    pub(crate) fn add_bytes(&self, n: usize) {
        if let Some(Padded(bound)) = &self.bytes {
            let before = bound.held.fetch_add(n, Ordering::Relaxed);
            bound.rose(before.saturating_add(n));
        }
    }

    /// Gives back the weight of unlinked (or superseded) completions.
    pub(crate) fn release_bytes(&self, n: usize) {
        if let Some(Padded(bound)) = &self.bytes {
            if n > 0 {
                bound.release(n);
            }
        }
    }

    /// The weight of the completed entries; 0 when bytes are not counted.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.as_ref().map_or(0, |bound| bound.held())
    }

    /// The byte bound, if one was set.
    pub(crate) fn max_bytes(&self) -> Option<usize> {
        self.bytes
            .as_ref()
            .map(|bound| bound.max)
            .filter(|&max| max != usize::MAX)
    }

    /// The entry bound, if one was set.
    pub(crate) fn max_entries(&self) -> Option<usize> {
        self.entries.as_ref().map(|bound| bound.max)
    }
}
