//! # idemstore
//!
//! An embedded, in-process, concurrent idempotency store. When duplicates of
//! a request arrive together, exactly one runs; the others wait for its
//! result instead of running again, and later retries get the stored result
//! until it expires.
//!
//! It replaces a `HashMap` plus a timer (racy: two duplicates both miss and
//! both run; nothing waits; nothing bounds memory) and a round trip to Redis
//! `SET key NX PX` per request (tens of microseconds, and still no way to wait
//! for the first result).
//!
//! ## Quick start
//!
//! ```
//! use idemstore::{Outcome, Store};
//!
//! let store: Store<String, String> = Store::new();
//! let pay = || -> Result<String, std::io::Error> { Ok("receipt-1".into()) };
//!
//! // The first call runs the operation; retries replay its result.
//! assert_eq!(store.execute("order-42".into(), pay)?, Outcome::Executed("receipt-1".into()));
//! assert_eq!(store.execute("order-42".into(), pay)?, Outcome::Replayed("receipt-1".into()));
//! # Ok::<(), idemstore::ExecuteError<std::io::Error>>(())
//! ```
//!
//! For full control, [`Store::claim`] returns a [`Claim`]: an owner's
//! [`Ticket`], a stored value, or a [`Pending`] handle on an in-flight owner.
//!
//! ## Semantics
//!
//! A key is absent, **in flight** (claimed; its owner runs the operation under
//! a lease) or **completed** (its value replayed until its TTL passes).
//! Expired is derived from the clock, never stored.
//!
//! * **One owner.** Claiming is one atomic check-and-insert: exactly one
//!   concurrent caller becomes the owner. The operation runs outside every
//!   lock, so a slow key never blocks other keys, readers or the sweeper.
//! * **Duplicates wait, never re-run.** A duplicate of an in-flight key gets a
//!   [`Pending`] and blocks or `.await`s the owner's result; one of a
//!   completed key gets the stored value as [`Claim::Completed`] (or
//!   [`Outcome::Replayed`]), so it knows it is a replay.
//! * **Fingerprints.** [`Store::claim_with`] checks the payload's
//!   [`Fingerprint`] in every state: a reused key with another payload fails
//!   with [`ClaimError::Mismatch`] and is neither served nor stored.
//! * **Failure releases.** An owner that returns an error, panics, is dropped
//!   or cancelled releases the key and wakes every waiter; errors are not
//!   stored, so a retry runs again.
//! * **Leases and fencing.** An owner's claim lasts a lease (shorter than
//!   the TTL; renewable). Once it passes, a new claim takes the key over.
//!   Every claim gets a fencing [`Ticket::token`]: a key's tokens only grow
//!   (no order is promised between two keys' tokens), and a stale owner's
//!   `complete` is refused as [`CompleteError::Superseded`], returning its
//!   value.
//! * **Expiry.** Retention counts from completion. Every read checks the
//!   clock, so an expired entry is invisible at once; a background sweeper
//!   (holding only a weak reference) reclaims memory in bounded steps and
//!   releases waiters of owners whose lease passed.
//! * **Bounded memory.** With [`Builder::max_entries`], or
//!   [`Builder::max_bytes`] (what completed entries weigh, by the
//!   [`Builder::weigher`]), a full store refuses new claims with
//!   [`ClaimError::Full`]; it never evicts a live entry. A completion is
//!   always stored, so a byte bound is exceeded by at most the values of the
//!   claims in flight when the store reached it.
//! * **No locks handed out.** Every method returns owned values (clones);
//!   wrap large values in `Arc`. [`Store::pinned`] lends a handle that
//!   reads a batch of keys under one epoch pin, only for a closure's run;
//!   [`Store::get_many`] reads a batch with the keys' cache misses
//!   overlapped: on a table that is not in cache, a third to a half of
//!   the time per key of a `get` each (see `BENCHMARKS.md`).
//!
//! ## Sync and async
//!
//! [`Pending::wait`] and [`Pending::wait_timeout`] park the thread;
//! `pending.await` (via [`IntoFuture`](std::future::IntoFuture)) waits in any
//! async runtime: it uses only the task's waker and is cancel-safe.
//! [`Store::execute`] / [`Store::execute_async`] and [`Store::get_or_wait`] /
//! [`Store::get_or_wait_async`] are the sync and async forms of the same
//! operations. Wait deadlines are real time; TTLs and leases follow the
//! store's [`Clock`].
//!
//! ## TTL, leases and time
//!
//! ```
//! use std::time::Duration;
//! use idemstore::{Claim, ManualClock, Store};
//!
//! let clock = ManualClock::new();
//! let store: Store<u32, &str> = Store::builder()
//!     .ttl(Duration::from_secs(60))
//!     .lease(Duration::from_secs(5))
//!     .clock(clock.clone())
//!     .build()?;
//!
//! let Ok(Claim::Owner(stale)) = store.claim(7) else { unreachable!() };
//! clock.advance(Duration::from_secs(5)); // the lease passes
//! let Ok(Claim::Owner(fresh)) = store.claim(7) else { unreachable!() };
//! assert!(fresh.token() > stale.token());
//! assert!(stale.complete("late").is_err()); // fenced off
//! fresh.complete("on time").unwrap();
//! assert_eq!(store.get(&7), Some("on time"));
//! # Ok::<(), idemstore::ConfigError>(())
//! ```
//!
//! ## Durability (feature `journal`)
//!
//! In memory, a restart forgets every result, so a retry after a deploy runs
//! the operation again. With [`Builder::journal`], completed results are
//! appended to a file (group-committed across threads) and replayed when the
//! store is built again:
//!
//! ```
//! # #[cfg(feature = "journal")] {
//! use idemstore::{Fsync, Store};
//! # let dir = std::env::temp_dir().join(format!("idemstore-guide-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("orders.journal");
//! let store: Store<String, String> = Store::builder()
//!     .journal(&path)         // replayed here, appended to after
//!     .fsync(Fsync::Always)   // or Fsync::Interval(d) (default 1 s), Fsync::Never
//!     .build()?;
//! # drop(store); std::fs::remove_dir_all(&dir).unwrap();
//! # }
//! # Ok::<(), idemstore::ConfigError>(())
//! ```
//!
//! | [`Fsync`] | when `complete` returns `Ok` | survives |
//! | --- | --- | --- |
//! | `Always` | the record is written and fsynced | kill -9, an OS crash, power loss |
//! | `Interval(d)` | the record is written to the OS, fsynced within `d` | kill -9; an OS crash loses at most `d` |
//! | `Never` | the record is written to the OS | kill -9 |
//!
//! Keys and values implement [`Codec`]. An operation in flight at a crash
//! has no record and runs again on retry; tokens never go backwards across
//! a restart; a torn tail is cut and reported, damage elsewhere is an error.
//! The [`journal`] module has the details.
//!
//! ## Configuration
//!
//! See [`Builder`] for every setting and its default: TTL (24 h, or the
//! lease if that is longer), lease (60 s, or the TTL if that is shorter),
//! `max_entries`, `max_bytes` and its weigher, shards, sweep interval, the
//! background sweeper, the clock and the hasher. `build` validates them and returns a [`ConfigError`]
//! instead of panicking.
//!
//! ## Features
//!
//! Without features the crate depends only on `parking_lot`,
//! `crossbeam-epoch`, `ahash` and `thread_local`.
//!
//! | feature | adds |
//! | --- | --- |
//! | `tower` | `idemstore::http`: the `Idempotency-Key` middleware for tower and axum services |
//! | `metrics` | `idemstore::metrics`: [`Stats`] (and the HTTP layer's outcomes) through the `metrics` facade |
//! | `journal` | [`Builder::journal`]: completed results survive kill -9 and restarts; the [`Codec`] trait |
//! | `serde` | [`Serde`]: a [`Codec`] for any serde type, in postcard's compact encoding (implies `journal`) |
//! | `tracing` | spans and events from the HTTP layer and the journal; a warning when the store reaches 90% of `max_entries` or `max_bytes` |
//! | `steps` | `idemstore::steps`: multi-step runs that resume after a failure, with compensations (implies `journal`) |
//! | `redis` | `idemstore::redis`: [`RedisStore`](crate::redis::RedisStore), one store shared by every replica on Redis (implies `journal`, for [`Codec`]) |
//!
//! ## MSRV
//!
//! Rust 1.89.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backend;
mod builder;
mod claim;
mod clock;
#[cfg(feature = "journal")]
mod codec;
mod deadline;
mod error;
mod fingerprint;
#[cfg(feature = "tower")]
pub mod http;
#[cfg(feature = "journal")]
pub mod journal;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis;
mod stats;
#[cfg(feature = "steps")]
pub mod steps;
mod store;
#[cfg(not(idemstore_loom))]
mod sweeper;
mod sync;
mod table;
#[cfg(test)]
mod test_util;
mod wait;

pub use builder::Builder;
pub use claim::{Claim, Pending, Ticket};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "serde")]
pub use codec::Serde;
#[cfg(feature = "journal")]
pub use codec::{Codec, CodecError};
pub use error::{ClaimError, CompleteError, ConfigError, ExecuteError, Superseded, WaitError};
pub use fingerprint::{Fingerprint, FingerprintHasher};
#[cfg(feature = "journal")]
pub use journal::{Fsync, JournalError, Recovery, ReplayReport};
pub use stats::Stats;
pub use store::{Outcome, Pinned, Store};
pub use wait::WaitFuture;
