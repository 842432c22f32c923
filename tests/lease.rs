//! Leases, takeover and fencing: rules 9 and 10 of `docs/semantics.md`.

mod common;

use std::thread;
use std::time::Duration;

use common::{manual_store, LEASE, TTL};
use idemstore::{Claim, CompleteError, ConfigError, ManualClock, Store, Superseded, WaitError};

/// Rule 9: the lease must be the shorter of the two.
#[test]
fn lease_longer_than_ttl_is_a_config_error() {
    let built = Store::<u8, u8>::builder()
        .ttl(Duration::from_secs(5))
        .lease(Duration::from_secs(6))
        .build();
    assert_eq!(built.err(), Some(ConfigError::LeaseLongerThanTtl));
}

/// Rule 9: after the lease passes, a new claim takes the key over.
#[test]
fn claim_after_lease_takes_over() {
    let (store, clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(_stale)) = store.claim(1) else {
        panic!("owner")
    };
    clock.advance(LEASE - Duration::from_nanos(1));
    assert!(
        matches!(store.claim(1), Ok(Claim::InFlight(_))),
        "lease still live"
    );
    clock.advance(Duration::from_nanos(1));
    assert!(
        matches!(store.claim(1), Ok(Claim::Owner(_))),
        "lease passed"
    );
    assert_eq!(store.stats().takeovers, 1);
}

/// Rule 9: renewing extends the lease from now.
#[test]
fn renew_extends_the_lease() {
    let (store, clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    clock.advance(LEASE - Duration::from_secs(1));
    ticket.renew().expect("current");
    clock.advance(Duration::from_secs(2)); // past the original lease
    assert!(matches!(store.claim(1), Ok(Claim::InFlight(_))));
    ticket.complete(3).expect("still the owner");
    assert_eq!(store.get(&1), Some(3));
}

/// Rule 9: waiters are released when the owner's lease passes on the store
/// clock, by the sweeper (here the background one, on a manual clock).
#[test]
fn waiters_are_released_when_the_lease_passes() {
    let clock = ManualClock::new();
    let store: Store<u8, u8> = Store::builder()
        .ttl(Duration::from_secs(100))
        .lease(LEASE)
        .clock(clock.clone())
        .sweep_interval(Duration::from_millis(1))
        .build()
        .expect("config");
    let Ok(Claim::Owner(_stuck)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("in flight")
    };
    let waiter = thread::spawn(move || pending.wait());
    clock.advance(LEASE);
    assert_eq!(waiter.join().expect("thread"), Err(WaitError::LeaseExpired));
}

/// Rule 10: the takeover's token is larger; a stale owner can neither complete, renew nor
/// release the record of the owner that replaced it.
#[test]
fn stale_owner_is_fenced_off() {
    let (store, clock) = manual_store::<u8, &str>();
    let Ok(Claim::Owner(stale)) = store.claim(1) else {
        panic!("owner")
    };
    clock.advance(LEASE);
    let Ok(Claim::Owner(fresh)) = store.claim(1) else {
        panic!("takeover")
    };
    assert!(fresh.token() > stale.token());

    assert_eq!(stale.renew(), Err(Superseded(())));
    assert_eq!(
        stale.complete("stale"),
        Err(CompleteError::Superseded("stale")),
        "value handed back"
    );
    assert!(
        matches!(store.claim(1), Ok(Claim::InFlight(_))),
        "new owner's claim stands"
    );

    let Ok(Claim::Owner(stale_again)) = store.claim(2) else {
        panic!("owner")
    };
    clock.advance(LEASE);
    let Ok(Claim::Owner(fresh_again)) = store.claim(2) else {
        panic!("takeover")
    };
    drop(stale_again); // a stale release must not free the new owner's key
    assert!(matches!(store.claim(2), Ok(Claim::InFlight(_))));

    fresh.complete("fresh").expect("current");
    fresh_again.complete("fresh").expect("current");
    assert_eq!(
        (store.get(&1), store.get(&2)),
        (Some("fresh"), Some("fresh"))
    );
}

/// Rule 10: a key's tokens strictly increase across every way a claim
/// ends and the key is claimed again: takeover after the lease, expiry of
/// the completed result, abandon, and remove (of an in-flight and of a
/// completed entry), each with claims of other keys in between.
#[test]
fn a_keys_tokens_increase_across_takeover_expiry_and_reclaim() {
    let (store, clock) = manual_store::<u32, u32>();
    let owner = |key| match store.claim(key) {
        Ok(Claim::Owner(ticket)) => ticket,
        other => panic!("expected to own {key}: {other:?}"),
    };
    let mut last = 0;
    let mut next = |ticket: &idemstore::Ticket<u32, u32>| {
        assert!(
            ticket.token() > last,
            "token {} not above the key's last {last}",
            ticket.token()
        );
        last = ticket.token();
        // Another key claimed in between does not matter.
        drop(owner(ticket.key() + 1));
    };

    // A first claim, then a takeover once its lease passed.
    let stale = owner(7);
    next(&stale);
    clock.advance(LEASE);
    let taken = owner(7);
    next(&taken);
    assert_eq!(store.stats().takeovers, 1);
    drop(stale);

    // Completed, then claimed again once its retention expired.
    taken.complete(1).unwrap();
    clock.advance(TTL);
    let after_expiry = owner(7);
    next(&after_expiry);

    // Abandoned (dropped), then claimed again.
    drop(after_expiry);
    let after_abandon = owner(7);
    next(&after_abandon);

    // Removed while in flight, then claimed again.
    assert!(store.remove(&7));
    let after_remove = owner(7);
    next(&after_remove);

    // Completed, swept after expiry (the entry is gone), claimed again.
    after_remove.complete(2).unwrap();
    clock.advance(TTL);
    assert!(store.sweep() >= 1);
    let after_sweep = owner(7);
    next(&after_sweep);

    // Completed, removed, claimed again.
    after_sweep.complete(3).unwrap();
    assert!(store.remove(&7));
    let after_remove_completed = owner(7);
    next(&after_remove_completed);
}

/// Rule 10: per key, tokens only grow through many claims of a few keys.
/// Only each key's own tokens are compared: no order between keys is
/// promised.
#[test]
fn tokens_strictly_increase_per_key() {
    let (store, _clock) = manual_store::<u32, u32>();
    let mut last = [0u64; 7];
    for round in 0..100 {
        let key = round % 7;
        let Ok(Claim::Owner(t)) = store.claim(key) else {
            panic!("owner")
        };
        let last = &mut last[key as usize];
        assert!(t.token() > *last);
        *last = t.token();
        // Alternate abandoning, and removing before the drop.
        if round % 2 == 1 {
            let _ = store.remove(&key);
        }
        drop(t);
    }
}
