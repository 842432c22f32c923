//! [`Builder`]: every setting validated in one place.

use std::marker::PhantomData;
use std::time::Duration;

use ahash::RandomState;

use crate::clock::{duration_to_nanos, Clock, StoreClock, SystemClock};
use crate::error::ConfigError;
use crate::store::{Config, Store};
use crate::table::Weigher;

/// Configures and builds a [`Store`]. Every setter takes and returns the
/// builder, so calls chain; [`build`](Self::build) checks the settings and
/// reports a bad one as a [`ConfigError`], never a panic.
///
/// | setting | default |
/// |---|---|
/// | [`ttl`](Self::ttl) (retention of completed results) | 24 h, or the lease if that was set longer |
/// | [`lease`](Self::lease) (how long an owner may run) | 60 s, or the TTL if that is shorter |
/// | [`max_entries`](Self::max_entries) | unbounded |
/// | [`max_bytes`](Self::max_bytes) | unbounded |
/// | [`weigher`](Self::weigher) | `size_of` the key and the value; for an `HttpStore`, its status, headers, body and key |
/// | [`initial_capacity`](Self::initial_capacity) | 16 buckets per shard |
/// | [`shards`](Self::shards) | 4 × cores, rounded up to a power of two |
/// | [`sweep_interval`](Self::sweep_interval) | 1 s, or the lease if that is shorter (at least 1 ms) |
/// | [`background_sweeper`](Self::background_sweeper) | on |
/// | [`clock`](Self::clock) | [`SystemClock`] |
/// | [`hasher`](Self::hasher) | `ahash::RandomState` |
///
/// A default never makes a setting you chose fail: each one that depends
/// on another follows it. Only settings you chose yourself can conflict,
/// such as a lease set longer than a TTL set
/// ([`ConfigError::LeaseLongerThanTtl`]).
///
/// ```
/// use std::time::Duration;
/// use idemstore::{ConfigError, Store};
///
/// // A short TTL alone is valid: the lease follows it down to 10 s.
/// let short: Store<u64, u64> = Store::builder().ttl(Duration::from_secs(10)).build()?;
///
/// let store: Store<String, Vec<u8>> = Store::builder()
///     .ttl(Duration::from_secs(3600))
///     .lease(Duration::from_secs(30))
///     .max_entries(100_000)
///     .build()?;
///
/// let bad = Store::<u64, u64>::builder().shards(3).build();
/// assert_eq!(bad.err(), Some(ConfigError::Shards(3)));
/// # Ok::<(), ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V, S = RandomState> {
    /// `None` until set: the defaults of `ttl`, `lease` and
    /// `sweep_interval` follow the settings the user chose.
    ttl: Option<Duration>,
    lease: Option<Duration>,
    max_entries: Option<usize>,
    max_bytes: Option<usize>,
    weigher: Option<Weigher<K, V>>,
    initial_capacity: Option<usize>,
    shards: Option<usize>,
    sweep_interval: Option<Duration>,
    background_sweeper: bool,
    clock: Option<Box<dyn Clock>>,
    hasher: S,
    #[cfg(feature = "journal")]
    pub(crate) journal: crate::journal::Setup<K, V>,
    types: PhantomData<fn() -> (K, V)>,
}

pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest default sweep interval, however short the lease: the
/// cached clock's tick.
const MIN_DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_millis(1);

impl<K, V> Builder<K, V> {
    pub(crate) fn new() -> Self {
        Builder {
            ttl: None,
            lease: None,
            max_entries: None,
            max_bytes: None,
            weigher: None,
            initial_capacity: None,
            shards: None,
            sweep_interval: None,
            background_sweeper: true,
            clock: None,
            hasher: RandomState::new(),
            #[cfg(feature = "journal")]
            journal: crate::journal::Setup::default(),
            types: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// How long a completed result is replayed, counted from completion
    /// (rule 11). Deadlines saturate at about 146 years.
    /// [`Ticket::complete_with_ttl`](crate::Ticket::complete_with_ttl)
    /// overrides it per entry.
    ///
    /// Default: 24 h, or the [`lease`](Self::lease) if one was set longer.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long an owner holds a claim before a new claim may take the key
    /// over. Owners extend it with [`Ticket::renew`](crate::Ticket::renew).
    ///
    /// Default: 60 s, or the [`ttl`](Self::ttl) if that is shorter. A lease
    /// set longer than a TTL set is a
    /// [`ConfigError::LeaseLongerThanTtl`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemstore::{ConfigError, Store};
    ///
    /// let bad = Store::<u8, u8>::builder()
    ///     .ttl(Duration::from_secs(10))
    ///     .lease(Duration::from_secs(30))
    ///     .build();
    /// assert_eq!(bad.err(), Some(ConfigError::LeaseLongerThanTtl));
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The most entries (in flight or completed) the store holds. A claim
    /// that would exceed it first sweeps expired entries, then is refused
    /// with [`ClaimError::Full`](crate::ClaimError::Full); nothing live is
    /// evicted.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = Some(max);
        self
    }

    /// The most bytes the completed entries may weigh, as the
    /// [`weigher`](Self::weigher) counts them, before new claims are
    /// refused with [`ClaimError::Full`](crate::ClaimError::Full).
    ///
    /// A claim is admitted only while the store weighs less than `max`
    /// (as with `max_entries`, a claim that would be refused first sweeps
    /// expired entries). A completion is always stored, even if it takes
    /// the store over the bound: its operation already ran, and dropping its
    /// result would let a retry run it again. So the store weighs less than
    /// `max` plus the weights of the completions of the claims that were in
    /// flight when it reached the bound: with the HTTP layer, at most the
    /// requests in flight times (`max_stored_bytes` plus their headers and
    /// key). In-flight entries hold no value, so they weigh nothing here;
    /// [`max_entries`](Self::max_entries) bounds them. Expiry, removal and
    /// sweeping give an entry's bytes back; a journal's replay counts them
    /// (and restores every entry, even past the bound).
    /// [`Stats::bytes`](crate::Stats::bytes) reports the weight held.
    ///
    /// ```
    /// use idemstore::{Claim, ClaimError, Store};
    /// let store = Store::<u64, Vec<u8>>::builder()
    ///     .max_bytes(1024)
    ///     .weigher(|_key, value| 8 + value.len())
    ///     .build()?;
    /// let Ok(Claim::Owner(ticket)) = store.claim(1) else { unreachable!() };
    /// ticket.complete(vec![0; 2000]).unwrap(); // stored, over the bound
    /// assert_eq!(store.stats().bytes, 2008);
    /// assert_eq!(store.claim(2).err(), Some(ClaimError::Full));
    /// assert!(store.remove(&1));
    /// assert_eq!(store.stats().bytes, 0);
    /// assert!(matches!(store.claim(2), Ok(Claim::Owner(_))));
    /// # Ok::<(), idemstore::ConfigError>(())
    /// ```
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = Some(max);
        self
    }

    /// What a completed entry weighs against [`max_bytes`](Self::max_bytes):
    /// a function of its key and value, such as their heap bytes. Setting
    /// one without a bound counts [`Stats::bytes`](crate::Stats::bytes)
    /// without refusing anything.
    ///
    /// It must be a pure function of the key and value: an entry is weighed
    /// when it is completed and again when it goes (expiry, removal, a
    /// sweep), and the second weight is taken off the count. It runs outside
    /// every lock, once per completion and once per completed entry that
    /// goes; a store that sets neither this nor `max_bytes` never runs one.
    ///
    /// Default: `size_of::<K>() + size_of::<V>()`, which counts no heap
    /// bytes. For an `HttpStore` (`Store<RequestKey, StoredResponse>`,
    /// feature `tower`) the default is `http::weigh` instead: the stored
    /// status, headers and body, and the key's strings.
    ///
    /// ```
    /// use idemstore::Store;
    /// let store = Store::<String, String>::builder()
    ///     .weigher(|key, value| key.len() + value.len())
    ///     .build()?;
    /// store.execute("k".to_string(), || Ok::<_, ()>("four".to_string())).unwrap();
    /// assert_eq!((store.stats().bytes, store.stats().max_bytes), (5, None));
    /// # Ok::<(), idemstore::ConfigError>(())
    /// ```
    pub fn weigher<F>(mut self, weigher: F) -> Self
    where
        F: Fn(&K, &V) -> usize + Send + Sync + 'static,
    {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// Entries to make room for up front, so the table does not resize while
    /// it fills to that size. It still grows beyond it as needed.
    pub fn initial_capacity(mut self, entries: usize) -> Self {
        self.initial_capacity = Some(entries);
        self
    }

    /// The number of lock shards: a power of two from 1 to 65 536.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How often the background sweeper reclaims expired entries and
    /// releases the waiters of owners whose lease passed.
    ///
    /// Default: 1 s, or the lease if that is shorter (but at least 1 ms),
    /// so that a waiter on an owner whose lease passed is released within
    /// about one more lease.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = Some(interval);
        self
    }

    /// Whether to run the background sweeper thread. Without it, expired
    /// entries stay invisible but keep their memory until
    /// [`Store::sweep`](crate::Store::sweep) or a claim on the same key.
    pub fn background_sweeper(mut self, on: bool) -> Self {
        self.background_sweeper = on;
        self
    }

    /// The clock for TTLs and leases, such as a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// The hasher that spreads keys over shards and buckets.
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            ttl: self.ttl,
            lease: self.lease,
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            weigher: self.weigher,
            initial_capacity: self.initial_capacity,
            shards: self.shards,
            sweep_interval: self.sweep_interval,
            background_sweeper: self.background_sweeper,
            clock: self.clock,
            hasher,
            #[cfg(feature = "journal")]
            journal: self.journal,
            types: PhantomData,
        }
    }

    /// The settings as chosen, with each default filled in from them.
    fn validate(&self) -> Result<Settings, ConfigError> {
        let (ttl, lease) = ttl_and_lease(self.ttl, self.lease)?;
        if self.max_entries == Some(0) {
            return Err(ConfigError::ZeroMaxEntries);
        }
        if self.max_bytes == Some(0) {
            return Err(ConfigError::ZeroMaxBytes);
        }
        let sweep_interval = match self.sweep_interval {
            Some(interval) if interval.is_zero() => return Err(ConfigError::ZeroSweepInterval),
            Some(interval) => interval,
            None => lease.clamp(MIN_DEFAULT_SWEEP_INTERVAL, DEFAULT_SWEEP_INTERVAL),
        };
        let shards = self.shards.unwrap_or_else(default_shards);
        if shards == 0 || !shards.is_power_of_two() || shards > 1 << 16 {
            return Err(ConfigError::Shards(shards));
        }
        Ok(Settings {
            ttl,
            lease,
            sweep_interval,
            shards,
        })
    }
}

impl<K, V, S> Builder<K, V, S>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: std::hash::BuildHasher + Send + Sync + 'static,
{
    /// Checks the settings and builds the store (starting its sweeper).
    pub fn build(self) -> Result<Store<K, V, S>, ConfigError> {
        let settings = self.validate()?;
        let config = Config {
            ttl: duration_to_nanos(settings.ttl),
            lease: duration_to_nanos(settings.lease),
            shards: settings.shards,
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            initial_capacity: self.initial_capacity,
            tokens_from: 0,
            gate: None,
        };
        // Bytes are counted once either is set; a bound alone weighs with
        // the default weigher.
        let weigher = match (self.weigher, self.max_bytes) {
            (Some(weigher), _) => Some(weigher),
            (None, Some(_)) => Some(default_weigher::<K, V>()),
            (None, None) => None,
        };
        let clock = match self.clock {
            Some(clock) => StoreClock::exact(clock),
            // The sweeper thread keeps a cached system time fresh.
            None if self.background_sweeper => StoreClock::cached(Box::new(SystemClock::new())),
            None => StoreClock::exact(Box::new(SystemClock::new())),
        };
        #[cfg(feature = "journal")]
        let store = self.journal.build(config, clock, self.hasher, weigher)?;
        #[cfg(not(feature = "journal"))]
        let store = Store::from_parts(config, clock, self.hasher, weigher);
        if self.background_sweeper {
            store
                .start_sweeper(settings.sweep_interval)
                .map_err(|e| ConfigError::Spawn(e.to_string()))?;
        }
        Ok(store)
    }
}

/// The TTL and the lease as chosen, each default filled in from the
/// other; shared by every store's builder. A default gives way to the
/// setting it would conflict with; only two settings the user chose can
/// conflict.
pub(crate) fn ttl_and_lease(
    ttl: Option<Duration>,
    lease: Option<Duration>,
) -> Result<(Duration, Duration), ConfigError> {
    if ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Err(ConfigError::ZeroTtl);
    }
    if lease.is_some_and(|lease| lease.is_zero()) {
        return Err(ConfigError::ZeroLease);
    }
    Ok(match (ttl, lease) {
        (Some(ttl), Some(lease)) if lease > ttl => return Err(ConfigError::LeaseLongerThanTtl),
        (Some(ttl), Some(lease)) => (ttl, lease),
        (Some(ttl), None) => (ttl, DEFAULT_LEASE.min(ttl)),
        (None, Some(lease)) => (DEFAULT_TTL.max(lease), lease),
        (None, None) => (DEFAULT_TTL, DEFAULT_LEASE),
    })
}

/// What [`Builder::validate`] settled on, defaults filled in.
struct Settings {
    ttl: Duration,
    lease: Duration,
    sweep_interval: Duration,
    shards: usize,
}

/// The weigher of a store that set `max_bytes` and no weigher: the HTTP
/// layer's for its own types, `size_of` the key and value otherwise.
fn default_weigher<K: 'static, V: 'static>() -> Weigher<K, V> {
    #[cfg(feature = "tower")]
    if let Some(weigher) = crate::http::default_weigher::<K, V>() {
        return weigher;
    }
    Box::new(|_, _| size_of::<K>() + size_of::<V>())
}

pub(crate) fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 4).next_power_of_two().min(1 << 16)
}
