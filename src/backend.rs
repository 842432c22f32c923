//! [`Backend`]: the one small trait the HTTP layer is generic over, so it
//! runs unchanged over the in-process [`Store`] (plain or journaled: the
//! same type) and, with feature `redis`, the shared
//! [`RedisStore`](crate::redis::RedisStore).
//!
//! It is the claim protocol and nothing else: claim a key with a payload
//! fingerprint and learn whether the caller owns it, it is completed, or
//! another owner has it in flight; wait for that owner, up to a deadline;
//! complete, renew or release an owned claim; read a completed value (the
//! steps layer's use, `src/steps/`). Every failure of the store itself
//! (a journal that cannot write a token reservation, a Redis server that is
//! down, slow or holds a foreign record) comes back as [`Unavailable`], so a
//! caller can refuse the request rather than run it without a claim.
//!
//! Every call is bounded: the in-process store never blocks (a wait ends by
//! its deadline, on a timer thread of its own), and the Redis store bounds
//! each round trip by its timeout.
//!
//! The methods return `impl Future`: over the in-process store each is a
//! ready future (a wait is the store's own `WaitFuture`), so a caller
//! generic over `Backend` allocates and boxes nothing it would not over the
//! store itself.
//!
//! ```
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     struct Unpark(std::thread::Thread);
//! #     impl std::task::Wake for Unpark {
//! #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
//! #     }
//! #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop {
//! #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v }
//! #         std::thread::park();
//! #     }
//! # }
//! use idemstore::backend::{Backend, Claimed};
//! use idemstore::{Fingerprint, Store};
//!
//! /// Runs `charge` once per key, over any backend.
//! async fn once<B: Backend<String, u64>>(store: &B, key: String, charge: u64) -> Option<u64> {
//!     let fingerprint = Fingerprint::of_bytes(&charge.to_le_bytes());
//!     match store.claim(&key, fingerprint).await.ok()? {
//!         Claimed::Owner(ticket) => {
//!             store.complete(ticket, charge).await.ok()?;
//!             Some(charge)
//!         }
//!         Claimed::Completed(stored) => Some(stored),
//!         Claimed::InFlight(pending) => store.wait(pending, None).await.ok(),
//!     }
//! }
//!
//! let store: Store<String, u64> = Store::new();
//! assert_eq!(block_on(once(&store, "order-1".into(), 42)), Some(42));
//! assert_eq!(block_on(once(&store, "order-1".into(), 42)), Some(42)); // a replay
//! assert_eq!(store.stats().replays, 1);
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Instant;

use crate::fingerprint::Fingerprint;
use crate::store::Store;

/// A store the HTTP layer, multi-step runs (feature `steps`) and any
/// caller generic over stores claim keys in. Implemented by [`Store`] and, with feature `redis`, by
/// [`RedisStore`](crate::redis::RedisStore).
///
/// The rules are the store's own (`docs/semantics.md`): one owner per key
/// (rule 1, and rule 24 across processes), fingerprints checked in every
/// state (5), a dropped ticket releases the key and wakes the waiters (6),
/// a stale owner's completion is refused (10).
pub trait Backend<K, V>: Clone + Send + Sync + 'static {
    /// The owner's claim. Dropping it releases the key (rule 6), as
    /// [`abandon`](Self::abandon) does.
    type Ticket: Send + 'static;
    /// A duplicate's handle on an in-flight owner, for [`wait`](Self::wait).
    type Pending: Send + 'static;

    /// Claims `key` for a payload with `fingerprint`.
    fn claim(
        &self,
        key: &K,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Claimed<Self::Ticket, Self::Pending, V>, ClaimError>> + Send;

    /// Waits for the owner `pending` is on: its value, or why there is none.
    /// Ends with [`WaitError::Timeout`] once `deadline` passes (give or take
    /// one round trip in flight); with no deadline, by the time the owner's
    /// lease passes. Cancel-safe: dropping the future affects nobody else.
    fn wait(
        &self,
        pending: Self::Pending,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<V, WaitError>> + Send;

    /// Stores `value` as the key's result and wakes its waiters.
    fn complete(
        &self,
        ticket: Self::Ticket,
        value: V,
    ) -> impl Future<Output = Result<(), CompleteError>> + Send;

    /// Releases the claim without a result and waits until the store has
    /// it, so a retry that follows runs the operation. Dropping the future
    /// early still releases the claim (as dropping the ticket does).
    fn abandon(&self, ticket: Self::Ticket) -> impl Future<Output = ()> + Send;

    /// The claim's fencing token (rule 10).
    fn token(ticket: &Self::Ticket) -> u64;

    /// The completed, unexpired value of `key`; `None` if absent, expired
    /// or in flight. Claims nothing and waits for nobody.
    fn get(&self, key: &K) -> impl Future<Output = Result<Option<V>, Unavailable>> + Send;

    /// Extends the claim's lease to a full lease from now, if it is still
    /// current; [`CompleteError::Superseded`] if it was taken over or
    /// removed (rule 10).
    fn renew(
        &self,
        ticket: &Self::Ticket,
    ) -> impl Future<Output = Result<(), CompleteError>> + Send;
}

/// The answer to [`Backend::claim`], in the shapes of [`crate::Claim`].
#[derive(Debug)]
pub enum Claimed<T, P, V> {
    /// The caller owns the key: run the operation, then
    /// [`complete`](Backend::complete) (or drop the ticket to release).
    Owner(T),
    /// The key's operation already completed; this is its stored result.
    Completed(V),
    /// Another owner is running the operation: [`wait`](Backend::wait) on
    /// this.
    InFlight(P),
}

/// Why [`Backend::claim`] gave no claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClaimError {
    /// The key is in use with another payload fingerprint (rule 5).
    Mismatch,
    /// The store is at its `max_entries` or `max_bytes` bound (rule 14).
    Full,
    /// The store could not answer; nothing was claimed.
    Unavailable(Unavailable),
}

/// Why [`Backend::wait`] ended without a value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WaitError {
    /// The owner released the key without a result: claim it again.
    Abandoned,
    /// The owner's lease passed: claim again to take the key over.
    LeaseExpired,
    /// The caller's deadline passed; the owner is unaffected.
    Timeout,
    /// The key turned out to be in use with another payload fingerprint.
    Mismatch,
    /// The store could not answer.
    Unavailable(Unavailable),
}

/// Why [`Backend::complete`] stored nothing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CompleteError {
    /// The claim is no longer current: its lease passed and the key was
    /// taken over, or it was removed (rule 10).
    Superseded,
    /// The store could not record the result: it is not stored, and the
    /// claim is released (unless the store did record it after all).
    Unavailable(Unavailable),
}

/// The store itself failed: its journal, or its server. Says what happened;
/// the caller's move is to refuse the request (the HTTP layer answers 503
/// `store_unavailable`) and let the client retry.
#[derive(Clone)]
pub struct Unavailable(Arc<dyn StdError + Send + Sync>);

impl Unavailable {
    pub(crate) fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Unavailable(Arc::new(error))
    }

    /// The store's own error, if it is a `T`: the steps layer hands a
    /// journal's error back as its own.
    #[cfg_attr(not(feature = "steps"), allow(dead_code))]
    pub(crate) fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Unavailable").field(&self.0).finish()
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store unavailable: {}", self.0)
    }
}

impl StdError for Unavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

macro_rules! display {
    ($ty:ty { $($variant:pat => $text:expr,)* }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($variant => fmt::Display::fmt(&$text, f),)*
                }
            }
        }

        impl StdError for $ty {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                match self {
                    Self::Unavailable(e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

display!(ClaimError {
    ClaimError::Mismatch => crate::ClaimError::Mismatch,
    ClaimError::Full => crate::ClaimError::Full,
    ClaimError::Unavailable(e) => e,
});
display!(WaitError {
    WaitError::Abandoned => crate::WaitError::Abandoned,
    WaitError::LeaseExpired => crate::WaitError::LeaseExpired,
    WaitError::Timeout => crate::WaitError::Timeout,
    WaitError::Mismatch => crate::ClaimError::Mismatch,
    WaitError::Unavailable(e) => e,
});
display!(CompleteError {
    CompleteError::Superseded => crate::Superseded(()),
    CompleteError::Unavailable(e) => e,
});

// ---- the in-process store ----

/// The in-process store, plain or journaled. Every call but a wait is
/// synchronous and its future ready at once; a wait is the store's own
/// [`WaitFuture`](crate::WaitFuture), under a deadline from a small timer
/// thread when one is given.
impl<K, V, S> Backend<K, V> for Store<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Ticket = crate::Ticket<K, V, S>;
    type Pending = crate::Pending<K, V>;

    fn claim(
        &self,
        key: &K,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Claimed<Self::Ticket, Self::Pending, V>, ClaimError>> + Send
    {
        // The key is cloned only if the claim keeps it, never for a replay.
        let claimed = match self.claim_lent_with(key, fingerprint) {
            Ok(crate::Claim::Owner(ticket)) => Ok(Claimed::Owner(ticket)),
            Ok(crate::Claim::Completed(value)) => Ok(Claimed::Completed(value)),
            Ok(crate::Claim::InFlight(pending)) => Ok(Claimed::InFlight(pending)),
            Err(crate::ClaimError::Mismatch) => Err(ClaimError::Mismatch),
            Err(crate::ClaimError::Full) => Err(ClaimError::Full),
            Err(e @ crate::ClaimError::Unavailable) => {
                Err(ClaimError::Unavailable(Unavailable::new(e)))
            }
        };
        std::future::ready(claimed)
    }

    async fn wait(
        &self,
        pending: Self::Pending,
        deadline: Option<Instant>,
    ) -> Result<V, WaitError> {
        let waited = match deadline {
            Some(deadline) => crate::deadline::until(deadline, pending.into_future()).await,
            None => Some(pending.await),
        };
        match waited {
            Some(Ok(value)) => Ok(value),
            Some(Err(crate::WaitError::Abandoned)) => Err(WaitError::Abandoned),
            Some(Err(crate::WaitError::LeaseExpired)) => Err(WaitError::LeaseExpired),
            Some(Err(crate::WaitError::Timeout)) | None => Err(WaitError::Timeout),
        }
    }

    fn complete(
        &self,
        ticket: Self::Ticket,
        value: V,
    ) -> impl Future<Output = Result<(), CompleteError>> + Send {
        let completed = match ticket.complete(value) {
            Ok(()) => Ok(()),
            Err(crate::CompleteError::Superseded(_)) => Err(CompleteError::Superseded),
            // The journal could not record it: the key is released.
            #[cfg(feature = "journal")]
            Err(crate::CompleteError::Journal { error, .. }) => {
                Err(CompleteError::Unavailable(Unavailable::new(error)))
            }
        };
        std::future::ready(completed)
    }

    fn abandon(&self, ticket: Self::Ticket) -> impl Future<Output = ()> + Send {
        ticket.abandon();
        std::future::ready(())
    }

    fn token(ticket: &Self::Ticket) -> u64 {
        ticket.token()
    }

    fn get(&self, key: &K) -> impl Future<Output = Result<Option<V>, Unavailable>> + Send {
        std::future::ready(Ok(Store::get(self, key)))
    }

    fn renew(
        &self,
        ticket: &Self::Ticket,
    ) -> impl Future<Output = Result<(), CompleteError>> + Send {
        std::future::ready(ticket.renew().map_err(|_| CompleteError::Superseded))
    }
}

// ---- the Redis store ----

/// The store shared through Redis. Each call is the store's own, bounded by
/// its timeout; any backend error (down, slow, a foreign or undecodable
/// record) is [`Unavailable`].
#[cfg(feature = "redis")]
impl<K, V> Backend<K, V> for crate::redis::RedisStore<K, V>
where
    K: crate::Codec + Clone + Send + Sync + 'static,
    V: crate::Codec + Clone + Send + Sync + 'static,
{
    type Ticket = crate::redis::Ticket<K, V>;
    type Pending = crate::redis::Pending<K, V>;

    async fn claim(
        &self,
        key: &K,
        fingerprint: Fingerprint,
    ) -> Result<Claimed<Self::Ticket, Self::Pending, V>, ClaimError> {
        use crate::redis::{Claim, ClaimError as Redis};
        match self.claim_with(key.clone(), fingerprint).await {
            Ok(Claim::Owner(ticket)) => Ok(Claimed::Owner(ticket)),
            Ok(Claim::Completed(value)) => Ok(Claimed::Completed(value)),
            Ok(Claim::InFlight(pending)) => Ok(Claimed::InFlight(pending)),
            Err(Redis::Mismatch) => Err(ClaimError::Mismatch),
            Err(Redis::Backend(e)) => Err(ClaimError::Unavailable(Unavailable::new(e))),
        }
    }

    async fn wait(
        &self,
        pending: Self::Pending,
        deadline: Option<Instant>,
    ) -> Result<V, WaitError> {
        use crate::redis::WaitError as Redis;
        let waited = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                pending.wait_timeout(left).await
            }
            None => pending.await,
        };
        waited.map_err(|e| match e {
            Redis::Abandoned => WaitError::Abandoned,
            Redis::LeaseExpired => WaitError::LeaseExpired,
            Redis::Timeout => WaitError::Timeout,
            Redis::Mismatch => WaitError::Mismatch,
            Redis::Backend(e) => WaitError::Unavailable(Unavailable::new(e)),
        })
    }

    async fn complete(&self, ticket: Self::Ticket, value: V) -> Result<(), CompleteError> {
        use crate::redis::CompleteError as Redis;
        match ticket.complete(value).await {
            Ok(()) => Ok(()),
            Err(Redis::Superseded(_)) => Err(CompleteError::Superseded),
            // Not known to be stored: the ticket sent its release.
            Err(Redis::Backend { error, .. }) => {
                Err(CompleteError::Unavailable(Unavailable::new(error)))
            }
        }
    }

    async fn abandon(&self, ticket: Self::Ticket) {
        // On a task of its own, so the release reaches the server even if
        // this future is dropped; it is bounded by the store's timeout.
        let _ = tokio::spawn(async move {
            let _ = ticket.abandon().await;
        })
        .await;
    }

    fn token(ticket: &Self::Ticket) -> u64 {
        ticket.token()
    }

    async fn get(&self, key: &K) -> Result<Option<V>, Unavailable> {
        crate::redis::RedisStore::get(self, key)
            .await
            .map_err(Unavailable::new)
    }

    async fn renew(&self, ticket: &Self::Ticket) -> Result<(), CompleteError> {
        use crate::redis::CompleteError as Redis;
        match ticket.renew().await {
            Ok(()) => Ok(()),
            Err(Redis::Superseded(())) => Err(CompleteError::Superseded),
            Err(Redis::Backend { error, .. }) => {
                Err(CompleteError::Unavailable(Unavailable::new(error)))
            }
        }
    }
}
