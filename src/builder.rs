//! [`Builder`]: every setting validated in one place.

use std::marker::PhantomData;
use std::time::Duration;

use ahash::RandomState;

use crate::clock::{duration_to_nanos, Clock, StoreClock, SystemClock};
use crate::error::ConfigError;
use crate::store::{Config, Store};

/// Configures and builds a [`Store`]. Every setter takes and returns the
/// builder, so calls chain; [`build`](Self::build) checks the settings and
/// reports a bad one as a [`ConfigError`], never a panic.
///
/// | setting | default |
/// |---|---|
/// | [`ttl`](Self::ttl) (retention of completed results) | 24 h |
/// | [`lease`](Self::lease) (how long an owner may run) | 60 s |
/// | [`max_entries`](Self::max_entries) | unbounded |
/// | [`initial_capacity`](Self::initial_capacity) | 16 buckets per shard |
/// | [`shards`](Self::shards) | 4 × cores, rounded up to a power of two |
/// | [`sweep_interval`](Self::sweep_interval) | 1 s |
/// | [`background_sweeper`](Self::background_sweeper) | on |
/// | [`clock`](Self::clock) | [`SystemClock`] |
/// | [`hasher`](Self::hasher) | `ahash::RandomState` |
///
/// ```
/// use std::time::Duration;
/// use idemstore::{ConfigError, Store};
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
    ttl: Duration,
    lease: Duration,
    max_entries: Option<usize>,
    initial_capacity: Option<usize>,
    shards: Option<usize>,
    sweep_interval: Duration,
    background_sweeper: bool,
    clock: Option<Box<dyn Clock>>,
    hasher: S,
    types: PhantomData<fn() -> (K, V)>,
}

pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl<K, V> Builder<K, V> {
    pub(crate) fn new() -> Self {
        Builder {
            ttl: DEFAULT_TTL,
            lease: DEFAULT_LEASE,
            max_entries: None,
            initial_capacity: None,
            shards: None,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            background_sweeper: true,
            clock: None,
            hasher: RandomState::new(),
            types: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// How long a completed result is replayed, counted from completion
    /// (rule 11). Deadlines saturate at about 146 years. [`Ticket::complete_with_ttl`](crate::Ticket::complete_with_ttl)
    /// overrides it per entry.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an owner holds a claim before a new claim may take the key
    /// over. Must not exceed `ttl`. Owners extend it with
    /// [`Ticket::renew`](crate::Ticket::renew).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
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
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
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
            initial_capacity: self.initial_capacity,
            shards: self.shards,
            sweep_interval: self.sweep_interval,
            background_sweeper: self.background_sweeper,
            clock: self.clock,
            hasher,
            types: PhantomData,
        }
    }

    fn validate(&self) -> Result<usize, ConfigError> {
        if self.ttl.is_zero() {
            return Err(ConfigError::ZeroTtl);
        }
        if self.lease.is_zero() {
            return Err(ConfigError::ZeroLease);
        }
        if self.lease > self.ttl {
            return Err(ConfigError::LeaseLongerThanTtl);
        }
        if self.max_entries == Some(0) {
            return Err(ConfigError::ZeroMaxEntries);
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::ZeroSweepInterval);
        }
        let shards = self.shards.unwrap_or_else(default_shards);
        if shards == 0 || !shards.is_power_of_two() || shards > 1 << 16 {
            return Err(ConfigError::Shards(shards));
        }
        Ok(shards)
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
        let shards = self.validate()?;
        let config = Config {
            ttl: duration_to_nanos(self.ttl),
            lease: duration_to_nanos(self.lease),
            shards,
            max_entries: self.max_entries,
            initial_capacity: self.initial_capacity,
        };
        let clock = match self.clock {
            Some(clock) => StoreClock::exact(clock),
            // The sweeper thread keeps a cached system time fresh.
            None if self.background_sweeper => StoreClock::cached(Box::new(SystemClock::new())),
            None => StoreClock::exact(Box::new(SystemClock::new())),
        };
        let store = Store::from_parts(config, clock, self.hasher);
        if self.background_sweeper {
            store
                .start_sweeper(self.sweep_interval)
                .map_err(|e| ConfigError::Spawn(e.to_string()))?;
        }
        Ok(store)
    }
}

pub(crate) fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 4).next_power_of_two().min(1 << 16)
}
