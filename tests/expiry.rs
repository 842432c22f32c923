//! Retention, expiry, sweeping, capacity and time: rules 11-14 and 18 of
//! `docs/semantics.md`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{manual_builder, manual_store, wait_until, LEASE, TTL};
use idemstore::{Claim, ClaimError, ConfigError, ManualClock, Outcome, Store};

/// Rule 11: retention counts from completion, not from the claim.
#[test]
fn retention_counts_from_completion() {
    let (store, clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    clock.advance(LEASE / 2);
    ticket.complete(1).expect("complete");
    clock.advance(TTL - Duration::from_nanos(1));
    assert_eq!(store.get(&1), Some(1), "TTL counted from completion");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.get(&1), None);
}

/// Rule 11: a per-entry TTL overrides the store default.
#[test]
fn per_entry_ttl_overrides_the_default() {
    let (store, clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(short)) = store.claim(1) else {
        panic!("owner")
    };
    short
        .complete_with_ttl(1, Duration::from_secs(1))
        .expect("complete");
    let Ok(Claim::Owner(long)) = store.claim(2) else {
        panic!("owner")
    };
    long.complete_with_ttl(2, TTL * 3).expect("complete");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.get(&1), None);
    clock.advance(TTL);
    assert_eq!(store.get(&2), Some(2));
}

/// Rule 12: an expired entry is invisible before any sweep, and a claim on
/// it is a first request.
#[test]
fn expired_entries_are_invisible_before_any_sweep() {
    let (store, clock) = manual_store::<u8, u8>();
    assert_eq!(
        store.execute(1, || Ok::<_, ()>(1)),
        Ok(Outcome::Executed(1))
    );
    clock.advance(TTL);
    assert_eq!(store.len(), 1, "not swept yet");
    assert_eq!(store.get(&1), None);
    assert_eq!(store.get_or_wait(&1, Duration::ZERO), Ok(None));
    assert!(!store.remove(&1), "an expired entry counts as absent");
    assert_eq!(
        store.execute(1, || Ok::<_, ()>(2)),
        Ok(Outcome::Executed(2)),
        "a first request"
    );
    assert_eq!(store.get(&1), Some(2));
}

/// Rule 12: expiry replaced in place by a new claim is counted.
#[test]
fn claim_over_expired_entry_counts_an_expiration() {
    let (store, clock) = manual_store::<u8, u8>();
    let _ = store.execute(1, || Ok::<_, ()>(1));
    clock.advance(TTL);
    assert!(matches!(store.claim(1), Ok(Claim::Owner(_))));
    assert_eq!(store.stats().expirations, 1);
}

/// Rule 13: `sweep` reclaims expired entries and never a live one, in flight
/// or completed.
#[test]
fn sweep_reclaims_only_expired_entries() {
    let (store, clock) = manual_store::<u32, u32>();
    for key in 0..1000 {
        let _ = store.execute(key, || Ok::<_, ()>(key));
    }
    clock.advance(TTL - LEASE);
    let Ok(Claim::Owner(in_flight)) = store.claim(5000) else {
        panic!("owner")
    };
    let _ = store.execute(5001, || Ok::<_, ()>(1));
    clock.advance(LEASE - Duration::from_nanos(1));
    assert_eq!(store.sweep(), 0, "nothing expired yet");
    in_flight
        .renew()
        .expect("keep the claim's lease live past the sweep");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.sweep(), 1000);
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&5001), Some(1));
    in_flight
        .complete(7)
        .expect("the live claim survived the sweep");
    let stats = store.stats();
    assert_eq!(
        (stats.entries, stats.in_flight, stats.expirations),
        (2, 0, 1000)
    );
}

/// Rule 13: a sweep skips shards where nothing can have expired, judged by
/// the earliest deadline it knows. A completion with a short TTL after a
/// pass must lower that floor, or the sweep would skip the entry it
/// expires.
#[test]
fn sweeps_reclaim_entries_whose_deadline_moved_after_a_pass() {
    let clock = ManualClock::new();
    let store: Store<u8, u8> = manual_builder(&clock)
        .shards(1)
        .build()
        .expect("valid config");
    let _ = store.execute(1, || Ok::<_, ()>(1));
    let Ok(Claim::Owner(owner)) = store.claim(2) else {
        panic!("owner")
    };
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.sweep(), 0, "a pass: floor at key 2's lease");
    owner
        .complete_with_ttl(2, Duration::from_secs(1))
        .expect("complete");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.get(&2), None, "key 2 expired, well before its lease");
    assert_eq!(store.sweep(), 1, "and is swept");
    assert_eq!(store.get(&1), Some(1));
}

/// Rule 13: the background sweeper reclaims memory while the store is idle,
/// and stops when the last handle drops (it holds only a weak reference, so
/// the values are dropped).
#[test]
fn background_sweeper_runs_while_idle_and_stops_with_the_store() {
    let clock = ManualClock::new();
    // Every stored value is a clone of `token`: its strong count, less our
    // own, is the number of values alive.
    let token = Arc::new(());
    let live = || Arc::strong_count(&token) - 1;
    let store: Store<u32, Arc<()>> = Store::builder()
        .ttl(TTL)
        .lease(LEASE)
        .clock(clock.clone())
        .sweep_interval(Duration::from_millis(1))
        .build()
        .expect("config");
    for key in 0..100 {
        let _ = store.execute(key, || Ok::<_, ()>(token.clone()));
    }
    // Growing a shard copies its nodes and retires the old copies through
    // the epoch, so more than 100 values may be alive for a while.
    assert!(live() >= 100);
    clock.advance(TTL);
    wait_until("the idle store is swept", || store.is_empty());
    // `Stats` is not atomic across fields: the count may trail `is_empty`.
    wait_until("expirations are counted", || {
        store.stats().expirations == 100
    });

    // Values retired through the epoch may wait in a thread's local bag
    // while the store lives; dropping the store frees every one of them.
    let _ = store.execute(1, || Ok::<_, ()>(token.clone()));
    drop(store);
    wait_until("the dropped store frees its values", || live() == 0);
}

/// Rule 14: a full store refuses new claims and evicts nothing live.
#[test]
fn full_store_refuses_instead_of_evicting() {
    let clock = ManualClock::new();
    let store: Store<u8, u8> = manual_builder(&clock)
        .max_entries(2)
        .build()
        .expect("config");
    let Ok(Claim::Owner(in_flight)) = store.claim(1) else {
        panic!("owner")
    };
    let _ = store.execute(2, || Ok::<_, ()>(2));
    assert_eq!(store.claim(3).err(), Some(ClaimError::Full));
    assert_eq!(
        store.execute(3, || Ok::<_, ()>(3)).err(),
        Some(idemstore::ExecuteError::Claim(ClaimError::Full))
    );
    assert_eq!(store.stats().refusals, 2);
    assert_eq!(store.get(&2), Some(2), "nothing evicted");
    assert!(matches!(store.claim(1), Ok(Claim::InFlight(_))));
    // Once an entry expires, a claim makes room from it.
    clock.advance(TTL);
    in_flight.renew().ok(); // lease passed; the in-flight slot is claimable too
    assert!(matches!(store.claim(3), Ok(Claim::Owner(_))));
}

/// Rule 14: releasing a claim frees its slot.
#[test]
fn abandoned_and_removed_entries_free_their_slot() {
    let store: Store<u8, u8> = Store::builder()
        .max_entries(1)
        .background_sweeper(false)
        .build()
        .expect("config");
    let Ok(Claim::Owner(t)) = store.claim(1) else {
        panic!("owner")
    };
    drop(t);
    let _ = store.execute(2, || Ok::<_, ()>(2));
    assert!(store.remove(&2));
    assert!(matches!(store.claim(3), Ok(Claim::Owner(_))));
}

/// Rule 18: a clock that jumps far forward, and extreme durations, neither
/// overflow nor panic; everything simply expires.
#[test]
fn extreme_times_saturate() {
    let clock = ManualClock::new();
    let store: Store<u8, u8> = Store::builder()
        .ttl(Duration::MAX)
        .lease(Duration::MAX)
        .clock(clock.clone())
        .background_sweeper(false)
        .build()
        .expect("config");
    let _ = store.execute(1, || Ok::<_, ()>(1));
    // Deadlines saturate at about 73 years of clock time.
    clock.advance(Duration::from_secs(3600 * 24 * 365 * 70));
    assert_eq!(
        store.get(&1),
        Some(1),
        "a saturated TTL outlives any process"
    );
    let (short, short_clock) = manual_store::<u8, u8>();
    let _ = short.execute(1, || Ok::<_, ()>(1));
    short_clock.advance(Duration::MAX);
    short_clock.advance(Duration::MAX);
    assert_eq!(short.get(&1), None);
    assert_eq!(short.sweep(), 1);
}

/// The builder refuses invalid settings with a clear error.
#[test]
fn invalid_settings_are_errors() {
    let b = || Store::<u8, u8>::builder();
    assert_eq!(
        b().ttl(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroTtl)
    );
    assert_eq!(
        b().lease(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroLease)
    );
    assert_eq!(b().shards(0).build().err(), Some(ConfigError::Shards(0)));
    assert_eq!(b().shards(6).build().err(), Some(ConfigError::Shards(6)));
    assert_eq!(
        b().shards(1 << 17).build().err(),
        Some(ConfigError::Shards(1 << 17))
    );
    assert_eq!(
        b().max_entries(0).build().err(),
        Some(ConfigError::ZeroMaxEntries)
    );
    assert_eq!(
        b().sweep_interval(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroSweepInterval)
    );
    assert!(ConfigError::Shards(6).to_string().contains("power of two"));
}

/// Rule 12 through a held [`idemstore::Pinned`]: each read checks the clock,
/// and sweeps still remove entries while the handle lives.
#[test]
fn a_held_pin_checks_expiry_on_every_read_and_does_not_stop_sweeps() {
    let (store, clock) = manual_store::<u8, u8>();
    let _ = store.execute(1, || Ok::<_, ()>(1));
    store.pinned(|pinned| {
        assert_eq!(pinned.get(&1), Some(1));
        clock.advance(TTL);
        assert_eq!(pinned.get(&1), None, "expired under the same pin");
        assert_eq!(store.sweep(), 1);
        assert_eq!(store.len(), 0);
        let _ = store.execute(1, || Ok::<_, ()>(2));
        assert_eq!(
            pinned.get(&1),
            Some(2),
            "a new claim's value, not a snapshot"
        );
    });
}

/// Rule 18: the store's time comes from the clock it was given, a user's
/// own `Clock` included, in one unit (a `Duration` since any fixed start):
/// both TTLs and leases follow it, and nothing else.
#[test]
fn a_user_clock_drives_ttls_and_leases() {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Seconds, set by the test.
    #[derive(Clone, Default)]
    struct Seconds(Arc<AtomicU64>);

    impl idemstore::Clock for Seconds {
        fn now(&self) -> Duration {
            Duration::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    let clock = Seconds::default();
    let store: Store<u8, u8> = Store::builder()
        .ttl(Duration::from_secs(100))
        .lease(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .expect("config");
    let _ = store.execute(1, || Ok::<_, ()>(1));
    let Ok(Claim::Owner(_stuck)) = store.claim(2) else {
        panic!("owner")
    };
    // Real time passes, the store's clock does not: nothing changes.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(store.get(&1), Some(1));
    assert!(matches!(store.claim(2), Ok(Claim::InFlight(_))));

    clock.0.store(10, Ordering::SeqCst);
    assert!(
        matches!(store.claim(2), Ok(Claim::Owner(_))),
        "the lease passed on the user's clock"
    );
    clock.0.store(100, Ordering::SeqCst);
    assert_eq!(store.get(&1), None, "the TTL passed on the user's clock");
}

/// Rule 13: a sweep works in bounded steps and lets go of the shard lock
/// between them, so a claim on the shard being swept gets through while
/// the sweep is under way: before the claim some expired entries are
/// gone, after it some are still there. A sweep that held the lock for
/// its whole pass would let no claim in until it finished.
#[test]
fn a_long_sweep_lets_claims_on_its_shard_through() {
    use std::sync::atomic::{AtomicBool, Ordering};

    const EXPIRED: u32 = 200_000;
    let clock = ManualClock::new();
    let store: Store<u32, u32> = manual_builder(&clock)
        .shards(1)
        .initial_capacity(EXPIRED as usize)
        .build()
        .expect("config");
    // Several tries, in case the scheduler keeps the claiming thread off
    // the CPU for a whole sweep once.
    for attempt in 0..5 {
        for key in 0..EXPIRED {
            let _ = store.execute(key, || Ok::<_, ()>(key));
        }
        clock.advance(TTL);
        let sweeping = AtomicBool::new(true);
        let claimer_ready = AtomicBool::new(false);
        let mid_sweep = std::thread::scope(|s| {
            let claimer = s.spawn(|| {
                let mut key = u32::MAX - attempt * 1_000_000;
                claimer_ready.store(true, Ordering::SeqCst);
                while sweeping.load(Ordering::SeqCst) {
                    let before = store.len();
                    drop(store.claim(key)); // takes the shard's lock
                    let after = store.len();
                    if before < EXPIRED as usize && after > 1 {
                        return true;
                    }
                    key -= 1;
                }
                false
            });
            wait_until("the claiming thread runs", || {
                claimer_ready.load(Ordering::SeqCst)
            });
            assert_eq!(store.sweep(), EXPIRED as usize);
            sweeping.store(false, Ordering::SeqCst);
            claimer.join().unwrap()
        });
        store.sweep();
        if mid_sweep {
            return;
        }
    }
    panic!("no claim on the shard got through during any of five long sweeps");
}
