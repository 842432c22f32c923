//! The public [`Store`]: a thin, safe handle over the sharded table.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use ahash::RandomState;

use crate::builder::{default_shards, Builder, DEFAULT_LEASE, DEFAULT_TTL};
use crate::claim::{Claim, Pending, Ticket};
use crate::clock::{duration_to_nanos, StoreClock, SystemClock};
use crate::error::{ClaimError, CompleteError, ExecuteError, Superseded, WaitError};
use crate::fingerprint::Fingerprint;
use crate::stats::{Counts, Event, Stats};
use crate::sync::{Arc, Guard};
use crate::table::{Claimed, Joined, Lookup, Miss, Table, Weigher};
use crate::wait::WaitFuture;

/// Buckets a sweep visits per shard-lock hold (rule 13: bounded steps).
const SWEEP_BUDGET: usize = 256;

/// Validated settings, in clock nanoseconds.
pub(crate) struct Config {
    pub(crate) ttl: u64,
    pub(crate) lease: u64,
    pub(crate) shards: usize,
    pub(crate) max_entries: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) initial_capacity: Option<usize>,
    /// The last token handed out before this store (a journal's floor).
    pub(crate) tokens_from: u64,
    /// The journal's token reservation, if any.
    pub(crate) gate: Option<Box<dyn crate::table::TokenGate>>,
}

pub(crate) struct Inner<K, V, S> {
    pub(crate) table: Table<K, V, S>,
    pub(crate) clock: StoreClock,
    pub(crate) ttl: u64,
    pub(crate) lease: u64,
    #[cfg(feature = "journal")]
    pub(crate) journal: Option<crate::journal::Journal<K, V>>,
    #[cfg(not(idemstore_loom))]
    sweeper: crate::sync::OnceLock<crate::sync::Thread>,
    /// The journal's background thread, woken when the store drops.
    #[cfg(all(feature = "journal", not(idemstore_loom)))]
    pub(crate) journal_thread: crate::sync::OnceLock<crate::sync::Thread>,
}

#[cfg(not(idemstore_loom))]
impl<K, V, S> Drop for Inner<K, V, S> {
    fn drop(&mut self) {
        // The sweeper holds only a `Weak`: wake it so it sees the store is
        // gone and exits now rather than at its next tick.
        if let Some(thread) = self.sweeper.get() {
            thread.unpark();
        }
        #[cfg(feature = "journal")]
        if let Some(thread) = self.journal_thread.get() {
            thread.unpark();
        }
    }
}

/// An in-process idempotency store: a cheap, cloneable handle (`Arc`
/// inside), `Send + Sync`.
///
/// Duplicates of an operation that arrive together run it once: the first
/// [`claim`](Self::claim) becomes the owner, the others wait for its result
/// (or replay it once stored) instead of running it again. See the crate
/// documentation for the full semantics, and `docs/semantics.md` in the
/// repository for every rule with the test that checks it.
///
/// ```
/// use idemstore::{Outcome, Store};
///
/// let store: Store<String, u64> = Store::new();
/// let charge = || Ok::<_, std::io::Error>(4200);
///
/// let first = store.execute("payment-7".to_string(), charge)?;
/// let retry = store.execute("payment-7".to_string(), charge)?;
/// assert_eq!(first, Outcome::Executed(4200));
/// assert_eq!(retry, Outcome::Replayed(4200));
/// # Ok::<(), idemstore::ExecuteError<std::io::Error>>(())
/// ```
pub struct Store<K, V, S = RandomState> {
    pub(crate) inner: Arc<Inner<K, V, S>>,
}

impl<K, V, S> Clone for Store<K, V, S> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V, S> fmt::Debug for Store<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.inner.table.len())
            .finish_non_exhaustive()
    }
}

/// How [`Store::execute`] produced its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<V> {
    /// This call ran the operation and stored its result.
    Executed(V),
    /// Another call ran it; this is its stored result (rule 4).
    Replayed(V),
}

impl<V> Outcome<V> {
    /// The value, however it was produced.
    pub fn into_inner(self) -> V {
        match self {
            Outcome::Executed(v) | Outcome::Replayed(v) => v,
        }
    }

    /// Whether the value is a replay of another call's result.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A store with the defaults: completed results kept 24 h, leases of
    /// 60 s, the background sweeper on. If the sweeper thread cannot be
    /// spawned the store still works, sweeping only on demand.
    pub fn new() -> Self {
        Self::builder().build().unwrap_or_else(|_| {
            // Only spawning the sweeper can fail with the defaults.
            let config = Config {
                ttl: duration_to_nanos(DEFAULT_TTL),
                lease: duration_to_nanos(DEFAULT_LEASE),
                shards: default_shards(),
                max_entries: None,
                max_bytes: None,
                initial_capacity: None,
                tokens_from: 0,
                gate: None,
            };
            let clock = StoreClock::exact(Box::new(SystemClock::new()));
            Self::from_parts(config, clock, RandomState::new(), None)
        })
    }

    /// A [`Builder`] to configure a store.
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }
}

impl<K, V> Default for Store<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, S> Store<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// `weigher` is `Some` where bytes are counted.
    pub(crate) fn from_parts(
        config: Config,
        clock: StoreClock,
        hasher: S,
        weigher: Option<Weigher<K, V>>,
    ) -> Self {
        Self::with_journal(
            config,
            clock,
            hasher,
            weigher,
            #[cfg(feature = "journal")]
            None,
        )
    }

    pub(crate) fn with_journal(
        mut config: Config,
        clock: StoreClock,
        hasher: S,
        weigher: Option<Weigher<K, V>>,
        #[cfg(feature = "journal")] journal: Option<crate::journal::Journal<K, V>>,
    ) -> Self {
        Store {
            inner: Arc::new(Inner {
                table: Table::new(&mut config, hasher, weigher),
                clock,
                ttl: config.ttl,
                lease: config.lease,
                #[cfg(feature = "journal")]
                journal,
                #[cfg(not(idemstore_loom))]
                sweeper: crate::sync::OnceLock::new(),
                #[cfg(all(feature = "journal", not(idemstore_loom)))]
                journal_thread: crate::sync::OnceLock::new(),
            }),
        }
    }

    #[cfg(not(idemstore_loom))]
    pub(crate) fn start_sweeper(&self, interval: Duration) -> std::io::Result<()> {
        let thread = crate::sweeper::spawn(&self.inner, interval)?;
        let _ = self.inner.sweeper.set(thread);
        Ok(())
    }

    /// Loom models call [`sweep`](Self::sweep) themselves.
    #[cfg(idemstore_loom)]
    pub(crate) fn start_sweeper(&self, _interval: Duration) -> std::io::Result<()> {
        Ok(())
    }

    fn now(&self) -> u64 {
        self.inner.clock.now()
    }

    /// Claims `key`: the atomic check-and-insert at the heart of the store
    /// (rule 1). Exactly one concurrent caller gets [`Claim::Owner`]; the
    /// others get [`Claim::InFlight`] to wait on, or [`Claim::Completed`]
    /// with the stored value once the owner completed.
    ///
    /// An owner's [`Ticket::token`] is a fencing token larger than that of
    /// every earlier claim of the same key, across takeovers, expiry and
    /// re-claims (rule 10); tokens of two different keys are not ordered.
    ///
    /// Claims without a fingerprint skip the payload check; see
    /// [`claim_with`](Self::claim_with).
    ///
    /// ```
    /// use idemstore::{Claim, Store};
    /// let store: Store<u64, &str> = Store::new();
    /// let Ok(Claim::Owner(ticket)) = store.claim(1) else { unreachable!() };
    /// assert!(matches!(store.claim(1), Ok(Claim::InFlight(_))));
    /// ticket.complete("done").unwrap();
    /// assert!(matches!(store.claim(1), Ok(Claim::Completed("done"))));
    /// ```
    pub fn claim(&self, key: K) -> Result<Claim<K, V, S>, ClaimError> {
        self.claim_inner(Cow::Owned(key), None)
            .map(|claim| self.to_public(claim))
    }

    /// Claims `key` for a request whose payload has `fingerprint`. If the
    /// key is in use (in flight or completed) with a different fingerprint,
    /// the claim fails with [`ClaimError::Mismatch`] and nothing is returned
    /// or stored (rule 5).
    ///
    /// ```
    /// use idemstore::{Claim, ClaimError, Fingerprint, Store};
    /// let store: Store<&str, u32> = Store::new();
    /// let order = Fingerprint::of_bytes(b"2 apples");
    /// let _owner = store.claim_with("k", order)?;
    /// let other = store.claim_with("k", Fingerprint::of_bytes(b"9 pears"));
    /// assert_eq!(other.err(), Some(ClaimError::Mismatch));
    /// # Ok::<(), ClaimError>(())
    /// ```
    pub fn claim_with(
        &self,
        key: K,
        fingerprint: Fingerprint,
    ) -> Result<Claim<K, V, S>, ClaimError> {
        self.claim_inner(Cow::Owned(key), Some(fingerprint))
            .map(|claim| self.to_public(claim))
    }

    /// As [`claim_with`](Self::claim_with), for a caller that keeps `key`
    /// to claim again (the HTTP layer after a released wait): the key is
    /// cloned only if the claim keeps it, never for a replay.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn claim_lent_with(
        &self,
        key: &K,
        fingerprint: Fingerprint,
    ) -> Result<Claim<K, V, S>, ClaimError> {
        self.claim_inner(Cow::Borrowed(key), Some(fingerprint))
            .map(|claim| self.to_public(claim))
    }

    /// The public form of a claim: an owner gets a `Ticket`, which holds its
    /// own handle to the store.
    fn to_public(&self, claim: RawClaim<K, V>) -> Claim<K, V, S> {
        match claim {
            RawClaim::Owner(Owned {
                key,
                hash,
                token,
                fingerprint,
            }) => Claim::Owner(Ticket::new(self.clone(), key, hash, token, fingerprint)),
            RawClaim::Completed(value) => Claim::Completed(value),
            RawClaim::InFlight(pending) => Claim::InFlight(pending),
        }
    }

    /// Every claim. `key` is borrowed where the caller keeps it for a retry
    /// (`execute`, the HTTP layer) and cloned only when the claim keeps a
    /// key of its own: a replay, the duplicate's common path, clones none.
    fn claim_inner(
        &self,
        key: Cow<'_, K>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<RawClaim<K, V>, ClaimError> {
        match self.probe(&key, fingerprint)? {
            Probe::Completed(value) => Ok(RawClaim::Completed(value)),
            Probe::Missed(missed) => self.claim_missed(key, fingerprint, missed),
        }
    }

    /// A claim's lock-free first half: the stored value if `key` is
    /// completed, else what the locked half needs. A replay needs no lock,
    /// as a completed value never changes. Kept apart from the locked half
    /// so that a replay runs in a frame of its own size: with both halves
    /// in one function, a replaying `execute` ran a third more
    /// instructions, most of them saving and restoring the registers the
    /// locked half uses and moving its larger result.
    #[inline(always)]
    fn probe(&self, key: &K, fingerprint: Option<Fingerprint>) -> Result<Probe<'_, V>, ClaimError> {
        let table = &self.inner.table;
        let hash = table.hash(key);
        // Before the pin, so that the bucket's cache miss overlaps the pin.
        table.prefetch_bucket(hash);
        let now = self.now();
        // One pin serves the lookup and the claim after it; the same lookup
        // finds this thread's counts.
        let (guard, counts) = table.pin_counting();
        // Without a fingerprint to compare, the read is `get`'s. A miss is
        // provisional: the locked half decides it.
        let completed = match fingerprint {
            None => table
                .peek(hash, key, now, &guard)
                .map(|value| (value, true)),
            Some(_) => match table.lookup(hash, key, now, fingerprint, Miss::Provisional, &guard) {
                Lookup::Completed(value, agree) => Some((value, agree)),
                Lookup::Absent | Lookup::InFlight => None,
            },
        };
        match completed {
            Some((value, true)) => {
                counts.bump(Event::Replay);
                Ok(Probe::Completed(value))
            }
            Some((_, false)) => {
                counts.bump(Event::Mismatch);
                Err(ClaimError::Mismatch)
            }
            None => Ok(Probe::Missed(Missed {
                hash,
                now,
                guard,
                counts,
            })),
        }
    }

    /// A claim's locked half, after [`probe`](Self::probe) missed.
    #[inline(never)]
    fn claim_missed(
        &self,
        key: Cow<'_, K>,
        fingerprint: Option<Fingerprint>,
        missed: Missed<'_>,
    ) -> Result<RawClaim<K, V>, ClaimError> {
        let table = &self.inner.table;
        let Missed {
            hash,
            now,
            guard,
            counts,
        } = missed;
        let lease_deadline = now.saturating_add(self.inner.lease);
        let claim = |guard: &Guard| {
            table.claim(
                hash,
                K::clone(&key),
                fingerprint,
                now,
                lease_deadline,
                guard,
            )
        };
        let mut claimed = claim(&guard);
        // Full: make room from expired entries, once, before refusing.
        // Unpinned: the sweep pins per step, so a full pass does not hold
        // back the epoch from freeing what its first steps retired.
        drop(guard);
        let full = |claimed: &Result<_, _>| matches!(claimed, Err(ClaimError::Full));
        if full(&claimed) && table.sweep_when_full(now, SWEEP_BUDGET) > 0 {
            claimed = claim(&table.pin());
        }
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                counts.bump(match error {
                    ClaimError::Full | ClaimError::Unavailable => Event::Refusal,
                    ClaimError::Mismatch => Event::Mismatch,
                });
                return Err(error);
            }
        };
        let key = key.into_owned();
        Ok(match claimed {
            Claimed::Owner(token) => {
                counts.bump(Event::Claim);
                RawClaim::Owner(Owned {
                    key,
                    hash,
                    token,
                    fingerprint,
                })
            }
            Claimed::Completed(value) => {
                counts.bump(Event::Replay);
                RawClaim::Completed(value)
            }
            Claimed::InFlight(flight) => RawClaim::InFlight(Pending::new(key, flight)),
        })
    }

    pub(crate) fn complete_token(
        &self,
        owned: (u64, &K, u64, Option<Fingerprint>),
        value: V,
        ttl: Option<u64>,
    ) -> Result<(), CompleteError<V>> {
        let (hash, key, token, _fingerprint) = owned;
        let expires_at = self.now().saturating_add(ttl.unwrap_or(self.inner.ttl));
        // Outside every lock, the journal's included: the weigher is the
        // user's code.
        let weight = self.inner.table.weight(key, &value);
        #[cfg(feature = "journal")]
        if let Some(journal) = &self.inner.journal {
            return self.complete_journaled(journal, owned, value, expires_at, weight);
        }
        self.inner
            .table
            .complete(hash, key, token, value, expires_at, weight)
            .map_err(|Superseded(value)| CompleteError::Superseded(value))
    }

    /// A completion through the journal: its record is written (and its
    /// promise kept) while the entry is still in flight, so nothing sees the
    /// value before it is recorded.
    #[cfg(feature = "journal")]
    fn complete_journaled(
        &self,
        journal: &crate::journal::Journal<K, V>,
        (hash, key, token, fingerprint): (u64, &K, u64, Option<Fingerprint>),
        value: V,
        expires_at: u64,
        weight: Option<usize>,
    ) -> Result<(), CompleteError<V>> {
        use crate::journal::{format, JournalError};
        // Shared until the entry is completed: a compaction waits for the
        // completions recorded before it began (see `journal::compact`).
        let _applying = journal
            .gates
            .applying
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut record = Vec::new();
        let wall = self.inner.clock.wall_at(expires_at);
        let committed = format::complete(
            &mut record,
            token,
            wall,
            fingerprint,
            |out| (journal.encode_key)(key, out),
            |out| (journal.encode_value)(&value, out),
        )
        .map_err(JournalError::from)
        .and_then(|()| journal.log.commit(&record, 1));
        if let Err(error) = committed {
            // Nothing is acknowledged that was not recorded: the key is
            // released, so a retry runs the operation again.
            self.abandon_token(hash, key, token);
            return Err(CompleteError::Journal { value, error });
        }
        match self
            .inner
            .table
            .complete(hash, key, token, value, expires_at, weight)
        {
            Ok(()) => Ok(()),
            Err(Superseded(value)) => {
                // Taken over while the record was written: revoke exactly
                // this token's completion, so a replay does not bring it back.
                record.clear();
                // The key encoded a moment ago, so it encodes again.
                if format::remove(&mut record, token, |out| (journal.encode_key)(key, out)).is_ok()
                {
                    let _ = journal.log.commit(&record, 1);
                }
                Err(CompleteError::Superseded(value))
            }
        }
    }

    pub(crate) fn renew_token(&self, hash: u64, key: &K, token: u64) -> bool {
        let deadline = self.now().saturating_add(self.inner.lease);
        self.inner.table.renew(hash, key, token, deadline)
    }

    pub(crate) fn abandon_token(&self, hash: u64, key: &K, token: u64) {
        self.inner.table.abandon(hash, key, token);
    }

    /// The completed, unexpired value of `key`, read without any lock (only
    /// a miss that overlapped a resize of its shard is confirmed under it).
    /// In-flight, absent and expired keys give `None`.
    ///
    /// ```
    /// use idemstore::{Claim, Store};
    /// let store: Store<String, u32> = Store::new();
    /// if let Ok(Claim::Owner(t)) = store.claim("a".to_string()) {
    ///     t.complete(7).unwrap();
    /// }
    /// assert_eq!(store.get("a"), Some(7)); // borrowed lookup: &str for String
    /// assert_eq!(store.get("b"), None);
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let table = &self.inner.table;
        table.get_one(table.hash(key), key, self.now())
    }

    /// The values of `keys`, in order, each as [`get`](Self::get) would
    /// return it: for a batch of keys, such as the message ids of a batch a
    /// consumer must deduplicate.
    ///
    /// Faster than a `get` per key when the entries are not in cache: it
    /// reads under one pin, and it starts loading a window of keys' buckets,
    /// then their entries, before reading any, so the cache misses of
    /// different keys overlap where one `get` after another would wait for
    /// each in turn. Expiry is checked at each key's read (rule 12).
    ///
    /// ```
    /// use idemstore::Store;
    /// let store: Store<String, u32> = Store::new();
    /// store.execute("a".to_string(), || Ok::<_, ()>(1)).unwrap();
    /// store.execute("c".to_string(), || Ok::<_, ()>(3)).unwrap();
    /// let seen = store.get_many(["a", "b", "c"]);
    /// assert_eq!(seen, [Some(1), None, Some(3)]);
    /// ```
    pub fn get_many<'q, Q>(&self, keys: impl IntoIterator<Item = &'q Q>) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'q,
    {
        self.pin().get_many(keys)
    }

    /// Runs `reads` with a [`Pinned`] handle: a batch of reads under one
    /// pin of the store's epoch, the returned value passed through.
    ///
    /// Each [`get`](Self::get) pins for its own read: a fenced write to this
    /// thread's epoch slot and some 45 instructions, about a quarter of the
    /// read's. [`Pinned::get`] skips both. While `reads` runs, memory the
    /// store retired around or after the pin (removed entries, replaced
    /// arrays) cannot be freed, store-wide;
    /// sweeps still unlink expired entries and release their capacity. So
    /// keep a batch short: a request's reads, not a thread's life. The
    /// handle is only lent to `reads`, so it cannot outlive the call or
    /// leave the thread.
    ///
    /// ```
    /// use idemstore::Store;
    /// let store: Store<u64, u64> = Store::new();
    /// for key in 0..3 {
    ///     store.execute(key, || Ok::<_, ()>(key * 10)).unwrap();
    /// }
    /// let values: Vec<_> = store.pinned(|p| (0..4).map(|key| p.get(&key)).collect());
    /// assert_eq!(values, [Some(0), Some(10), Some(20), None]);
    /// ```
    pub fn pinned<R>(&self, reads: impl FnOnce(&Pinned<'_, K, V, S>) -> R) -> R {
        reads(&self.pin())
    }

    /// Only ever lent out (see [`pinned`](Self::pinned)): a `Pinned` moved
    /// into a thread-local could outlive the thread's epoch handle.
    fn pin(&self) -> Pinned<'_, K, V, S> {
        Pinned {
            store: self,
            guard: self.inner.table.pin(),
        }
    }

    /// The value of `key`, waiting up to `timeout` (real time) if it is in
    /// flight: `Ok(None)` if absent or expired, `Ok(Some(v))` once completed.
    /// Errors if the owner abandons, its lease passes, or the time runs out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemstore::Store;
    /// let store: Store<u64, u64> = Store::new();
    /// assert_eq!(store.get_or_wait(&1, Duration::from_millis(10)), Ok(None));
    /// ```
    pub fn get_or_wait<Q>(&self, key: &Q, timeout: Duration) -> Result<Option<V>, WaitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.join(key) {
            Joined::Absent => Ok(None),
            Joined::Completed(value) => Ok(Some(value)),
            Joined::InFlight(flight) => flight.wait(Some(timeout)).map(Some),
        }
    }

    /// The async twin of [`get_or_wait`](Self::get_or_wait), without a
    /// deadline: wrap it in your runtime's timeout. Cancel-safe: dropping the
    /// future affects neither the owner nor other waiters.
    ///
    /// ```
    /// # futures_lite_block_on(async {
    /// let store: idemstore::Store<u64, u64> = idemstore::Store::new();
    /// assert_eq!(store.get_or_wait_async(&1).await, Ok(None));
    /// # });
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
    /// # }
    /// ```
    pub fn get_or_wait_async<'a, Q>(
        &'a self,
        key: &'a Q,
    ) -> impl Future<Output = Result<Option<V>, WaitError>> + 'a
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let joined = self.join(key);
        async move {
            match joined {
                Joined::Absent => Ok(None),
                Joined::Completed(value) => Ok(Some(value)),
                Joined::InFlight(flight) => WaitFuture::new(flight).await.map(Some),
            }
        }
    }

    fn join<Q>(&self, key: &Q) -> Joined<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let table = &self.inner.table;
        let hash = table.hash(key);
        let now = self.now();
        match table.lookup(hash, key, now, None, Miss::Confirmed, &table.pin()) {
            Lookup::Absent => Joined::Absent,
            Lookup::Completed(value, _) => Joined::Completed(value),
            Lookup::InFlight => table.join(hash, key, now),
        }
    }

    /// Runs `operation` at most once per key: the owner runs it and stores an
    /// `Ok` value; duplicates wait for that value or replay it. An `Err` is
    /// returned to the owner and not stored: the key is released (rule 7),
    /// and a waiting duplicate claims it and runs its own `operation`. A
    /// panic in `operation` releases the key the same way and then
    /// propagates to the caller.
    ///
    /// If the owner's lease passed and another claim took the key over before
    /// the owner finished, the owner still gets `Executed` with its value,
    /// but the stored result is the new owner's: size the lease to the
    /// operation, or renew it with [`claim`](Self::claim) and
    /// [`Ticket::renew`].
    ///
    /// ```
    /// use idemstore::{ExecuteError, Outcome, Store};
    /// let store: Store<u64, String> = Store::new();
    ///
    /// let failed = store.execute(1, || Err::<String, _>("card declined"));
    /// assert_eq!(failed, Err(ExecuteError::Failed("card declined")));
    /// // The error was not stored, so the retry runs:
    /// let ok = store.execute(1, || Ok::<_, &str>("charged".to_string()));
    /// assert_eq!(ok, Ok(Outcome::Executed("charged".to_string())));
    /// ```
    pub fn execute<E, F>(&self, key: K, operation: F) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        // The replay, the duplicate's common path, inline and in a frame of
        // its own size; the rest, which allocates, locks or waits anyway,
        // in a call.
        match self.probe(&key, None)? {
            Probe::Completed(value) => Ok(Outcome::Replayed(value)),
            Probe::Missed(missed) => self.execute_missed(key, operation, missed),
        }
    }

    /// [`execute`](Self::execute) after its first probe missed.
    #[inline(never)]
    fn execute_missed<E, F>(
        &self,
        key: K,
        operation: F,
        missed: Missed<'_>,
    ) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        let mut claimed = self.claim_missed(Cow::Borrowed(&key), None, missed);
        loop {
            match claimed? {
                // The guard exists before the operation runs, so a panic in
                // it abandons the claim.
                RawClaim::Owner(owned) => return Owning::new(self, owned).finish(operation()),
                RawClaim::Completed(value) => return Ok(Outcome::Replayed(value)),
                RawClaim::InFlight(pending) => match pending.wait() {
                    Ok(value) => return Ok(Outcome::Replayed(value)),
                    Err(e) => Self::retry_after(e)?,
                },
            }
            claimed = self.claim_inner(Cow::Borrowed(&key), None);
        }
    }

    /// The async twin of [`execute`](Self::execute): `operation` returns a
    /// future, and duplicates await the owner's result. Cancel-safe:
    /// dropping this future while it owns the key abandons the claim (waking
    /// the duplicates, one of which takes over); dropping it while waiting
    /// only withdraws the wait.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
    /// # }
    /// use idemstore::{Outcome, Store};
    /// let store: Store<u64, u64> = Store::new();
    /// let out = block_on(store.execute_async(9, || async { Ok::<_, ()>(81) }));
    /// assert_eq!(out, Ok(Outcome::Executed(81)));
    /// ```
    pub async fn execute_async<E, F, Fut>(
        &self,
        key: K,
        operation: F,
    ) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        loop {
            match self.claim_inner(Cow::Borrowed(&key), None)? {
                RawClaim::Owner(owned) => {
                    return Owning::new(self, owned).finish(operation().await)
                }
                RawClaim::Completed(value) => return Ok(Outcome::Replayed(value)),
                RawClaim::InFlight(pending) => match pending.into_future().await {
                    Ok(value) => return Ok(Outcome::Replayed(value)),
                    Err(e) => Self::retry_after(e)?,
                },
            }
        }
    }

    /// Whether a failed wait means "claim again" (the key was released).
    fn retry_after<E>(e: WaitError) -> Result<(), ExecuteError<E>> {
        match e {
            WaitError::Abandoned | WaitError::LeaseExpired => Ok(()),
            e => Err(ExecuteError::Wait(e)),
        }
    }

    /// Removes `key` whatever its state; true if a live entry was there. An
    /// in-flight owner's later `complete` is refused as
    /// [`Superseded`](crate::Superseded), and its waiters get
    /// [`WaitError::Abandoned`].
    ///
    /// ```
    /// let store: idemstore::Store<u8, u8> = idemstore::Store::new();
    /// let _ = store.execute(1, || Ok::<_, ()>(1));
    /// assert!(store.remove(&1));
    /// assert!(!store.remove(&1));
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        #[cfg(feature = "journal")]
        if let Some(journal) = &self.inner.journal {
            return self.remove_journaled(journal, key);
        }
        self.inner.table.remove(key, self.now(), |_, _| {})
    }

    /// A removal, then its record: a removal covers every token up to the
    /// one read under the shard lock, so it never voids a later claim's
    /// result, whichever record lands first.
    #[cfg(feature = "journal")]
    fn remove_journaled<Q>(&self, journal: &crate::journal::Journal<K, V>, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut record = Vec::new();
        let live = self.inner.table.remove(key, self.now(), |key, upto| {
            // A removed key was recorded once, so it encodes again.
            let _ = crate::journal::format::remove(&mut record, upto, |out| {
                (journal.encode_key)(key, out)
            });
        });
        if !record.is_empty() {
            if let Err(_error) = journal.log.commit(&record, 1) {
                #[cfg(feature = "tracing")]
                tracing::error!(%_error, "journal: a removal was not recorded; the entry comes back after a restart");
            }
        }
        live
    }

    /// Entries held, in flight or completed, including expired entries not
    /// yet swept (they are invisible to reads).
    pub fn len(&self) -> usize {
        self.inner.table.len()
    }

    /// Whether [`len`](Self::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reclaims every expired entry now, in bounded steps (each shard lock is
    /// held for at most a few hundred buckets), and releases the waiters of
    /// owners whose lease passed. Returns the entries removed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemstore::{ManualClock, Store};
    /// let clock = ManualClock::new();
    /// let store: Store<u8, u8> = Store::builder()
    ///     .clock(clock.clone())
    ///     .background_sweeper(false)
    ///     .build()?;
    /// let _ = store.execute(1, || Ok::<_, ()>(1));
    /// clock.advance(Duration::from_secs(24 * 3600));
    /// assert_eq!((store.len(), store.sweep(), store.len()), (1, 1, 0));
    /// # Ok::<(), idemstore::ConfigError>(())
    /// ```
    pub fn sweep(&self) -> usize {
        self.inner.table.sweep(self.now(), SWEEP_BUDGET)
    }

    /// Puts back a completed entry read from the journal.
    #[cfg(feature = "journal")]
    pub(crate) fn restore(
        &self,
        key: K,
        value: V,
        fingerprint: Option<Fingerprint>,
        expires_at: u64,
    ) -> Result<(), ClaimError> {
        let table = &self.inner.table;
        let hash = table.hash(&key);
        let now = self.now();
        // Past the byte bound too: every entry replayed is a result that
        // was acknowledged, which a completion over the bound stores as well.
        let claimed = table.claim_restoring(
            hash,
            key.clone(),
            fingerprint,
            now,
            now.saturating_add(self.inner.lease),
            &table.pin(),
        );
        if let Claimed::Owner(token) = claimed? {
            let weight = table.weight(&key, &value);
            // Just claimed, with no other handle on the store: current.
            let _ = table.complete(hash, &key, token, value, expires_at, weight);
        }
        // Otherwise there already: a key the journal names once cannot be.
        Ok(())
    }

    /// What opening the journal found: records read, entries restored,
    /// expired ones dropped, and any torn tail or damage cut off. `None`
    /// without a journal.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("idemstore-report-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// # let _ = std::fs::remove_file(dir.join("j"));
    /// let store: idemstore::Store<u64, u64> = idemstore::Store::builder()
    ///     .journal(dir.join("j"))
    ///     .build()?;
    /// let report = store.journal_report().unwrap();
    /// assert_eq!((report.restored, report.torn_tail), (0, None));
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "journal")]
    pub fn journal_report(&self) -> Option<crate::journal::ReplayReport> {
        self.inner.journal.as_ref().map(|j| j.report.clone())
    }

    /// Rewrites the journal now as a snapshot of the live entries (the
    /// background thread does this by itself once dead records outweigh
    /// live ones). Reads and claims go on meanwhile; completions wait only
    /// for the final swap. Does nothing without a journal.
    #[cfg(feature = "journal")]
    pub fn compact_journal(&self) -> Result<(), crate::journal::JournalError> {
        crate::journal::compact(&Arc::downgrade(&self.inner))
    }

    /// A snapshot of the store's counters.
    pub fn stats(&self) -> Stats {
        self.inner.table.stats()
    }

    /// Registered waiters across all flights (for loom models).
    #[cfg(idemstore_loom)]
    #[doc(hidden)]
    pub fn waiters(&self) -> usize {
        self.inner.table.waiters()
    }
}

/// Reads of a [`Store`] under one epoch pin, lent by [`Store::pinned`].
///
/// Only lent: it cannot be kept past the call (nor sent to another thread).
///
/// ```compile_fail
/// let store: idemstore::Store<u64, u64> = idemstore::Store::new();
/// let kept = store.pinned(|pinned| pinned);
/// ```
pub struct Pinned<'a, K, V, S = RandomState> {
    store: &'a Store<K, V, S>,
    guard: Guard,
}

impl<K, V, S> fmt::Debug for Pinned<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

impl<K, V, S> Pinned<'_, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// As [`Store::get`]: the completed, unexpired value of `key`, with
    /// expiry checked against the clock at this read (rule 12).
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, self.store.inner.table.hash(key))
    }

    /// As [`Store::get_many`], under this handle's pin.
    pub fn get_many<'q, Q>(&self, keys: impl IntoIterator<Item = &'q Q>) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'q,
    {
        let table = &self.store.inner.table;
        let mut keys = keys.into_iter();
        let mut values = Vec::with_capacity(keys.size_hint().0);
        let mut window = Vec::with_capacity(GET_MANY_WINDOW);
        loop {
            // Three passes over a window of keys, so that each pass's cache
            // misses overlap instead of following one another: start
            // loading every key's summary and chain head, then (those in)
            // every first node, then read.
            window.clear();
            window.extend(keys.by_ref().take(GET_MANY_WINDOW).map(|key| {
                let hash = table.hash(key);
                table.prefetch_bucket(hash);
                (key, hash)
            }));
            if window.is_empty() {
                return values;
            }
            for &(_, hash) in &window {
                table.prefetch_node(hash, &self.guard);
            }
            values.extend(window.iter().map(|&(key, hash)| self.read(key, hash)));
        }
    }

    /// The read behind `get` and `get_many`: expiry is checked against the
    /// clock now, at this key (rule 12).
    fn read<Q>(&self, key: &Q, hash: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let store = self.store;
        store.inner.table.get(hash, key, store.now(), &self.guard)
    }
}

/// Keys [`Pinned::get_many`] has in flight at once: enough for their misses
/// to cover one another's latency, few enough that the lines loaded first
/// are still in the L1 cache when they are read.
const GET_MANY_WINDOW: usize = 16;

/// A claim's ownership before anything guards it: what a [`Ticket`] or an
/// [`Owning`] is made of. Nothing may run between its making and its guard's.
pub(crate) struct Owned<K> {
    key: K,
    hash: u64,
    token: u64,
    /// The claim's fingerprint, which a journal records with the result.
    fingerprint: Option<Fingerprint>,
}

/// The lock-free half of a claim, [`Store::probe`]: the stored value, or
/// what the locked half needs, pin included.
enum Probe<'a, V> {
    Completed(V),
    Missed(Missed<'a>),
}

/// A probe's miss, handed to [`Store::claim_missed`].
struct Missed<'a> {
    hash: u64,
    now: u64,
    guard: Guard,
    counts: &'a Counts,
}

/// A claim before it reaches the caller.
pub(crate) enum RawClaim<K, V> {
    Owner(Owned<K>),
    Completed(V),
    InFlight(Pending<K, V>),
}

/// An owner's claim inside the store: a [`Ticket`] that borrows the store
/// instead of holding a handle. `execute` owns through this, which saves an
/// `Arc` clone and drop per call, a contended atomic pair when threads
/// share the store. Dropping it (a panic in the operation, a cancelled
/// future) abandons the claim, as dropping a `Ticket` does.
struct Owning<'a, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    store: &'a Store<K, V, S>,
    owned: Owned<K>,
    /// Cleared once the claim is completed.
    live: bool,
}

impl<'a, K, V, S> Owning<'a, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn new(store: &'a Store<K, V, S>, owned: Owned<K>) -> Self {
        Owning {
            store,
            owned,
            live: true,
        }
    }

    /// Completes with the operation's value, or abandons on its error.
    /// Inline: left to itself, the compiler kept it out of `execute_missed`.
    #[inline]
    fn finish<E>(mut self, result: Result<V, E>) -> Result<Outcome<V>, ExecuteError<E>> {
        match result {
            Ok(value) => {
                self.live = false;
                let Owned {
                    key,
                    hash,
                    token,
                    fingerprint,
                } = &self.owned;
                let owned = (*hash, key, *token, *fingerprint);
                match self.store.complete_token(owned, value.clone(), None) {
                    // Superseded: the value stands for this caller but another
                    // owner's result is the stored one (documented above).
                    Ok(()) | Err(CompleteError::Superseded(_)) => Ok(Outcome::Executed(value)),
                    #[cfg(feature = "journal")]
                    Err(CompleteError::Journal { error, .. }) => Err(ExecuteError::Journal(error)),
                }
            }
            // Dropping `self` abandons the claim.
            Err(e) => Err(ExecuteError::Failed(e)),
        }
    }
}

impl<K, V, S> Drop for Owning<'_, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.live {
            let Owned {
                key, hash, token, ..
            } = &self.owned;
            self.store.abandon_token(*hash, key, *token);
        }
    }
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A key that counts its clones: what a `String` key would allocate.
    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.1.fetch_add(1, Ordering::Relaxed);
            Counted(self.0, self.1.clone())
        }
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    impl Eq for Counted {}

    impl Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    #[test]
    fn a_lent_key_is_cloned_only_when_the_claim_keeps_it() {
        let clones = Arc::new(AtomicUsize::new(0));
        let key = Counted(1, clones.clone());
        let fingerprint = Fingerprint::of_bytes(b"body");
        let store: Store<Counted, u8> = Store::new();
        let Ok(Claim::Owner(ticket)) = store.claim_lent_with(&key, fingerprint) else {
            panic!("the first claim owns the key");
        };
        // One copy for the entry, one for the ticket.
        assert_eq!(clones.swap(0, Ordering::Relaxed), 2);
        ticket.complete(7).unwrap();
        assert!(matches!(
            store.claim_lent_with(&key, fingerprint),
            Ok(Claim::Completed(7))
        ));
        assert_eq!(clones.load(Ordering::Relaxed), 0, "a replay cloned the key");
    }

    /// A replay, the duplicate's common path, copies nothing of the key: for a
    /// `String` key a clone would be an allocation per duplicate. The first
    /// execution keeps one copy in the entry and one for its owner.
    #[test]
    fn execute_clones_the_key_only_to_store_it() {
        let clones = Arc::new(AtomicUsize::new(0));
        let key = |n| Counted(n, clones.clone());
        let store: Store<Counted, u64> = Store::new();
        assert_eq!(
            store.execute(key(7), || Ok::<_, ()>(49)),
            Ok(Outcome::Executed(49))
        );
        assert_eq!(clones.swap(0, Ordering::Relaxed), 2);
        for _ in 0..3 {
            assert_eq!(
                store.execute(key(7), || Ok::<_, ()>(0)),
                Ok(Outcome::Replayed(49))
            );
        }
        assert_eq!(clones.load(Ordering::Relaxed), 0, "a replay cloned the key");
        let flight = store.claim(key(8));
        assert!(matches!(flight, Ok(Claim::Owner(_))));
        assert_eq!(clones.load(Ordering::Relaxed), 1, "a claim keeps one copy");
    }
}
