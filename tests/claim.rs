//! Claiming, duplicates and replays: rules 1-5, 15 and 16 of
//! `docs/semantics.md`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{manual_store, wait_until};
use idemstore::{Claim, ClaimError, Fingerprint, Outcome, Store};

/// Rule 1: the check and the insert are one step. With a get-then-put, two
/// racing threads would both see the key absent and both become owners.
#[test]
fn racing_claims_make_exactly_one_owner() {
    const THREADS: usize = 8;
    for round in 0..200u64 {
        let store: Store<u64, u64> = Store::new();
        let barrier = Arc::new(Barrier::new(THREADS));
        let results: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    match store.claim(round).expect("claim") {
                        // Keep the ticket alive so later claims see in flight.
                        Claim::Owner(ticket) => Some(ticket),
                        Claim::InFlight(_) | Claim::Completed(_) => None,
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        // Every ticket is still alive here: none was released early.
        assert_eq!(
            results.iter().filter(|r| r.is_some()).count(),
            1,
            "round {round}"
        );
    }
}

/// Rules 2 and 15: the owner's operation runs outside every lock, and no
/// handle holds one. With one shard, any held lock would deadlock here.
#[test]
fn operation_runs_outside_every_lock() {
    let store: Store<u64, u64> = Store::builder().shards(1).build().expect("config");
    let Ok(Claim::Owner(first)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("in flight")
    };
    // While a ticket and a pending handle are held, the same shard serves
    // other keys, reads and sweeps; and `execute` may re-enter the store.
    let outcome = store.execute(2, || {
        assert!(matches!(store.claim(3), Ok(Claim::Owner(_))));
        assert_eq!(store.get(&1), None);
        store.sweep();
        Ok::<_, ()>(20)
    });
    assert_eq!(outcome, Ok(Outcome::Executed(20)));
    assert_eq!(store.get(&2), Some(20));
    first.complete(10).expect("complete");
    assert_eq!(pending.wait(), Ok(10));
}

/// Rule 3: duplicates of an in-flight key wait for the owner's result and
/// never run the operation themselves.
#[test]
fn duplicates_wait_for_the_owner_instead_of_running() {
    const DUPLICATES: u64 = 6;
    let store: Store<&str, u64> = Store::new();
    let executions = Arc::new(AtomicUsize::new(0));
    let Ok(Claim::Owner(ticket)) = store.claim("k") else {
        panic!("owner")
    };
    let duplicates: Vec<_> = (0..DUPLICATES)
        .map(|_| {
            let (store, executions) = (store.clone(), executions.clone());
            thread::spawn(move || {
                store.execute("k", || {
                    executions.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(0)
                })
            })
        })
        .collect();
    wait_until("every duplicate waits", || {
        store.stats().waits == DUPLICATES
    });
    ticket.complete(7).expect("complete");
    for d in duplicates {
        assert_eq!(d.join().expect("thread"), Ok(Outcome::Replayed(7)));
    }
    assert_eq!(executions.load(Ordering::SeqCst), 0);
}

/// Rule 3: a duplicate can also get a distinct "in flight" answer at once.
#[test]
fn in_flight_is_a_distinct_answer() {
    let (store, _clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(_ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("in flight")
    };
    assert_eq!(pending.key(), &1);
    assert_eq!(store.get(&1), None, "no value while in flight");
}

/// Rule 4: a completed key returns the stored value exactly, marked a replay.
#[test]
fn completed_key_replays_the_stored_value() {
    let (store, _clock) = manual_store::<String, Vec<u8>>();
    let body = b"{\"id\": 17}".to_vec();
    let first = store.execute("a".into(), || Ok::<_, ()>(body.clone()));
    assert_eq!(first, Ok(Outcome::Executed(body.clone())));
    let second = store.execute("a".into(), || Ok::<_, ()>(b"other".to_vec()));
    assert_eq!(second, Ok(Outcome::Replayed(body.clone())));
    assert!(matches!(store.claim("a".into()), Ok(Claim::Completed(v)) if v == body));
    let stats = store.stats();
    assert_eq!((stats.claims, stats.replays), (1, 2));
}

/// Rule 5: a reused key with another fingerprint is refused in every state,
/// and the refusal neither serves nor stores anything.
#[test]
fn fingerprint_mismatch_is_refused_in_flight_and_completed() {
    let (store, _clock) = manual_store::<u8, &str>();
    let original = Fingerprint::of_bytes(b"pay 10");
    let other = Fingerprint::of_bytes(b"pay 99");

    let Ok(Claim::Owner(ticket)) = store.claim_with(1, original) else {
        panic!("owner")
    };
    assert_eq!(
        store.claim_with(1, other).err(),
        Some(ClaimError::Mismatch),
        "in flight"
    );
    assert!(matches!(
        store.claim_with(1, original),
        Ok(Claim::InFlight(_))
    ));

    ticket.complete("paid 10").expect("complete");
    assert_eq!(
        store.claim_with(1, other).err(),
        Some(ClaimError::Mismatch),
        "completed"
    );
    assert!(matches!(
        store.claim_with(1, original),
        Ok(Claim::Completed("paid 10"))
    ));
    assert_eq!(
        store.get(&1),
        Some("paid 10"),
        "the mismatch stored nothing"
    );
    assert_eq!(store.stats().mismatches, 2);
}

/// Rule 16: keys are the caller's type, so scoped tuples keep tenants apart;
/// lookups take borrowed forms.
#[test]
fn scoped_keys_keep_tenants_apart() {
    let (store, _clock) = manual_store::<(String, String), u32>();
    let a = ("tenant-a".to_string(), "key-1".to_string());
    let b = ("tenant-b".to_string(), "key-1".to_string());
    assert_eq!(
        store.execute(a.clone(), || Ok::<_, ()>(1)),
        Ok(Outcome::Executed(1))
    );
    assert_eq!(
        store.execute(b.clone(), || Ok::<_, ()>(2)),
        Ok(Outcome::Executed(2))
    );
    assert_eq!((store.get(&a), store.get(&b)), (Some(1), Some(2)));

    let (strings, _clock) = manual_store::<String, u32>();
    let _ = strings.execute("k".to_string(), || Ok::<_, ()>(3));
    assert_eq!(strings.get("k"), Some(3));
    assert!(strings.remove("k"));
}

/// Rule 15: values are cloned out; the store keeps its own copy.
#[test]
fn values_are_cloned_out() {
    let (store, _clock) = manual_store::<u8, Vec<u8>>();
    let _ = store.execute(1, || Ok::<_, ()>(vec![1, 2, 3]));
    let mut copy = store.get(&1).expect("value");
    copy.push(4);
    assert_eq!(store.get(&1), Some(vec![1, 2, 3]));
}

/// A pinned handle reads the table as it is at each read: values completed
/// after it was made, and nothing for keys removed or still in flight.
#[test]
fn a_pinned_handle_sees_later_completions_and_removals() {
    let store: Store<u32, u32> = Store::new();
    store.pinned(|pinned| {
        assert_eq!(pinned.get(&1), None);
        let Ok(Claim::Owner(ticket)) = store.claim(1) else {
            panic!("owner")
        };
        assert_eq!(pinned.get(&1), None, "in flight reads as absent");
        ticket.complete(10).expect("current");
        assert_eq!(pinned.get(&1), Some(10));
        assert!(store.remove(&1));
        assert_eq!(pinned.get(&1), None);
    });
}

/// `get_many` reads through the table's resizes as `get` does: while
/// another thread grows the table (one shard, so every resize is in the
/// keys read), no batch misses a completed key.
#[test]
fn get_many_never_misses_a_present_key_while_the_table_grows() {
    let store: Store<u64, u64> = Store::builder().shards(1).build().expect("valid config");
    let present: Vec<u64> = (0..64).collect();
    for &key in &present {
        store
            .execute(key, || Ok::<_, ()>(key + 1))
            .expect("executes");
    }
    let want: Vec<Option<u64>> = present.iter().map(|&key| Some(key + 1)).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            // Ten doublings of the bucket array.
            for key in 1_000..(1_000 + (64 << 10)) {
                store.execute(key, || Ok::<_, ()>(key)).expect("executes");
            }
            done.store(true, Ordering::Release);
        });
        for batch in 0.. {
            let last = done.load(Ordering::Acquire);
            assert_eq!(store.get_many(&present), want, "batch {batch}");
            if last {
                break;
            }
        }
    });
}
