//! Builder settings and their defaults: a setting the user never touched
//! never makes one they chose fail, and each default that depends on
//! another setting follows it.

use std::thread;
use std::time::{Duration, Instant};

use idemstore::{Builder, Claim, ConfigError, ManualClock, Store, WaitError};

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

fn on_clock(builder: Builder<u8, u8>, clock: &ManualClock) -> Store<u8, u8> {
    builder
        .clock(clock.clone())
        .background_sweeper(false)
        .build()
        .expect("valid settings")
}

/// Claims `key`, which must make the caller its owner.
fn claim_owner(store: &Store<u8, u8>, key: u8) -> idemstore::Ticket<u8, u8> {
    match store.claim(key) {
        Ok(Claim::Owner(ticket)) => ticket,
        other => panic!("expected to own key {key}, got {other:?}"),
    }
}

/// Whether a claim of `key` now would take it over (the lease passed).
fn lease_passed(store: &Store<u8, u8>, key: u8) -> bool {
    match store.claim(key) {
        Ok(Claim::Owner(ticket)) => {
            drop(ticket);
            true
        }
        Ok(Claim::InFlight(_)) => false,
        other => panic!("unexpected claim answer {other:?}"),
    }
}

/// With nothing set: TTL 24 h, lease 60 s.
#[test]
fn defaults_are_a_day_of_retention_and_a_minute_of_lease() {
    let clock = ManualClock::new();
    let store = on_clock(Store::builder(), &clock);
    let _owner = claim_owner(&store, 1);
    clock.advance(60 * SECOND - Duration::from_nanos(1));
    assert!(
        !lease_passed(&store, 1),
        "lease still live just before 60 s"
    );
    clock.advance(Duration::from_nanos(1));
    assert!(lease_passed(&store, 1), "lease passed at 60 s");

    claim_owner(&store, 2).complete(7).unwrap();
    clock.advance(24 * HOUR - Duration::from_nanos(1));
    assert_eq!(store.get(&2), Some(7));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.get(&2), None, "retention ends at 24 h");
}

/// A TTL below the default lease, set alone, builds: the lease follows it
/// down instead of failing as `LeaseLongerThanTtl`.
#[test]
fn a_short_ttl_alone_builds_and_the_lease_follows_it() {
    for ttl in [
        10 * SECOND,
        Duration::from_millis(1),
        Duration::from_nanos(1),
    ] {
        let built = Store::<u8, u8>::builder().ttl(ttl).build();
        assert!(built.is_ok(), "ttl {ttl:?} alone: {:?}", built.err());
    }

    let clock = ManualClock::new();
    let store = on_clock(Store::builder().ttl(10 * SECOND), &clock);
    let _owner = claim_owner(&store, 1);
    clock.advance(10 * SECOND - Duration::from_nanos(1));
    assert!(!lease_passed(&store, 1));
    clock.advance(Duration::from_nanos(1));
    assert!(lease_passed(&store, 1), "the lease is the TTL, 10 s");
}

/// A TTL above the default lease leaves the lease at 60 s.
#[test]
fn a_long_ttl_alone_keeps_the_default_lease() {
    let clock = ManualClock::new();
    let store = on_clock(Store::builder().ttl(2 * HOUR), &clock);
    let _owner = claim_owner(&store, 1);
    clock.advance(60 * SECOND - Duration::from_nanos(1));
    assert!(!lease_passed(&store, 1));
    clock.advance(Duration::from_nanos(1));
    assert!(lease_passed(&store, 1));
}

/// A lease above the default TTL, set alone, builds: retention follows it
/// up, so the lease is still the shorter of the two.
#[test]
fn a_long_lease_alone_builds_and_the_ttl_follows_it() {
    let clock = ManualClock::new();
    let store = on_clock(Store::builder().lease(48 * HOUR), &clock);
    let owner = claim_owner(&store, 1);
    clock.advance(47 * HOUR);
    assert!(!lease_passed(&store, 1), "a 48 h lease");
    owner.complete(5).unwrap();
    clock.advance(48 * HOUR - Duration::from_nanos(1));
    assert_eq!(store.get(&1), Some(5), "kept 48 h, not the default 24 h");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.get(&1), None);
}

/// Two settings the user chose can still conflict, and zeros are refused
/// whatever else is set.
#[test]
fn explicit_settings_are_still_checked() {
    let both = |ttl, lease| Store::<u8, u8>::builder().ttl(ttl).lease(lease).build();
    assert_eq!(
        both(10 * SECOND, 11 * SECOND).err(),
        Some(ConfigError::LeaseLongerThanTtl)
    );
    assert!(both(10 * SECOND, 10 * SECOND).is_ok(), "equal is allowed");

    let builder = Store::<u8, u8>::builder;
    assert_eq!(
        builder().ttl(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroTtl)
    );
    assert_eq!(
        builder().lease(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroLease)
    );
    assert_eq!(
        builder().sweep_interval(Duration::ZERO).build().err(),
        Some(ConfigError::ZeroSweepInterval)
    );
    assert_eq!(
        builder().max_entries(0).build().err(),
        Some(ConfigError::ZeroMaxEntries)
    );
    assert_eq!(
        builder().shards(3).build().err(),
        Some(ConfigError::Shards(3))
    );
}

/// A sweep interval longer than the lease is the user's choice, not an
/// error; nor is one longer than the TTL.
#[test]
fn a_long_sweep_interval_with_a_short_ttl_builds() {
    let built = Store::<u8, u8>::builder()
        .ttl(Duration::from_millis(10))
        .sweep_interval(10 * SECOND)
        .build();
    assert!(built.is_ok(), "{:?}", built.err());
}

/// The default sweep interval follows a short lease down, so a waiter on
/// an owner that never finishes is released about a lease after the lease
/// passed, not after the 1 s default. Before the fix the first sweep came
/// a full second after the store was built.
#[test]
fn the_default_sweep_interval_follows_a_short_lease() {
    let clock = ManualClock::new();
    let built = Instant::now();
    let store: Store<u8, u8> = Store::builder()
        .ttl(Duration::from_millis(20))
        .lease(Duration::from_millis(20))
        .clock(clock.clone())
        .build()
        .expect("valid settings");
    let _stuck = claim_owner(&store, 1);
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("a duplicate waits")
    };
    clock.advance(Duration::from_millis(20)); // the lease (the TTL) passes
    let waiter = thread::spawn(move || pending.wait());
    assert_eq!(waiter.join().unwrap(), Err(WaitError::LeaseExpired));
    let took = built.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "released after {took:?}: the sweeper kept its 1 s default"
    );
}

/// The default shard count (4 x cores) does not split a small
/// `max_entries` or `initial_capacity` into nothing: a bound of one holds
/// exactly one entry.
#[test]
fn a_small_bound_works_with_the_default_shards() {
    let store: Store<u8, u8> = Store::builder()
        .max_entries(1)
        .initial_capacity(1)
        .background_sweeper(false)
        .build()
        .expect("valid settings");
    claim_owner(&store, 1).complete(1).unwrap();
    assert_eq!(store.claim(2).err(), Some(idemstore::ClaimError::Full));
    assert_eq!(store.get(&1), Some(1));

    let one_shard: Store<u8, u8> = Store::builder()
        .shards(1)
        .max_entries(1)
        .build()
        .expect("valid settings");
    claim_owner(&one_shard, 1).complete(1).unwrap();
    assert_eq!(one_shard.claim(2).err(), Some(idemstore::ClaimError::Full));
}

/// The HTTP layer's store is built by the same builder, with the same
/// defaults: a short TTL alone builds there too.
#[cfg(feature = "tower")]
#[test]
fn the_http_store_builder_takes_a_short_ttl_alone() {
    use idemstore::http::{HttpStore, IdempotencyLayer};

    let store = HttpStore::builder().ttl(10 * SECOND).build();
    assert!(store.is_ok(), "{:?}", store.err());
    let layer = IdempotencyLayer::new(store.unwrap());
    assert_eq!(layer.store().stats().claims, 0);

    let short = HttpStore::builder().ttl(Duration::from_millis(50)).build();
    assert!(short.is_ok(), "{:?}", short.err());
}
