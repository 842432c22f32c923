//! The byte bound (`Builder::max_bytes`, `Builder::weigher`): rule 14 of
//! `docs/semantics.md` for what completed entries weigh, and the warning
//! near either bound (feature `tracing`). Time is a `ManualClock`.

mod common;

use common::{manual_builder, LEASE, TTL};
use idemstore::{Claim, ClaimError, CompleteError, ConfigError, ManualClock, Store};

/// A store of `u8 -> Vec<u8>` weighing each entry at its value's length,
/// bounded at `max` bytes.
fn bounded(clock: &ManualClock, max: usize) -> Store<u8, Vec<u8>> {
    manual_builder(clock)
        .max_bytes(max)
        .weigher(|_key, value: &Vec<u8>| value.len())
        .build()
        .expect("valid settings")
}

fn owner(store: &Store<u8, Vec<u8>>, key: u8) -> idemstore::Ticket<u8, Vec<u8>> {
    match store.claim(key) {
        Ok(Claim::Owner(ticket)) => ticket,
        other => panic!("claim of {key}: {other:?}"),
    }
}

/// A claim is admitted only below the bound; a completion of an admitted
/// claim is stored even when it takes the store over the bound, and a
/// store over the bound still replays and waits.
#[test]
fn claims_are_refused_at_the_byte_bound_and_completions_over_it_are_stored() {
    let clock = ManualClock::new();
    let store = bounded(&clock, 100);
    let first = owner(&store, 1);
    let second = owner(&store, 2);
    let third = owner(&store, 3);
    first.complete(vec![1; 60]).unwrap();
    assert_eq!(store.stats().bytes, 60);
    let _fourth = owner(&store, 4); // 60 < 100
    second.complete(vec![2; 60]).unwrap();
    assert_eq!(store.stats().bytes, 120, "stored over the bound");
    assert_eq!(store.claim(5).err(), Some(ClaimError::Full));
    assert_eq!(
        store.execute(6, || Ok::<_, ()>(vec![])).err(),
        Some(idemstore::ExecuteError::Claim(ClaimError::Full))
    );
    // Admitted before the store reached the bound: stored all the same.
    third.complete(vec![3; 50]).unwrap();
    let stats = store.stats();
    assert_eq!((stats.bytes, stats.max_bytes), (170, Some(100)));
    assert_eq!(stats.refusals, 2);
    // Over the bound, a key that is there is still served.
    assert!(matches!(store.claim(2), Ok(Claim::Completed(v)) if v == vec![2; 60]));
    assert!(matches!(store.claim(4), Ok(Claim::InFlight(_))));
    assert_eq!(store.get(&3), Some(vec![3; 50]));
}

/// Removal, a claim over an expired entry, and sweeps give each entry's
/// bytes back: an empty store weighs nothing.
#[test]
fn expiry_removal_and_sweep_give_the_bytes_back() {
    let clock = ManualClock::new();
    let store = bounded(&clock, 1000);
    for key in 0..6 {
        owner(&store, key).complete(vec![key; 10]).unwrap();
    }
    let in_flight = owner(&store, 9);
    assert_eq!(store.stats().bytes, 60, "in-flight entries weigh nothing");
    assert!(store.remove(&0));
    assert_eq!(store.stats().bytes, 50, "removal");
    in_flight.abandon();
    assert_eq!(store.stats().bytes, 50);

    clock.advance(TTL);
    let replacing = owner(&store, 1);
    assert_eq!(store.stats().bytes, 40, "a claim over an expired entry");
    replacing.complete_with_ttl(vec![1; 30], TTL * 2).unwrap();
    assert_eq!(store.stats().bytes, 70);
    assert_eq!(store.sweep(), 4);
    assert_eq!(store.stats().bytes, 30, "the sweep");
    assert!(!store.remove(&2), "swept");
    clock.advance(TTL * 2);
    assert!(!store.remove(&1), "an expired entry counts as absent");
    let stats = store.stats();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
}

/// A store at its bound makes room from expired entries before refusing,
/// as at `max_entries`, and a claim of an expired key is refused too when
/// nothing can be swept.
#[test]
fn a_claim_at_the_bound_sweeps_expired_entries_first() {
    let clock = ManualClock::new();
    let store = bounded(&clock, 10);
    owner(&store, 1).complete(vec![0; 10]).unwrap();
    assert_eq!(store.claim(2).err(), Some(ClaimError::Full));
    clock.advance(TTL);
    let _second = owner(&store, 2);
    let stats = store.stats();
    assert_eq!((stats.entries, stats.bytes, stats.expirations), (1, 0, 1));

    let store = bounded(&clock, 10);
    owner(&store, 1)
        .complete_with_ttl(vec![0; 5], LEASE)
        .unwrap();
    owner(&store, 2).complete(vec![0; 5]).unwrap();
    clock.advance(LEASE);
    // Key 1 expired, but the store weighs 10: the claim sweeps key 1 away
    // (5 bytes back) and is then admitted.
    let _first = owner(&store, 1);
    assert_eq!(store.stats().bytes, 5);
}

/// A completion refused as superseded takes its weight back: only the new
/// owner's value counts.
#[test]
fn a_superseded_completion_takes_its_weight_back() {
    let clock = ManualClock::new();
    let store = bounded(&clock, 1000);
    let stale = owner(&store, 1);
    clock.advance(LEASE);
    let current = owner(&store, 1);
    assert!(matches!(
        stale.complete(vec![0; 40]),
        Err(CompleteError::Superseded(_))
    ));
    assert_eq!(store.stats().bytes, 0);
    current.complete(vec![0; 7]).unwrap();
    assert_eq!(store.stats().bytes, 7);
}

/// The default weigher counts `size_of` the key and the value; a weigher
/// without a bound counts and refuses nothing; a zero bound is refused.
#[test]
fn defaults_and_settings() {
    let store: Store<u64, [u8; 100]> = Store::builder().max_bytes(216).build().unwrap();
    for key in 0..2 {
        store.execute(key, || Ok::<_, ()>([0; 100])).unwrap();
    }
    assert_eq!(store.stats().bytes, 216);
    assert_eq!(store.claim(2).err(), Some(ClaimError::Full));

    let counted: Store<u64, String> = Store::builder()
        .weigher(|_, value: &String| value.len())
        .build()
        .unwrap();
    for key in 0..50 {
        counted
            .execute(key, || Ok::<_, ()>("x".repeat(1000)))
            .unwrap();
    }
    let stats = counted.stats();
    assert_eq!((stats.bytes, stats.max_bytes), (50_000, None));

    let plain: Store<u64, String> = Store::new();
    plain.execute(1, || Ok::<_, ()>("x".repeat(1000))).unwrap();
    assert_eq!((plain.stats().bytes, plain.stats().max_bytes), (0, None));

    let zero = Store::<u8, u8>::builder().max_bytes(0).build();
    assert_eq!(zero.err(), Some(ConfigError::ZeroMaxBytes));
    let both: Store<u8, u8> = Store::builder()
        .max_entries(3)
        .max_bytes(9)
        .build()
        .unwrap();
    let stats = both.stats();
    assert_eq!((stats.max_entries, stats.max_bytes), (Some(3), Some(9)));
}

/// The weigher runs outside every lock: one that uses the store (a sign of
/// user code that would deadlock under a shard lock) completes.
#[test]
fn the_weigher_runs_outside_every_lock() {
    use std::sync::{Arc, OnceLock};
    let this: Arc<OnceLock<Store<u8, u8>>> = Arc::default();
    let seen = this.clone();
    let store: Store<u8, u8> = Store::builder()
        .shards(1)
        .background_sweeper(false)
        .weigher(move |key, _| {
            // A read and a claim of another key, both on the one shard.
            let store = seen.get().expect("set before any completion");
            let _ = store.get(key);
            let _ = store.claim(key.wrapping_add(100));
            1
        })
        .build()
        .unwrap();
    let _ = this.set(store.clone());
    store.execute(1, || Ok::<_, ()>(1)).unwrap();
    assert!(store.remove(&1));
    assert_eq!(store.stats().bytes, 0);
}

/// With feature `tracing`: a warning when a count reaches 90% of its bound,
/// once per crossing, again only after it fell below 80%.
#[cfg(feature = "tracing")]
mod warning {
    use std::sync::{Arc, Mutex};

    use super::*;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    /// Keeps the `bound` field of each WARN event of `idemstore::store`
    /// on the test's thread.
    struct Collect {
        thread: std::thread::ThreadId,
        warnings: Arc<Mutex<Vec<String>>>,
    }

    struct Bound<'a>(&'a mut Option<String>);

    impl Visit for Bound<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "bound" {
                *self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl Subscriber for Collect {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "idemstore::store" && *metadata.level() <= Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if std::thread::current().id() == self.thread {
                let mut bound = None;
                event.record(&mut Bound(&mut bound));
                self.warnings.lock().unwrap().extend(bound);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn a_warning_fires_once_per_crossing_of_90_percent_of_either_bound() {
        let warnings = Arc::<Mutex<Vec<String>>>::default();
        // Global: tracing caches each callsite's interest, which a scoped
        // subscriber can miss. The binary's only test that sets one.
        tracing::subscriber::set_global_default(Collect {
            thread: std::thread::current().id(),
            warnings: warnings.clone(),
        })
        .unwrap();
        let count = |bound: &str| {
            let warnings = warnings.lock().unwrap();
            warnings.iter().filter(|w| *w == bound).count()
        };

        let clock = ManualClock::new();
        let store: Store<u8, Vec<u8>> = manual_builder(&clock).max_entries(10).build().unwrap();
        let mut tickets: Vec<_> = (0..8).map(|key| owner(&store, key)).collect();
        assert_eq!(count("max_entries"), 0, "8 of 10");
        tickets.push(owner(&store, 8));
        assert_eq!(count("max_entries"), 1, "9 of 10");
        tickets.push(owner(&store, 9));
        assert_eq!(store.claim(10).err(), Some(ClaimError::Full));
        tickets.truncate(8); // 8 of 10: not below 80% yet
        tickets.push(owner(&store, 8));
        assert_eq!(count("max_entries"), 1, "once per crossing");
        tickets.truncate(7); // below 80%: armed again
        tickets.extend([owner(&store, 7), owner(&store, 8)]);
        assert_eq!(count("max_entries"), 2);

        let store = bounded(&clock, 100);
        owner(&store, 1).complete(vec![0; 89]).unwrap();
        assert_eq!(count("max_bytes"), 0);
        owner(&store, 2).complete(vec![0; 1]).unwrap();
        assert_eq!(count("max_bytes"), 1, "90 of 100");
        owner(&store, 3).complete(vec![0; 50]).unwrap();
        assert_eq!(count("max_bytes"), 1);
        assert!(store.remove(&3) && store.remove(&2));
        assert_eq!(count("max_bytes"), 1, "89: not below 80");
        clock.advance(TTL);
        store.sweep();
        assert_eq!(store.stats().bytes, 0);
        owner(&store, 4).complete(vec![0; 95]).unwrap();
        assert_eq!(count("max_bytes"), 2, "crossed again");
    }
}
