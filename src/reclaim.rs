//! Epoch-based reclamation with an asymmetric read side (feature
//! `asymmetric-epoch`), in place of crossbeam-epoch's collector.
//!
//! The table keeps crossbeam-epoch's pointer types ([`Atomic`], `Owned`,
//! `Shared`); this module replaces only what decides when retired memory
//! may be freed: the pin, the deferral and the collection.
//!
//! # Why
//!
//! A crossbeam-epoch pin publishes the reader's epoch and then issues a
//! full fence (a locked instruction on x86). The fence waits for the loads
//! before it, so one read's cache misses cannot overlap the next read's.
//! BENCHMARKS.md ("What a pin costs a read") measured that at 1.47x-1.77x a
//! read behind a pointer. Here a reader publishes its epoch with a plain
//! store and a compiler fence, and the thread that advances the epoch pays
//! for the ordering instead, with a process-wide barrier: Linux
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running
//! thread of the process execute a full fence before it returns. That is the
//! scheme of liburcu's `membarrier` flavour and of folly's asymmetric
//! fences. Readers pin on every `get`; the epoch advances at most once per
//! bag of 64 retirements, per resize and per 16 sweep steps, and only when
//! something sealed waits to be freed.
//!
//! Where `membarrier` is missing (not Linux, an old kernel, a sandbox that
//! refuses it) and under miri and loom, both sides use `SeqCst` fences:
//! crossbeam-epoch's own protocol.
//!
//! # Protocol
//!
//! * The store has a global epoch `G`, and each thread a `state` word: 0
//!   when unpinned, `e << 1 | 1` when pinned in epoch `e`. Pins nest; only
//!   the outermost writes `state`.
//! * Pin: load `G` (Acquire), store `state` (Relaxed), light barrier.
//!   Unpin: store 0 (Release).
//! * Retire: push to the thread's bag. A full bag, and every
//!   [`Guard::flush`], seals it with the epoch `s` read after a `SeqCst`
//!   fence (as crossbeam-epoch does) onto the store's queue.
//! * Advance: load `G = e`, heavy barrier, then scan every thread's
//!   `state`; if every pinned thread is in `e`, an `Acquire` fence and a
//!   compare-and-swap `e -> e + 1` (Release).
//! * A sealed bag is freed once `G >= s + GRACE`.
//!
//! `GRACE` is 3, where crossbeam-epoch's is 2. crossbeam pairs the sealer's
//! fence with each reader's; here a reader has no fence, and a light
//! barrier counts as a full fence only against a heavy barrier. So the
//! argument runs through the advances alone:
//!
//! 1. A reader `R` that pins after `G = s + 2` is stored sees every unlink
//!    sealed in `s`. The advance to `s + 2` read `G = s + 1` before its heavy
//!    barrier, and the sealer read `G = s` after its unlinks; so that
//!    barrier falls after the sealer's unlinks in the sealer's thread, and
//!    `R`, which read `s + 2` with Acquire from a store after the barrier,
//!    sees them.
//! 2. The advance to `s + 3` read `G = s + 2`, then its heavy barrier ran
//!    a fence in `R`'s thread. If that fence fell after `R`'s `state`
//!    store, the scan sees the store: `R`, pinned in an epoch before
//!    `s + 2`, blocks the advance until it unpins, and its unpin (Release)
//!    is ordered before the scan's Acquire fence, hence before the free. If
//!    the fence fell before the store, `R`'s load of `G` after it reads at
//!    least `s + 2`: (1) applies, and `R` never saw the nodes.
//!
//! The loom models check the protocol with the barrier modelled as a
//! `SeqCst` fence on both sides, the one form loom can check.
//!
//! # Where deferred work runs
//!
//! On the thread that seals a full bag or flushes: writers, under their
//! shard lock (a resize, an unlink that fills the bag) as with
//! crossbeam-epoch, and the sweeper. Never on a reader: a `get` only pins
//! and unpins.

use std::cell::{Cell, UnsafeCell};
use std::mem;
use std::ptr;

use crossbeam_epoch::Shared;

use crate::stats::Counts;
use crate::sync::{fence, AtomicU64, Mutex, Ordering};
use crate::table::Padded;

/// A sealed bag may be freed once the global epoch is this far past the
/// epoch it was sealed in (see the module docs for why 3).
const GRACE: u64 = 3;

/// Retirements a thread keeps before sealing its bag.
const BAG: usize = 64;

/// The process-wide choice between the asymmetric barriers and `SeqCst`
/// fences, made once, before any store's first pin.
mod barrier {
    #[cfg(not(idemstore_loom))]
    use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};

    /// Set once (in [`init`]), before any store exists that could pin.
    #[cfg(not(idemstore_loom))]
    static ASYMMETRIC: AtomicBool = AtomicBool::new(false);

    /// Registers the process for private expedited `membarrier`, once. Every
    /// [`Epoch`](super::Epoch) calls it before its first pin, so readers and
    /// reclaimers of a store agree on the mode: it never changes after.
    pub(super) fn init() {
        #[cfg(not(idemstore_loom))]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            // Relaxed: a store is shared with other threads only through
            // something that synchronises (a spawn, an `Arc` sent over a
            // channel), which orders this store before their loads.
            ONCE.call_once(|| ASYMMETRIC.store(membarrier::register(), Ordering::Relaxed));
        }
    }

    #[cfg(not(idemstore_loom))]
    #[inline(always)]
    fn asymmetric() -> bool {
        // Relaxed: written once, before the store that pins was built.
        ASYMMETRIC.load(Ordering::Relaxed)
    }

    /// A reader's barrier between publishing its epoch and reading shared
    /// pointers: a full fence in effect, when paired with [`heavy`].
    #[inline(always)]
    pub(super) fn light() {
        #[cfg(not(idemstore_loom))]
        if asymmetric() {
            compiler_fence(Ordering::SeqCst);
            return;
        }
        super::fence(super::Ordering::SeqCst);
    }

    /// The advancing thread's barrier before it scans the readers' epochs.
    pub(super) fn heavy() {
        #[cfg(not(idemstore_loom))]
        if asymmetric() {
            membarrier::expedited();
            return;
        }
        super::fence(super::Ordering::SeqCst);
    }

    #[cfg(all(target_os = "linux", not(idemstore_loom), not(miri)))]
    mod membarrier {
        // The kernel's ABI (include/uapi/linux/membarrier.h).
        const CMD_QUERY: libc::c_int = 0;
        const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
        const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

        fn call(cmd: libc::c_int) -> libc::c_long {
            // SAFETY: `membarrier` takes two integers and touches no memory
            // of the caller's; an unknown command fails with `EINVAL`.
            unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    cmd,
                    0 as libc::c_uint,
                    0 as libc::c_int,
                )
            }
        }

        /// Whether the kernel offers private expedited barriers and this
        /// process is now registered for them.
        pub(super) fn register() -> bool {
            let supported = call(CMD_QUERY);
            supported >= 0
                && supported & CMD_PRIVATE_EXPEDITED as libc::c_long != 0
                && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        }

        /// A full fence on every running thread of the process.
        pub(super) fn expedited() {
            if call(CMD_PRIVATE_EXPEDITED) != 0 {
                // Cannot happen once registered (the only errors are an
                // unknown command and a missing registration). Readers are
                // relying on this barrier for their ordering: going on
                // without it could free memory under them.
                std::process::abort();
            }
        }
    }

    /// Off Linux and under miri: no asymmetric barrier, so fences both sides.
    #[cfg(all(any(not(target_os = "linux"), miri), not(idemstore_loom)))]
    mod membarrier {
        pub(super) fn register() -> bool {
            false
        }
        pub(super) fn expedited() {
            unreachable!("never registered, so never called")
        }
    }
}

/// Work a retirement leaves for later: a function and its one argument.
struct Deferred {
    call: unsafe fn(*mut ()),
    data: *mut (),
}

impl Deferred {
    /// Frees `ptr`, which `Owned::new` (a `Box`) allocated.
    fn destroy<T>(ptr: *mut T) -> Self {
        unsafe fn destroy<T>(data: *mut ()) {
            // SAFETY: `data` came from `Owned::new` (see `defer_destroy`)
            // and is freed once, here.
            drop(unsafe { crossbeam_epoch::Owned::<T>::from_raw(data.cast()) });
        }
        Deferred {
            call: destroy::<T>,
            data: ptr.cast(),
        }
    }

    /// Calls `f` (boxed until then).
    fn call<F: FnOnce()>(f: F) -> Self {
        unsafe fn call<F: FnOnce()>(data: *mut ()) {
            // SAFETY: made by `Box::into_raw` below, run once, here.
            let f = unsafe { Box::from_raw(data.cast::<F>()) };
            f();
        }
        Deferred {
            call: call::<F>,
            data: Box::into_raw(Box::new(f)).cast(),
        }
    }

    /// # Safety
    ///
    /// No reader may still reach what the work frees.
    unsafe fn run(self) {
        // SAFETY: `call` and `data` were made for each other above; the
        // caller vouches for the timing.
        unsafe { (self.call)(self.data) }
    }
}

/// A bag of retirements and the epoch it was sealed in.
struct Sealed {
    epoch: u64,
    bag: Vec<Deferred>,
}

// SAFETY: the work in a bag frees nodes and arrays, or queues a sweep's
// batch; the store's `K: Send` and `V: Send` bounds let them be dropped on
// any thread, and the queue is a `Mutex`.
unsafe impl Send for Sealed {}

/// A thread's epoch slot, its unsealed retirements and its statistics
/// counts. 128 bytes, aligned, so no two threads' slots share a line (see
/// the crossbeam-epoch build's `Local` in `sync.rs`).
#[repr(align(128))]
struct Local {
    /// 0 when unpinned, `epoch << 1 | 1` when pinned.
    state: AtomicU64,
    /// Guards alive on this thread: only the outermost writes `state`.
    depth: Cell<usize>,
    /// Retirements not yet sealed. Only this thread touches it.
    bag: UnsafeCell<Vec<Deferred>>,
    counts: Counts,
}

// SAFETY: other threads read only `state` (an atomic) and `counts` (atomics)
// of an entry; `depth` and `bag` are touched only by the thread the entry
// belongs to (`ThreadLocal` hands an entry to one thread at a time, and to
// a new thread only after the old one exited), or through `&mut` in `Drop`.
unsafe impl Sync for Local {}
// SAFETY: as above; the bag's work may run on any thread (see `Sealed`).
unsafe impl Send for Local {}

impl Local {
    fn new() -> Self {
        Local {
            state: AtomicU64::new(0),
            depth: Cell::new(0),
            bag: UnsafeCell::new(Vec::new()),
            counts: Counts::default(),
        }
    }

    /// This thread's bag. Only the thread that owns the entry may call it,
    /// and must not hold the reference across another call.
    #[allow(clippy::mut_from_ref)]
    fn bag(&self) -> &mut Vec<Deferred> {
        // SAFETY: see the `Sync` impl: one thread at a time, and no caller
        // keeps the reference past its own statement.
        unsafe { &mut *self.bag.get() }
    }
}

/// One store's epoch: the global counter, each thread's slot and the sealed
/// bags waiting for their grace period.
pub(crate) struct Epoch {
    locals: Locals,
    global: Padded<AtomicU64>,
    sealed: Mutex<Vec<Sealed>>,
}

#[cfg(not(idemstore_loom))]
type Locals = thread_local::ThreadLocal<Local>;

/// Under loom every modelled thread runs on one OS thread, so slots are
/// kept per modelled thread. The list is behind a modelled mutex, so a scan
/// is ordered after the registration of each slot it reads; each thread
/// finds its own slot through an unmodelled cache (a `std` mutex that orders
/// nothing the models check), as in the crossbeam-epoch build's loom
/// `Epoch`, so a pin adds no modelled operation beyond its own.
#[cfg(idemstore_loom)]
struct Locals {
    /// Boxed, so a slot stays put when the `Vec` grows.
    list: Mutex<Vec<Box<Local>>>,
    /// Each modelled thread's slot, by address.
    mine: std::sync::Mutex<Vec<(loom::thread::ThreadId, usize)>>,
}

#[cfg(idemstore_loom)]
impl Default for Locals {
    fn default() -> Self {
        Locals {
            list: Mutex::new(Vec::new()),
            mine: std::sync::Mutex::default(),
        }
    }
}

impl Epoch {
    pub(crate) fn new() -> Self {
        barrier::init();
        Epoch {
            locals: Locals::default(),
            global: Padded(AtomicU64::new(0)),
            sealed: Mutex::new(Vec::new()),
        }
    }

    #[cfg(not(idemstore_loom))]
    #[inline]
    fn local(&self) -> &Local {
        loop {
            if let Some(local) = self.locals.get() {
                return local;
            }
            self.register();
        }
    }

    /// A thread's first operation on the store. Out of line, so the aligned
    /// slot built here costs the hot path no stack realignment.
    ///
    /// The reference `get_or` returns is dropped: guards keep a pointer to
    /// the slot, and one derived from the insertion would lose its access
    /// (under Tree Borrows) at the first write through a later `get`'s.
    /// Every pointer to a slot comes from `get` instead.
    #[cfg(not(idemstore_loom))]
    #[cold]
    #[inline(never)]
    fn register(&self) {
        self.locals.get_or(Local::new);
    }

    #[cfg(idemstore_loom)]
    fn local(&self) -> &Local {
        let me = loom::thread::current().id();
        let mine = || {
            self.locals
                .mine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        let found = mine().iter().find(|(id, _)| *id == me).map(|&(_, at)| at);
        let address = found.unwrap_or_else(|| {
            let local = Box::new(Local::new());
            let address = std::ptr::from_ref::<Local>(&local).expose_provenance();
            // A modelled lock: the `std` one must not be held across it, or
            // loom could switch to a thread that blocks on it.
            self.locals.list.lock().push(local);
            mine().push((me, address));
            address
        });
        // SAFETY: boxed, so the address is stable; slots live until the
        // `Epoch` drops, which outlasts every operation.
        unsafe { &*std::ptr::with_exposed_provenance::<Local>(address) }
    }

    /// Calls `f` with every thread's slot.
    fn each_local(&self, mut f: impl FnMut(&Local)) {
        #[cfg(not(idemstore_loom))]
        for local in self.locals.iter() {
            f(local);
        }
        #[cfg(idemstore_loom)]
        for local in self.locals.list.lock().iter() {
            f(local);
        }
    }

    /// Pins the epoch: what the store retires from now on stays allocated
    /// until the guard drops.
    #[inline]
    pub(crate) fn pin(&self) -> Guard {
        self.pin_counting().0
    }

    /// A pin and this thread's counts, from one lookup.
    #[inline]
    pub(crate) fn pin_counting(&self) -> (Guard, &Counts) {
        let local = self.local();
        let depth = local.depth.get();
        local.depth.set(depth + 1);
        if depth == 0 {
            // Acquire: pairs with the Release of the advance that stored it,
            // which is what makes a reader pinned in a late enough epoch see
            // the unlinks before it (module docs, step 1).
            let epoch = self.global.load(Ordering::Acquire);
            // Relaxed: the barrier orders it before the reads that follow,
            // against an advance's scan.
            local.state.store(epoch << 1 | 1, Ordering::Relaxed);
            barrier::light();
        }
        let guard = Guard { local, epoch: self };
        (guard, &local.counts)
    }

    /// This thread's counts.
    pub(crate) fn counts(&self) -> &Counts {
        &self.local().counts
    }

    /// Lends every thread's counts, one after another.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Counts)) {
        self.each_local(|local| f(&local.counts));
    }

    /// Seals `local`'s bag onto the queue, in the current epoch.
    fn seal(&self, local: &Local) {
        let bag = mem::take(local.bag());
        if bag.is_empty() {
            return;
        }
        // SeqCst: the unlinks of everything in the bag come before the
        // epoch read below (module docs, step 1).
        fence(Ordering::SeqCst);
        let epoch = self.global.load(Ordering::Relaxed);
        self.sealed.lock().push(Sealed { epoch, bag });
    }

    /// Advances the epoch if every pinned thread is in the current one.
    /// Returns the epoch it leaves, read with Acquire or stored by itself.
    fn try_advance(&self) -> u64 {
        let epoch = self.global.load(Ordering::Acquire);
        barrier::heavy();
        let mut behind = false;
        self.each_local(|local| {
            // Relaxed: the heavy barrier orders a pin before this load or
            // the pin's reads after it (module docs, step 2).
            let state = local.state.load(Ordering::Relaxed);
            behind |= state & 1 == 1 && state >> 1 != epoch;
        });
        if behind {
            return epoch;
        }
        // Acquire: the reads of every thread that unpinned before the scan
        // happen before whatever is freed in the new epoch.
        fence(Ordering::Acquire);
        // Release pairs with the Acquire loads of the epoch: a pin, and a
        // collector deciding what to free.
        match self
            .global
            .compare_exchange(epoch, epoch + 1, Ordering::Release, Ordering::Acquire)
        {
            Ok(_) => epoch + 1,
            Err(current) => current,
        }
    }

    /// Tries to advance the epoch, then runs every sealed bag whose grace
    /// period has passed.
    fn collect(&self) {
        // Nothing sealed, nothing to free: no advance, whose heavy barrier
        // interrupts every running thread of the process. A sweep over
        // entries none of which expired retires nothing.
        if self.sealed.lock().is_empty() {
            return;
        }
        let epoch = self.try_advance();
        let ready: Vec<Sealed> = {
            let mut sealed = self.sealed.lock();
            if sealed.is_empty() {
                return;
            }
            let (ready, waiting) = mem::take(&mut *sealed)
                .into_iter()
                .partition(|bag| bag.epoch + GRACE <= epoch);
            *sealed = waiting;
            ready
        };
        // Outside the queue's lock: the work drops users' keys and values.
        for bag in ready {
            for work in bag.bag {
                // SAFETY: the bag's grace period has passed (module docs).
                unsafe { work.run() };
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // `&mut self`: no guard is alive (each borrows the store), so
        // nothing retired can still be reached.
        let mut bags: Vec<Vec<Deferred>> = Vec::new();
        self.each_local(|local| bags.push(mem::take(local.bag())));
        bags.extend(
            mem::take(&mut *self.sealed.lock())
                .into_iter()
                .map(|sealed| sealed.bag),
        );
        for work in bags.into_iter().flatten() {
            // SAFETY: as above.
            unsafe { work.run() };
        }
    }
}

/// A pin of a store's epoch, or the unprotected guard (see [`unprotected`]).
///
/// It dereferences to a crossbeam-epoch guard only so the table can keep
/// crossbeam-epoch's pointer types, whose loads take one: that guard is
/// crossbeam's unprotected one, and nothing may be deferred through it. The
/// deferrals the table makes ([`defer_destroy`](Self::defer_destroy),
/// [`defer_unchecked`](Self::defer_unchecked), [`flush`](Self::flush)) are
/// this type's own methods, which method resolution picks over the target's.
pub(crate) struct Guard {
    /// Null for the unprotected guard.
    local: *const Local,
    epoch: *const Epoch,
}

impl Guard {
    /// The slot and epoch of a pinned guard.
    fn pinned(&self) -> Option<(&Local, &Epoch)> {
        if self.local.is_null() {
            return None;
        }
        // SAFETY: a pinned guard borrows its store for its whole life (every
        // guard lives inside one store operation, or in a `Pinned` that
        // borrows the store), and the slot lives as long as the `Epoch`.
        Some(unsafe { (&*self.local, &*self.epoch) })
    }

    /// Frees `ptr` once no reader pinned now can still reach it; through the
    /// unprotected guard, at once.
    ///
    /// # Safety
    ///
    /// `ptr` came from `Owned::new`, is unreachable for readers that pin from
    /// now on, and is retired once.
    pub(crate) unsafe fn defer_destroy<T>(&self, ptr: Shared<'_, T>) {
        // SAFETY: forwarded to the caller.
        unsafe { self.defer(Deferred::destroy(ptr.as_raw().cast_mut())) }
    }

    /// Runs `f` once no reader pinned now can still reach what it frees;
    /// through the unprotected guard, at once.
    ///
    /// # Safety
    ///
    /// As `crossbeam_epoch::Guard::defer_unchecked`: whatever `f` touches
    /// must stay valid until it runs, on whichever thread collects.
    pub(crate) unsafe fn defer_unchecked<F: FnOnce()>(&self, f: F) {
        // SAFETY: forwarded to the caller.
        unsafe { self.defer(Deferred::call(f)) }
    }

    /// # Safety
    ///
    /// As [`defer_destroy`](Self::defer_destroy).
    unsafe fn defer(&self, work: Deferred) {
        match self.pinned() {
            None => {
                // SAFETY: the unprotected guard's contract: nothing can
                // reach what it frees (crossbeam-epoch's behaves the same).
                unsafe { work.run() }
            }
            Some((local, epoch)) => {
                let full = {
                    let bag = local.bag();
                    bag.push(work);
                    bag.len() >= BAG
                };
                if full {
                    epoch.seal(local);
                    epoch.collect();
                }
            }
        }
    }

    /// Seals this thread's retirements and collects what has waited long
    /// enough: a resize's old array and a sweep's batches are freed soon,
    /// not when the bag fills up.
    pub(crate) fn flush(&self) {
        if let Some((local, epoch)) = self.pinned() {
            epoch.seal(local);
            epoch.collect();
        }
    }
}

impl std::ops::Deref for Guard {
    type Target = crossbeam_epoch::Guard;

    fn deref(&self) -> &crossbeam_epoch::Guard {
        // SAFETY: used only as the lifetime of crossbeam-epoch's loads and
        // `into_shared`, which this guard's pin makes valid; nothing is
        // deferred through it (see the type's docs).
        unsafe { crossbeam_epoch::unprotected() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some((local, _)) = self.pinned() {
            let depth = local.depth.get() - 1;
            local.depth.set(depth);
            if depth == 0 {
                // Release: this thread's reads come before an advance's scan
                // that sees it unpinned.
                local.state.store(0, Ordering::Release);
            }
        }
    }
}

/// The unprotected guard, in a `static`.
struct Unprotected(Guard);

// SAFETY: the unprotected guard has no slot: sharing it shares two nulls.
unsafe impl Sync for Unprotected {}

static UNPROTECTED: Unprotected = Unprotected(Guard {
    local: ptr::null(),
    epoch: ptr::null(),
});

/// A guard that protects nothing: deferred work runs at once.
///
/// # Safety
///
/// As `crossbeam_epoch::unprotected`: what is read through it must not be
/// freed meanwhile (the caller holds the lock that frees it, or owns it
/// outright), and what is deferred through it must be unreachable already.
pub(crate) unsafe fn unprotected() -> &'static Guard {
    &UNPROTECTED.0
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};

    /// Defers, through a pin of `epoch`, a flag set: what freeing would do.
    fn retire_flag(epoch: &Epoch) -> Arc<AtomicBool> {
        let freed = Arc::new(AtomicBool::new(false));
        let flag = freed.clone();
        let guard = epoch.pin();
        // SAFETY: the work touches only its own `Arc`.
        unsafe { guard.defer_unchecked(move || flag.store(true, Ordering::Relaxed)) };
        freed
    }

    /// What a sweep step that flushes does: a fresh pin, then a flush.
    fn flush_times(epoch: &Epoch, n: u64) {
        for _ in 0..n {
            epoch.pin().flush();
        }
    }

    #[test]
    fn each_threads_slot_has_its_own_lines() {
        assert_eq!(mem::align_of::<Local>(), 128);
        assert_eq!(mem::size_of::<Local>(), 128);
    }

    #[test]
    fn work_waits_for_a_reader_pinned_before_it_was_retired() {
        let epoch = Epoch::new();
        let (pinned_tx, pinned_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let epoch = &epoch;
            let reader = scope.spawn(move || {
                let guard = epoch.pin();
                pinned_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                drop(guard);
            });
            pinned_rx.recv().unwrap();
            let freed = retire_flag(epoch);
            // However often the epoch is pushed, the pinned reader holds it
            // within one step of its own.
            flush_times(epoch, 10 * GRACE);
            assert!(!freed.load(Ordering::Relaxed));
            release_tx.send(()).unwrap();
            reader.join().unwrap();
            // Unpinned: the grace period can now run out.
            flush_times(epoch, GRACE + 1);
            assert!(freed.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn a_flush_with_nothing_retired_leaves_the_epoch_alone() {
        let epoch = Epoch::new();
        // Nothing to free, so no advance and no heavy barrier: a sweep of a
        // store where nothing expired interrupts no thread.
        flush_times(&epoch, 3);
        assert_eq!(epoch.global.load(Ordering::Relaxed), 0);
        let freed = retire_flag(&epoch);
        flush_times(&epoch, 1);
        assert_eq!(epoch.global.load(Ordering::Relaxed), 1);
        assert!(!freed.load(Ordering::Relaxed));
    }

    #[test]
    fn work_runs_after_the_grace_period_and_not_before() {
        let epoch = Epoch::new();
        let freed = retire_flag(&epoch);
        // Each flush advances one epoch (no other thread is pinned); the
        // first seals the bag in the epoch it finds, then advances.
        flush_times(&epoch, GRACE - 1);
        assert!(!freed.load(Ordering::Relaxed), "freed within the grace");
        flush_times(&epoch, 1);
        assert!(freed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_nested_pin_keeps_the_outer_ones_epoch() {
        let epoch = Epoch::new();
        let outer = epoch.pin();
        let freed = retire_flag(&epoch);
        // The inner pins and their drops leave this thread pinned in its
        // first epoch: the epoch advances once and then waits for it.
        flush_times(&epoch, 10 * GRACE);
        assert_eq!(epoch.global.load(Ordering::Relaxed), 1);
        assert!(!freed.load(Ordering::Relaxed));
        drop(outer);
        flush_times(&epoch, GRACE + 1);
        assert!(freed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_full_bag_is_sealed_and_collected_without_a_flush() {
        let epoch = Epoch::new();
        let freed: Vec<_> = (0..BAG * (GRACE as usize + 2))
            .map(|_| retire_flag(&epoch))
            .collect();
        assert!(freed[0].load(Ordering::Relaxed));
        assert!(!freed.last().unwrap().load(Ordering::Relaxed));
    }

    #[test]
    fn the_unprotected_guard_runs_work_at_once() {
        let freed = Arc::new(AtomicBool::new(false));
        let flag = freed.clone();
        // SAFETY: the work touches only its own `Arc`.
        unsafe {
            unprotected().defer_unchecked(move || flag.store(true, Ordering::Relaxed));
        }
        assert!(freed.load(Ordering::Relaxed));
    }

    #[test]
    fn dropping_the_epoch_runs_everything_left() {
        let epoch = Epoch::new();
        let in_bag = retire_flag(&epoch);
        let sealed = retire_flag(&epoch);
        epoch.pin().flush();
        drop(epoch);
        assert!(in_bag.load(Ordering::Relaxed));
        assert!(sealed.load(Ordering::Relaxed));
    }

    #[test]
    fn an_exited_threads_slot_does_not_hold_the_epoch_back() {
        let epoch = Epoch::new();
        std::thread::scope(|scope| {
            scope.spawn(|| drop(epoch.pin()));
        });
        let freed = retire_flag(&epoch);
        flush_times(&epoch, GRACE + 1);
        assert!(freed.load(Ordering::Relaxed));
    }
}
