//! The one place concurrency primitives come from.
//!
//! Normal builds use `parking_lot` locks, `std` atomics and `Arc`, and
//! crossbeam-epoch with a per-store `Collector`. Under `--cfg idemstore_loom`
//! (together with `--cfg crossbeam_loom`, which switches crossbeam-epoch to
//! loom internally) every lock, atomic, `Arc`, `UnsafeCell` and park/unpark
//! below is loom's, so the models in `tests/loom.rs` check the real code.
//! Under miri, `parking_lot` is replaced by `std::sync::Mutex`.
//!
//! Three things stay outside the model on purpose, because they synchronise
//! nothing: statistics counters ([`Counter`]), the test clock's time
//! ([`ClockCell`]) and the capacity warnings' flags ([`Flag`]). Keeping
//! them out keeps the loom state space small.

#![allow(dead_code)] // Each cfg uses a different subset of the facade.

pub(crate) use crossbeam_epoch::{unprotected, Collector, Guard};
pub(crate) use crossbeam_epoch::{Atomic, Owned, Shared};

/// A statistics counter: a plain `std` atomic in every build.
pub(crate) type Counter = std::sync::atomic::AtomicU64;
/// The manual clock's current time: a plain `std` atomic in every build.
pub(crate) type ClockCell = std::sync::atomic::AtomicU64;
/// Whether a bound's warning was given: a plain `std` atomic in every build
/// (it only thins out log lines).
pub(crate) type Flag = std::sync::atomic::AtomicBool;

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

    pub(crate) use collector::Epoch;

    /// crossbeam-epoch's collector, with each thread's handle and counts.
    mod collector {
        use crate::stats::Counts;

        /// One store's own collector, and each thread's handle on it together
        /// with that thread's statistics counts: an operation that pins and
        /// counts finds both with one lookup. Not generic over what it keeps
        /// beside the handle: a generic `pin` would be compiled in the user's
        /// crate, where the thread-id lookup is a call instead of a TLS load.
        pub(crate) struct Epoch {
            // Declared first so the handles drop before the collector: once the
            // last handle and the collector are gone, crossbeam runs every
            // deferred destructor, so a dropped store leaves no value behind.
            locals: thread_local::ThreadLocal<Local>,
            collector: crate::sync::Collector,
        }

        /// A thread's handle and its counts. `ThreadLocal` keeps its values side by
        /// side in one array, so without the alignment two threads' entries
        /// would share a cache line, and each pin and count would take the line
        /// from the other core (at 16 threads a replay took 1.5 to 1.7 times as
        /// long; BENCHMARKS.md). 128 bytes: a line and the neighbour the
        /// prefetcher pairs with it, as in `table::Padded`.
        #[repr(align(128))]
        pub(in crate::sync) struct Local {
            pub(in crate::sync) handle: crossbeam_epoch::LocalHandle,
            pub(in crate::sync) counts: Counts,
        }

        // SAFETY: a `LocalHandle` is `!Send` because its `Local` uses `Cell`s
        // that must not be touched by two threads at once. `ThreadLocal` hands
        // each entry only to the thread that created it, or, after that thread
        // has exited, to one new thread reusing its slot: never concurrently.
        // The entries are dropped together with the `ThreadLocal`, which happens
        // in the store's `Drop`, when no operation (hence no `Guard`) is live.
        unsafe impl Send for Local {}
        // SAFETY: other threads reach an entry only through `for_each`, which
        // lends them the counts alone (atomics); the handle is used only by the
        // thread the entry belongs to (see the `Send` impl).
        unsafe impl Sync for Local {}

        impl Epoch {
            pub(crate) fn new() -> Self {
                Epoch {
                    locals: thread_local::ThreadLocal::new(),
                    collector: crate::sync::Collector::new(),
                }
            }

            /// This thread's entry, registered on first use.
            #[inline]
            pub(in crate::sync) fn local(&self) -> &Local {
                match self.locals.get() {
                    Some(local) => local,
                    None => self.register(),
                }
            }

            /// A thread's first operation on the store. Out of line, so the
            /// aligned entry built here costs the hot path no stack
            /// realignment.
            #[cold]
            #[inline(never)]
            fn register(&self) -> &Local {
                self.locals.get_or(|| Local {
                    handle: self.collector.register(),
                    counts: Counts::default(),
                })
            }

            /// Lends every thread's counts, one after another.
            pub(crate) fn for_each(&self, mut f: impl FnMut(&Counts)) {
                self.locals.iter().for_each(|local| f(&local.counts));
            }
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn each_threads_entry_has_its_own_lines() {
                // `ThreadLocal` lays its entries out as `(present flag, value)`
                // back to back, so only the entry's alignment keeps one
                // thread's handle and counts off its neighbours' lines.
                assert_eq!(std::mem::align_of::<Local>(), 128);
                assert_eq!(std::mem::size_of::<Local>(), 128);
            }
        }
    }
}

#[cfg(idemstore_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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

    pub(crate) use collector::Epoch;

    /// crossbeam-epoch's collector, with each modelled thread's handle.
    mod collector {
        use super::*;
        use crate::stats::Counts;
        use crossbeam_epoch::LocalHandle;
        use loom::thread::ThreadId;

        /// Under loom every modelled thread runs on one OS thread, so handles
        /// cannot be cached per OS thread; they are cached per modelled thread
        /// instead. Registering afresh on every pin would also be correct, but
        /// each registration and its first pin's collection add dozens of
        /// atomic operations, which multiplies loom's state space beyond what
        /// the models can explore. As in the normal build, garbage then reaches
        /// the global queue when a handle's bag fills, on `Guard::flush` (every 16
        /// sweep steps) and when the store drops.
        pub(crate) struct Epoch {
            // Declared first so the handles drop before the collector (see the
            // normal build's `Epoch`). Boxed so an entry stays put when the
            // `Vec` grows. A `std` mutex, not a modelled one: it guards only
            // this cache, is never held across a modelled operation (so no
            // modelled thread can block on it), and orders nothing the models
            // check.
            locals: std::sync::Mutex<Entries>,
            collector: crate::sync::Collector,
        }

        /// A modelled thread's handle and its counts, as in the normal build
        /// (without its alignment, which loom has no use for).
        pub(in crate::sync) struct Local {
            pub(in crate::sync) handle: LocalHandle,
            pub(in crate::sync) counts: Counts,
        }

        /// Each modelled thread's entry, by thread.
        type Entries = Vec<(ThreadId, Box<Local>)>;

        // SAFETY: a `LocalHandle` is `!Send + !Sync` because its `Local` must
        // not be used by two threads at once. `pin` hands each handle only to
        // the modelled thread that registered it; other threads see only the
        // counts (`for_each`). The handles are dropped with the `Epoch`, in the
        // store's `Drop`, when no operation (hence no `Guard`) is live.
        unsafe impl Send for Epoch {}
        // SAFETY: as above.
        unsafe impl Sync for Epoch {}

        impl Epoch {
            pub(crate) fn new() -> Self {
                Epoch {
                    locals: std::sync::Mutex::new(Vec::new()),
                    collector: crate::sync::Collector::new(),
                }
            }

            /// This modelled thread's entry, registered on first use.
            pub(in crate::sync) fn local(&self) -> &Local {
                let me = current_thread().id();
                let cached = self.cached(me);
                let local = cached.unwrap_or_else(|| {
                    // Registering is a modelled operation: do it unlocked.
                    let local = Box::new(Local {
                        handle: self.collector.register(),
                        counts: Counts::default(),
                    });
                    let ptr: *const Local = &*local;
                    self.lock().push((me, local));
                    ptr
                });
                // SAFETY: the entry is boxed, so its address is stable, and it
                // lives until the `Epoch` drops, which outlasts every operation;
                // only this modelled thread uses its handle (see the `Send`
                // impl).
                unsafe { &*local }
            }

            pub(crate) fn for_each(&self, mut f: impl FnMut(&Counts)) {
                self.lock().iter().for_each(|(_, local)| f(&local.counts));
            }

            fn cached(&self, me: ThreadId) -> Option<*const Local> {
                let locals = self.lock();
                let found = locals.iter().find(|(id, _)| *id == me);
                found.map(|(_, local)| &**local as *const _)
            }

            fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
                self.locals
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            }
        }
    }
}

pub(crate) use imp::*;

/// What both builds' crossbeam-epoch `Epoch` offer over the entry `local()`
/// finds for the calling thread: per OS thread normally, per modelled thread
/// under loom, where one OS thread runs them all.
impl Epoch {
    #[inline]
    pub(crate) fn pin(&self) -> Guard {
        self.local().handle.pin()
    }

    /// A pin and this thread's counts, from one lookup.
    #[inline]
    pub(crate) fn pin_counting(&self) -> (Guard, &crate::stats::Counts) {
        let local = self.local();
        (local.handle.pin(), &local.counts)
    }

    /// This thread's counts.
    pub(crate) fn counts(&self) -> &crate::stats::Counts {
        &self.local().counts
    }
}
