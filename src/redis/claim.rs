//! What a claim hands out: the owner's [`Ticket`] and a duplicate's
//! [`Pending`]. Neither holds a connection or a lock.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{CompleteError, Error, WaitError};
use super::{hand_over, Core, Local, LocalStore, LocalTicket, RedisStore};
use crate::codec::Codec;
use crate::fingerprint::Fingerprint;

/// The answer to [`RedisStore::claim`]: the shapes of [`crate::Claim`].
#[derive(Debug)]
pub enum Claim<K, V> {
    /// The caller owns the key on every replica: run the operation, then
    /// [`complete`](Ticket::complete) the ticket (or drop it to release).
    Owner(Ticket<K, V>),
    /// The key's operation already completed; this is its stored result.
    Completed(V),
    /// Another owner (on this replica or another) runs the operation; await
    /// this for its result.
    InFlight(Pending<K, V>),
}

/// The owner's claim on a key, across every replica sharing the Redis: an
/// RAII guard.
///
/// Complete it with the operation's result, or let it go: [`abandon`]
/// releases it and waits for the server's answer; dropping it sends the
/// same release from a task on the store's runtime (a `Drop` cannot
/// await), so waiters on every replica wake. If even that release cannot
/// reach the server, the claim ends when its lease passes.
///
/// [`abandon`]: Ticket::abandon
pub struct Ticket<K, V> {
    pub(super) core: Arc<Core>,
    pub(super) local: LocalStore<V>,
    pub(super) key: K,
    pub(super) record: Vec<u8>,
    pub(super) token: u64,
    pub(super) claim_id: String,
    /// The in-process claim that duplicates of this replica wait on.
    pub(super) lead: Option<LocalTicket<V>>,
    /// Set until the claim is completed or released.
    pub(super) live: bool,
}

impl<K, V> Ticket<K, V>
where
    V: Codec + Clone + Send + Sync + 'static,
{
    /// The claimed key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The claim's fencing token: larger than that of every earlier claim
    /// of this key (see the token rules in the module documentation).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Stores `value` as the key's result, kept for the store's TTL from
    /// now (the server's clock), and wakes every waiter on every replica.
    /// Refused, returning `value`, if the claim is no longer current.
    pub async fn complete(self, value: V) -> Result<(), CompleteError<V>> {
        let ttl = self.core.ttl_ms;
        self.complete_ms(value, ttl).await
    }

    /// As [`complete`](Self::complete), kept for `ttl` instead of the
    /// store's default (rule 11).
    pub async fn complete_with_ttl(self, value: V, ttl: Duration) -> Result<(), CompleteError<V>> {
        self.complete_ms(value, super::millis(ttl)).await
    }

    async fn complete_ms(mut self, value: V, ttl_ms: u64) -> Result<(), CompleteError<V>> {
        let mut bytes = Vec::new();
        if let Err(e) = value.encode(&mut bytes) {
            // Dropping `self` releases the claim: nothing is stored.
            return Err(CompleteError::Backend {
                value,
                error: Error::Codec(e),
            });
        }
        let core = self.core.clone();
        let reply = core
            .complete(&self.record, self.token, &self.claim_id, &bytes, ttl_ms)
            .await;
        match reply {
            Ok(true) => {
                self.live = false;
                if let Some(lead) = self.lead.take() {
                    hand_over(&self.local, lead, Local::Value(value.clone()));
                }
                Ok(())
            }
            Ok(false) => {
                self.live = false;
                Err(CompleteError::Superseded(value))
            }
            // Not known to be stored: `self` drops live and sends the
            // release, which the server refuses if it did store it.
            Err(error) => Err(CompleteError::Backend { value, error }),
        }
    }

    /// Extends the lease to a full lease from now (the server's clock), if
    /// the claim is still current.
    pub async fn renew(&self) -> Result<(), CompleteError<()>> {
        match self
            .core
            .renew(&self.record, self.token, &self.claim_id)
            .await
        {
            Ok(true) => {
                if let Some(lead) = &self.lead {
                    let _ = lead.renew();
                }
                Ok(())
            }
            Ok(false) => Err(CompleteError::Superseded(())),
            Err(error) => Err(CompleteError::Backend { value: (), error }),
        }
    }

    /// Releases the claim without a result and waits for the server's
    /// answer: waiters wake with [`WaitError::Abandoned`] and the next claim
    /// runs the operation. Does nothing if the claim is no longer current.
    pub async fn abandon(mut self) -> Result<(), Error> {
        self.live = false;
        self.lead = None;
        self.core
            .abandon(&self.record, Some(self.token), &self.claim_id)
            .await
            .map(|_| ())
    }
}

impl<K, V> Drop for Ticket<K, V> {
    fn drop(&mut self) {
        if self.live {
            self.core.release_later(
                std::mem::take(&mut self.record),
                Some(self.token),
                std::mem::take(&mut self.claim_id),
            );
        }
        // `lead` drops after this: this replica's duplicates wake and ask
        // the server, which has the release queued before their reads.
    }
}

impl<K: fmt::Debug, V> fmt::Debug for Ticket<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A duplicate's handle on an in-flight key: `.await` it (or
/// [`wait_timeout`](Self::wait_timeout)) for the owner's result.
///
/// A duplicate of a claim made in this process waits in process; one of a
/// claim made elsewhere waits for the completion notice and re-reads the
/// record with jittered backoff, so a lost notice delays it by at most one
/// backoff (rule 26). Waiting ends by the time the owner's lease passes.
pub struct Pending<K, V> {
    pub(super) store: RedisStore<K, V>,
    pub(super) key: K,
    pub(super) record: Vec<u8>,
    pub(super) fingerprint: Option<Fingerprint>,
    pub(super) on: On<V>,
}

/// What a [`Pending`] waits on.
pub(super) enum On<V> {
    /// A claim of this process.
    Local(crate::Pending<Vec<u8>, Local<V>>),
    /// The server's record in flight with this token; `lead` is this
    /// process's in-process claim, completed for its duplicates.
    Remote {
        token: u64,
        lead: Option<LocalTicket<V>>,
    },
}

impl<K, V> Pending<K, V>
where
    K: Codec + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    /// The key being waited on.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Waits at most `timeout` for the owner's result; [`WaitError::Timeout`]
    /// after. The owner and other waiters are unaffected (rule 8).
    pub async fn wait_timeout(self, timeout: Duration) -> Result<V, WaitError> {
        self.wait_until(Some(Instant::now() + timeout)).await
    }

    async fn wait_until(self, deadline: Option<Instant>) -> Result<V, WaitError> {
        let Pending {
            store,
            record,
            fingerprint,
            on,
            ..
        } = self;
        let (token, lead) = match on {
            On::Local(pending) => {
                let waited = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, pending.into_future())
                        .await
                        .map_err(|_| WaitError::Timeout)?,
                    None => pending.await,
                };
                match waited {
                    Ok(Local::Value(value)) => return Ok(value),
                    Ok(Local::Mismatch) => return Err(WaitError::Mismatch),
                    Ok(Local::Failed(e)) => return Err(WaitError::Backend(e)),
                    // The in-process owner went away: the server has the
                    // truth (its release, or another replica's claim).
                    Err(_) => (None, None),
                }
            }
            On::Remote { token, lead } => (Some(token), lead),
        };
        let waited = store
            .core
            .wait_remote::<V>(&record, fingerprint, token, deadline)
            .await;
        if let (Some(lead), Ok(value)) = (lead, &waited) {
            hand_over(&store.local, lead, Local::Value(value.clone()));
        }
        waited
    }
}

impl<K, V> IntoFuture for Pending<K, V>
where
    K: Codec + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    type Output = Result<V, WaitError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<V, WaitError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait_until(None))
    }
}

impl<K: fmt::Debug, V> fmt::Debug for Pending<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
