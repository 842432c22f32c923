//! One shard: a chained hash table with lock-free readers and locked writers.
//!
//! # Protocol
//!
//! * `buckets` points to an array of chain heads. Readers pin an epoch, load
//!   it with `Acquire`, and walk a chain with `Acquire` loads; they take no
//!   lock and write nothing.
//! * Every writer (claim, complete, abandon, renew, remove, sweep, resize)
//!   holds `writer`, the shard's one lock, for the whole change, and never
//!   runs user code under it (rule 2: the user's operation runs after the
//!   claim returned).
//! * Linking publishes a fully built node with a `Release` store into a chain
//!   link. Unlinking stores the node's successor into its predecessor's link
//!   and retires the node to the epoch: a reader standing on it still finds
//!   valid `next` pointers, and it is freed only after every such reader has
//!   unpinned. A sweep retires its nodes in batches, which the sweeper
//!   itself frees once the epoch has let go of them (`Retired`).
//! * Growing the table relinks every node into a new bucket array under the
//!   lock, bracketed by an odd `resizes` count, then publishes the array with
//!   `Release`. Nodes are never copied or freed by a resize, so a node a
//!   reader finds is the live one. A reader walking an old chain during a
//!   resize can be led off it and miss a key that is there: a miss counts
//!   only if `resizes` was even and unchanged across the walk (a seqlock
//!   check); otherwise it is confirmed under the lock. A claim's lock-free
//!   first look skips the check: its miss only sends it on to the locked
//!   claim, which searches again (`Miss::Provisional`). Writers always work
//!   on the current array under the lock.
//! * A sweep walks a shard in passes of bounded lock holds. The writer state
//!   keeps a floor under every deadline in the shard (lowered by each
//!   deadline written, set by a pass that saw the whole shard), and a pass
//!   that starts below the floor ends at once: a sweeper on a store where
//!   nothing expires walks nothing. Overlapping passes are numbered, and only
//!   the latest may set the floor.
//! * The flight map holds the rendezvous for duplicates of each in-flight
//!   token that has any; see `wait.rs`. It is changed only under `writer`.
//!   Flights detached by a change are resolved after the lock is released.
//! * The bounds (`capacity.rs`) are checked under `writer` by a claim that
//!   would link a new entry, and never by one that finds a live entry. A
//!   completed entry that a change unlinks is weighed, and its bytes given
//!   back, after the lock is released and before the node can be freed: a
//!   removal, or a claim that replaces an expired entry, weighs it while its
//!   guard still pins the epoch the node was retired to ([`GiveBack`]; never
//!   the unpinned `locked` guard, which frees at once); a sweep weighs its
//!   batch before handing it to the epoch. The weigher is user code, so it
//!   never runs under the lock.

use std::borrow::Borrow;
use std::collections::HashMap;

use crate::error::{ClaimError, Superseded, WaitError};
use crate::fingerprint::{fingerprints_agree, Fingerprint};
use crate::stats::Event;
use crate::sync::{
    fence, Arc, Atomic, AtomicU64, AtomicU8, AtomicUsize, Epoch, Guard, Mutex, Ordering, Owned,
    Shared,
};
use crate::table::capacity::Capacity;
use crate::table::entry::{Node, View};
use crate::table::Padded;
use crate::wait::Flight;

/// How many buckets ahead a whole-array walk (sweep, resize) starts loading
/// chain heads: nodes sit at random addresses, so a walk that waits for each
/// one pays a full cache miss per node.
const PREFETCH_AHEAD: usize = 8;

/// Chain heads, each with a one-byte summary of its chain; a power-of-two
/// count.
struct Buckets<K, V> {
    slots: Box<[Atomic<Node<K, V>>]>,
    /// A one-byte Bloom filter per chain: bit [`summary_bit`] of a node's
    /// hash is set before the node is published, and cleared only when the
    /// shard lock holder rebuilds the byte from the chain (a sweep that
    /// removed something there). A clear bit proves the key is not in the
    /// chain without loading the slot or any node, so a claim of a new key
    /// usually reads one byte, eight times denser than the slots and mostly
    /// in cache, where it would have missed on a slot and a node.
    summaries: Box<[AtomicU8]>,
}

/// The most entries a shard of `buckets` buckets holds before it grows:
/// three quarters of them (and one for one bucket). Every node a hit walks
/// past on its chain is another dependent cache miss, and a chain holds
/// about 1 + load/2 nodes up to the one a hit finds: growing at 0.75 instead
/// of 1.0 keeps that at 1.19 to 1.38 at the cost of 2.7 buckets (24 bytes)
/// an entry just after a resize, the worst case.
fn max_load(buckets: usize) -> usize {
    buckets - buckets / 4
}

/// Buckets for a shard to hold `entries` without growing: the inverse of
/// [`max_load`].
pub(crate) fn buckets_for(entries: usize) -> usize {
    entries.saturating_add(entries / 3)
}

/// The summary bit of `hash`: three bits that neither the bucket index (the
/// low bits) nor the shard (the top 16) use.
fn summary_bit(hash: u64) -> u8 {
    1 << ((hash >> 40) & 7)
}

impl<K, V> Buckets<K, V> {
    fn with_len(len: usize) -> Self {
        Buckets {
            slots: (0..len).map(|_| Atomic::null()).collect(),
            summaries: (0..len).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    fn index(&self, hash: u64) -> usize {
        hash as usize & (self.slots.len() - 1)
    }

    fn head(&self, hash: u64) -> &Atomic<Node<K, V>> {
        &self.slots[self.index(hash)]
    }

    /// False only if no node with `hash` is in its chain (as of the last
    /// summary written).
    fn may_hold(&self, hash: u64) -> bool {
        // Relaxed: a bit is set before the node it stands for is published
        // (`mark`, then a Release store of the link), and every summary
        // write is made under the shard lock and keeps the bits of the
        // nodes still linked. So a reader that could have seen a node sees
        // its bit, by coherence; one that sees the bit clear is ordered
        // before the link, or after the unlink, of every such node.
        self.summaries[self.index(hash)].load(Ordering::Relaxed) & summary_bit(hash) != 0
    }

    /// Sets `hash`'s summary bit. Shard lock only, before publishing a node.
    fn mark(&self, hash: u64) {
        let summary = &self.summaries[self.index(hash)];
        // Relaxed load and store: only lock holders write summaries; see
        // `may_hold` for the readers.
        summary.store(
            summary.load(Ordering::Relaxed) | summary_bit(hash),
            Ordering::Relaxed,
        );
    }

    /// Rebuilds the summary of bucket `index` from its chain. Shard lock
    /// only.
    fn resummarise(&self, index: usize, rehash: &impl Fn(&K) -> u64, guard: &Guard) {
        let mut summary = 0;
        let mut current = self.slots[index].load(Ordering::Acquire, guard);
        // SAFETY: as in `Shard::find`; under the lock no node here is freed.
        while let Some(node) = unsafe { current.as_ref() } {
            summary |= summary_bit(rehash(&node.key));
            current = node.next.load(Ordering::Acquire, guard);
        }
        // Relaxed: see `may_hold`.
        self.summaries[index].store(summary, Ordering::Relaxed);
    }
}

/// Starts loading the first node of the chain at `slots[index]`, if any.
/// Under the shard lock or a pin, so `slots` is a live array; a node freed
/// meanwhile would only make the hint a wasted one.
#[inline(always)]
fn prefetch_chain<K, V>(slots: &[Atomic<Node<K, V>>], index: usize, guard: &Guard) {
    // Under loom the extra load would only widen the model.
    #[cfg(not(idemstore_loom))]
    if let Some(head) = slots.get(index) {
        // Relaxed: a hint; the walk itself loads the link properly.
        crate::sync::prefetch(head.load(Ordering::Relaxed, guard).as_raw());
    }
    #[cfg(idemstore_loom)]
    let _ = (slots, index, guard);
}

/// State only writers touch, under the shard lock.
struct Writer<V> {
    /// Nodes linked in this shard that are in flight.
    in_flight: usize,
    /// Flights of in-flight tokens that have duplicates waiting.
    flights: HashMap<u64, Arc<Flight<V>>>,
    /// At most the earliest deadline of any node in the shard, so a sweep
    /// can skip a shard where nothing can have expired instead of walking
    /// every node. Lowered by every deadline written; raised only by a
    /// sweep pass that saw the whole shard (`pass_min`).
    earliest: u64,
    /// The pass whose `pass_min` counts: a later pass supersedes it.
    pass: u64,
    /// The current pass's earliest survivor, and every deadline written
    /// since the pass began.
    pass_min: u64,
}

impl<V> Writer<V> {
    /// Records a deadline just written to a node.
    fn note_deadline(&mut self, deadline: u64) {
        self.earliest = self.earliest.min(deadline);
        self.pass_min = self.pass_min.min(deadline);
    }
}

/// Where a sweep of one shard stands between lock holds.
pub(crate) struct SweepPass {
    /// The next bucket to visit.
    next: usize,
    /// Buckets to visit per lock hold.
    budget: usize,
    /// This pass's number in the shard's `Writer::pass`; 0 before it begins.
    id: u64,
}

impl SweepPass {
    pub(crate) fn new(budget: usize) -> Self {
        SweepPass {
            next: 0,
            budget: budget.max(1),
            id: 0,
        }
    }
}

/// What a claim brings besides its key: its fingerprint, when it happens,
/// when its lease would end, and whether the byte bound applies.
#[derive(Clone, Copy)]
pub(crate) struct ClaimArgs {
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) now: u64,
    pub(crate) lease_deadline: u64,
    /// Whether the byte bound applies: not to a journal's replay, whose
    /// entries are results already acknowledged.
    pub(crate) bytes_bound: bool,
}

/// Admits fencing tokens: a journal's reservation, which must be durable
/// before a token it covers is handed out.
pub(crate) trait TokenGate: Send + Sync {
    /// Whether `token` may be handed out; false if it cannot be reserved.
    /// Called under a shard lock: it may block for a journal write, never
    /// for another shard.
    fn admit(&self, token: u64) -> bool;
}

/// Store-wide state every shard shares.
pub(crate) struct Common {
    /// The last fencing token handed out.
    pub(crate) tokens: Padded<AtomicU64>,
    /// The journal's reservation of tokens, if the store has a journal.
    pub(crate) gate: Option<Box<dyn TokenGate>>,
    pub(crate) capacity: Capacity,
    /// Each thread's epoch handle and its statistics counts.
    pub(crate) threads: Epoch,
}

impl Common {
    /// Counts `event` on this thread.
    pub(crate) fn bump(&self, event: Event) {
        self.threads.counts().bump(event);
    }
}

/// What a locked claim decided.
pub(crate) enum Claimed<V> {
    Owner(u64),
    Completed(V),
    InFlight(Arc<Flight<V>>),
}

/// What a key holds, read without the lock; a completed value is cloned out.
pub(crate) enum Lookup<V> {
    Absent,
    InFlight,
    /// The value, and whether the stored fingerprint agrees with the one
    /// the lookup was given (see [`fingerprints_agree`]).
    Completed(V, bool),
}

/// How far a lock-free read trusts a miss. A walk that overlaps a resize can
/// be led off its chain and miss a key that is there (see `grow`).
#[derive(Clone, Copy)]
pub(crate) enum Miss {
    /// Checked against resizes, and confirmed under the lock if one
    /// overlapped the walk: for a read whose miss is its answer (`get`,
    /// `get_or_wait`).
    Confirmed,
    /// Taken as the walk found it: for a claim's lock-free first look, whose
    /// miss only sends it on to the locked claim. That claim searches the
    /// current array under the lock, so it finds a key the walk missed and
    /// decides on it as on any key it finds (loom model
    /// `claim_racing_resize_finds_the_present_key`).
    Provisional,
}

/// What a key holds, read under the lock; an in-flight key's flight joined.
pub(crate) enum Joined<V> {
    Absent,
    Completed(V),
    InFlight(Arc<Flight<V>>),
}

/// `repr(C)` keeps the field order: what lock-free readers load comes
/// first, and what every change writes sits on its own lines after it.
#[repr(C)]
pub(crate) struct Shard<K, V> {
    buckets: Atomic<Buckets<K, V>>,
    /// Where the current array lies, for hints issued before pinning.
    #[cfg(not(idemstore_loom))]
    hint: Hint,
    /// Resizes begun plus resizes ended: odd while `grow` relinks nodes.
    /// Written under `writer`; lock-free readers check it to trust a miss.
    resizes: AtomicU64,
    locked: Padded<Locked<V>>,
}

/// The shard lock, and the entry count that only its holder writes, on the
/// same lines: every claim and unlink writes both, so it owns one line pair
/// instead of two, and neither shares a line with the array pointer and
/// hint that every lock-free read loads.
struct Locked<V> {
    writer: Mutex<Writer<V>>,
    /// Nodes linked in this shard: written under `writer`, read without it.
    len: AtomicUsize,
}

/// The current array's addresses as plain numbers, so that an operation can
/// start loading its bucket before it pins the epoch: the pin's fenced write
/// and the bucket's cache miss then overlap instead of following one
/// another. Never dereferenced, so it needs no pin: between a resize's
/// stores and these loads the numbers may mix two arrays or name a freed
/// one, and a prefetch of a wrong address only wastes a line.
///
/// Not in loom builds: it orders nothing, and the prefetch is a no-op there.
#[cfg(not(idemstore_loom))]
struct Hint {
    slots: AtomicUsize,
    summaries: AtomicUsize,
    /// Bucket count minus one.
    mask: AtomicUsize,
}

#[cfg(not(idemstore_loom))]
impl Hint {
    fn of<K, V>(buckets: &Buckets<K, V>) -> Self {
        let hint = Hint {
            slots: AtomicUsize::new(0),
            summaries: AtomicUsize::new(0),
            mask: AtomicUsize::new(0),
        };
        hint.point_at(buckets);
        hint
    }

    /// Shard lock only (or before the shard is shared).
    fn point_at<K, V>(&self, buckets: &Buckets<K, V>) {
        // Relaxed: see the type's docs; nothing is read through these.
        self.slots
            .store(buckets.slots.as_ptr().addr(), Ordering::Relaxed);
        self.summaries
            .store(buckets.summaries.as_ptr().addr(), Ordering::Relaxed);
        self.mask.store(buckets.slots.len() - 1, Ordering::Relaxed);
    }

    /// Starts loading `hash`'s summary byte and slot.
    #[inline(always)]
    fn prefetch<K, V>(&self, hash: u64) {
        // Relaxed: a hint; see the type's docs.
        let index = hash as usize & self.mask.load(Ordering::Relaxed);
        let slot = size_of::<Atomic<Node<K, V>>>().wrapping_mul(index);
        let slot = self.slots.load(Ordering::Relaxed).wrapping_add(slot);
        let summary = self.summaries.load(Ordering::Relaxed).wrapping_add(index);
        crate::sync::prefetch(std::ptr::without_provenance::<u8>(summary));
        crate::sync::prefetch(std::ptr::without_provenance::<u8>(slot));
    }
}

/// Hands one unlinked node to the epoch.
///
/// # Safety
///
/// `node` must have been unlinked from the current array under the shard
/// lock, and not retired before.
unsafe fn retire<K, V>(node: Shared<'_, Node<K, V>>, guard: &Guard) {
    // SAFETY: unreachable for every reader that pins from now on (the
    // caller's contract); the epoch frees it after current readers unpin.
    unsafe { guard.defer_destroy(node) };
}

/// Nodes a sweep unlinked under one lock hold, retired to the epoch as one
/// batch.
///
/// Whoever collects the epoch's garbage runs deferred work, and that may be
/// a reader in the middle of a `get`. So the deferred work for a batch only
/// moves it onto the store's [`Reclaim`] queue, a push, and the sweeper frees
/// the queued nodes on its own thread at its next pass: a million expired
/// entries cost readers a few pushes, not a million frees.
struct Retired<K, V>(Vec<*mut Node<K, V>>);

impl<K, V> Retired<K, V> {
    /// # Safety
    ///
    /// Every node in the batch must have been unlinked from the current array
    /// under the shard lock, and retired nowhere else.
    unsafe fn defer(self, reclaim: &Reclaim<K, V>, guard: &Guard) {
        if self.0.is_empty() {
            return;
        }
        let batch = Reclaimable(self.0);
        let queue = reclaim.clone();
        // SAFETY: the closure runs once every reader that might hold one of
        // these nodes has unpinned (the caller's contract makes them
        // unreachable for later readers); it only queues them, and
        // `Reclaimable` frees them when the queue lets go of the batch.
        unsafe { guard.defer_unchecked(move || queue.lock().push(batch)) };
    }
}

/// Swept nodes past their grace period, waiting to be freed.
pub(crate) type Reclaim<K, V> = Arc<Mutex<Vec<Reclaimable<K, V>>>>;

/// A batch of nodes no reader can reach any more: dropping it frees them.
pub(crate) struct Reclaimable<K, V>(Vec<*mut Node<K, V>>);

// SAFETY: the batch owns its nodes outright (no reader can reach them), and
// freeing drops their keys and values, so it may move to another thread
// exactly when the keys and values may.
unsafe impl<K: Send, V: Send> Send for Reclaimable<K, V> {}

impl<K, V> Reclaimable<K, V> {
    /// Frees `batches`, in address order. Sweeps unlink nodes in hash order,
    /// which is random in memory: freed in that order, every node costs a
    /// cache miss in its drop and more in the allocator's bookkeeping.
    /// Sorted, both walk memory mostly forwards.
    pub(crate) fn free_all(batches: Vec<Self>) {
        let total = batches.iter().map(|batch| batch.0.len()).sum();
        let mut nodes = Vec::with_capacity(total);
        for mut batch in batches {
            nodes.append(&mut batch.0);
        }
        nodes.sort_unstable();
        drop(Reclaimable(nodes));
    }
}

impl<K, V> Drop for Reclaimable<K, V> {
    fn drop(&mut self) {
        for node in self.0.drain(..) {
            // SAFETY: made only from unlinked nodes after their grace period
            // (see `Retired::defer`), each freed exactly once, here.
            drop(unsafe { Owned::from_raw(node) });
        }
    }
}

/// The store's weigher, where bytes are counted: what a completed entry
/// weighs against `max_bytes`.
pub(crate) type Weigh<'w, K, V> = Option<&'w (dyn Fn(&K, &V) -> usize + Send + Sync)>;

/// A completed node a change unlinked, weighed and its bytes given back when
/// this drops: after the shard lock, which must be released first (declare
/// the `GiveBack` before the lock guard), and before the node can be freed,
/// as the caller's guard, which it was retired to, outlives this.
struct GiveBack<'g, 'w, K, V> {
    node: Option<&'g Node<K, V>>,
    weigh: Weigh<'w, K, V>,
    capacity: &'w Capacity,
}

impl<'g, 'w, K, V> GiveBack<'g, 'w, K, V> {
    fn new(weigh: Weigh<'w, K, V>, capacity: &'w Capacity) -> Self {
        GiveBack {
            node: None,
            weigh,
            capacity,
        }
    }
}

impl<K, V> Drop for GiveBack<'_, '_, K, V> {
    #[inline]
    fn drop(&mut self) {
        if let (Some(node), Some(weigh)) = (self.node, self.weigh) {
            if let Some(value) = node.value() {
                self.capacity.release_bytes(weigh(&node.key, value));
            }
        }
    }
}

/// Detached flights, resolved when this drops: after the shard lock, which
/// must be released first (declare the `Orphans` before the lock guard).
struct Orphans<V: Clone>(Vec<Orphan<V>>);

/// A detached flight and the result its waiters get.
type Orphan<V> = (Arc<Flight<V>>, Result<V, WaitError>);

/// A link in a chain (a bucket head or a node's `next`) and what it points to.
type Link<'g, K, V> = &'g Atomic<Node<K, V>>;
type NodePtr<'g, K, V> = Shared<'g, Node<K, V>>;

impl<V: Clone> Drop for Orphans<V> {
    // Nearly always empty, so the check is inlined into every claim and
    // completion and the rest is out of line: a call to drop an empty list,
    // and the drain's set-up, cost each about 20 and 55 instructions.
    #[inline]
    fn drop(&mut self) {
        if !self.0.is_empty() {
            self.resolve();
        }
    }
}

impl<V: Clone> Orphans<V> {
    #[cold]
    #[inline(never)]
    fn resolve(&mut self) {
        for (flight, result) in self.0.drain(..) {
            flight.resolve(result);
        }
    }
}

impl<K, V> Shard<K, V> {
    pub(crate) fn new(buckets: usize) -> Self {
        let buckets = Buckets::with_len(buckets.max(1).next_power_of_two());
        Shard {
            #[cfg(not(idemstore_loom))]
            hint: Hint::of(&buckets),
            buckets: Atomic::new(buckets),
            locked: Padded(Locked {
                writer: Mutex::new(Writer {
                    in_flight: 0,
                    flights: HashMap::new(),
                    earliest: u64::MAX,
                    pass: 0,
                    pass_min: u64::MAX,
                }),
                len: AtomicUsize::new(0),
            }),
            resizes: AtomicU64::new(0),
        }
    }

    /// Entries in this shard, without the lock.
    pub(crate) fn len(&self) -> usize {
        self.locked.len.load(Ordering::Relaxed)
    }
}

impl<K, V> Shard<K, V>
where
    K: Eq + Clone,
    V: Clone,
{
    /// Lock-free lookup.
    #[inline]
    pub(crate) fn find<'g, Q>(&self, hash: u64, key: &Q, guard: &'g Guard) -> Option<&'g Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Acquire pairs with the Release publishing a grown array in `grow`.
        let buckets = self.buckets.load(Ordering::Acquire, guard);
        // SAFETY: `buckets` is never null (set in `new`, replaced only by
        // non-null arrays) and is retired through the epoch, which `guard`
        // pins, so it outlives `'g`.
        let buckets = unsafe { buckets.deref() };
        if !buckets.may_hold(hash) {
            return None;
        }
        // Acquire pairs with the Release stores in `link` and `unlink`.
        let mut current = buckets.head(hash).load(Ordering::Acquire, guard);
        // SAFETY: nodes reached from a live array are retired through the
        // epoch only after being unlinked, so each stays valid for `'g`.
        while let Some(node) = unsafe { current.as_ref() } {
            if node.key.borrow() == key {
                return Some(node);
            }
            current = node.next.load(Ordering::Acquire, guard);
        }
        None
    }

    /// Adjusts the entry count; returns the new count. Shard lock only.
    fn add_len(&self, delta: isize) -> usize {
        // Relaxed load and store: only lock holders write the count.
        let len = self
            .locked
            .len
            .load(Ordering::Relaxed)
            .wrapping_add_signed(delta);
        self.locked.len.store(len, Ordering::Relaxed);
        len
    }

    /// Lock-free: what `key` holds at `now`. A completed value comes with
    /// whether its fingerprint agrees with `fingerprint`; without one to
    /// compare, the stored one (a separate allocation) is not read.
    pub(crate) fn lookup<Q>(
        &self,
        hash: u64,
        key: &Q,
        now: u64,
        fingerprint: Option<Fingerprint>,
        miss: Miss,
        guard: &Guard,
    ) -> Lookup<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.find_settled(hash, key, miss, guard) {
            None => Lookup::Absent,
            Some(node) => match node.view(now) {
                View::Expired => Lookup::Absent,
                View::InFlight => Lookup::InFlight,
                View::Completed(value) => {
                    let agree = fingerprint.is_none()
                        || fingerprints_agree(node.fingerprint(), fingerprint);
                    Lookup::Completed(value.clone(), agree)
                }
            },
        }
    }

    /// Lock-free: `key`'s completed value at `now`, if any. What `lookup`
    /// does for a plain read, which has no fingerprint to compare and no use
    /// for the state of an entry it does not return; inlined into the
    /// caller, as its share of the instructions decides how many reads the
    /// CPU overlaps.
    #[inline]
    pub(crate) fn get<Q>(
        &self,
        hash: u64,
        key: &Q,
        now: u64,
        miss: Miss,
        guard: &Guard,
    ) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.find_settled(hash, key, miss, guard)?.view(now) {
            View::Completed(value) => Some(value.clone()),
            View::Expired | View::InFlight => None,
        }
    }

    /// Lock-free: `key`'s node in the current array, a miss trusted as far
    /// as `miss` says.
    #[inline]
    fn find_settled<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        miss: Miss,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        if let Miss::Provisional = miss {
            return self.find(hash, key, guard);
        }
        // Acquire pairs with the Release that ends a resize in `grow`.
        let resizes = self.resizes.load(Ordering::Acquire);
        match self.find(hash, key, guard) {
            Some(node) => Some(node),
            None => self.confirm_miss(resizes, hash, key, guard),
        }
    }

    /// A lock-free walk that started at `resizes` missed `key`: the miss
    /// stands if no resize overlapped the walk, and is checked under the
    /// lock otherwise. Out of line, so that a hit, which never comes here,
    /// keeps its registers: inlined, it cost a replay 10 instructions.
    #[inline(never)]
    fn confirm_miss<'g, Q>(
        &self,
        resizes: u64,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Acquire fence pairs with the Release fence in `grow`: if the
        // walk met a relinked pointer, the count below has moved.
        fence(Ordering::Acquire);
        let settled = resizes.is_multiple_of(2) && self.resizes.load(Ordering::Relaxed) == resizes;
        if settled {
            return None;
        }
        // The walk overlapped a resize: confirm the miss under the lock.
        let _writer = self.locked.writer.lock();
        self.find(hash, key, guard)
    }

    /// The flight duplicates of `node`'s claim wait on, made on first use.
    /// Shard lock only.
    fn flight_of(
        &self,
        writer: &mut Writer<V>,
        node: &Node<K, V>,
        common: &Common,
    ) -> Arc<Flight<V>> {
        common.bump(Event::Wait);
        let token = node.token();
        // The caller saw the node in flight, under the lock, which keeps it so.
        debug_assert!(token.is_some(), "a flight for a completed node");
        let token = token.unwrap_or_default();
        writer
            .flights
            .entry(token)
            .or_insert_with(|| {
                node.set_has_flight();
                Arc::new(Flight::new())
            })
            .clone()
    }

    /// Under the lock: what `key` holds, joining its flight if in flight.
    pub(crate) fn join<Q>(
        &self,
        hash: u64,
        key: &Q,
        now: u64,
        common: &Common,
        guard: &Guard,
    ) -> Joined<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut writer = self.locked.writer.lock();
        let (_, Some(shared)) = self.find_link(hash, key, guard) else {
            return Joined::Absent;
        };
        // SAFETY: found under the lock in the current array.
        let node = unsafe { shared.deref() };
        match node.view(now) {
            View::Expired => Joined::Absent,
            View::Completed(value) => Joined::Completed(value.clone()),
            View::InFlight => Joined::InFlight(self.flight_of(&mut writer, node, common)),
        }
    }

    /// The link pointing to `key`'s node in the current array, and the node.
    /// Shard lock only.
    fn find_link<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> (Link<'g, K, V>, Option<NodePtr<'g, K, V>>)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // SAFETY: as in `find`; under the lock the array cannot change either.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        let mut link = buckets.head(hash);
        if !buckets.may_hold(hash) {
            return (link, None);
        }
        loop {
            let current = link.load(Ordering::Acquire, guard);
            // SAFETY: as in `find`.
            match unsafe { current.as_ref() } {
                None => return (link, None),
                Some(node) if node.key.borrow() == key => return (link, Some(current)),
                Some(node) => link = &node.next,
            }
        }
    }

    /// Unlinks `node`, which `link` points to. The caller retires it (with
    /// [`retire`] or a [`Retired`] batch). Shard lock only.
    fn unlink<'g>(
        &self,
        writer: &mut Writer<V>,
        link: &Atomic<Node<K, V>>,
        node: Shared<'g, Node<K, V>>,
        orphan: Result<V, WaitError>,
        orphans: &mut Orphans<V>,
        guard: &'g Guard,
    ) {
        // SAFETY: `node` was loaded from the current array under the lock.
        let node_ref = unsafe { node.deref() };
        if let Some(token) = node_ref.token() {
            writer.in_flight -= 1;
            if node_ref.has_flight() {
                if let Some(flight) = writer.flights.remove(&token) {
                    orphans.0.push((flight, orphan));
                }
            }
        }
        self.add_len(-1);
        // Release pairs with the Acquire loads in `find`.
        link.store(
            node_ref.next.load(Ordering::Acquire, guard),
            Ordering::Release,
        );
    }

    /// Links a new in-flight node at the head of `hash`'s chain. Shard lock
    /// only.
    fn link(
        &self,
        writer: &mut Writer<V>,
        hash: u64,
        node: Node<K, V>,
        rehash: &impl Fn(&K) -> u64,
        guard: &Guard,
    ) {
        let deadline = node.deadline();
        // SAFETY: as in `find_link`.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        let head = buckets.head(hash);
        let node = Owned::new(node);
        buckets.mark(hash);
        node.next
            .store(head.load(Ordering::Acquire, guard), Ordering::Relaxed);
        // Release pairs with the Acquire loads in `find`: the node is fully
        // built before it becomes reachable.
        head.store(node, Ordering::Release);
        writer.in_flight += 1;
        writer.note_deadline(deadline);
        if self.add_len(1) > max_load(buckets.slots.len()) {
            self.grow(rehash, guard);
        }
    }

    /// Doubles the bucket array, moving every node into it. Shard lock only.
    ///
    /// Nodes are relinked in place, not copied, so nothing is allocated or
    /// freed per entry; nodes do not store their hash, so `rehash`, the
    /// store's hash function, recomputes it. It is a type parameter rather
    /// than a `dyn Fn` so that the hash inlines into this loop: a `u64` key's
    /// relink cost 15 instructions more through a `dyn` call. A reader
    /// walking an old chain meanwhile may be led off it and miss a key that
    /// is there; the odd `resizes` count tells it to confirm a miss under the
    /// lock (see `find_settled`). It can never find a wrong key, and nodes
    /// stay valid: none is freed here.
    fn grow(&self, rehash: &impl Fn(&K) -> u64, guard: &Guard) {
        let old = self.buckets.load(Ordering::Acquire, guard);
        // SAFETY: as in `find_link`.
        let old_ref = unsafe { old.deref() };
        let grown = Buckets::with_len(old_ref.slots.len() * 2);
        // Relaxed load: only lock holders write `resizes`.
        let resizes = self.resizes.load(Ordering::Relaxed);
        self.resizes.store(resizes + 1, Ordering::Relaxed);
        // Release fence pairs with the Acquire fence in `confirm_miss`: a
        // reader that sees any relinked pointer below also sees the odd count.
        fence(Ordering::Release);
        for (index, head) in old_ref.slots.iter().enumerate() {
            prefetch_chain(&old_ref.slots, index + PREFETCH_AHEAD, guard);
            let mut current = head.load(Ordering::Relaxed, guard);
            // SAFETY: as in `find`.
            while let Some(node) = unsafe { current.as_ref() } {
                let next = node.next.load(Ordering::Relaxed, guard);
                let hash = rehash(&node.key);
                grown.mark(hash);
                let new_head = grown.head(hash);
                node.next
                    .store(new_head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
                new_head.store(current, Ordering::Relaxed);
                current = next;
            }
        }
        #[cfg(not(idemstore_loom))]
        self.hint.point_at(&grown);
        // Release pairs with the Acquire in `find`: the chains are complete.
        self.buckets.store(Owned::new(grown), Ordering::Release);
        // Release pairs with the Acquire in `find_settled`: a reader that sees
        // the even count sees the new array.
        self.resizes.store(resizes + 2, Ordering::Release);
        // SAFETY: the old array was just replaced; readers still in it are
        // pinned.
        unsafe { guard.defer_destroy(old) };
        // Hand the old array to the collector now: left in this thread's
        // bag, it would stay allocated until the bag filled up.
        guard.flush();
    }

    /// The atomic check-and-insert behind every claim (rule 1). It counts
    /// the takeovers, expirations and waits it causes; the caller counts
    /// what it returns (a claim, a replay, a mismatch), on the per-thread
    /// counts it found with its pin.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim(
        &self,
        hash: u64,
        key: K,
        args: ClaimArgs,
        common: &Common,
        rehash: &impl Fn(&K) -> u64,
        weigh: Weigh<'_, K, V>,
        guard: &Guard,
    ) -> Result<Claimed<V>, ClaimError> {
        let ClaimArgs {
            fingerprint,
            now,
            lease_deadline,
            bytes_bound,
        } = args;
        let admits_bytes = || !bytes_bound || common.capacity.admits_bytes();
        let mut replaced = GiveBack::new(weigh, &common.capacity);
        let mut orphans = Orphans(Vec::new());
        let mut writer = self.locked.writer.lock();
        let (link, found) = self.find_link(hash, &key, guard);
        if let Some(shared) = found {
            // SAFETY: found under the lock in the current array.
            let node = unsafe { shared.deref() };
            match node.view(now) {
                View::Completed(value) => {
                    return if fingerprints_agree(node.fingerprint(), fingerprint) {
                        Ok(Claimed::Completed(value.clone()))
                    } else {
                        Err(ClaimError::Mismatch)
                    };
                }
                View::InFlight => {
                    if !fingerprints_agree(node.fingerprint(), fingerprint) {
                        return Err(ClaimError::Mismatch);
                    }
                    return Ok(Claimed::InFlight(self.flight_of(&mut writer, node, common)));
                }
                View::Expired => {
                    if !admits_bytes() {
                        // Counted as a refusal by the caller, if making room
                        // (which sweeps this entry too) fails.
                        return Err(ClaimError::Full);
                    }
                    let event = if node.is_completed() {
                        Event::Expiration
                    } else {
                        Event::Takeover
                    };
                    common.bump(event);
                    // The entry's slot passes to the new claim: capacity unchanged.
                    self.unlink(
                        &mut writer,
                        link,
                        shared,
                        Err(WaitError::LeaseExpired),
                        &mut orphans,
                        guard,
                    );
                    // SAFETY: just unlinked under the lock.
                    unsafe { retire(shared, guard) };
                    replaced.node = Some(node);
                }
            }
        } else if !admits_bytes() || !common.capacity.reserve() {
            // Counted as a refusal by the caller, if making room fails too.
            return Err(ClaimError::Full);
        }
        // Relaxed: the RMW alone makes tokens unique and, in modification
        // order, increasing; claims on one key are further ordered by this
        // shard's lock, so a later claim on a key always gets a larger token.
        let token = common.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(gate) = &common.gate {
            if !gate.admit(token) {
                // The slot reserved (or passed on from the expired entry) goes back.
                common.capacity.release(1);
                return Err(ClaimError::Unavailable);
            }
        }
        self.link(
            &mut writer,
            hash,
            Node::in_flight(key, token, fingerprint, lease_deadline),
            rehash,
            guard,
        );
        Ok(Claimed::Owner(token))
    }

    /// Starts loading `hash`'s summary byte and chain head: what a lookup
    /// reads first, and what a claim of a new key reads and writes. Needs no
    /// pin (see [`Hint`]), so an operation issues it before pinning.
    #[inline(always)]
    pub(crate) fn prefetch_bucket(&self, hash: u64) {
        #[cfg(not(idemstore_loom))]
        self.hint.prefetch::<K, V>(hash);
        #[cfg(idemstore_loom)]
        let _ = hash;
    }

    /// Starts loading the first node of `hash`'s chain, if its summary
    /// admits `hash`: a batched read's second miss. It loads the summary and
    /// the head, so it pays off once [`prefetch_bucket`](Self::prefetch_bucket)
    /// has brought them in. Only a hint: the read itself walks the chain.
    pub(crate) fn prefetch_node(&self, hash: u64, guard: &Guard) {
        // Under loom the extra loads would only widen the model.
        #[cfg(not(idemstore_loom))]
        {
            // Acquire: as in `find`.
            let buckets = self.buckets.load(Ordering::Acquire, guard);
            // SAFETY: as in `find`: non-null, and pinned by `guard`.
            let buckets = unsafe { buckets.deref() };
            if buckets.may_hold(hash) {
                prefetch_chain(&buckets.slots, buckets.index(hash), guard);
            }
        }
        #[cfg(idemstore_loom)]
        let _ = (hash, guard);
    }

    /// The in-flight node of `token`, under the lock, if still current.
    fn current<'g>(
        &self,
        hash: u64,
        key: &K,
        token: u64,
        guard: &'g Guard,
    ) -> Option<(Link<'g, K, V>, NodePtr<'g, K, V>)> {
        let (link, found) = self.find_link(hash, key, guard);
        let shared = found?;
        // SAFETY: found under the lock in the current array.
        let node = unsafe { shared.deref() };
        (node.token() == Some(token)).then_some((link, shared))
    }

    /// Stores the owner's value if `token` is still current (rule 10).
    /// Reads only under the lock and retires nothing, so `guard` may be the
    /// table's `locked` guard.
    pub(crate) fn complete(
        &self,
        hash: u64,
        key: &K,
        token: u64,
        value: V,
        expires_at: u64,
        guard: &Guard,
    ) -> Result<(), Superseded<V>> {
        let mut orphans = Orphans(Vec::new());
        let mut writer = self.locked.writer.lock();
        let Some((_, shared)) = self.current(hash, key, token, guard) else {
            return Err(Superseded(value));
        };
        // SAFETY: found under the lock in the current array.
        let node = unsafe { shared.deref() };
        if node.has_flight() {
            if let Some(flight) = writer.flights.remove(&token) {
                orphans.0.push((flight, Ok(value.clone())));
            }
        }
        node.complete(value, expires_at);
        writer.note_deadline(node.deadline());
        writer.in_flight -= 1;
        Ok(())
    }

    /// Releases the claim of `token` without a value, if still current.
    pub(crate) fn abandon(
        &self,
        hash: u64,
        key: &K,
        token: u64,
        common: &Common,
        guard: &Guard,
    ) -> bool {
        let mut orphans = Orphans(Vec::new());
        let mut writer = self.locked.writer.lock();
        let Some((link, shared)) = self.current(hash, key, token, guard) else {
            return false;
        };
        self.unlink(
            &mut writer,
            link,
            shared,
            Err(WaitError::Abandoned),
            &mut orphans,
            guard,
        );
        // SAFETY: just unlinked under the lock.
        unsafe { retire(shared, guard) };
        common.capacity.release(1);
        common.bump(Event::Abandon);
        true
    }

    /// Moves the lease deadline of `token`, if still current. Like
    /// `complete`, it may run under the table's `locked` guard.
    pub(crate) fn renew(
        &self,
        hash: u64,
        key: &K,
        token: u64,
        deadline: u64,
        guard: &Guard,
    ) -> bool {
        let mut writer = self.locked.writer.lock();
        let Some((_, shared)) = self.current(hash, key, token, guard) else {
            return false;
        };
        // SAFETY: found under the lock in the current array.
        let node = unsafe { shared.deref() };
        node.set_deadline(deadline);
        writer.note_deadline(node.deadline());
        true
    }

    /// Removes `key` whatever its state; true if a live entry was there.
    /// `removed` sees the entry's key and the last token handed out, under
    /// the lock: every token the entry had is at most that one, and every
    /// later claim of the key gets a larger one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn remove<Q>(
        &self,
        hash: u64,
        key: &Q,
        now: u64,
        common: &Common,
        weigh: Weigh<'_, K, V>,
        guard: &Guard,
        removed: impl FnOnce(&K, u64),
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut given_back = GiveBack::new(weigh, &common.capacity);
        let mut orphans = Orphans(Vec::new());
        let mut writer = self.locked.writer.lock();
        let (link, Some(shared)) = self.find_link(hash, key, guard) else {
            return false;
        };
        // SAFETY: found under the lock in the current array.
        let node = unsafe { shared.deref() };
        let live = !matches!(node.view(now), View::Expired);
        // Relaxed: claims of this key take this lock, which orders them
        // against this read (see the doc above).
        removed(&node.key, common.tokens.load(Ordering::Relaxed));
        self.unlink(
            &mut writer,
            link,
            shared,
            Err(WaitError::Abandoned),
            &mut orphans,
            guard,
        );
        // SAFETY: just unlinked under the lock.
        unsafe { retire(shared, guard) };
        given_back.node = Some(node);
        common.capacity.release(1);
        live
    }

    /// Removes expired entries from the next buckets of `pass`, under one
    /// lock hold, and rebuilds the summaries of the chains it shortened. In-flight entries go only once their lease has
    /// passed; their waiters get [`WaitError::LeaseExpired`] (rule 13).
    /// Returns the entries removed and whether the pass is over.
    ///
    /// A pass that begins when nothing in the shard can have expired ends at
    /// once. If the array grows between calls, an entry from an old bucket
    /// `i` lands in `i` or `i + old_len`, so going on from `pass.next` misses
    /// nothing; a pass that reaches the end has therefore seen every node
    /// that was there when it began, and sets `earliest` from the survivors
    /// and the deadlines written meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sweep_range(
        &self,
        now: u64,
        pass: &mut SweepPass,
        common: &Common,
        reclaim: &Reclaim<K, V>,
        rehash: &impl Fn(&K) -> u64,
        weigh: Weigh<'_, K, V>,
        guard: &Guard,
    ) -> (usize, bool) {
        let mut orphans = Orphans(Vec::new());
        let mut writer = self.locked.writer.lock();
        if pass.id == 0 {
            if now < writer.earliest {
                return (0, true);
            }
            writer.pass += 1;
            writer.pass_min = u64::MAX;
            pass.id = writer.pass;
        }
        let mut survivors_min = u64::MAX;
        // SAFETY: as in `find_link`.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        let start = pass.next.min(buckets.slots.len());
        let end = start.saturating_add(pass.budget).min(buckets.slots.len());
        let mut retired = Retired(Vec::new());
        let range = &buckets.slots[start..end];
        for (index, head) in range.iter().enumerate() {
            prefetch_chain(range, index + PREFETCH_AHEAD, guard);
            let retired_before = retired.0.len();
            let mut link = head;
            loop {
                let current = link.load(Ordering::Acquire, guard);
                // SAFETY: as in `find`.
                let Some(node) = (unsafe { current.as_ref() }) else {
                    break;
                };
                if matches!(node.view(now), View::Expired) {
                    self.unlink(
                        &mut writer,
                        link,
                        current,
                        Err(WaitError::LeaseExpired),
                        &mut orphans,
                        guard,
                    );
                    retired.0.push(current.as_raw().cast_mut());
                } else {
                    survivors_min = survivors_min.min(node.deadline());
                    link = &node.next;
                }
            }
            if retired.0.len() > retired_before {
                // Drop the removed nodes' bits, so the summary keeps
                // proving misses as keys come and go.
                buckets.resummarise(start + index, rehash, guard);
            }
        }
        let done = end == buckets.slots.len();
        if writer.pass == pass.id {
            writer.pass_min = writer.pass_min.min(survivors_min);
            if done {
                writer.earliest = writer.pass_min;
            }
        }
        pass.next = end;
        drop(writer);
        let removed = retired.0.len();
        if let Some(weigh) = weigh {
            // Outside the lock, before the epoch may free the batch.
            let bytes = retired
                .0
                .iter()
                .map(|&node| {
                    // SAFETY: unlinked above and not yet handed to the epoch:
                    // only this batch holds it.
                    let node = unsafe { &*node };
                    node.value().map_or(0, |value| weigh(&node.key, value))
                })
                .sum();
            common.capacity.release_bytes(bytes);
        }
        // SAFETY: every node in the batch was unlinked above.
        unsafe { retired.defer(reclaim, guard) };
        common.capacity.release(removed);
        common
            .threads
            .counts()
            .add(Event::Expiration, removed as u64);
        (removed, done)
    }

    /// Clones the completed entries at `now` of the next `budget` buckets
    /// from `*next` into `out` (key, value, fingerprint, expiry), under one
    /// lock hold; returns whether the shard is done. If the array grows
    /// between calls, an entry moves from bucket `i` to `i` or
    /// `i + old_len`, so going on from `*next` misses nothing (it may see an
    /// entry twice).
    #[cfg(feature = "journal")]
    pub(crate) fn snapshot_range(
        &self,
        now: u64,
        next: &mut usize,
        budget: usize,
        out: &mut Vec<(K, V, Option<Fingerprint>, u64)>,
        guard: &Guard,
    ) -> bool
    where
        K: Clone,
        V: Clone,
    {
        let _writer = self.locked.writer.lock();
        // SAFETY: as in `find_link`.
        let buckets = unsafe { self.buckets.load(Ordering::Acquire, guard).deref() };
        let start = (*next).min(buckets.slots.len());
        let end = start.saturating_add(budget.max(1)).min(buckets.slots.len());
        for head in &buckets.slots[start..end] {
            let mut current = head.load(Ordering::Acquire, guard);
            // SAFETY: as in `find`.
            while let Some(node) = unsafe { current.as_ref() } {
                if let View::Completed(value) = node.view(now) {
                    out.push((
                        node.key.clone(),
                        value.clone(),
                        node.fingerprint(),
                        node.deadline(),
                    ));
                }
                current = node.next.load(Ordering::Acquire, guard);
            }
        }
        *next = end;
        end == buckets.slots.len()
    }

    /// Entries in flight in this shard.
    pub(crate) fn in_flight(&self) -> usize {
        self.locked.writer.lock().in_flight
    }

    /// Registered waiters across this shard's flights (for models).
    #[cfg(idemstore_loom)]
    pub(crate) fn waiters(&self) -> usize {
        self.locked
            .writer
            .lock()
            .flights
            .values()
            .map(|f| f.waiters())
            .sum()
    }
}

impl<K, V> Drop for Shard<K, V> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader or writer can reach this shard, so
        // nodes and the array can be freed at once, without the epoch.
        unsafe {
            let guard = crossbeam_epoch::unprotected();
            let buckets = self.buckets.load(Ordering::Relaxed, guard);
            for head in buckets.deref().slots.iter() {
                let mut current = head.load(Ordering::Relaxed, guard);
                while !current.is_null() {
                    let next = current.deref().next.load(Ordering::Relaxed, guard);
                    drop(current.into_owned());
                    current = next;
                }
            }
            drop(buckets.into_owned());
        }
        // Flights whose owners leaked their ticket: nobody else will end them.
        let writer = self.locked.writer.lock();
        for flight in writer.flights.values() {
            flight.abandon();
        }
    }
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;

    /// A shard of four buckets whose keys are their own hashes, so the test
    /// decides which bucket each key lands in.
    struct Fixture {
        shard: Shard<u64, u64>,
        common: Common,
        reclaim: Reclaim<u64, u64>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                shard: Shard::new(4),
                common: Common {
                    tokens: Padded(AtomicU64::new(0)),
                    gate: None,
                    capacity: Capacity::new(None, None, false),
                    threads: Epoch::new(),
                },
                reclaim: Arc::new(Mutex::new(Vec::new())),
            }
        }

        /// Claims `key` (its own bucket) with a lease ending at `deadline`.
        fn claim(&self, key: u64, deadline: u64) {
            let args = ClaimArgs {
                fingerprint: None,
                now: 0,
                lease_deadline: deadline,
                bytes_bound: true,
            };
            let claimed = self.shard.claim(
                key,
                key,
                args,
                &self.common,
                &|k| *k,
                None,
                &self.common.threads.pin(),
            );
            assert!(matches!(claimed, Ok(Claimed::Owner(_))));
        }

        /// One step of `pass`: returns the entries removed and whether the
        /// pass is over.
        fn step(&self, now: u64, pass: &mut SweepPass, budget: usize) -> (usize, bool) {
            let guard = self.common.threads.pin();
            pass.budget = budget;
            let weigh = None;
            self.shard.sweep_range(
                now,
                pass,
                &self.common,
                &self.reclaim,
                &|k| *k,
                weigh,
                &guard,
            )
        }

        fn full_pass(&self, now: u64) -> (usize, usize) {
            let (mut pass, mut removed, mut steps) = (SweepPass::new(1), 0, 0);
            loop {
                let (n, done) = self.step(now, &mut pass, 1);
                removed += n;
                steps += 1;
                if done {
                    return (removed, steps);
                }
            }
        }
    }

    /// The pre-pin prefetch aims at the array readers will walk: it follows
    /// every resize.
    #[test]
    fn the_prefetch_hint_follows_the_array_through_growth() {
        let f = Fixture::new();
        for key in 0..64 {
            f.claim(key, u64::MAX);
            let guard = f.common.threads.pin();
            // SAFETY: never null, and pinned.
            let buckets = unsafe { f.shard.buckets.load(Ordering::Acquire, &guard).deref() };
            let hint = &f.shard.hint;
            assert_eq!(
                hint.slots.load(Ordering::Relaxed),
                buckets.slots.as_ptr().addr()
            );
            assert_eq!(
                hint.summaries.load(Ordering::Relaxed),
                buckets.summaries.as_ptr().addr()
            );
            assert_eq!(hint.mask.load(Ordering::Relaxed), buckets.slots.len() - 1);
        }
        assert_eq!(
            f.shard.resizes.load(Ordering::Relaxed),
            2 * 5,
            "4 -> 128 buckets"
        );
    }

    /// A shard grows once it is three quarters full, not when full.
    #[test]
    fn a_shard_grows_at_three_quarters_load() {
        let f = Fixture::new();
        for key in 0..3 {
            f.claim(key, u64::MAX);
        }
        assert_eq!(f.shard.resizes.load(Ordering::Relaxed), 0, "3 of 4");
        f.claim(3, u64::MAX);
        assert_eq!(f.shard.resizes.load(Ordering::Relaxed), 2, "4 of 4: grown");
    }

    /// `initial_capacity` sizes a shard that fills to it without growing.
    #[test]
    fn buckets_for_entries_hold_them_without_growing() {
        for entries in 1..5_000 {
            let buckets = buckets_for(entries).next_power_of_two();
            assert!(max_load(buckets) >= entries, "{entries} in {buckets}");
            assert!(
                max_load(buckets / 2) < entries || buckets == 1,
                "{entries}: no slack"
            );
        }
    }

    #[test]
    fn a_pass_skips_a_shard_where_nothing_can_have_expired() {
        let f = Fixture::new();
        f.claim(1, 50);
        f.claim(2, 70);
        assert_eq!(f.full_pass(49), (0, 1), "nothing before 50: skipped");
        assert_eq!(
            f.full_pass(50),
            (1, 4),
            "key 1 expired: every bucket walked"
        );
        assert_eq!(
            f.full_pass(69),
            (0, 1),
            "the survivor's 70 is the new floor"
        );
        f.claim(3, 20);
        assert_eq!(f.full_pass(20), (1, 4), "a new deadline lowers the floor");
    }

    /// Two sweeps of one shard overlap. The earlier one must not set the
    /// floor when it ends: a later pass reset the running minimum after the
    /// earlier one had counted key 1's deadline, so the earlier pass's
    /// minimum (key 2's 50) is above key 1's 5.
    #[test]
    fn a_superseded_pass_leaves_the_floor_alone() {
        let f = Fixture::new();
        f.claim(4, 1); // bucket 0: makes the passes at 1 walk
        f.claim(1, 5);
        f.claim(2, 50);
        let mut earlier = SweepPass::new(2);
        assert_eq!(f.step(1, &mut earlier, 2), (1, false), "buckets 0 and 1");
        let mut later = SweepPass::new(1);
        assert_eq!(f.step(1, &mut later, 1), (0, false), "bucket 0");
        assert_eq!(f.step(1, &mut earlier, 2), (0, true), "buckets 2 and 3");
        assert_eq!(f.full_pass(5).0, 1, "key 1 expired at 5 and is swept");
    }
}
