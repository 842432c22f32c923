//! The sharded table: hashing, shard choice, and the store-wide state that
//! every shard shares (fencing tokens, the bounds on entries and bytes with
//! the weigher, and the epoch with each thread's statistics counts).
//!
//! Keys hash once with the store's `BuildHasher`; the top bits choose the
//! shard and the low bits the bucket, so the two choices are independent.

mod capacity;
mod entry;
mod shard;

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use crate::error::{ClaimError, Superseded};
use crate::fingerprint::Fingerprint;
use crate::stats::{self, Counts, Stats};
use crate::store::Config;
use crate::sync::{Arc, AtomicU64, Epoch, Guard, Mutex, Ordering};
use capacity::Capacity;
pub(crate) use capacity::Weigher;
pub(crate) use shard::TokenGate;
use shard::{buckets_for, ClaimArgs, Common, Reclaim, Reclaimable, Shard, SweepPass, Weigh};
pub(crate) use shard::{Claimed, Joined, Lookup, Miss};

/// Buckets each shard starts with.
const INITIAL_BUCKETS: usize = 16;

/// Sweep steps (lock holds) between two flushes of the sweeping thread's
/// retirements: a flush hands the thread's bag to the collector's global
/// queue and may try to advance the epoch, so once per step would add that
/// cost to every lock hold of a long sweep.
const SWEEP_STEPS_PER_FLUSH: usize = 16;

/// The guard for a step that reads nodes only under its shard's lock and
/// retires nothing: `complete` and `renew`. It saves their pin, a fenced
/// write to this thread's epoch slot.
///
/// # Safety
///
/// The caller reads through it only while holding the lock of the shard it
/// reads, and neither retires nor defers anything with it (a `defer`
/// through it would run at once, under lock-free readers). That suffices:
/// an array is replaced and a node unlinked only under the shard lock, so
/// whatever the holder reaches from the current array stays linked, hence
/// allocated, until it unlocks. (Lock-free readers are what the epoch is
/// for; they pin.) The loom model `lease_takeover_fences_stale_owner` runs
/// a stale owner's `complete` against the takeover that retires its node.
unsafe fn locked() -> &'static Guard {
    // SAFETY: forwarded to the caller, as documented above.
    unsafe { crate::sync::unprotected() }
}

impl<K, V, S> Table<K, V, S> {
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.len()).sum()
    }
}

/// Gives a value its own cache lines (128 bytes: a line and the neighbour
/// the prefetcher pairs with it), so writes to it do not evict what other
/// cores read nearby: shards from their neighbours, a shard's lock from its
/// readers' fields, the token counter from the table's read-mostly fields.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Table<K, V, S> {
    // Declared before `common`, which holds the epoch: shards free their
    // nodes directly on drop, then the collector runs whatever the epoch
    // still holds (swept batches go to `reclaim`, whose queue each deferred
    // push holds a reference to).
    shards: Box<[Padded<Shard<K, V>>]>,
    hasher: S,
    common: Common,
    /// What a completed entry weighs, where bytes are counted.
    weigher: Option<Weigher<K, V>>,
    /// Swept nodes past their grace period, for `sweep` to free.
    reclaim: Reclaim<K, V>,
    /// Clock time of the last sweep a full store made to find room.
    last_full_sweep: AtomicU64,
}

impl<K, V, S> Table<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
{
    /// `weigher` is `Some` where bytes are counted (`max_bytes` or a
    /// weigher was set).
    pub(crate) fn new(config: &mut Config, hasher: S, weigher: Option<Weigher<K, V>>) -> Self {
        let shards = config.shards;
        let buckets = match (config.initial_capacity, config.max_entries) {
            // At most 2^30 buckets a shard: plenty, and no overflow anywhere.
            (Some(entries), _) => buckets_for(entries.div_ceil(shards)).clamp(1, 1 << 30),
            // A small bound needs few buckets; a large one may never fill.
            (None, Some(max)) => max.div_ceil(shards).clamp(1, INITIAL_BUCKETS),
            (None, None) => INITIAL_BUCKETS,
        };
        let max_entries = config.max_entries;
        Table {
            shards: (0..shards).map(|_| Padded(Shard::new(buckets))).collect(),
            hasher,
            common: Common {
                tokens: Padded(AtomicU64::new(config.tokens_from)),
                gate: config.gate.take(),
                capacity: Capacity::new(max_entries, config.max_bytes, weigher.is_some()),
                threads: Epoch::new(),
            },
            weigher,
            reclaim: Arc::new(Mutex::new(Vec::new())),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Shard<K, V> {
        // At most 2^16 shards (checked by the builder): the top 16 bits.
        &self.shards[(hash >> 48) as usize & (self.shards.len() - 1)].0
    }

    /// Pins the store's epoch: nodes and arrays read under the guard stay
    /// allocated until it drops. One guard may serve several operations on
    /// one thread (a claim's lookup and its locked step, a batch of reads).
    pub(crate) fn pin(&self) -> Guard {
        self.common.threads.pin()
    }

    /// A pin, and this thread's statistics counts, found with one lookup.
    pub(crate) fn pin_counting(&self) -> (Guard, &Counts) {
        self.common.threads.pin_counting()
    }

    /// Lock-free: what `key` holds at `now`.
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
        self.shard(hash)
            .lookup(hash, key, now, fingerprint, miss, guard)
    }

    /// Lock-free: `key`'s completed value at `now`, if any.
    #[inline]
    pub(crate) fn get<Q>(&self, hash: u64, key: &Q, now: u64, guard: &Guard) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.shard(hash).get(hash, key, now, Miss::Confirmed, guard)
    }

    /// [`get`](Self::get) for a claim's lock-free first look: a miss is
    /// [`Miss::Provisional`], as the locked claim after it searches again.
    #[inline]
    pub(crate) fn peek(&self, hash: u64, key: &K, now: u64, guard: &Guard) -> Option<V> {
        self.shard(hash)
            .get(hash, key, now, Miss::Provisional, guard)
    }

    /// [`get`](Self::get) under a pin of its own, with the shard chosen
    /// once: the pin's atomic write makes the compiler reload whatever it
    /// had read of the table before it.
    #[inline]
    pub(crate) fn get_one<Q>(&self, hash: u64, key: &Q, now: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let shard = self.shard(hash);
        // Before the pin, so that the bucket's cache miss overlaps the pin's
        // fenced write instead of waiting for it.
        shard.prefetch_bucket(hash);
        shard.get(hash, key, now, Miss::Confirmed, &self.pin())
    }

    /// Starts loading `hash`'s summary byte and chain head, without a pin;
    /// see [`Shard::prefetch_bucket`].
    #[inline(always)]
    pub(crate) fn prefetch_bucket(&self, hash: u64) {
        self.shard(hash).prefetch_bucket(hash);
    }

    /// Starts loading the first node of `hash`'s chain; see
    /// [`Shard::prefetch_node`].
    pub(crate) fn prefetch_node(&self, hash: u64, guard: &Guard) {
        self.shard(hash).prefetch_node(hash, guard);
    }

    /// Under the shard lock: what `key` holds, joining its flight.
    pub(crate) fn join<Q>(&self, hash: u64, key: &Q, now: u64) -> Joined<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.shard(hash)
            .join(hash, key, now, &self.common, &self.pin())
    }

    pub(crate) fn claim(
        &self,
        hash: u64,
        key: K,
        fingerprint: Option<Fingerprint>,
        now: u64,
        lease_deadline: u64,
        guard: &Guard,
    ) -> Result<Claimed<V>, ClaimError> {
        let args = ClaimArgs {
            fingerprint,
            now,
            lease_deadline,
            bytes_bound: true,
        };
        self.claim_with(hash, key, args, guard)
    }

    /// A claim for a journal's replay: the byte bound does not apply, as
    /// every entry replayed is a result already acknowledged (the entry
    /// bound still does).
    #[cfg(feature = "journal")]
    pub(crate) fn claim_restoring(
        &self,
        hash: u64,
        key: K,
        fingerprint: Option<Fingerprint>,
        now: u64,
        lease_deadline: u64,
        guard: &Guard,
    ) -> Result<Claimed<V>, ClaimError> {
        let args = ClaimArgs {
            fingerprint,
            now,
            lease_deadline,
            bytes_bound: false,
        };
        self.claim_with(hash, key, args, guard)
    }

    fn claim_with(
        &self,
        hash: u64,
        key: K,
        args: ClaimArgs,
        guard: &Guard,
    ) -> Result<Claimed<V>, ClaimError> {
        self.shard(hash).claim(
            hash,
            key,
            args,
            &self.common,
            &|key| self.hash(key),
            self.weigh(),
            guard,
        )
    }

    /// The weigher, for the shards.
    #[inline]
    fn weigh(&self) -> Weigh<'_, K, V> {
        self.weigher.as_deref()
    }

    /// What `value` of `key` weighs, where bytes are counted: to pass to
    /// [`complete`](Self::complete). Runs the user's weigher, so call it
    /// outside every lock.
    #[inline]
    pub(crate) fn weight(&self, key: &K, value: &V) -> Option<usize> {
        self.weigher.as_ref().map(|weigh| weigh(key, value))
    }

    /// Stores `value` if `token` is still current. `weight` is what
    /// [`weight`](Self::weight) gave for it: counted before the value is
    /// linked and whatever the bound, as the operation already ran, and
    /// taken back if the completion is superseded.
    pub(crate) fn complete(
        &self,
        hash: u64,
        key: &K,
        token: u64,
        value: V,
        expires_at: u64,
        weight: Option<usize>,
    ) -> Result<(), Superseded<V>> {
        // Before the value is linked: whoever unlinks it takes the weight
        // away only after, so the count never goes below the true sum.
        if let Some(weight) = weight {
            self.common.capacity.add_bytes(weight);
        }
        // SAFETY: see `locked`.
        let guard = unsafe { locked() };
        let completed = self
            .shard(hash)
            .complete(hash, key, token, value, expires_at, guard);
        if let (Err(_), Some(weight)) = (&completed, weight) {
            self.common.capacity.release_bytes(weight);
        }
        completed
    }

    pub(crate) fn abandon(&self, hash: u64, key: &K, token: u64) -> bool {
        self.shard(hash)
            .abandon(hash, key, token, &self.common, &self.pin())
    }

    pub(crate) fn renew(&self, hash: u64, key: &K, token: u64, deadline: u64) -> bool {
        // SAFETY: see `locked`.
        let guard = unsafe { locked() };
        self.shard(hash).renew(hash, key, token, deadline, guard)
    }

    /// Removes `key`; `removed` sees the removed entry's key and the last
    /// token handed out, under the shard lock (see [`Shard::remove`]).
    pub(crate) fn remove<Q>(&self, key: &Q, now: u64, removed: impl FnOnce(&K, u64)) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let guard = self.pin();
        self.shard(hash)
            .remove(hash, key, now, &self.common, self.weigh(), &guard, removed)
    }

    /// The last fencing token handed out.
    #[cfg(feature = "journal")]
    pub(crate) fn last_token(&self) -> u64 {
        // Relaxed: a compaction's label needs only a value no older than
        // the claims before it, which the journal's lock orders.
        self.common.tokens.load(Ordering::Relaxed)
    }

    /// One step of a walk over the completed entries at `now`: clones those
    /// of the next `budget` buckets of the shard at `cursor` (key, value,
    /// fingerprint, expiry) into `out` under one shard-lock hold, and moves
    /// the cursor on. False once the walk is over. An entry may come twice
    /// (a shard that grew between steps).
    #[cfg(feature = "journal")]
    pub(crate) fn snapshot_step(
        &self,
        now: u64,
        cursor: &mut (usize, usize),
        budget: usize,
        out: &mut Vec<(K, V, Option<Fingerprint>, u64)>,
    ) -> bool {
        let Some(shard) = self.shards.get(cursor.0) else {
            return false;
        };
        if shard
            .0
            .snapshot_range(now, &mut cursor.1, budget, out, &self.pin())
        {
            *cursor = (cursor.0 + 1, 0);
        }
        true
    }

    /// One full pass over every shard, holding each shard's lock for at
    /// most `budget` buckets at a time. Returns the entries removed.
    ///
    /// It also frees the nodes earlier sweeps retired whose grace period has
    /// passed, on this thread rather than on a reader's.
    pub(crate) fn sweep(&self, now: u64, budget: usize) -> usize {
        self.free_reclaimed();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut pass = SweepPass::new(budget);
            for step in 1.. {
                let guard = self.pin();
                let (n, done) = shard.0.sweep_range(
                    now,
                    &mut pass,
                    &self.common,
                    &self.reclaim,
                    &|key| self.hash(key),
                    self.weigh(),
                    &guard,
                );
                removed += n;
                // Hand retired nodes to the collector every few steps and at
                // the shard's end rather than when this thread's bag fills
                // up, so most of them are freed by this pass. Not every
                // step (see `SWEEP_STEPS_PER_FLUSH`).
                if done || step % SWEEP_STEPS_PER_FLUSH == 0 {
                    guard.flush();
                }
                if done {
                    break;
                }
            }
        }
        self.free_reclaimed();
        removed
    }

    /// Frees the queued batches, outside the queue's lock.
    fn free_reclaimed(&self) {
        let batches = std::mem::take(&mut *self.reclaim.lock());
        Reclaimable::free_all(batches);
    }

    /// A sweep to make room in a full store, at most once per millisecond of
    /// clock time: entries only expire as time passes, so a full store that
    /// keeps refusing claims does not rescan its whole table for each one.
    pub(crate) fn sweep_when_full(&self, now: u64, budget: usize) -> usize {
        const MIN_GAP: u64 = 1_000_000;
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        let due = last == 0 || now >= last.saturating_add(MIN_GAP);
        // Relaxed: the stamp only thins out sweeps; it guards no data.
        let won = due
            && self
                .last_full_sweep
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if won {
            self.sweep(now, budget)
        } else {
            0
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let capacity = &self.common.capacity;
        let mut stats = Stats {
            bytes: capacity.bytes(),
            max_bytes: capacity.max_bytes(),
            max_entries: capacity.max_entries(),
            ..Stats::default()
        };
        for shard in self.shards.iter() {
            stats.entries += shard.0.len();
            stats.in_flight += shard.0.in_flight();
        }
        stats::sum_into(&self.common.threads, &mut stats);
        stats
    }

    /// Registered waiters across all flights (for models).
    #[cfg(idemstore_loom)]
    pub(crate) fn waiters(&self) -> usize {
        self.shards.iter().map(|s| s.0.waiters()).sum()
    }
}
