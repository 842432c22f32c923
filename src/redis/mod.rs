//! One idempotency store shared by every replica, on Redis (feature
//! `redis`).
//!
//! [`RedisStore`] keeps the in-process [`Store`](crate::Store)'s semantics
//! across processes (rules 24-27 of the semantics): one owner per key on all
//! replicas, duplicates on any replica wait or replay, fingerprints checked
//! in every state, errors not stored, leases with fencing tokens, retention
//! from completion. Each key is one Redis hash changed only by the Lua
//! scripts in `scripts.rs` (sent as `EVALSHA`, loaded on `NOSCRIPT`), each
//! one atomic step on the server's clock; their comment is the protocol.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use idemstore::redis::RedisStore;
//! use idemstore::Outcome;
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let store: RedisStore<String, String> = RedisStore::builder(client).prefix("orders").build()?;
//! let receipt = store
//!     .execute("order-42".to_string(), || async { Ok::<_, std::io::Error>("charged".to_string()) })
//!     .await?;
//! assert!(matches!(receipt, Outcome::Executed(_) | Outcome::Replayed(_)));
//! # Ok(()) }
//! ```
//!
//! # In front of Redis: this process's duplicates
//!
//! Duplicates inside one process meet at an in-process store first, keyed
//! by the Redis key and the fingerprint: the first of them claims on
//! Redis, the others wait for it in process. So 16 concurrent requests for
//! one key on one replica make one claim round trip.
//!
//! # Bounded
//!
//! Every call to the server has the store's timeout (default 1 s) and fails
//! with [`Error::Timeout`] or [`Error::Unavailable`] after it; the
//! connection reconnects by itself. A claim whose answer was lost (a
//! timeout, a cancelled future) is released by its claim id, best effort:
//! should the release reach the server before the claim (over a new
//! connection), the claim holds the key until its lease passes, as a
//! crashed owner's would.
//!
//! # Where Redis differs from the in-process store
//!
//! * Time is the server's, in milliseconds; a [`Clock`](crate::Clock) does
//!   not apply.
//! * A key's tokens only grow while its record exists, and the record
//!   outlives its state by [`Builder::token_grace`]; past that, tokens come
//!   from the server's clock in microseconds (larger unless that clock went
//!   back by more than the grace).
//! * [`RedisStore::stats`] counts this handle's calls; `entries` and
//!   `in_flight` are this process's in-process claims, not the server's.
//! * There is no capacity bound of the store's own: Redis's `maxmemory`
//!   refuses writes (a backend error) rather than evicting, provided its
//!   policy is `noeviction`.

mod claim;
mod error;
mod notices;
mod scripts;

use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};
use tokio::time::Instant;

use self::claim::On;
pub use self::claim::{Claim, Pending, Ticket};
pub use self::error::{ClaimError, CompleteError, Error, ExecuteError, WaitError};
use self::notices::Notices;
use crate::codec::Codec;
use crate::fingerprint::Fingerprint;
use crate::stats::Stats;
use crate::store::Outcome;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_GRACE: Duration = Duration::from_secs(600);
const DEFAULT_POLL: Duration = Duration::from_millis(250);
/// A waiter's first re-read comes this soon; each later one twice as late,
/// up to the poll interval.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// Hands a leader's outcome to this process's duplicates waiting on it,
/// then forgets it: later claims ask the server, which stays the one truth.
fn hand_over<V>(local: &LocalStore<V>, lead: LocalTicket<V>, outcome: Local<V>)
where
    V: Clone + Send + Sync + 'static,
{
    let key = lead.key().clone();
    // Waiters receive the outcome as the entry completes; the removal
    // only keeps it from being served again.
    let _ = lead.complete(outcome);
    local.remove(&key);
}

/// What this process's duplicates of a claim receive from its leader.
#[derive(Clone, Debug)]
pub(crate) enum Local<V> {
    Value(V),
    Mismatch,
    Failed(Error),
}

type LocalTicket<V> = crate::Ticket<Vec<u8>, Local<V>>;
type LocalStore<V> = crate::Store<Vec<u8>, Local<V>>;

/// The scripts, each named once (see `scripts.rs`).
struct Scripts {
    claim: Script,
    complete: Script,
    renew: Script,
    abandon: Script,
    remove: Script,
    read: Script,
}

#[derive(Default)]
struct Counts {
    claims: AtomicU64,
    replays: AtomicU64,
    waits: AtomicU64,
    abandons: AtomicU64,
    takeovers: AtomicU64,
    mismatches: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What does not depend on the key and value types: the connection, the
/// settings, the subscription. Tickets hold it, so a dropped ticket's
/// release needs no type bounds.
pub(crate) struct Core {
    conn: ConnectionManager,
    prefix: Vec<u8>,
    channel: Vec<u8>,
    ttl_ms: u64,
    lease_ms: u64,
    grace_ms: u64,
    timeout: Duration,
    poll: Duration,
    scripts: Scripts,
    notices: Arc<Notices>,
    runtime: tokio::runtime::Handle,
    subscriber: tokio::task::JoinHandle<()>,
    counts: Counts,
    seed: std::collections::hash_map::RandomState,
    sequence: AtomicU64,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// A script's answer.
enum Reply {
    Owner { token: u64, took_over: bool },
    Completed(Vec<u8>, Option<u64>),
    Mismatch,
    Flight { token: u64, left_ms: i64 },
    Lapsed(u64),
    Absent,
    Done(bool),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn hex(fingerprint: Option<Fingerprint>) -> String {
    fingerprint.map_or_else(String::new, |f| {
        f.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
    })
}

impl Core {
    /// Runs `script` on `record` with the arguments `args` writes, within
    /// the store's timeout: `EVALSHA`, and on `NOSCRIPT` (a restarted or
    /// flushed server) the script loaded and sent again. The command is
    /// built in place, numbers written as they are, so a call allocates
    /// little beyond its one buffer.
    async fn eval(
        &self,
        script: &Script,
        record: &[u8],
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Reply, Error> {
        let mut cmd = Cmd::with_capacity(10, 96 + record.len());
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(1).arg(record);
        args(&mut cmd);
        let mut conn = self.conn.clone();
        let call = async {
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                answer => answer,
            }
        };
        let value = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|e| {
                // The connection's own bound is the same timeout.
                if e.is_timeout() {
                    Error::Timeout(self.timeout)
                } else {
                    Error::from(e)
                }
            })?;
        parse(record, value)
    }

    fn claim_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let a = self.seed.hash_one(n);
        let b = self.seed.hash_one((a, n));
        format!("{a:016x}{b:016x}")
    }

    async fn complete(
        &self,
        record: &[u8],
        token: u64,
        claim_id: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, Error> {
        let args = |cmd: &mut Cmd| {
            cmd.arg(token)
                .arg(claim_id)
                .arg(value)
                .arg(ttl_ms)
                .arg(self.grace_ms)
                .arg(&self.channel[..]);
        };
        done(self.eval(&self.scripts.complete, record, args).await?)
    }

    async fn renew(&self, record: &[u8], token: u64, claim_id: &str) -> Result<bool, Error> {
        let args = |cmd: &mut Cmd| {
            cmd.arg(token)
                .arg(claim_id)
                .arg(self.lease_ms)
                .arg(self.grace_ms);
        };
        done(self.eval(&self.scripts.renew, record, args).await?)
    }

    /// Releases the claim `claim_id` (with `token`, or whatever its token
    /// if its claim's answer was lost).
    async fn abandon(
        &self,
        record: &[u8],
        token: Option<u64>,
        claim_id: &str,
    ) -> Result<bool, Error> {
        let args = |cmd: &mut Cmd| {
            match token {
                Some(token) => cmd.arg(token),
                None => cmd.arg(""),
            };
            cmd.arg(claim_id).arg(self.grace_ms).arg(&self.channel[..]);
        };
        let released = done(self.eval(&self.scripts.abandon, record, args).await?)?;
        if released {
            bump(&self.counts.abandons);
        }
        Ok(released)
    }

    /// A release sent from a task: for a dropped ticket, or a claim whose
    /// answer was lost.
    fn release_later(self: &Arc<Self>, record: Vec<u8>, token: Option<u64>, claim_id: String) {
        let core = self.clone();
        self.runtime.spawn(async move {
            // A few tries, so a reconnecting connection does not lose it;
            // past them the claim ends when its lease passes.
            for pause in [0, 20, 100] {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if core.abandon(&record, token, &claim_id).await.is_ok() {
                    return;
                }
            }
        });
    }

    async fn read(&self, record: &[u8], fingerprint: Option<Fingerprint>) -> Result<Reply, Error> {
        self.eval(&self.scripts.read, record, |cmd| {
            cmd.arg(hex(fingerprint));
        })
        .await
    }

    /// Waits on the server's record: for the flight of `token` (or the
    /// first one read), until it completes, is released, its lease passes,
    /// or `deadline`.
    async fn wait_remote<V: Codec>(
        &self,
        record: &[u8],
        fingerprint: Option<Fingerprint>,
        mut token: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<V, WaitError> {
        let mut backoff = FIRST_POLL;
        loop {
            // Registered before the read: a notice between the read and the
            // sleep still wakes this waiter.
            let listener = self.notices.listen(record);
            let notified = listener.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let left_ms = match self.read(record, fingerprint).await? {
                Reply::Completed(bytes, Some(tok)) if token.is_none_or(|t| t == tok) => {
                    return V::decode(&bytes).map_err(|e| WaitError::Backend(Error::Codec(e)));
                }
                Reply::Mismatch => return Err(WaitError::Mismatch),
                Reply::Flight {
                    token: tok,
                    left_ms,
                } if token.is_none_or(|t| t == tok) => {
                    token = Some(tok);
                    left_ms
                }
                Reply::Lapsed(tok) if token.is_none_or(|t| t == tok) => {
                    return Err(WaitError::LeaseExpired)
                }
                _ => return Err(WaitError::Abandoned),
            };
            // Sleep a jittered backoff, never past the lease's end.
            let jitter = 0.5
                + (self
                    .seed
                    .hash_one(self.sequence.fetch_add(1, Ordering::Relaxed))
                    % 1000) as f64
                    / 1000.0;
            let lease_left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0) + 1);
            let mut until = Instant::now() + backoff.mul_f64(jitter).min(lease_left);
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    return Err(WaitError::Timeout);
                }
                until = until.min(deadline);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            backoff = (backoff * 2).min(self.poll);
        }
    }
}

fn done(reply: Reply) -> Result<bool, Error> {
    match reply {
        Reply::Done(done) => Ok(done),
        _ => Err(Error::Protocol("expected 0 or 1".into())),
    }
}

/// Reads a script's answer (see `scripts.rs` for each script's replies).
fn parse(record: &[u8], value: Value) -> Result<Reply, Error> {
    let bad = |what: &str| Error::Protocol(what.to_string());
    let items = match value {
        Value::Int(n) => return Ok(Reply::Done(n == 1)),
        Value::Array(items) => items,
        _ => return Err(bad("not an array")),
    };
    let int = |i: usize| match items.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        _ => Err(bad("a field that should be an integer")),
    };
    let uint =
        |i: usize| int(i).and_then(|n| u64::try_from(n).map_err(|_| bad("a negative token")));
    let Some(Value::BulkString(status)) = items.first() else {
        return Err(bad("no status"));
    };
    Ok(match status.as_slice() {
        b"owner" => Reply::Owner {
            token: uint(1)?,
            took_over: int(2)? == 1,
        },
        b"completed" => match items.get(1) {
            Some(Value::BulkString(v)) => Reply::Completed(v.clone(), uint(2).ok()),
            _ => {
                return Err(Error::Foreign {
                    key: String::from_utf8_lossy(record).into_owned(),
                    found: "a completed record without its value".into(),
                })
            }
        },
        b"mismatch" => Reply::Mismatch,
        b"flight" => Reply::Flight {
            token: uint(1)?,
            left_ms: int(2)?,
        },
        b"lapsed" => Reply::Lapsed(uint(1)?),
        b"absent" => Reply::Absent,
        b"foreign" => {
            let found = match items.get(1) {
                Some(Value::BulkString(v)) => String::from_utf8_lossy(v).into_owned(),
                _ => String::new(),
            };
            return Err(Error::Foreign {
                key: String::from_utf8_lossy(record).into_owned(),
                found,
            });
        }
        _ => return Err(bad("an unknown status")),
    })
}

/// An idempotency store shared through Redis: a cheap, cloneable handle.
///
/// Keys and values are written with their [`Codec`]. Every method is
/// async and bounded by the store's timeout; it needs a Tokio runtime.
pub struct RedisStore<K, V> {
    core: Arc<Core>,
    local: LocalStore<V>,
    _types: PhantomData<fn(K) -> K>,
}

impl<K, V> Clone for RedisStore<K, V> {
    fn clone(&self) -> Self {
        RedisStore {
            core: self.core.clone(),
            local: self.local.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for RedisStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &String::from_utf8_lossy(&self.core.prefix))
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisStore`]; from [`RedisStore::builder`].
#[derive(Debug)]
pub struct Builder<K, V> {
    client: ::redis::Client,
    connection: Option<ConnectionManager>,
    prefix: String,
    ttl: Option<Duration>,
    lease: Option<Duration>,
    timeout: Duration,
    grace: Duration,
    poll: Duration,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Builder<K, V>
where
    K: Codec + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    /// The Redis keys' prefix (default `idemstore`): records are at
    /// `{prefix}:{<key>}`, notices on `{prefix}:notices`. Stores that share
    /// keys share a prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Retention of a completed result, from its completion (default 24 h,
    /// or the lease if longer). Millisecond resolution.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// An owner's lease (default 60 s, or the TTL if shorter).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The bound on every call to the server (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a record outlives its state (default 10 min), keeping the
    /// key's last token for a re-claim; see the module documentation.
    pub fn token_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The longest pause between a waiter's re-reads of the record when no
    /// notice comes (default 250 ms).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Commands go through this connection (the caller's) instead of one
    /// the store opens from the client. The client still opens the
    /// subscription's connection.
    pub fn connection(mut self, connection: ConnectionManager) -> Self {
        self.connection = Some(connection);
        self
    }

    /// The store. Must run inside a Tokio runtime; connects lazily, so a
    /// server that is down now is reached once it is up.
    pub fn build(self) -> Result<RedisStore<K, V>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (ttl, lease) =
            crate::builder::ttl_and_lease(self.ttl, self.lease).map_err(Error::Config)?;
        let conn = match self.connection {
            Some(conn) => conn,
            None => {
                let settings = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.timeout))
                    .set_connection_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.timeout);
                ConnectionManager::new_lazy_with_config(self.client.clone(), settings)?
            }
        };
        let local = crate::Store::builder()
            .ttl(lease)
            .lease(lease)
            .build()
            .map_err(Error::Config)?;
        let channel = format!("{}:notices", self.prefix).into_bytes();
        let notices = Arc::new(Notices::default());
        let subscriber = runtime.spawn(notices::subscribe(
            self.client,
            channel.clone(),
            Arc::downgrade(&notices),
            self.timeout,
        ));
        let core = Core {
            conn,
            prefix: self.prefix.into_bytes(),
            channel,
            ttl_ms: millis(ttl),
            lease_ms: millis(lease),
            grace_ms: millis(self.grace),
            timeout: self.timeout,
            poll: self.poll.max(FIRST_POLL),
            scripts: Scripts {
                claim: Script::new(scripts::CLAIM),
                complete: Script::new(scripts::COMPLETE),
                renew: Script::new(scripts::RENEW),
                abandon: Script::new(scripts::ABANDON),
                remove: Script::new(scripts::REMOVE),
                read: Script::new(scripts::READ),
            },
            notices,
            runtime,
            subscriber,
            counts: Counts::default(),
            seed: Default::default(),
            sequence: AtomicU64::new(0),
        };
        Ok(RedisStore {
            core: Arc::new(core),
            local,
            _types: PhantomData,
        })
    }
}

impl<K, V> RedisStore<K, V>
where
    K: Codec + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    /// A [`Builder`] over the caller's client: the store opens one
    /// multiplexed connection for commands (or uses
    /// [`Builder::connection`]) and one for its subscription.
    pub fn builder(client: ::redis::Client) -> Builder<K, V> {
        Builder {
            client,
            connection: None,
            prefix: "idemstore".into(),
            ttl: None,
            lease: None,
            timeout: DEFAULT_TIMEOUT,
            grace: DEFAULT_GRACE,
            poll: DEFAULT_POLL,
            _types: PhantomData,
        }
    }

    /// The Redis key of `key`'s record: `{prefix}:{<key>}`.
    fn record(&self, key: &K) -> Result<Vec<u8>, Error> {
        let mut record = Vec::with_capacity(self.core.prefix.len() + 16);
        record.extend_from_slice(&self.core.prefix);
        record.extend_from_slice(b":{");
        key.encode(&mut record)?;
        record.push(b'}');
        Ok(record)
    }

    /// Claims `key` on every replica: exactly one concurrent caller, on all
    /// of them, gets [`Claim::Owner`]. See [`crate::Store::claim`].
    pub async fn claim(&self, key: K) -> Result<Claim<K, V>, ClaimError> {
        self.claim_inner(key, None).await
    }

    /// Claims `key` for a payload with `fingerprint`: a key in use (in
    /// flight or completed) with another fingerprint fails with
    /// [`ClaimError::Mismatch`], nothing returned or stored (rule 5).
    pub async fn claim_with(
        &self,
        key: K,
        fingerprint: Fingerprint,
    ) -> Result<Claim<K, V>, ClaimError> {
        self.claim_inner(key, Some(fingerprint)).await
    }

    async fn claim_inner(
        &self,
        key: K,
        fingerprint: Option<Fingerprint>,
    ) -> Result<Claim<K, V>, ClaimError> {
        let record = self.record(&key)?;
        let mut local_key = record.clone();
        if let Some(fingerprint) = fingerprint {
            local_key.extend_from_slice(&fingerprint.to_bytes());
        }
        loop {
            let claimed = self
                .local
                .claim(local_key.clone())
                .map_err(|e| Error::Protocol(format!("in-process claim: {e}")))?;
            match claimed {
                crate::Claim::Owner(lead) => {
                    return self.claim_remote(key, record, fingerprint, lead).await
                }
                crate::Claim::InFlight(pending) => {
                    bump(&self.core.counts.waits);
                    return Ok(Claim::InFlight(Pending {
                        store: self.clone(),
                        key,
                        record,
                        fingerprint,
                        on: On::Local(pending),
                    }));
                }
                crate::Claim::Completed(Local::Value(value)) => {
                    bump(&self.core.counts.replays);
                    return Ok(Claim::Completed(value));
                }
                // A leader's failure, between its hand-over and removal:
                // ask again.
                crate::Claim::Completed(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// The claim on the server, by this process's leader for `key`.
    async fn claim_remote(
        &self,
        key: K,
        record: Vec<u8>,
        fingerprint: Option<Fingerprint>,
        lead: LocalTicket<V>,
    ) -> Result<Claim<K, V>, ClaimError> {
        let core = &self.core;
        // Armed until the answer is in hand: a claim whose answer was lost
        // (a timeout, a cancelled future) may have been made, so it is
        // released by its claim id.
        let mut unanswered = Unanswered {
            core,
            sent: Some((record, core.claim_id())),
        };
        let (record, claim_id) = unanswered.sent.as_ref().expect("just set");
        let args = |cmd: &mut Cmd| {
            cmd.arg(claim_id)
                .arg(hex(fingerprint))
                .arg(core.lease_ms)
                .arg(core.grace_ms);
        };
        let reply = core.eval(&core.scripts.claim, record, args).await;
        let fail = |lead: LocalTicket<V>, outcome: Local<V>| hand_over(&self.local, lead, outcome);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                fail(lead, Local::Failed(e.clone()));
                return Err(ClaimError::Backend(e));
            }
        };
        let (record, claim_id) = unanswered.sent.take().expect("not taken before");
        match reply {
            Reply::Owner { token, took_over } => {
                bump(&core.counts.claims);
                if took_over {
                    bump(&core.counts.takeovers);
                }
                Ok(Claim::Owner(Ticket {
                    core: core.clone(),
                    local: self.local.clone(),
                    key,
                    record,
                    token,
                    claim_id,
                    lead: Some(lead),
                    live: true,
                }))
            }
            Reply::Completed(bytes, _) => match V::decode(&bytes) {
                Ok(value) => {
                    bump(&core.counts.replays);
                    fail(lead, Local::Value(value.clone()));
                    Ok(Claim::Completed(value))
                }
                Err(e) => {
                    let e = Error::Codec(e);
                    fail(lead, Local::Failed(e.clone()));
                    Err(ClaimError::Backend(e))
                }
            },
            Reply::Mismatch => {
                bump(&core.counts.mismatches);
                fail(lead, Local::Mismatch);
                Err(ClaimError::Mismatch)
            }
            Reply::Flight { token, .. } => {
                bump(&core.counts.waits);
                Ok(Claim::InFlight(Pending {
                    store: self.clone(),
                    key,
                    record,
                    fingerprint,
                    on: On::Remote {
                        token,
                        lead: Some(lead),
                    },
                }))
            }
            _ => {
                let e = Error::Protocol("a claim answered as a read".into());
                fail(lead, Local::Failed(e.clone()));
                Err(ClaimError::Backend(e))
            }
        }
    }

    /// The completed, unexpired value of `key` (one round trip); `None` if
    /// absent, expired or in flight.
    pub async fn get(&self, key: &K) -> Result<Option<V>, Error> {
        match self.core.read(&self.record(key)?, None).await? {
            Reply::Completed(bytes, _) => Ok(Some(V::decode(&bytes)?)),
            _ => Ok(None),
        }
    }

    /// The value of `key`, waiting up to `timeout` if it is in flight:
    /// `Ok(None)` if absent, expired or claimable (lease passed),
    /// `Ok(Some(v))` once completed.
    pub async fn get_or_wait(&self, key: &K, timeout: Duration) -> Result<Option<V>, WaitError> {
        let deadline = Instant::now() + timeout;
        let record = self.record(key)?;
        match self.core.read(&record, None).await? {
            Reply::Completed(bytes, _) => V::decode(&bytes)
                .map(Some)
                .map_err(|e| WaitError::Backend(Error::Codec(e))),
            Reply::Flight { token, .. } => {
                bump(&self.core.counts.waits);
                self.core
                    .wait_remote(&record, None, Some(token), Some(deadline))
                    .await
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Runs `operation` at most once per key across every replica: see
    /// [`crate::Store::execute_async`]. An `Err` is not stored: the key is
    /// released (rule 7) and a waiting duplicate runs its own operation.
    pub async fn execute<E, F, Fut>(
        &self,
        key: K,
        operation: F,
    ) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        self.execute_inner(key, None, operation).await
    }

    /// As [`execute`](Self::execute), for a payload with `fingerprint`.
    pub async fn execute_with<E, F, Fut>(
        &self,
        key: K,
        fingerprint: Fingerprint,
        operation: F,
    ) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        self.execute_inner(key, Some(fingerprint), operation).await
    }

    async fn execute_inner<E, F, Fut>(
        &self,
        key: K,
        fingerprint: Option<Fingerprint>,
        operation: F,
    ) -> Result<Outcome<V>, ExecuteError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let mut operation = Some(operation);
        loop {
            let claimed = match self.claim_inner(key.clone(), fingerprint).await {
                Ok(claimed) => claimed,
                Err(ClaimError::Mismatch) => return Err(ExecuteError::Mismatch),
                Err(ClaimError::Backend(e)) => return Err(ExecuteError::Backend(e)),
            };
            match claimed {
                Claim::Owner(ticket) => {
                    let Some(operation) = operation.take() else {
                        return Err(ExecuteError::Backend(Error::Protocol(
                            "owner twice in one execute".into(),
                        )));
                    };
                    return match operation().await {
                        Ok(value) => match ticket.complete(value.clone()).await {
                            Ok(()) | Err(CompleteError::Superseded(_)) => {
                                Ok(Outcome::Executed(value))
                            }
                            Err(CompleteError::Backend { error, .. }) => {
                                Err(ExecuteError::Backend(error))
                            }
                        },
                        Err(e) => {
                            let _ = ticket.abandon().await;
                            Err(ExecuteError::Failed(e))
                        }
                    };
                }
                Claim::Completed(value) => return Ok(Outcome::Replayed(value)),
                Claim::InFlight(pending) => match pending.await {
                    Ok(value) => return Ok(Outcome::Replayed(value)),
                    Err(WaitError::Abandoned | WaitError::LeaseExpired) => {}
                    Err(WaitError::Mismatch) => return Err(ExecuteError::Mismatch),
                    Err(WaitError::Backend(e)) => return Err(ExecuteError::Backend(e)),
                    Err(WaitError::Timeout) => {
                        return Err(ExecuteError::Backend(Error::Timeout(self.core.timeout)))
                    }
                },
            }
        }
    }

    /// Removes `key` whatever its state; true if a live entry was there. An
    /// in-flight owner's later `complete` is refused as superseded, and
    /// its waiters wake with [`WaitError::Abandoned`].
    pub async fn remove(&self, key: &K) -> Result<bool, Error> {
        let core = &self.core;
        let args = |cmd: &mut Cmd| {
            cmd.arg(core.grace_ms).arg(&core.channel[..]);
        };
        done(
            core.eval(&core.scripts.remove, &self.record(key)?, args)
                .await?,
        )
    }

    /// This handle's counters (see the module documentation for what
    /// differs from [`crate::Store::stats`]).
    pub fn stats(&self) -> Stats {
        let counts = &self.core.counts;
        let local = self.local.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // `Stats` has fields this store has no counterpart for: zero.
        Stats {
            entries: local.entries,
            in_flight: local.in_flight,
            claims: get(&counts.claims),
            replays: get(&counts.replays),
            waits: get(&counts.waits),
            abandons: get(&counts.abandons),
            takeovers: get(&counts.takeovers),
            mismatches: get(&counts.mismatches),
            ..Stats::default()
        }
    }
}

/// A claim sent whose answer is not in hand yet (its record and claim id
/// in `sent`, taken back with the answer); released by its claim id if it
/// never is.
struct Unanswered<'a> {
    core: &'a Arc<Core>,
    sent: Option<(Vec<u8>, String)>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some((record, claim_id)) = self.sent.take() {
            self.core.release_later(record, None, claim_id);
        }
    }
}
