//! The one place concurrency primitives come from.
//!
//! Normal builds use `parking_lot` locks, `std` atomics and `Arc`, and
//! crossbeam-epoch with a per-store [`Collector`]. Under `--cfg idemstore_loom`
//! (together with `--cfg crossbeam_loom`, which switches crossbeam-epoch to
//! loom internally) every lock, atomic, `Arc`, `UnsafeCell` and park/unpark
//! below is loom's, so the models in `tests/loom.rs` check the real code.
//! Under miri, `parking_lot` is replaced by `std::sync::Mutex`.
//!
//! Two things stay outside the model on purpose, because they synchronise
//! nothing: statistics counters ([`Counter`]) and the test clock's time
//! ([`ClockCell`]). Keeping them out keeps the loom state space small.

#![allow(dead_code)] // Each cfg uses a different subset of the facade.

pub(crate) use crossbeam_epoch::{Atomic, Collector, Guard, Owned, Shared};

/// A statistics counter: a plain `std` atomic in every build.
pub(crate) type Counter = std::sync::atomic::AtomicU64;
/// The manual clock's current time: a plain `std` atomic in every build.
pub(crate) type ClockCell = std::sync::atomic::AtomicU64;

#[cfg(not(idemstore_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
    pub(crate) use std::sync::{Arc, OnceLock};
    pub(crate) use std::thread::{current as current_thread, park, park_timeout, Thread};

    /// A mutex without poisoning: `parking_lot`'s, or `std`'s under miri.
    #[derive(Default)]
    pub(crate) struct Mutex<T>(
        #[cfg(not(miri))] parking_lot::Mutex<T>,
        #[cfg(miri)] std::sync::Mutex<T>,
    );

    #[cfg(not(miri))]
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
    #[cfg(miri)]
    pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            #[cfg(not(miri))]
            return Mutex(parking_lot::Mutex::new(value));
            #[cfg(miri)]
            return Mutex(std::sync::Mutex::new(value));
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            #[cfg(not(miri))]
            return self.0.lock();
            // A panic while holding a store lock cannot leave a torn state
            // (no user code runs under it), so poisoning carries no meaning.
            #[cfg(miri)]
            return self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// `std::cell::UnsafeCell` with loom's closure-based API.
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Per-thread epoch handles for one store's own collector.
    pub(crate) struct Epoch {
        // Declared first so the handles drop before the collector: once the
        // last handle and the collector are gone, crossbeam runs every
        // deferred destructor, so a dropped store leaves no value behind.
        handles: thread_local::ThreadLocal<Handle>,
        collector: super::Collector,
    }

    struct Handle(crossbeam_epoch::LocalHandle);

    // SAFETY: a `LocalHandle` is `!Send` because its `Local` uses `Cell`s
    // that must not be touched by two threads at once. `ThreadLocal` hands
    // each handle only to the thread that created it, or, after that thread
    // has exited, to one new thread reusing its slot: never concurrently.
    // The handles are dropped together with the `ThreadLocal`, which happens
    // in the store's `Drop`, when no operation (hence no `Guard`) is live.
    unsafe impl Send for Handle {}

    impl Epoch {
        pub(crate) fn new() -> Self {
            Epoch {
                handles: thread_local::ThreadLocal::new(),
                collector: super::Collector::new(),
            }
        }

        pub(crate) fn pin(&self) -> super::Guard {
            self.handles
                .get_or(|| Handle(self.collector.register()))
                .0
                .pin()
        }
    }
}

#[cfg(idemstore_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread::{current as current_thread, park, Thread};

    /// loom never fires timeouts: a timed park is a plain park in a model.
    pub(crate) fn park_timeout(_: std::time::Duration) {
        park();
    }

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// Under loom every modelled thread runs on one OS thread, so handles
    /// cannot be cached per OS thread: each pin registers afresh. A `Guard`
    /// keeps its `Local` alive after the handle drops.
    pub(crate) struct Epoch {
        collector: super::Collector,
    }

    impl Epoch {
        pub(crate) fn new() -> Self {
            Epoch {
                collector: super::Collector::new(),
            }
        }
        pub(crate) fn pin(&self) -> super::Guard {
            self.collector.register().pin()
        }
    }
}

pub(crate) use imp::*;
