//! What a claim hands out: the owner's [`Ticket`] and a duplicate's
//! [`Pending`]. Neither holds a lock (rule 15).

use std::fmt;
use std::future::IntoFuture;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use ahash::RandomState;

use crate::clock::duration_to_nanos;
use crate::error::{CompleteError, Superseded, WaitError};
use crate::fingerprint::Fingerprint;
use crate::store::Store;
use crate::sync::Arc;
use crate::wait::{Flight, WaitFuture};

/// The answer to [`Store::claim`].
#[derive(Debug)]
pub enum Claim<K, V, S = RandomState> {
    /// The caller owns the key: run the operation, then
    /// [`complete`](Ticket::complete) the ticket (or drop it to release).
    /// The ticket's [`token`](Ticket::token) is larger than that of every
    /// earlier claim of the same key.
    Owner(Ticket<K, V, S>),
    /// The key's operation already completed; this is its stored result.
    /// The caller should treat it as a replay and not run the operation.
    Completed(V),
    /// Another owner is running the operation; wait on this for its result.
    InFlight(Pending<K, V>),
}

/// Releases a claim: `(store, hash, key, token)`.
type Release<K, V, S> = fn(&Store<K, V, S>, u64, &K, u64);

/// The owner's claim on a key: an RAII guard.
///
/// Complete it with the operation's result, or let it go: dropping it, or
/// unwinding through it, abandons the claim, so the key is released and
/// every waiter wakes (rule 6). It holds no lock and is `Send + 'static`, so
/// it can move into another thread or task.
///
/// ```
/// use idemstore::{Claim, Store};
/// let store: Store<&str, u32> = Store::new();
/// let Ok(Claim::Owner(ticket)) = store.claim("job") else { unreachable!() };
/// let token = ticket.token(); // pass downstream as a fencing token
/// drop(ticket); // abandoned: the key is free again
/// let Ok(Claim::Owner(again)) = store.claim("job") else { unreachable!() };
/// assert!(again.token() > token); // a key's tokens only grow
/// ```
pub struct Ticket<K, V, S = RandomState> {
    store: Store<K, V, S>,
    key: K,
    hash: u64,
    token: u64,
    fingerprint: Option<Fingerprint>,
    /// Releases the claim; set while the ticket is still live. A function
    /// pointer made where the store's bounds hold, so `Drop` needs none.
    release: Option<Release<K, V, S>>,
}

impl<K, V, S> Ticket<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(
        store: Store<K, V, S>,
        key: K,
        hash: u64,
        token: u64,
        fingerprint: Option<Fingerprint>,
    ) -> Self {
        Ticket {
            store,
            key,
            hash,
            token,
            fingerprint,
            release: Some(|store, hash, key, token| store.abandon_token(hash, key, token)),
        }
    }

    /// The claimed key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The claim's fencing token (rule 10): larger than the token of every
    /// earlier claim of the same key, whether that claim completed, was
    /// abandoned, removed, expired or taken over after its lease passed.
    /// A downstream system can reject a write for this key carrying a token
    /// older than the last one it saw for the key.
    ///
    /// The order is per key: nothing is promised about how two different
    /// keys' tokens compare, so compare a key's tokens only with each other.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemstore::{Claim, ManualClock, Store};
    /// let clock = ManualClock::new();
    /// let store: Store<&str, u8> = Store::builder().clock(clock.clone()).build()?;
    /// let Ok(Claim::Owner(stale)) = store.claim("job") else { unreachable!() };
    /// clock.advance(Duration::from_secs(60)); // the lease passes
    /// let Ok(Claim::Owner(fresh)) = store.claim("job") else { unreachable!() };
    /// assert!(fresh.token() > stale.token()); // the takeover's token is larger
    /// # Ok::<(), idemstore::ConfigError>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Stores `value` as the key's result, kept for the store's TTL from now,
    /// and wakes every waiter with it. Fails, returning `value`, if the claim
    /// is no longer current (lease passed and taken over, or removed).
    pub fn complete(self, value: V) -> Result<(), CompleteError<V>> {
        self.complete_inner(value, None)
    }

    /// Like [`complete`](Self::complete), kept for `ttl` from now instead of
    /// the store's default (rule 11).
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemstore::{Claim, ManualClock, Store};
    /// let clock = ManualClock::new();
    /// let store: Store<u8, u8> = Store::builder().clock(clock.clone()).build()?;
    /// if let Ok(Claim::Owner(t)) = store.claim(1) {
    ///     t.complete_with_ttl(5, Duration::from_secs(2)).unwrap();
    /// }
    /// clock.advance(Duration::from_secs(2));
    /// assert_eq!(store.get(&1), None);
    /// # Ok::<(), idemstore::ConfigError>(())
    /// ```
    pub fn complete_with_ttl(self, value: V, ttl: Duration) -> Result<(), CompleteError<V>> {
        self.complete_inner(value, Some(duration_to_nanos(ttl)))
    }

    fn complete_inner(mut self, value: V, ttl: Option<u64>) -> Result<(), CompleteError<V>> {
        self.release = None;
        let owned = (self.hash, &self.key, self.token, self.fingerprint);
        self.store.complete_token(owned, value, ttl)
    }

    /// Extends the lease to a full lease from now, if the claim is still
    /// current. Long operations call this to keep duplicates from taking the
    /// key over.
    pub fn renew(&self) -> Result<(), Superseded<()>> {
        if self.store.renew_token(self.hash, &self.key, self.token) {
            Ok(())
        } else {
            Err(Superseded(()))
        }
    }

    /// Releases the claim without a result, waking every waiter with
    /// [`WaitError::Abandoned`]; the next claim runs the operation. Does
    /// nothing if the claim is no longer current. Same as dropping.
    pub fn abandon(self) {}
}

impl<K, V, S> Drop for Ticket<K, V, S> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(&self.store, self.hash, &self.key, self.token);
        }
    }
}

impl<K: fmt::Debug, V, S> fmt::Debug for Ticket<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish()
    }
}

/// A duplicate's handle on an in-flight key: wait on it for the owner's
/// result, by blocking or by `.await`.
///
/// Waiting never affects the owner or other waiters (rule 8). The wait ends
/// with the owner's value, or with [`WaitError::Abandoned`] /
/// [`WaitError::LeaseExpired`] when the owner releases the key or its lease
/// passes (noticed by the sweeper), after which a new claim may run the
/// operation.
///
/// ```
/// use std::time::Duration;
/// use idemstore::{Claim, Store, WaitError};
/// let store: Store<u8, u8> = Store::new();
/// let Ok(Claim::Owner(owner)) = store.claim(1) else { unreachable!() };
/// let Ok(Claim::InFlight(pending)) = store.claim(1) else { unreachable!() };
/// assert_eq!(pending.wait_timeout(Duration::from_millis(1)), Err(WaitError::Timeout));
/// std::thread::spawn(move || owner.complete(42));
/// assert_eq!(pending.wait(), Ok(42));
/// ```
pub struct Pending<K, V> {
    key: K,
    flight: Arc<Flight<V>>,
}

impl<K, V: Clone> Pending<K, V> {
    pub(crate) fn new(key: K, flight: Arc<Flight<V>>) -> Self {
        Pending { key, flight }
    }

    /// The key being waited on.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Blocks until the owner completes or releases the claim.
    pub fn wait(&self) -> Result<V, WaitError> {
        self.flight.wait(None)
    }

    /// Blocks for at most `timeout` (real time); [`WaitError::Timeout`] after.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<V, WaitError> {
        self.flight.wait(Some(timeout))
    }
}

impl<K, V: Clone> IntoFuture for Pending<K, V> {
    type Output = Result<V, WaitError>;
    type IntoFuture = WaitFuture<V>;

    fn into_future(self) -> WaitFuture<V> {
        WaitFuture::new(self.flight)
    }
}

impl<K: fmt::Debug, V> fmt::Debug for Pending<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
