//! One key's record: the per-key state machine.
//!
//! # States
//!
//! A node is born `InFlight` (by a claim) and may become `Completed` once, in
//! place, by its owner's `complete`. It never goes back: every other change
//! (abandon, takeover, expiry, removal) unlinks the node and, for a new claim,
//! links a fresh one with a fresh token. So `key`, `token` and `fingerprint`
//! never change, and a completed value is written exactly once.
//!
//! "Expired" is not stored: it is `now >= deadline`, where `deadline` is the
//! lease deadline while in flight and the retention deadline once completed.
//!
//! # Publication
//!
//! All writes happen under the owning shard's lock. `complete` writes the
//! value and the retention deadline, then sets `COMPLETED` with `Release`;
//! readers load the state with `Acquire` before touching either, so a reader
//! that sees `COMPLETED` sees the value whole. Readers reach nodes through the
//! epoch, so a node is never freed under one.

use std::mem::MaybeUninit;

use crate::fingerprint::Fingerprint;
use crate::sync::{Atomic, AtomicU64, AtomicU8, Ordering, UnsafeCell};

/// The owner completed: `value` is initialised and immutable.
const COMPLETED: u8 = 0b01;
/// A `Flight` for this node's token sits in the shard's flight map. Read and
/// written only under the shard lock.
const HAS_FLIGHT: u8 = 0b10;

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

pub(crate) struct Node<K, V> {
    pub(crate) hash: u64,
    pub(crate) key: K,
    /// The fencing token of the claim that created this node.
    pub(crate) token: u64,
    /// `None` when claimed without a fingerprint: then no check applies.
    pub(crate) fingerprint: Option<Fingerprint>,
    state: AtomicU8,
    deadline: AtomicU64,
    value: UnsafeCell<MaybeUninit<V>>,
    pub(crate) next: Atomic<Node<K, V>>,
}

// SAFETY: nodes are shared between threads: readers get `&K` and `&V`
// (hence `Sync`), and whichever thread frees a node drops its key and value
// (hence `Send`). The only interior mutation of `value` is the single
// initialising write under the shard lock, published by `Release`.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Node<K, V> {}
// SAFETY: as above; a node owns its key and value.
unsafe impl<K: Send, V: Send> Send for Node<K, V> {}

impl<K, V> Node<K, V> {
    pub(crate) fn in_flight(
        hash: u64,
        key: K,
        token: u64,
        fingerprint: Option<Fingerprint>,
        lease_deadline: u64,
    ) -> Self {
        Node {
            hash,
            key,
            token,
            fingerprint,
            state: AtomicU8::new(0),
            deadline: AtomicU64::new(lease_deadline),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            next: Atomic::null(),
        }
    }

    pub(crate) fn view(&self, now: u64) -> View<'_, V> {
        // Acquire pairs with the Release in `complete`: seeing COMPLETED
        // makes the value and the retention deadline visible.
        let state = self.state.load(Ordering::Acquire);
        if now >= self.deadline.load(Ordering::Relaxed) {
            return View::Expired;
        }
        if state & COMPLETED == 0 {
            return View::InFlight;
        }
        // SAFETY: COMPLETED is set only after `value` was initialised (see
        // `complete`), the Acquire above makes that write visible, and the
        // value is never written again while the node lives.
        View::Completed(unsafe { self.value.with(|v| (*v).assume_init_ref()) })
    }

    pub(crate) fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) & COMPLETED != 0
    }

    /// Stores the owner's value. Call only under the shard lock, once, while
    /// the node is in flight.
    pub(crate) fn complete(&self, value: V, expires_at: u64) {
        debug_assert!(!self.is_completed());
        // SAFETY: the shard lock excludes other writers; readers do not touch
        // `value` until they see COMPLETED, which is set below, after this
        // write. The node is in flight, so `value` holds nothing to leak.
        unsafe { self.value.with_mut(|v| (*v).write(value)) };
        // Relaxed: published by the Release below.
        self.deadline.store(expires_at, Ordering::Relaxed);
        // Release pairs with the Acquire in `view`.
        self.state.fetch_or(COMPLETED, Ordering::Release);
    }

    /// Moves the lease deadline (renewal). Call only under the shard lock.
    pub(crate) fn set_deadline(&self, deadline: u64) {
        // Relaxed: a reader seeing the old or the new lease is fine; both
        // were current during its read.
        self.deadline.store(deadline, Ordering::Relaxed);
    }

    /// Whether a flight is registered for this node. Shard lock only.
    pub(crate) fn has_flight(&self) -> bool {
        // Relaxed: written and read only under the shard lock.
        self.state.load(Ordering::Relaxed) & HAS_FLIGHT != 0
    }

    /// Marks that a flight is registered for this node. Shard lock only.
    pub(crate) fn set_has_flight(&self) {
        // Relaxed: written and read only under the shard lock.
        self.state.fetch_or(HAS_FLIGHT, Ordering::Relaxed);
    }
}

impl<K: Clone, V: Clone> Node<K, V> {
    /// A copy for a resized table. Call only under the shard lock.
    pub(crate) fn duplicate(&self) -> Self {
        let copy = Node::in_flight(
            self.hash,
            self.key.clone(),
            self.token,
            self.fingerprint,
            self.deadline.load(Ordering::Relaxed),
        );
        let state = self.state.load(Ordering::Relaxed);
        if state & COMPLETED != 0 {
            // SAFETY: COMPLETED means initialised; under the shard lock
            // nobody writes it.
            let value = unsafe { self.value.with(|v| (*v).assume_init_ref().clone()) };
            copy.complete(value, self.deadline.load(Ordering::Relaxed));
        }
        if state & HAS_FLIGHT != 0 {
            copy.set_has_flight();
        }
        copy
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        if self.is_completed() {
            // SAFETY: COMPLETED means `value` was initialised, and `&mut self`
            // means nobody else can read it any more.
            unsafe { self.value.with_mut(|v| (*v).assume_init_drop()) };
        }
    }
}
