//! Time for TTLs and leases: one injectable, monotonic clock.
//!
//! Every deadline in the store is a count of nanoseconds on the store's
//! [`Clock`]. Waiting callers block in real time (a wait deadline is how long
//! *they* are willing to block), but whether an entry has expired or a lease
//! has passed is always decided by this clock, so tests drive time with
//! [`ManualClock`] instead of sleeping.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::sync::{Arc, ClockCell, Ordering};

/// A monotonic source of time for a [`Store`](crate::Store).
///
/// `now` returns the time elapsed since an arbitrary, fixed origin. It must
/// never go backwards; it may jump forward (a suspended machine, a test
/// advancing time), and the store then treats everything that expired in the
/// jump as expired.
///
/// ```
/// use std::time::Duration;
/// use idemstore::Clock;
///
/// /// A clock frozen at one instant.
/// struct Frozen;
/// impl Clock for Frozen {
///     fn now(&self) -> Duration {
///         Duration::from_secs(7)
///     }
/// }
/// let store = idemstore::Store::<u64, u64>::builder().clock(Frozen).build()?;
/// # Ok::<(), idemstore::ConfigError>(())
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// The wall-clock time now. A journal writes expiry as wall time, which
    /// outlives the process, where [`now`](Self::now)'s origin does not;
    /// only a journaled store asks. The default is the system's clock.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The default clock: the operating system's monotonic clock
/// ([`Instant`]), measured from the moment the clock was created.
///
/// ```
/// use idemstore::{Clock, SystemClock};
/// let clock = SystemClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: for tests of TTLs and leases.
///
/// Clones share one time, so a test keeps a clone and hands another to the
/// store with [`Builder::clock`](crate::Builder::clock).
///
/// ```
/// use std::time::Duration;
/// use idemstore::{Claim, ManualClock, Store};
///
/// let clock = ManualClock::new();
/// let store: Store<&str, u32> = Store::builder()
///     .ttl(Duration::from_secs(10))
///     .lease(Duration::from_secs(1))
///     .clock(clock.clone())
///     .build()?;
/// if let Ok(Claim::Owner(ticket)) = store.claim("k") {
///     ticket.complete(1).unwrap();
/// }
/// assert_eq!(store.get("k"), Some(1));
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(store.get("k"), None); // expired, even before any sweep
/// # Ok::<(), idemstore::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ManualClock {
    nanos: Arc<ClockCell>,
    /// The wall time at zero: [`wall`](Clock::wall) moves with `now`.
    wall_origin: SystemTime,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at zero, whose wall time starts at 2020-01-01
    /// 00:00:00 UTC (fixed, so a test's wall times repeat run to run).
    pub fn new() -> Self {
        Self::with_wall(SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800))
    }

    /// A clock standing at zero, whose wall time starts at `wall`: for tests
    /// of a journal across restarts, where each new store's clock must go on
    /// from the wall time the last one stopped at.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use idemstore::{Clock, ManualClock};
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    /// let clock = ManualClock::with_wall(start);
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(clock.wall(), start + Duration::from_secs(5));
    /// ```
    pub fn with_wall(wall: SystemTime) -> Self {
        ManualClock {
            nanos: Arc::new(ClockCell::new(0)),
            wall_origin: wall,
        }
    }

    /// Moves time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = duration_to_nanos(by);
        // Relaxed: the clock orders nothing by itself. A test that advances
        // time and then hands work to another thread synchronises through
        // that hand-off (a channel, a join, the store's own locks).
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn wall(&self) -> SystemTime {
        self.wall_origin + self.now()
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, duration_to_nanos)
}

/// Nanoseconds in `d`, saturating instead of wrapping.
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How often the sweeper thread refreshes a cached clock.
#[cfg(not(idemstore_loom))]
pub(crate) const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// The store's view of its clock: deadlines as nanoseconds.
///
/// Reading the system clock costs about as much as a whole lookup, so a
/// store on the default clock with a background sweeper reads a cached time
/// instead, which the sweeper thread refreshes every [`CLOCK_TICK`]: expiry
/// is then checked on every read against a monotonic clock of 1 ms
/// resolution. Any other clock (a `ManualClock`, a user's) is read exactly.
pub(crate) struct StoreClock {
    source: Box<dyn Clock>,
    /// The cached time, when the sweeper ticks it.
    cached: Option<ClockCell>,
}

impl StoreClock {
    /// Reads `source` on every call.
    pub(crate) fn exact(source: Box<dyn Clock>) -> Self {
        StoreClock {
            source,
            cached: None,
        }
    }

    /// Reads a cached copy of `source` that [`tick`](Self::tick) refreshes.
    pub(crate) fn cached(source: Box<dyn Clock>) -> Self {
        let now = duration_to_nanos(source.now());
        StoreClock {
            source,
            cached: Some(ClockCell::new(now)),
        }
    }

    #[cfg(not(idemstore_loom))] // Only the sweeper thread asks.
    pub(crate) fn is_cached(&self) -> bool {
        self.cached.is_some()
    }

    /// Inline across crates: every operation reads the time from generic
    /// code, instantiated in the caller's crate, where a call to a plain
    /// function stays a call.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.cached {
            // Relaxed: the cached time orders nothing; `fetch_max` keeps it
            // monotonic, and coherence keeps each reader's view monotonic.
            Some(cached) => cached.load(Ordering::Relaxed),
            None => duration_to_nanos(self.source.now()),
        }
    }

    /// The source's wall time now.
    #[cfg_attr(not(feature = "journal"), allow(dead_code))]
    pub(crate) fn wall(&self) -> SystemTime {
        self.source.wall()
    }

    /// The wall time (ns since the Unix epoch) of the store-clock instant
    /// `at`, which is at or after now.
    #[cfg_attr(not(feature = "journal"), allow(dead_code))]
    pub(crate) fn wall_at(&self, at: u64) -> u64 {
        let now = self.now();
        unix_nanos(self.source.wall()).saturating_add(at.saturating_sub(now))
    }

    /// Refreshes the cached time from the source.
    #[cfg(not(idemstore_loom))] // Only the sweeper thread ticks.
    pub(crate) fn tick(&self) {
        if let Some(cached) = &self.cached {
            cached.fetch_max(duration_to_nanos(self.source.now()), Ordering::Relaxed);
        }
    }
}
