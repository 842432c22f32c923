//! Feature `steps`: multi-step runs that resume after a failure, with
//! compensations (a saga).
//!
//! An order is rarely one call: reserve stock, charge the card, ship. A
//! retry after a failure part-way must not charge twice, and must not start
//! over either. [`Store::steps`] gives a handle on one run of a key; each
//! [`Steps::run`] is one step, run at most once per key while its result is
//! retained; a retry gets the stored result of every finished step and runs
//! the first unfinished one; [`Steps::finish`] stores the run's result,
//! replayed to every later handle.
//!
//! ```
//! use std::io::Error;
//! use idemstore::steps::StepStore;
//!
//! let store: StepStore<String> = StepStore::new(); // any Builder settings, a journal too
//! let mut order = store.steps("order-42".to_string());
//! let hold: u64 = order.run("reserve", || Ok::<_, Error>(1999))?;
//! let paid: String = order.run_with_undo(
//!     "charge",
//!     || Ok::<_, Error>(format!("ch_{hold}")),
//!     |charge: String| Ok::<_, Error>(println!("refund {charge}")), // if given up
//! )?;
//! let receipt = order.finish(format!("order-42: {paid}"))?;
//! assert!(!receipt.is_replayed());
//!
//! // A retry, a duplicate, or the same code after a restart: nothing runs.
//! let mut again = store.steps("order-42".to_string());
//! let hold: u64 = again.run("reserve", || -> Result<u64, Error> { unreachable!() })?;
//! let paid: String = again.run("charge", || -> Result<String, Error> { unreachable!() })?;
//! assert_eq!(again.finish(String::new())?.into_inner(), "order-42: ch_1999");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Protocol
//!
//! A steps store is a plain [`Store`] of [`StepKey`] to bytes, built with
//! the normal [`Builder`](crate::Builder) (journaled or not), so every rule
//! of the store holds for each key of a run. A run of key `k` uses:
//!
//! | key | claimed by | completed with |
//! |---|---|---|
//! | run `k` | the handle that owns the run, for all of it | how the run ended: `Finished` (its result and every step's) or `GaveUp` |
//! | step `k`, `i` | the owner, while step `i` runs | the step's name and result |
//! | undo `k`, `i` | the owner, while step `i`'s compensation runs | nothing (it ran) |
//! | given-up `k` | `give_up`, before any compensation | nothing (the mark) |
//!
//! * **One owner per run.** A handle claims the run's key at its first call
//!   and holds it until it ends the run or is dropped. Another handle's
//!   calls wait for the run's end and replay it, or, when the owner lets
//!   go (dropped, failed, its lease passed), claim it and resume (rules 1,
//!   3, 6). Each step renews the run's lease; a handle whose run was taken
//!   over is fenced off ([`RunError::Superseded`], rule 10).
//! * **At most once per step.** Step `i` is its own key, claimed with a
//!   fingerprint of its name (and of the run's payload, with
//!   [`Store::steps_with`]): a finished step replays, a failed one is
//!   released, and a retry that asks for another step at index `i` is
//!   refused by the store's fingerprint check (rule 5) as
//!   [`RunError::StepMismatch`]. The step's result is recorded before the
//!   next step can start, so with a journal a crash anywhere resumes at the
//!   first step with no record.
//! * **Given up, compensated once.** `give_up` first records the mark, so
//!   from then on no step runs (a step's claim checks the mark before it
//!   runs), then runs each compensation under its own key in reverse step
//!   order: one that finished never runs again, so a crash or an error
//!   midway resumes at the next `give_up`. Compensations are the caller's
//!   code, so they are registered again as a resumed run's steps replay.
//! * **The end is one record.** A finished run's record holds every step's
//!   result, since the step keys, completed earlier, expire earlier: a
//!   replay reads only the run's key.
//!
//! A step's operation that was running at a crash has no record, and runs
//! again on the retry (at-least-once for interrupted operations, as with
//! `execute`); a step that *finished* never runs again while retained. Size
//! the store's lease to the longest step: a step that runs past it can be
//! taken over like any claim.
//!
//! Step results, the run's result and compensations' inputs are typed
//! through [`Codec`](crate::Codec), hence the feature implies `journal`.
//!
//! The protocol is written once, over [`Backend`](crate::backend::Backend):
//! the in-process store (sync and async forms) and, with feature `redis`,
//! [`RedisStepStore`] (async forms), where a run is shared by every
//! process on the server and resumes in another after a crash. A run
//! without a payload fingerprint claims its key with a fixed one, and a
//! mark or compensation key with another (every backend claims with one).

mod error;
mod future;
mod key;
mod run;

use std::hash::{BuildHasher, Hash};

use ahash::RandomState;

pub use error::{RunError, StepError, UndoError};
pub use key::StepKey;
pub use run::Steps;

use crate::fingerprint::Fingerprint;
use crate::store::Store;

/// A Redis store for multi-step runs of key `K` (features `steps` and
/// `redis`): a plain [`RedisStore`](crate::redis::RedisStore), built with
/// its normal builder, whose handles' async forms run the same protocol as
/// over the in-process store.
#[cfg(feature = "redis")]
pub type RedisStepStore<K> = crate::redis::RedisStore<StepKey<K>, Vec<u8>>;

/// A store for multi-step runs of key `K`: a plain [`Store`], built with
/// the normal builder (`StepStore::builder()`, `.journal(path)` included).
pub type StepStore<K, S = RandomState> = Store<StepKey<K>, Vec<u8>, S>;

impl<K, S> Store<StepKey<K>, Vec<u8>, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A handle on the multi-step run of `key` (feature `steps`): see
    /// [`Steps`]. Nothing is claimed until its first call.
    pub fn steps<'a>(&self, key: K) -> Steps<'a, K, Self> {
        Steps::new(self.clone(), key, None)
    }

    /// As [`steps`](Self::steps), for a run whose request has
    /// `fingerprint`: a handle on the same key with another fingerprint is
    /// refused with [`RunError::PayloadMismatch`] by the run's key while it
    /// is in flight or ended, and by each recorded step (so after a restart
    /// too).
    ///
    /// ```
    /// use idemstore::steps::{RunError, StepError, StepStore};
    /// use idemstore::Fingerprint;
    ///
    /// let store: StepStore<&str> = StepStore::new();
    /// let mut first = store.steps_with("k", Fingerprint::of_bytes(b"2 apples"));
    /// first.run("pick", || Ok::<_, ()>(2_u8)).unwrap();
    /// drop(first);
    /// let mut other = store.steps_with("k", Fingerprint::of_bytes(b"9 pears"));
    /// let refused = other.run("pick", || Ok::<_, ()>(9_u8));
    /// assert!(matches!(refused, Err(StepError::Run(RunError::PayloadMismatch))));
    /// ```
    pub fn steps_with<'a>(&self, key: K, fingerprint: Fingerprint) -> Steps<'a, K, Self> {
        Steps::new(self.clone(), key, Some(fingerprint))
    }
}

#[cfg(feature = "redis")]
impl<K> crate::redis::RedisStore<StepKey<K>, Vec<u8>>
where
    K: crate::Codec + Clone + Send + Sync + 'static,
{
    /// A handle on the multi-step run of `key` (features `steps` and
    /// `redis`), shared by every process on the Redis: see [`Steps`]; use
    /// its async forms. Nothing is claimed until its first call.
    ///
    /// ```no_run
    /// # async fn saga(client: redis::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use idemstore::steps::RedisStepStore;
    ///
    /// let store: RedisStepStore<String> = RedisStepStore::builder(client).build()?;
    /// let mut order = store.steps("order-42".to_string());
    /// let hold: u64 = order
    ///     .run_async("reserve", || async { Ok::<_, std::io::Error>(1999) })
    ///     .await?;
    /// order.finish_async(format!("held {hold}")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn steps<'a>(&self, key: K) -> Steps<'a, K, Self> {
        Steps::new(self.clone(), key, None)
    }

    /// As [`steps`](Self::steps), for a run whose request has
    /// `fingerprint`: see [`Store::steps_with`].
    pub fn steps_with<'a>(&self, key: K, fingerprint: Fingerprint) -> Steps<'a, K, Self> {
        Steps::new(self.clone(), key, Some(fingerprint))
    }
}
