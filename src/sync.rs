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

pub(crate) use crossbeam_epoch::{unprotected, Atomic, Collector, Guard, Owned, Shared};

/// A statistics counter: a plain `std` atomic in every build.
pub(crate) type Counter = std::sync::atomic::AtomicU64;
/// The manual clock's current time: a plain `std` atomic in every build.
pub(crate) type ClockCell = std::sync::atomic::AtomicU64;

/// Asks the CPU to start loading `ptr`'s cache line, for a walk that will
/// get there shortly. Only a hint: it never faults, whatever `ptr` is, and
/// it is a no-op off x86-64 and under loom and miri.
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(all(target_arch = "x86_64", not(idemstore_loom), not(miri)))]
    // SAFETY: `prefetcht0` is in the x86-64 baseline (SSE) and does not
    // access memory architecturally: any address, even an invalid one, is
    // allowed.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(ptr.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(idemstore_loom), not(miri))))]
    let _ = ptr;
}

#[cfg(not(idemstore_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread::{current as current_thread, park, Thread};

    use crossbeam_epoch::LocalHandle;
    use loom::thread::ThreadId;

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
    /// cannot be cached per OS thread; they are cached per modelled thread
    /// instead. Registering afresh on every pin would also be correct, but
    /// each registration and its first pin's collection add dozens of
    /// atomic operations, which multiplies loom's state space beyond what
    /// the models can explore. As in the normal build, garbage then reaches
    /// the global queue when a handle's bag fills, on `Guard::flush` (each
    /// sweep step) and when the store drops.
    pub(crate) struct Epoch {
        // Declared first so the handles drop before the collector (see the
        // normal build's `Epoch`). Boxed so a handle stays put when the
        // `Vec` grows. A `std` mutex, not a modelled one: it guards only
        // this cache, is never held across a modelled operation (so no
        // modelled thread can block on it), and orders nothing the models
        // check.
        handles: std::sync::Mutex<Vec<(ThreadId, Box<LocalHandle>)>>,
        collector: super::Collector,
    }

    // SAFETY: a `LocalHandle` is `!Send + !Sync` because its `Local` must
    // not be used by two threads at once. `pin` hands each handle only to
    // the modelled thread that registered it; the handles are dropped with
    // the `Epoch`, in the store's `Drop`, when no operation (hence no
    // `Guard`) is live.
    unsafe impl Send for Epoch {}
    // SAFETY: as above.
    unsafe impl Sync for Epoch {}

    impl Epoch {
        pub(crate) fn new() -> Self {
            Epoch {
                handles: std::sync::Mutex::new(Vec::new()),
                collector: super::Collector::new(),
            }
        }

        pub(crate) fn pin(&self) -> super::Guard {
            let me = current_thread().id();
            let cached = self.cached(me);
            let handle = cached.unwrap_or_else(|| {
                // Registering is a modelled operation: do it unlocked.
                let handle = Box::new(self.collector.register());
                let ptr: *const LocalHandle = &*handle;
                self.lock().push((me, handle));
                ptr
            });
            // SAFETY: the handle is boxed, so its address is stable, and it
            // lives until the `Epoch` drops, which outlasts every operation;
            // only this modelled thread uses it (see the `Send` impl).
            unsafe { (*handle).pin() }
        }

        fn cached(&self, me: ThreadId) -> Option<*const LocalHandle> {
            let handles = self.lock();
            let found = handles.iter().find(|(id, _)| *id == me);
            found.map(|(_, handle)| &**handle as *const _)
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ThreadId, Box<LocalHandle>)>> {
            self.handles
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

pub(crate) use imp::*;
