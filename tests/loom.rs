#![cfg(idemstore_loom)]
//! Loom models of every race in the store's protocol, run on the real code.
//!
//! Under `--cfg idemstore_loom` the crate's sync facade (`src/sync.rs`)
//! swaps every lock, atomic, `Arc`, `UnsafeCell` and park/unpark for loom's,
//! and `--cfg crossbeam_loom` does the same inside crossbeam-epoch, so loom
//! explores the interleavings of the store's own table, flights and epoch
//! reclamation. Each model uses only the public API, one shard, one key (two
//! where a model needs two in one chain), time from a [`ManualClock`], and
//! calls [`Store::sweep`] itself (the background sweeper is compiled out
//! under loom, and loom never fires timeouts, so waits are untimed).
//!
//! CI (`.ci/run`) runs them with a preemption bound of 2:
//!
//! ```text
//! RUSTFLAGS="--cfg idemstore_loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 \
//!   cargo test --release --target-dir target/loom --test loom
//! ```
//!
//! That takes about half a minute on two cores once built. For a deeper
//! local run, raise the bound to 3 (about seven minutes on two cores; name
//! one model after `--test loom` to run only that one):
//!
//! ```text
//! RUSTFLAGS="--cfg idemstore_loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=3 \
//!   cargo test --release --target-dir target/loom --test loom
//! ```
//!
//! A failing model prints the interleaving with `LOOM_LOG=trace
//! LOOM_LOCATION=1`; `LOOM_CHECKPOINT_FILE` lets it resume from there.

use std::collections::hash_map::DefaultHasher;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use idemstore::{Claim, Clock, CompleteError, ManualClock, Outcome, Store, WaitError};
use loom::thread;

/// A fixed hasher: loom replays each interleaving many times, and a random
/// seed would make the table's layout differ between replays.
type FixedHasher = BuildHasherDefault<DefaultHasher>;
type TestStore<V> = Store<u8, V, FixedHasher>;

const KEY: u8 = 1;
const TTL: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(5);

/// A one-shard store on `clock`, with no background sweeper.
fn new_store<V: Clone + Send + Sync + 'static>(clock: &ManualClock) -> TestStore<V> {
    Store::<u8, V>::builder()
        .ttl(TTL)
        .lease(LEASE)
        .clock(clock.clone())
        .shards(1)
        .background_sweeper(false)
        .hasher(FixedHasher::default())
        .build()
        .expect("valid configuration")
}

/// Claims `key`, which must be absent, and returns the owner's ticket.
fn claim_owner<V: Clone + Send + Sync + std::fmt::Debug + 'static>(
    store: &TestStore<V>,
) -> idemstore::Ticket<u8, V, FixedHasher> {
    match store.claim(KEY) {
        Ok(Claim::Owner(ticket)) => ticket,
        other => panic!("the first claim of an absent key must own it, got {other:?}"),
    }
}

/// A stored value that counts its live copies and poisons itself when
/// dropped: a leak leaves the count above zero once the store is gone, and
/// cloning or dropping a copy that was already freed trips the canary.
#[derive(Debug)]
struct Counted {
    id: u32,
    canary: u64,
    live: std::sync::Arc<AtomicIsize>,
}

const ALIVE: u64 = 0xA11C_E5A1_1CE5_A11C;
const FREED: u64 = 0xDEAD_DEAD_DEAD_DEAD;

impl Counted {
    fn new(id: u32, live: &std::sync::Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Counted {
            id,
            canary: ALIVE,
            live: live.clone(),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        assert_eq!(self.canary, ALIVE, "a value was read after it was freed");
        Counted::new(self.id, &self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        assert_eq!(self.canary, ALIVE, "a value was dropped twice");
        self.canary = FREED;
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A waker that records whether it was woken. Its clones are `std::sync::Arc`
/// strong references, so `Arc::strong_count` tells how many the store holds.
#[derive(Default)]
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl WakeFlag {
    fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// What one claimant saw in [`racing_claims_yield_one_owner`].
#[derive(Debug, PartialEq)]
enum Seen {
    /// Owned the key and completed it with this value.
    Owned(u32),
    Replayed(u32),
    InFlight,
}

/// Three callers claim one absent key at once (rule 1). The check for an
/// existing entry and the insert of a new one are a single step under the
/// shard lock; if they were split, two callers could both find the key absent
/// and both become owners, running the operation twice. A replay must carry
/// the one owner's value.
#[test]
fn racing_claims_yield_one_owner() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let claimant = |store: TestStore<u32>, value: u32| {
            move || match store.claim(KEY).expect("no fingerprint, no bound") {
                Claim::Owner(ticket) => {
                    ticket.complete(value).expect("a live lease completes");
                    Seen::Owned(value)
                }
                Claim::Completed(stored) => Seen::Replayed(stored),
                Claim::InFlight(_) => Seen::InFlight,
            }
        };
        // Registers this thread with the store's epoch before the race.
        assert_eq!(store.get(&KEY), None);
        let others: Vec<_> = [1, 2]
            .map(|value| thread::spawn(claimant(store.clone(), value)))
            .into_iter()
            .collect();
        let mut seen = vec![claimant(store.clone(), 0)()];
        seen.extend(others.into_iter().map(|t| t.join().unwrap()));

        let owned: Vec<u32> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Owned(value) => Some(*value),
                _ => None,
            })
            .collect();
        assert_eq!(owned.len(), 1, "exactly one owner, saw {seen:?}");
        for s in &seen {
            if let Seen::Replayed(value) = s {
                assert_eq!(*value, owned[0], "a replay returns the owner's value");
            }
        }
        assert_eq!(store.get(&KEY), Some(owned[0]));
    });
}

/// The owner completes while duplicates register as waiters, one through
/// `claim` + `wait` and one through `get_or_wait` (rule 3). A waiter checks
/// for `Done` and registers under the flight's mutex, and `resolve` swaps in
/// `Done` and takes the waiter list under the same mutex. If `resolve` woke
/// the list before publishing `Done`, or a waiter dropped the mutex between
/// its check and its registration, a waiter could park after the last
/// wakeup: loom reports that as a deadlock.
#[test]
fn complete_racing_waiter_registration() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let ticket = claim_owner(&store);

        let claim_waiter = thread::spawn({
            let store = store.clone();
            move || match store.claim(KEY).expect("no fingerprint, no bound") {
                Claim::InFlight(pending) => pending.wait(),
                Claim::Completed(value) => Ok(value),
                Claim::Owner(_) => panic!("a second owner while the first one's lease is live"),
            }
        });
        let get_waiter = thread::spawn({
            let store = store.clone();
            // `Duration::MAX` overflows the deadline, so this parks untimed:
            // a lost wakeup hangs it, and loom reports the hang.
            move || store.get_or_wait(&KEY, Duration::MAX)
        });

        ticket.complete(7).expect("a live lease completes");
        assert_eq!(claim_waiter.join().unwrap(), Ok(7));
        assert_eq!(get_waiter.join().unwrap(), Ok(Some(7)));
        assert_eq!(store.waiters(), 0);
    });
}

/// The owner's ticket is dropped while two duplicates run `execute` on the
/// key (rule 6). Dropping the ticket unlinks the claim and resolves its
/// flight with `Abandoned`, waking every waiter; each then claims again, and
/// exactly one of them runs its own operation while the other replays that
/// result. A waiter left parked on the dead owner deadlocks; a flight left
/// findable after the abandon, or a retry that does not re-check, would let
/// both run.
#[test]
fn abandon_racing_waiters() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let ticket = claim_owner(&store);

        let duplicates: Vec<_> = [1, 2]
            .map(|value| {
                let store = store.clone();
                thread::spawn(move || {
                    store
                        .execute(KEY, || Ok::<_, ()>(value))
                        .expect("the operation succeeds")
                })
            })
            .into_iter()
            .collect();
        drop(ticket);
        let outcomes: Vec<Outcome<u32>> =
            duplicates.into_iter().map(|t| t.join().unwrap()).collect();

        let executed: Vec<u32> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Executed(value) => Some(*value),
                Outcome::Replayed(_) => None,
            })
            .collect();
        assert_eq!(executed.len(), 1, "exactly one re-claims, saw {outcomes:?}");
        for outcome in &outcomes {
            assert_eq!(outcome.clone().into_inner(), executed[0]);
        }
        assert_eq!(store.get(&KEY), Some(executed[0]));
        assert_eq!(store.waiters(), 0);
    });
}

/// An owner stalls past its lease while a new claim takes the key over, and
/// the stale owner then tries to complete, with a duplicate waiting on the
/// stale claim (rules 9 and 10). `complete` checks the claim's fencing token
/// under the shard lock; without that check the stale owner would overwrite
/// the new owner's claim with its value. Either the stale owner finishes
/// first (its value stands, the claimant and the waiter get it), or the
/// takeover wins: its token is larger, its value stands, the stale
/// `complete` comes back `Superseded`, and the waiter is released with
/// `LeaseExpired` instead of hanging on a claim that can no longer finish.
#[test]
fn lease_takeover_fences_stale_owner() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let stale = claim_owner(&store);
        let stale_token = stale.token();
        let Ok(Claim::InFlight(pending)) = store.claim(KEY) else {
            panic!("the owner's lease is live: a duplicate must wait");
        };
        clock.advance(LEASE);

        let late = thread::spawn(move || stale.complete(1));
        let waiter = thread::spawn(move || pending.wait());
        let fresh = match store.claim(KEY).expect("no fingerprint, no bound") {
            Claim::Owner(fresh) => {
                assert!(
                    fresh.token() > stale_token,
                    "a key's fencing tokens only grow"
                );
                Some(fresh.complete(2))
            }
            Claim::Completed(value) => {
                assert_eq!(value, 1, "a replay returns the stale owner's value");
                None
            }
            Claim::InFlight(_) => panic!("a passed lease must not block a new claim"),
        };
        let late = late.join().unwrap();
        let waited = waiter.join().unwrap();

        match fresh {
            Some(fresh) => {
                assert_eq!(
                    late,
                    Err(CompleteError::Superseded(1)),
                    "the stale owner is fenced off"
                );
                assert_eq!(fresh, Ok(()));
                assert_eq!(store.get(&KEY), Some(2), "the new owner's value stands");
                assert_eq!(waited, Err(WaitError::LeaseExpired));
            }
            None => {
                assert_eq!(late, Ok(()));
                assert_eq!(store.get(&KEY), Some(1));
                assert_eq!(waited, Ok(1));
            }
        }
        assert_eq!(store.waiters(), 0);
    });
}

/// Time passes a completed key's TTL and a sweep removes it, while a reader
/// `get`s the key and another caller claims it (rules 12 and 13). Expiry is
/// checked on every read, so once the clock has passed the TTL the value is
/// invisible whether or not the sweep has run; the sweep frees the node only
/// through the epoch, so the reader never touches freed memory (the canary
/// and loom's cell tracking would catch it); and a claim that finds the key
/// expired is a fresh claim with a larger token.
#[test]
fn sweep_racing_get_and_claim_on_expiring_key() {
    loom::model(|| {
        let live = std::sync::Arc::new(AtomicIsize::new(0));
        let clock = ManualClock::new();
        let store = new_store::<Counted>(&clock);
        let first = claim_owner(&store);
        let first_token = first.token();
        first
            .complete(Counted::new(1, &live))
            .expect("a live lease completes");

        let sweeper = thread::spawn({
            let (store, clock) = (store.clone(), clock.clone());
            move || {
                clock.advance(TTL);
                store.sweep();
            }
        });
        let reader = thread::spawn({
            let (store, clock) = (store.clone(), clock.clone());
            move || {
                let started = clock.now();
                let got = store.get(&KEY).map(|value| value.id);
                // `Some(2)` is the value of the claim made after expiry.
                assert!(matches!(got, None | Some(1) | Some(2)), "got {got:?}");
                if started >= TTL {
                    assert_ne!(got, Some(1), "an expired value was returned");
                }
            }
        });

        let started = clock.now();
        match store.claim(KEY).expect("no fingerprint, no bound") {
            Claim::Owner(ticket) => {
                assert!(clock.now() >= TTL, "a live value was claimed over");
                assert!(
                    ticket.token() > first_token,
                    "a key's fencing tokens only grow"
                );
                ticket
                    .complete(Counted::new(2, &live))
                    .expect("a live lease completes");
            }
            Claim::Completed(value) => {
                assert!(started < TTL, "an expired value was replayed");
                assert_eq!(value.id, 1);
            }
            Claim::InFlight(_) => panic!("nobody else claims the key"),
        }
        sweeper.join().unwrap();
        reader.join().unwrap();

        drop(store);
        assert_eq!(live.load(Ordering::Relaxed), 0, "a value leaked");
    });
}

/// `remove` deletes an in-flight key while duplicates wait on it, one
/// through `claim` + `wait` and one through `get_or_wait`. The removal
/// detaches the flight under the shard lock and resolves it with
/// `Abandoned`, so every waiter wakes (a flight detached but never resolved
/// would leave them parked: a loom deadlock); a duplicate arriving after the
/// removal owns the key afresh. The removed owner's `complete` is then
/// refused, since its token is no longer current.
#[test]
fn remove_racing_waiter() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let ticket = claim_owner(&store);

        let claim_waiter = thread::spawn({
            let store = store.clone();
            move || match store.claim(KEY).expect("no fingerprint, no bound") {
                Claim::InFlight(pending) => {
                    assert_eq!(pending.wait(), Err(WaitError::Abandoned));
                }
                // The removal came first, so the key was free; dropping the
                // ticket at once releases it again.
                Claim::Owner(_) => {}
                Claim::Completed(value) => panic!("nobody completed, yet replayed {value}"),
            }
        });
        let get_waiter = thread::spawn({
            let store = store.clone();
            // Untimed, as in `complete_racing_waiter_registration`. It may
            // also wait on the claim waiter's short-lived claim, which is
            // abandoned too; or find the key gone.
            move || store.get_or_wait(&KEY, Duration::MAX)
        });
        assert!(store.remove(&KEY), "the in-flight entry was live");
        claim_waiter.join().unwrap();
        let got = get_waiter.join().unwrap();
        assert!(
            matches!(got, Err(WaitError::Abandoned) | Ok(None)),
            "got {got:?}"
        );

        assert_eq!(ticket.complete(1), Err(CompleteError::Superseded(1)));
        assert_eq!(store.get(&KEY), None);
        assert_eq!(store.waiters(), 0);
    });
}

/// A lock-free reader races a writer that replaces the key's completed value
/// (remove, claim, complete) and so retires the old node to the epoch, where
/// the writer's later pins may advance the epoch and free it (rule 15 and the
/// shard protocol). A node must not be freed while the reader may still
/// stand on it: loom's cell tracking reports the value's drop racing the
/// reader's access, and the canary catches a clone of a freed value. Once the
/// store drops, every value must be gone, including those still waiting in
/// the collector.
#[test]
fn pinned_reader_racing_replacement_and_reclamation() {
    loom::model(|| {
        let live = std::sync::Arc::new(AtomicIsize::new(0));
        let clock = ManualClock::new();
        let store = new_store::<Counted>(&clock);
        claim_owner(&store)
            .complete(Counted::new(1, &live))
            .expect("a live lease completes");

        let reader = thread::spawn({
            let store = store.clone();
            move || store.get(&KEY).map(|value| value.id)
        });

        assert!(store.remove(&KEY));
        claim_owner(&store)
            .complete(Counted::new(2, &live))
            .expect("a live lease completes");
        // Each sweep flushes this thread's garbage and tries to advance the
        // epoch one step; the removed node is freed two steps after it was
        // retired, unless the reader still pins an older epoch.
        store.sweep();
        store.sweep();
        let seen = reader.join().unwrap();
        assert!(matches!(seen, None | Some(1) | Some(2)), "read {seen:?}");
        assert_eq!(store.get(&KEY).map(|value| value.id), Some(2));

        // With the reader gone nothing holds the epoch back: the retired
        // value is reclaimed while the store lives, not only when it drops.
        store.sweep();
        store.sweep();
        assert_eq!(
            live.load(Ordering::Relaxed),
            1,
            "only the current value is live"
        );

        drop(store);
        assert_eq!(live.load(Ordering::Relaxed), 0, "a value leaked");
    });
}

/// An async waiter's future is polled and then dropped (cancelled) while
/// the owner completes, with another async waiter registered before the
/// race (rule 8). Dropping a future withdraws its entry under the flight's
/// mutex, and `resolve` takes the list under the same mutex. So the other
/// waiter is always woken with the value, and while the flight is live it
/// holds only that waiter's entry: a future that did not withdraw would
/// leave a second entry (and its waker) behind.
#[test]
fn cancelled_async_waiter_racing_complete() {
    loom::model(|| {
        let clock = ManualClock::new();
        let store = new_store::<u32>(&clock);
        let ticket = claim_owner(&store);
        let waiting = || match store.claim(KEY).expect("no fingerprint, no bound") {
            Claim::InFlight(pending) => pending.into_future(),
            other => panic!("the owner is live, yet the claim got {other:?}"),
        };
        let (mut kept, mut cancelled) = (waiting(), waiting());
        let kept_flag = std::sync::Arc::new(WakeFlag::default());
        let kept_waker = Waker::from(kept_flag.clone());
        assert!(poll_once(&mut kept, &kept_waker).is_pending());
        assert_eq!(store.waiters(), 1);

        let canceller = thread::spawn({
            let store = store.clone();
            move || {
                let flag = std::sync::Arc::new(WakeFlag::default());
                match poll_once(&mut cancelled, &Waker::from(flag.clone())) {
                    Poll::Ready(result) => assert_eq!(result, Ok(9)),
                    Poll::Pending => {}
                }
                drop(cancelled);
                // Before the owner's complete detaches the flight, it holds
                // only the kept waiter's entry; after, the store holds none.
                let left = store.waiters();
                assert!(left <= 1, "the dropped future left its entry: {left}");
                flag
            }
        });

        ticket.complete(9).expect("a live lease completes");
        assert!(kept_flag.woken(), "the kept waiter's wakeup was lost");
        assert_eq!(poll_once(&mut kept, &kept_waker), Poll::Ready(Ok(9)));
        let cancelled_flag = canceller.join().unwrap();

        assert_eq!(store.waiters(), 0);
        assert_eq!(
            std::sync::Arc::strong_count(&cancelled_flag),
            1,
            "the store kept the cancelled future's waker"
        );
    });
}

/// A one-shard `u64` store of `buckets` buckets, for models that place two
/// keys in chains.
fn chain_store(clock: &ManualClock, buckets: usize) -> Store<u64, u64, FixedHasher> {
    Store::builder()
        .ttl(TTL)
        .lease(LEASE)
        .shards(1)
        .initial_capacity(buckets)
        .clock(clock.clone())
        .background_sweeper(false)
        .hasher(FixedHasher::default())
        .build()
        .expect("config")
}

/// 9. A lock-free read, and a claim's lock-free first look, racing a shard
/// resize (`grow` relinking nodes).
/// Two keys that share the one bucket of a fresh shard and part when it
/// grows to two, so relinking rewrites the pointer a reader follows.
fn keys_that_part_on_growth() -> (u64, u64) {
    let bucket_bit = |key: u64| FixedHasher::default().hash_one(key) & 1;
    let present = 0;
    let newcomer = (1..)
        .find(|&k| bucket_bit(k) != bucket_bit(present))
        .expect("a key");
    (present, newcomer)
}

/// A one-bucket store whose `present` key holds 7, and a thread claiming
/// `newcomer` (and completing it with 8): the second entry, which doubles
/// the shard's single bucket while the model's own thread reads `present`.
fn present_key_and_a_growing_claim(
    present: u64,
    newcomer: u64,
) -> (Store<u64, u64, FixedHasher>, thread::JoinHandle<()>) {
    let store = chain_store(&ManualClock::new(), 1);
    let Ok(Claim::Owner(ticket)) = store.claim(present) else {
        panic!("owner")
    };
    ticket.complete(7).expect("complete");
    let writer = {
        let store = store.clone();
        thread::spawn(move || match store.claim(newcomer) {
            Ok(Claim::Owner(ticket)) => ticket.complete(8).expect("complete"),
            _ => panic!("the newcomer is absent"),
        })
    };
    (store, writer)
}

/// `grow` relinks nodes while a reader may walk the old chain: the reader
/// can be led off it and miss a key that is there. Without the resize count
/// check in `find_settled` (a miss trusted while `resizes` moved), `get`
/// returns `None` for a completed key here; with it, the miss is confirmed
/// under the lock and the value is found.
#[test]
fn get_racing_resize_never_misses_a_present_key() {
    let (present, newcomer) = keys_that_part_on_growth();
    loom::model(move || {
        let (store, writer) = present_key_and_a_growing_claim(present, newcomer);
        assert_eq!(
            store.get(&present),
            Some(7),
            "a present key missed during a resize"
        );
        writer.join().expect("writer");
        assert_eq!(store.get(&present), Some(7));
        assert_eq!(store.get(&newcomer), Some(8));
    });
}

/// A claim's lock-free first look trusts its miss without the resize
/// check (`Miss::Provisional`): a walk led off its chain by `grow` sends the
/// claim to the lock, and the locked claim must find the present key there.
/// Were a provisional miss final, or the locked half to trust it, the claim
/// would own a completed key and run its operation a second time (rule 1).
#[test]
fn claim_racing_resize_finds_the_present_key() {
    let (present, newcomer) = keys_that_part_on_growth();
    loom::model(move || {
        let (store, writer) = present_key_and_a_growing_claim(present, newcomer);
        match store.claim(present) {
            Ok(Claim::Completed(value)) => assert_eq!(value, 7),
            _ => panic!("a present key claimed again during a resize"),
        }
        writer.join().expect("writer");
        let stats = store.stats();
        assert_eq!(stats.claims, 2, "one claim per key");
        assert_eq!(stats.replays, 1, "the present key's claim, once");
    });
}

/// 10. A lock-free read racing a sweep that rebuilds its chain's summary.
/// Two keys in the one chain of a two-bucket shard, with different summary
/// bits (hash bits 40 to 42, see `Buckets::may_hold`).
fn keys_sharing_a_chain() -> (u64, u64) {
    let hash = |key: u64| FixedHasher::default().hash_one(key);
    let live = 0;
    let expiring = (1..)
        .find(|&k| hash(k) & 1 == hash(live) & 1 && (hash(k) >> 40) & 7 != (hash(live) >> 40) & 7)
        .expect("a key");
    (live, expiring)
}

/// The sweep unlinks the expired key and rewrites the chain's summary byte
/// from the survivors while a reader of the live key may check that byte.
/// A summary rebuilt in two steps (cleared, then refilled), or from the
/// removed nodes instead of the survivors, lets the reader prove the live
/// key absent and `get` returns `None`.
#[test]
fn get_racing_summary_rebuild_never_misses_a_live_key() {
    let (live, expiring) = keys_sharing_a_chain();
    loom::model(move || {
        let clock = ManualClock::new();
        let store = chain_store(&clock, 2);
        let Ok(Claim::Owner(ticket)) = store.claim(live) else {
            panic!("owner")
        };
        ticket.complete(7).expect("complete");
        let Ok(Claim::Owner(ticket)) = store.claim(expiring) else {
            panic!("owner")
        };
        ticket
            .complete_with_ttl(8, Duration::from_secs(1))
            .expect("complete");
        clock.advance(Duration::from_secs(1));

        let sweeper = {
            let store = store.clone();
            thread::spawn(move || assert_eq!(store.sweep(), 1))
        };
        assert_eq!(
            store.get(&live),
            Some(7),
            "a live key missed during a sweep"
        );
        sweeper.join().expect("sweeper");
        assert_eq!(store.get(&live), Some(7));
        assert_eq!(store.get(&expiring), None);
        assert_eq!(store.len(), 1);
    });
}
