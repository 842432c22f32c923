//! Owners that fail and waiters that give up: rules 6, 7 and 8 of
//! `docs/semantics.md`.

mod common;

use std::future::IntoFuture;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use common::{block_on, manual_store, poll_once, wait_until, WakeCounter};
use idemstore::{Claim, ExecuteError, Outcome, Store, WaitError};

/// Rule 6: dropping the ticket releases the key and wakes every waiter.
#[test]
fn dropped_owner_wakes_every_waiter_and_frees_the_key() {
    let store: Store<u8, u8> = Store::new();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let Ok(Claim::InFlight(pending)) = store.claim(1) else {
                panic!("in flight")
            };
            thread::spawn(move || pending.wait())
        })
        .collect();
    drop(ticket);
    for w in waiters {
        assert_eq!(w.join().expect("thread"), Err(WaitError::Abandoned));
    }
    assert_eq!(store.stats().abandons, 1);
    assert!(
        matches!(store.claim(1), Ok(Claim::Owner(_))),
        "claimable again"
    );
}

/// Rule 6: a panicking operation releases the key; the panic reaches its
/// caller, and a waiting duplicate takes over and runs its own operation.
#[test]
fn panicking_owner_releases_the_key_to_a_waiter() {
    let store: Store<u8, u8> = Store::new();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let waiter = {
        let store = store.clone();
        thread::spawn(move || store.execute(1, || Ok::<_, ()>(2)))
    };
    wait_until("the duplicate waits", || store.stats().waits == 1);
    let panicked = catch_unwind(AssertUnwindSafe(move || {
        let _ticket = ticket;
        panic!("operation failed hard");
    }));
    assert!(panicked.is_err());
    assert_eq!(waiter.join().expect("thread"), Ok(Outcome::Executed(2)));

    // `execute` itself: the panic propagates and the key is released.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        store.execute(3, || -> Result<u8, ()> { panic!("boom") })
    }));
    assert!(panicked.is_err());
    assert!(matches!(store.claim(3), Ok(Claim::Owner(_))));
}

/// Rule 6: an async owner cancelled mid-operation releases the key.
#[test]
fn cancelled_async_owner_releases_the_key() {
    let (store, _clock) = manual_store::<u8, u8>();
    let wakes = Arc::new(WakeCounter::default());
    let mut owner = Box::pin(store.execute_async(1, std::future::pending::<Result<u8, ()>>));
    assert!(poll_once(&mut owner, &wakes).is_pending());
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("in flight")
    };
    drop(owner);
    assert_eq!(pending.wait(), Err(WaitError::Abandoned));
    assert!(matches!(store.claim(1), Ok(Claim::Owner(_))));
}

/// Rule 7: an error is returned, not stored: the retry runs.
#[test]
fn errors_are_not_stored() {
    let (store, _clock) = manual_store::<u8, u8>();
    let runs = AtomicUsize::new(0);
    let fail = || {
        runs.fetch_add(1, Ordering::SeqCst);
        Err::<u8, _>("declined")
    };
    assert_eq!(
        store.execute(1, fail),
        Err(ExecuteError::Failed("declined"))
    );
    assert_eq!(
        store.execute(1, fail),
        Err(ExecuteError::Failed("declined"))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(store.len(), 0);
    assert_eq!(
        store.execute(1, || Ok::<_, &str>(5)),
        Ok(Outcome::Executed(5))
    );
}

/// Rule 8: a waiter that times out leaves the owner and other waiters alone.
#[test]
fn waiter_timeout_affects_nobody_else() {
    let store: Store<u8, u8> = Store::new();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(patient)) = store.claim(1) else {
        panic!("in flight")
    };
    let Ok(Claim::InFlight(hasty)) = store.claim(1) else {
        panic!("in flight")
    };
    let patient = thread::spawn(move || patient.wait());
    assert_eq!(
        hasty.wait_timeout(Duration::from_millis(5)),
        Err(WaitError::Timeout)
    );
    ticket.complete(9).expect("the owner is unaffected");
    assert_eq!(patient.join().expect("thread"), Ok(9));
    // The timed-out handle can still pick the result up afterwards.
    assert_eq!(hasty.wait_timeout(Duration::ZERO), Ok(9));
}

/// Rule 8: a cancelled async waiter withdraws; the others still get woken.
#[test]
fn cancelled_async_waiter_affects_nobody_else() {
    let (store, _clock) = manual_store::<u8, u8>();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(cancelled)) = store.claim(1) else {
        panic!("in flight")
    };
    let Ok(Claim::InFlight(kept)) = store.claim(1) else {
        panic!("in flight")
    };
    let (cancelled_wakes, kept_wakes) = (
        Arc::new(WakeCounter::default()),
        Arc::new(WakeCounter::default()),
    );
    let mut cancelled = cancelled.into_future();
    let mut kept = kept.into_future();
    assert!(poll_once(&mut cancelled, &cancelled_wakes).is_pending());
    assert!(poll_once(&mut kept, &kept_wakes).is_pending());
    drop(cancelled);
    ticket.complete(4).expect("complete");
    assert_eq!(
        cancelled_wakes.0.load(Ordering::SeqCst),
        0,
        "withdrawn waiter not woken"
    );
    assert_eq!(kept_wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(poll_once(&mut kept, &kept_wakes), Poll::Ready(Ok(4)));
}

/// Async duplicates await the owner's value on any executor.
#[test]
fn async_duplicates_await_the_owner() {
    let store: Store<u8, u8> = Store::new();
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = store.claim(1) else {
        panic!("in flight")
    };
    let waiter = thread::spawn(move || block_on(pending.into_future()));
    let async_get = {
        let store = store.clone();
        thread::spawn(move || block_on(store.get_or_wait_async(&1)))
    };
    wait_until("both wait", || store.stats().waits == 2);
    ticket.complete(8).expect("complete");
    assert_eq!(waiter.join().expect("thread"), Ok(8));
    assert_eq!(async_get.join().expect("thread"), Ok(Some(8)));
    assert_eq!(
        block_on(store.execute_async(1, || async { Ok::<_, ()>(0) })),
        Ok(Outcome::Replayed(8))
    );
}

/// `get_or_wait`: absent, in flight (then completed), and timeout.
#[test]
fn get_or_wait_covers_every_state() {
    let store: Store<u8, u8> = Store::new();
    assert_eq!(store.get_or_wait(&1, Duration::ZERO), Ok(None));
    let Ok(Claim::Owner(ticket)) = store.claim(1) else {
        panic!("owner")
    };
    assert_eq!(
        store.get_or_wait(&1, Duration::from_millis(1)),
        Err(WaitError::Timeout)
    );
    let reader = {
        let store = store.clone();
        thread::spawn(move || store.get_or_wait(&1, Duration::from_secs(30)))
    };
    wait_until("the reader waits", || store.stats().waits == 2);
    ticket.complete(6).expect("complete");
    assert_eq!(reader.join().expect("thread"), Ok(Some(6)));
}
