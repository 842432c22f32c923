//! One key's record: the per-key state machine.
//!
//! # States
//!
//! A node is born `InFlight` (by a claim) and may become `Completed` once, in
//! place, by its owner's `complete`. It never goes back: every other change
//! (abandon, takeover, expiry, removal) unlinks the node and, for a new claim,
//! links a fresh one with a fresh token. So `key`, `token` and `fingerprint`
//! never change, and a completed value is written exactly once. The value
//! takes the token's place: the token matters only while in flight, and
//! only to writers, who hold the shard lock.
//!
//! "Expired" is not stored: it is `now >= deadline`, where `deadline` is the
//! lease deadline while in flight and the retention deadline once completed.
//!
//! # Publication
//!
//! A node's mutable state is one atomic word: two flag bits and a 62-bit
//! deadline (nanoseconds on the store clock, saturating at about 146 years).
//! Readers load it once with `Acquire` and get the state and the deadline
//! that belong together. All writes happen under the owning shard's lock.
//! `complete` writes the value first, then stores the word with `COMPLETED`
//! and the retention deadline with `Release`, so a reader that sees
//! `COMPLETED` sees the value whole. Once completed, the word is never
//! written again. Readers reach nodes through the epoch, so a node is never
//! freed under one.

use std::mem::ManuallyDrop;

use crate::fingerprint::Fingerprint;
use crate::sync::{Atomic, AtomicU64, Ordering, UnsafeCell};

/// The owner completed: `value` is initialised and immutable.
const COMPLETED: u64 = 1 << 63;
/// A `Flight` for this node's token sits in the shard's flight map. Read and
/// written only under the shard lock.
const HAS_FLIGHT: u64 = 1 << 62;
/// The deadline bits.
const DEADLINE: u64 = HAS_FLIGHT - 1;

/// What a reader sees of a node at a given time.
pub(crate) enum View<'a, V> {
    /// In flight, lease live.
    InFlight,
    /// Completed, retention live.
    Completed(&'a V),
    /// Completed past retention, or in flight past the lease: claimable, and
    /// invisible to reads.
    Expired,
}

/// Every field earns its place: a `u64 -> u64` node is 40 bytes. The hash
/// is not stored (chains compare keys, and a resize rehashes), the
/// fingerprint, which plain claims do not have, lives in its own small
/// allocation, and the value shares its bytes with the token.
pub(crate) struct Node<K, V> {
    pub(crate) key: K,
    /// The claim's fingerprint, if it had one. Fixed at construction.
    fingerprint: Option<Box<Fingerprint>>,
    /// Flags and deadline: the lease deadline while in flight, the retention
    /// deadline once completed.
    word: AtomicU64,
    /// The token while in flight, the value once `COMPLETED`.
    payload: UnsafeCell<Payload<V>>,
    pub(crate) next: Atomic<Node<K, V>>,
}

/// A node's token and value never coexist: the fencing token of the claim
/// that made the node is read only by writers of an in-flight node, under
/// the shard lock, and the value only once the node is completed, which is
/// when the value overwrites the token.
union Payload<V> {
    token: u64,
    value: ManuallyDrop<V>,
}

// SAFETY: nodes are shared between threads: readers get `&K` and `&V`
// (hence `Sync`), and whichever thread frees a node drops its key and value
// (hence `Send`). The only interior mutation of `payload` is the single
// write of the value under the shard lock, published by `Release`.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Node<K, V> {}
// SAFETY: as above; a node owns its key and value.
unsafe impl<K: Send, V: Send> Send for Node<K, V> {}

impl<K, V> Node<K, V> {
    pub(crate) fn in_flight(
        key: K,
        token: u64,
        fingerprint: Option<Fingerprint>,
        lease_deadline: u64,
    ) -> Self {
        Node {
            key,
            fingerprint: fingerprint.map(Box::new),
            word: AtomicU64::new(lease_deadline.min(DEADLINE)),
            payload: UnsafeCell::new(Payload { token }),
            next: Atomic::null(),
        }
    }

    /// The fencing token of the claim that made this node, while it is in
    /// flight; `None` once completed. Shard lock only.
    pub(crate) fn token(&self) -> Option<u64> {
        // Relaxed: only lock holders write the word, and the caller is one.
        if self.word.load(Ordering::Relaxed) & COMPLETED != 0 {
            return None;
        }
        // SAFETY: in flight, so the payload is the token (written at
        // construction), and only a lock holder may overwrite it, in
        // `complete`, which the caller's lock excludes.
        Some(unsafe { self.payload.with(|p| (*p).token) })
    }

    /// The claim's fingerprint, if it had one.
    pub(crate) fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint.as_deref().copied()
    }

    pub(crate) fn view(&self, now: u64) -> View<'_, V> {
        // Acquire pairs with the Release in `complete`: seeing COMPLETED
        // makes the value visible, with its retention deadline in the word.
        let word = self.word.load(Ordering::Acquire);
        if now >= word & DEADLINE {
            return View::Expired;
        }
        if word & COMPLETED == 0 {
            return View::InFlight;
        }
        // SAFETY: COMPLETED is set only after the value was written (see
        // `complete`), the Acquire above makes that write visible, and the
        // payload is never written again while the node lives.
        View::Completed(unsafe { self.payload.with(|p| &*(*p).value) })
    }

    /// The value, once completed, whatever the deadline: for weighing a
    /// node its change unlinked (still valid: see `shard::GiveBack`).
    pub(crate) fn value(&self) -> Option<&V> {
        // Acquire pairs with the Release in `complete`, as in `view`.
        if self.word.load(Ordering::Acquire) & COMPLETED == 0 {
            return None;
        }
        // SAFETY: as in `view`: the value was written before COMPLETED,
        // and is never written again while the node lives.
        Some(unsafe { self.payload.with(|p| &*(*p).value) })
    }

    /// The current deadline. Shard lock only.
    pub(crate) fn deadline(&self) -> u64 {
        // Relaxed: only lock holders write the word.
        self.word.load(Ordering::Relaxed) & DEADLINE
    }

    pub(crate) fn is_completed(&self) -> bool {
        self.word.load(Ordering::Acquire) & COMPLETED != 0
    }

    /// Rewrites the word's deadline and sets `flags`. Shard lock only, and
    /// only while in flight (a completed word is never written again).
    fn update(&self, flags: u64, deadline: Option<u64>, order: Ordering) {
        // Relaxed load: only lock holders write the word.
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(word & COMPLETED == 0);
        let deadline = deadline.map_or(word & DEADLINE, |d| d.min(DEADLINE));
        self.word
            .store((word & !DEADLINE) | flags | deadline, order);
    }

    /// Stores the owner's value. Call only under the shard lock, once, while
    /// the node is in flight.
    pub(crate) fn complete(&self, value: V, expires_at: u64) {
        // SAFETY: the shard lock excludes other writers, and with them every
        // reader of the token; lock-free readers do not touch the payload
        // until they see COMPLETED, which is stored below, after this write.
        // The node is in flight, so the payload holds a token, nothing to
        // drop.
        unsafe {
            self.payload.with_mut(|p| {
                (*p).value = ManuallyDrop::new(value);
            })
        };
        // Release pairs with the Acquire in `view`.
        self.update(COMPLETED, Some(expires_at), Ordering::Release);
    }

    /// Moves the lease deadline (renewal). Shard lock only, while in flight.
    pub(crate) fn set_deadline(&self, deadline: u64) {
        // Relaxed: a reader seeing the old or the new lease is fine; both
        // were current during its read.
        self.update(0, Some(deadline), Ordering::Relaxed);
    }

    /// Whether a flight is registered for this node. Shard lock only.
    pub(crate) fn has_flight(&self) -> bool {
        // Relaxed: HAS_FLIGHT is written and read only under the shard lock.
        self.word.load(Ordering::Relaxed) & HAS_FLIGHT != 0
    }

    /// Marks that a flight is registered. Shard lock only, while in flight.
    pub(crate) fn set_has_flight(&self) {
        // Relaxed: HAS_FLIGHT is written and read only under the shard lock.
        self.update(HAS_FLIGHT, None, Ordering::Relaxed);
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        if self.is_completed() {
            // SAFETY: COMPLETED means the payload is the value, and `&mut
            // self` means nobody else can read it any more.
            unsafe {
                self.payload
                    .with_mut(|p| ManuallyDrop::drop(&mut (*p).value))
            };
        }
    }
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;

    /// Memory budget: a `u64 -> u64` entry's node is 40 bytes.
    #[test]
    fn node_of_u64_pair_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Node<u64, u64>>(), 40);
    }

    /// The token is readable until the value takes its place.
    #[test]
    fn the_value_takes_the_tokens_place() {
        let node: Node<u8, String> = Node::in_flight(1, 42, None, u64::MAX);
        assert_eq!(node.token(), Some(42));
        node.complete("done".to_string(), u64::MAX);
        assert_eq!(node.token(), None, "a completed node has no token");
        assert!(matches!(node.view(0), View::Completed(v) if v == "done"));
    }

    #[test]
    fn deadlines_saturate_instead_of_clobbering_flags() {
        let node: Node<u8, u8> = Node::in_flight(1, 1, Some(Fingerprint::of_bytes(b"x")), u64::MAX);
        node.set_has_flight();
        assert!(node.has_flight(), "HAS_FLIGHT survives a saturated lease");
        assert!(matches!(node.view(DEADLINE - 1), View::InFlight));
        node.complete(5, u64::MAX);
        assert!(matches!(node.view(DEADLINE - 1), View::Completed(5)));
        assert!(matches!(node.view(u64::MAX), View::Expired));
        assert!(node.fingerprint().is_some());
    }
}
