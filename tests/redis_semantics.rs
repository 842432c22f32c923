//! One semantics suite, two stores: each behaviour test below is written
//! once against [`Subject`] and runs against the in-process `Store` (on a
//! manual clock) and the `RedisStore` (on a throwaway `redis-server`, with
//! short real leases and TTLs on the server's clock).
#![cfg(feature = "redis")]

#[path = "common/redis_server.rs"]
mod redis_server;
#[macro_use]
#[path = "common/suite.rs"]
mod suite;

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idemstore::{Fingerprint, ManualClock, Store};
use redis_server::RedisServer;

/// A claim's answer, the same for both stores.
pub enum Claimed<T, P> {
    Owner(T),
    Completed(String),
    InFlight(P),
    Mismatch,
}

/// How a wait ended without a value.
#[derive(Debug, PartialEq)]
pub enum Waited {
    Abandoned,
    LeaseExpired,
    Timeout,
    Other(String),
}

pub trait OwnerTicket: Send + 'static {
    fn token(&self) -> u64;
    /// `Ok(true)` stored, `Ok(false)` superseded.
    fn complete(self, value: &str, ttl: Option<Duration>) -> impl Future<Output = bool> + Send;
    fn renew(&self) -> impl Future<Output = bool> + Send;
    fn abandon(self) -> impl Future<Output = ()> + Send;
}

pub trait Waiting: Send + 'static {
    fn wait(self, timeout: Duration) -> impl Future<Output = Result<String, Waited>> + Send;
}

/// A store under test.
pub trait Subject: Clone + Send + Sync + 'static {
    type Ticket: OwnerTicket;
    type Pending: Waiting;
    /// The lease the store was built with.
    const LEASE: Duration;
    /// The default TTL the store was built with.
    const TTL: Duration;
    fn claim(
        &self,
        key: &str,
        fingerprint: Option<Fingerprint>,
    ) -> impl Future<Output = Claimed<Self::Ticket, Self::Pending>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Option<String>> + Send;
    fn remove(&self, key: &str) -> impl Future<Output = bool> + Send;
    /// `execute` with an operation that counts its runs and fails if told.
    fn execute(
        &self,
        key: &str,
        runs: Arc<AtomicUsize>,
        fail: bool,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Lets `d` pass on the store's clock (and lets it notice).
    fn pass(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

// ---- the in-process store ----

#[derive(Clone)]
struct Local(Store<String, String>, ManualClock);

impl OwnerTicket for idemstore::Ticket<String, String> {
    fn token(&self) -> u64 {
        idemstore::Ticket::token(self)
    }
    async fn complete(self, value: &str, ttl: Option<Duration>) -> bool {
        match ttl {
            Some(ttl) => self.complete_with_ttl(value.into(), ttl).is_ok(),
            None => idemstore::Ticket::complete(self, value.into()).is_ok(),
        }
    }
    async fn renew(&self) -> bool {
        idemstore::Ticket::renew(self).is_ok()
    }
    async fn abandon(self) {
        idemstore::Ticket::abandon(self)
    }
}

impl Waiting for idemstore::Pending<String, String> {
    async fn wait(self, timeout: Duration) -> Result<String, Waited> {
        match tokio::time::timeout(timeout, self.into_future()).await {
            Err(_) => Err(Waited::Timeout),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(idemstore::WaitError::Abandoned)) => Err(Waited::Abandoned),
            Ok(Err(idemstore::WaitError::LeaseExpired)) => Err(Waited::LeaseExpired),
            Ok(Err(e)) => Err(Waited::Other(e.to_string())),
        }
    }
}

impl Subject for Local {
    type Ticket = idemstore::Ticket<String, String>;
    type Pending = idemstore::Pending<String, String>;
    const LEASE: Duration = Duration::from_secs(10);
    const TTL: Duration = Duration::from_secs(100);
    async fn claim(
        &self,
        key: &str,
        fingerprint: Option<Fingerprint>,
    ) -> Claimed<Self::Ticket, Self::Pending> {
        let claimed = match fingerprint {
            Some(f) => self.0.claim_with(key.into(), f),
            None => self.0.claim(key.into()),
        };
        match claimed {
            Ok(idemstore::Claim::Owner(t)) => Claimed::Owner(t),
            Ok(idemstore::Claim::Completed(v)) => Claimed::Completed(v),
            Ok(idemstore::Claim::InFlight(p)) => Claimed::InFlight(p),
            Err(idemstore::ClaimError::Mismatch) => Claimed::Mismatch,
            Err(e) => panic!("claim: {e}"),
        }
    }
    async fn get(&self, key: &str) -> Option<String> {
        self.0.get(key)
    }
    async fn remove(&self, key: &str) -> bool {
        self.0.remove(key)
    }
    async fn execute(
        &self,
        key: &str,
        runs: Arc<AtomicUsize>,
        fail: bool,
    ) -> Result<String, String> {
        self.0
            .execute_async(key.into(), || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail {
                    Err("failed".to_string())
                } else {
                    Ok("ran".to_string())
                }
            })
            .await
            .map(|o| o.into_inner())
            .map_err(|e| e.to_string())
    }
    async fn pass(&self, d: Duration) {
        self.1.advance(d);
        self.0.sweep();
    }
}

fn local() -> Option<Local> {
    let clock = ManualClock::new();
    let store = Store::builder()
        .ttl(Local::TTL)
        .lease(Local::LEASE)
        .clock(clock.clone())
        .background_sweeper(false)
        .build()
        .expect("config");
    Some(Local(store, clock))
}

// ---- the Redis store ----

/// One or two replicas (store handles, each with its own in-process
/// front) on one server: with two, each call goes to the next replica, so
/// a duplicate meets its owner through Redis and its notices.
#[derive(Clone)]
struct Shared {
    replicas: Arc<Vec<idemstore::redis::RedisStore<String, String>>>,
    next: Arc<AtomicUsize>,
    _server: Arc<RedisServer>,
}

impl Shared {
    fn replica(&self) -> &idemstore::redis::RedisStore<String, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.replicas[n % self.replicas.len()]
    }
}

impl OwnerTicket for idemstore::redis::Ticket<String, String> {
    fn token(&self) -> u64 {
        idemstore::redis::Ticket::token(self)
    }
    async fn complete(self, value: &str, ttl: Option<Duration>) -> bool {
        use idemstore::redis::CompleteError;
        let done = match ttl {
            Some(ttl) => self.complete_with_ttl(value.into(), ttl).await,
            None => idemstore::redis::Ticket::complete(self, value.into()).await,
        };
        match done {
            Ok(()) => true,
            Err(CompleteError::Superseded(_)) => false,
            Err(e) => panic!("complete: {e}"),
        }
    }
    async fn renew(&self) -> bool {
        idemstore::redis::Ticket::renew(self).await.is_ok()
    }
    async fn abandon(self) {
        idemstore::redis::Ticket::abandon(self)
            .await
            .expect("abandon")
    }
}

impl Waiting for idemstore::redis::Pending<String, String> {
    async fn wait(self, timeout: Duration) -> Result<String, Waited> {
        use idemstore::redis::WaitError;
        match self.wait_timeout(timeout).await {
            Ok(v) => Ok(v),
            Err(WaitError::Abandoned) => Err(Waited::Abandoned),
            Err(WaitError::LeaseExpired) => Err(Waited::LeaseExpired),
            Err(WaitError::Timeout) => Err(Waited::Timeout),
            Err(e) => Err(Waited::Other(e.to_string())),
        }
    }
}

impl Subject for Shared {
    type Ticket = idemstore::redis::Ticket<String, String>;
    type Pending = idemstore::redis::Pending<String, String>;
    const LEASE: Duration = Duration::from_millis(300);
    const TTL: Duration = Duration::from_secs(3);
    async fn claim(
        &self,
        key: &str,
        fingerprint: Option<Fingerprint>,
    ) -> Claimed<Self::Ticket, Self::Pending> {
        use idemstore::redis::{Claim, ClaimError};
        let claimed = match fingerprint {
            Some(f) => self.replica().claim_with(key.into(), f).await,
            None => self.replica().claim(key.into()).await,
        };
        match claimed {
            Ok(Claim::Owner(t)) => Claimed::Owner(t),
            Ok(Claim::Completed(v)) => Claimed::Completed(v),
            Ok(Claim::InFlight(p)) => Claimed::InFlight(p),
            Err(ClaimError::Mismatch) => Claimed::Mismatch,
            Err(e) => panic!("claim: {e}"),
        }
    }
    async fn get(&self, key: &str) -> Option<String> {
        self.replica().get(&key.to_string()).await.expect("get")
    }
    async fn remove(&self, key: &str) -> bool {
        self.replica()
            .remove(&key.to_string())
            .await
            .expect("remove")
    }
    async fn execute(
        &self,
        key: &str,
        runs: Arc<AtomicUsize>,
        fail: bool,
    ) -> Result<String, String> {
        self.replica()
            .execute(key.into(), || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail {
                    Err("failed".to_string())
                } else {
                    Ok("ran".to_string())
                }
            })
            .await
            .map(|o| o.into_inner())
            .map_err(|e| e.to_string())
    }
    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// `replicas` store handles on one fresh server.
fn shared(replicas: usize) -> Option<Shared> {
    let server = RedisServer::start()?;
    let replicas = (0..replicas)
        .map(|_| {
            idemstore::redis::RedisStore::builder(server.client())
                .prefix("suite")
                .ttl(Shared::TTL)
                .lease(Shared::LEASE)
                .build()
                .expect("build")
        })
        .collect();
    Some(Shared {
        replicas: Arc::new(replicas),
        next: Arc::new(AtomicUsize::new(0)),
        _server: Arc::new(server),
    })
}

// ---- the suite ----

fn fp(body: &str) -> Option<Fingerprint> {
    Some(Fingerprint::of_bytes(body.as_bytes()))
}

/// Rule 1: concurrent duplicates run the operation once; all see its value.
async fn exactly_one_owner_under_concurrency<S: Subject>(s: S) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (s, runs) = (s.clone(), runs.clone());
            tokio::spawn(async move { s.execute("k", runs, false).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok("ran".to_string()));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Rules 3 and 4: a duplicate waits for the owner; later claims replay.
async fn duplicate_waits_then_replays<S: Subject>(s: S) {
    let Claimed::Owner(owner) = s.claim("k", None).await else {
        panic!("owner")
    };
    let Claimed::InFlight(pending) = s.claim("k", None).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait(Duration::from_secs(5)));
    assert!(owner.complete("v", None).await);
    assert_eq!(waiter.await.unwrap(), Ok("v".to_string()));
    assert!(matches!(s.claim("k", None).await, Claimed::Completed(v) if v == "v"));
    assert_eq!(s.get("k").await.as_deref(), Some("v"));
}

/// Rule 5: another payload is refused in flight and once completed.
async fn mismatch_in_every_state<S: Subject>(s: S) {
    let Claimed::Owner(owner) = s.claim("k", fp("a")).await else {
        panic!("owner")
    };
    assert!(matches!(s.claim("k", fp("b")).await, Claimed::Mismatch));
    assert!(matches!(s.claim("k", fp("a")).await, Claimed::InFlight(_)));
    assert!(owner.complete("v", None).await);
    assert!(matches!(s.claim("k", fp("b")).await, Claimed::Mismatch));
    assert!(matches!(s.claim("k", fp("a")).await, Claimed::Completed(v) if v == "v"));
    assert!(matches!(s.claim("k", None).await, Claimed::Completed(_)));
}

/// Rule 6: a dropped owner releases the key and wakes its waiters.
async fn failure_releases_and_wakes<S: Subject>(s: S) {
    let Claimed::Owner(owner) = s.claim("k", None).await else {
        panic!("owner")
    };
    let Claimed::InFlight(pending) = s.claim("k", None).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait(Duration::from_secs(5)));
    drop(owner);
    assert_eq!(waiter.await.unwrap(), Err(Waited::Abandoned));
    let Claimed::Owner(again) = s.claim("k", None).await else {
        panic!("claimable again")
    };
    again.abandon().await;
    assert!(matches!(s.claim("k", None).await, Claimed::Owner(_)));
}

/// Rule 7: an error is not stored; the retry runs.
async fn errors_are_not_stored<S: Subject>(s: S) {
    let runs = Arc::new(AtomicUsize::new(0));
    assert!(s.execute("k", runs.clone(), true).await.is_err());
    assert_eq!(s.get("k").await, None);
    assert_eq!(s.execute("k", runs.clone(), false).await, Ok("ran".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Rule 8: a waiter that times out affects neither owner nor others.
async fn a_timed_out_waiter_affects_nobody<S: Subject>(s: S) {
    let Claimed::Owner(owner) = s.claim("k", None).await else {
        panic!("owner")
    };
    let Claimed::InFlight(first) = s.claim("k", None).await else {
        panic!("in flight")
    };
    let Claimed::InFlight(second) = s.claim("k", None).await else {
        panic!("in flight")
    };
    assert_eq!(
        first.wait(Duration::from_millis(10)).await,
        Err(Waited::Timeout)
    );
    let waiter = tokio::spawn(second.wait(Duration::from_secs(5)));
    assert!(owner.complete("v", None).await);
    assert_eq!(waiter.await.unwrap(), Ok("v".to_string()));
}

/// Rules 9 and 10: after the lease, a claim takes over with a larger
/// token; the stale owner is refused; renew keeps a lease alive.
async fn lease_takeover_fences_the_stale_owner<S: Subject>(s: S) {
    let Claimed::Owner(stale) = s.claim("k", None).await else {
        panic!("owner")
    };
    s.pass(S::LEASE / 2).await;
    assert!(stale.renew().await, "renewed inside its lease");
    s.pass(S::LEASE / 2 + S::LEASE / 4).await;
    assert!(
        matches!(s.claim("k", None).await, Claimed::InFlight(_)),
        "the renewed lease still holds"
    );
    s.pass(S::LEASE).await;
    let Claimed::Owner(fresh) = s.claim("k", None).await else {
        panic!("taken over")
    };
    assert!(fresh.token() > stale.token());
    assert!(!stale.renew().await);
    assert!(
        !stale.complete("late", None).await,
        "the stale owner is fenced"
    );
    assert!(fresh.complete("on time", None).await);
    assert_eq!(s.get("k").await.as_deref(), Some("on time"));
}

/// Rule 10: a key's tokens grow across abandon, completion, expiry,
/// removal and takeover.
async fn tokens_grow_per_key<S: Subject>(s: S) {
    let mut last = 0;
    let mut next = |token: u64| {
        assert!(token > last, "token {token} after {last}");
        last = token;
    };
    let claim = |s: S| async move {
        match s.claim("k", None).await {
            Claimed::Owner(t) => t,
            Claimed::Completed(v) => panic!("owner, not completed {v}"),
            Claimed::InFlight(_) => panic!("owner, not in flight"),
            Claimed::Mismatch => panic!("owner, not mismatch"),
        }
    };
    let t = claim(s.clone()).await;
    next(t.token());
    t.abandon().await;
    let t = claim(s.clone()).await;
    next(t.token());
    assert!(t.complete("v", Some(S::LEASE)).await);
    s.pass(S::LEASE * 2).await;
    let t = claim(s.clone()).await;
    next(t.token());
    assert!(t.complete("v", None).await);
    assert!(s.remove("k").await);
    let t = claim(s.clone()).await;
    next(t.token());
    s.pass(S::LEASE * 2).await;
    let t = claim(s.clone()).await;
    next(t.token());
}

/// Rules 11 and 12: retention counts from completion; a per-entry TTL
/// overrides the default; an expired entry is invisible at once.
async fn retention_and_per_entry_ttl<S: Subject>(s: S) {
    let Claimed::Owner(short) = s.claim("short", None).await else {
        panic!("owner")
    };
    let Claimed::Owner(long) = s.claim("long", None).await else {
        panic!("owner")
    };
    s.pass(S::LEASE / 2).await;
    assert!(short.complete("s", Some(S::LEASE / 2)).await);
    assert!(long.complete("l", None).await);
    assert_eq!(s.get("short").await.as_deref(), Some("s"));
    s.pass(S::LEASE).await;
    assert_eq!(s.get("short").await, None, "its own TTL passed");
    assert_eq!(
        s.get("long").await.as_deref(),
        Some("l"),
        "the default holds"
    );
    assert!(matches!(s.claim("short", None).await, Claimed::Owner(_)));
}

/// `remove`: a removed key is absent; its in-flight owner is refused and
/// its waiters released.
async fn remove_in_every_state<S: Subject>(s: S) {
    let Claimed::Owner(owner) = s.claim("k", None).await else {
        panic!("owner")
    };
    let Claimed::InFlight(pending) = s.claim("k", None).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait(Duration::from_secs(5)));
    assert!(s.remove("k").await);
    assert_eq!(waiter.await.unwrap(), Err(Waited::Abandoned));
    assert!(!owner.complete("late", None).await);
    assert!(!s.remove("k").await);
    let Claimed::Owner(again) = s.claim("k", None).await else {
        panic!("owner")
    };
    assert!(again.complete("v", None).await);
    assert!(s.remove("k").await);
    assert_eq!(s.get("k").await, None);
}

/// Rule 9: a waiter is released once the owner's lease passes.
async fn a_waiter_is_released_when_the_lease_passes<S: Subject>(s: S) {
    let Claimed::Owner(_owner) = s.claim("k", None).await else {
        panic!("owner")
    };
    let Claimed::InFlight(pending) = s.claim("k", None).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait(S::LEASE * 20));
    s.pass(S::LEASE + S::LEASE / 4).await;
    assert_eq!(waiter.await.unwrap(), Err(Waited::LeaseExpired));
}

suite!(
    on_redis_two_replicas;
    exactly_one_owner_under_concurrency,
    duplicate_waits_then_replays,
    mismatch_in_every_state,
    failure_releases_and_wakes,
    errors_are_not_stored,
    a_timed_out_waiter_affects_nobody,
    lease_takeover_fences_the_stale_owner,
    tokens_grow_per_key,
    retention_and_per_entry_ttl,
    remove_in_every_state,
    a_waiter_is_released_when_the_lease_passes,
);
