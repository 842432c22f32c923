//! [`Steps`]: one caller's handle on a multi-step run, and its sync forms.
//! The async forms (`src/steps/future.rs`) share every decision made here
//! and differ only in how they wait and run.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::time::Duration;

use ahash::RandomState;

use super::error::{from_execute, RunError, StepError, UndoError};
use super::key::{split_step, step_fingerprint, step_record, Ended, Part, StepKey};
use super::StepStore;
use crate::claim::{Claim, Pending, Ticket};
use crate::codec::Codec;
use crate::error::{CompleteError, WaitError};
use crate::fingerprint::Fingerprint;
use crate::store::Outcome;

/// A compensation's future, boxed: each step's has a type of its own.
type UndoFuture<'a> = Pin<Box<dyn Future<Output = Result<(), UndoError>> + Send + 'a>>;

/// A step's compensation, ready to run: it decodes the step's result from
/// its recorded bytes at each attempt, so a failed one can run again.
pub(crate) enum Undo<'a> {
    Sync(Box<dyn FnMut() -> Result<(), UndoError> + Send + 'a>),
    Async(Box<dyn FnMut() -> UndoFuture<'a> + Send + 'a>),
}

impl<'a> Undo<'a> {
    pub(crate) fn sync<T, U, UE>(bytes: Vec<u8>, mut undo: U) -> Self
    where
        T: Codec,
        U: FnMut(T) -> Result<(), UE> + Send + 'a,
        UE: Into<UndoError>,
    {
        Undo::Sync(Box::new(move || {
            undo(T::decode(&bytes)?).map_err(Into::into)
        }))
    }

    pub(crate) fn future<T, U, UF, UE>(bytes: Vec<u8>, mut undo: U) -> Self
    where
        T: Codec,
        U: FnMut(T) -> UF + Send + 'a,
        UF: Future<Output = Result<(), UE>> + Send + 'a,
        UE: Into<UndoError> + 'a,
    {
        Undo::Async(Box::new(move || match T::decode(&bytes) {
            Ok(value) => {
                let undoing = undo(value);
                Box::pin(async move { undoing.await.map_err(Into::into) })
            }
            Err(error) => Box::pin(std::future::ready(Err(error.into()))),
        }))
    }
}

/// A step this handle went through (ran or replayed), in order.
pub(crate) struct Done<'a> {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) undo: Option<Undo<'a>>,
}

/// Where this handle stands with the run.
pub(crate) enum State<K, S> {
    /// Nothing asked yet: the run is claimed at the first call.
    Unclaimed,
    /// This handle owns the run: its claim of the run's key.
    Owner(Ticket<StepKey<K>, Vec<u8>, S>),
    /// The run ended (here or before): its record, replayed.
    Ended(Ended),
}

/// How long a handle waits for another caller that holds the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Forever,
    For(Duration),
    No,
}

/// What the next step's claim found, before any waiting or running.
pub(crate) enum StepClaim<K, S> {
    /// Its result, recorded by an earlier run.
    Recorded(Vec<u8>),
    /// Free: this handle runs it. The claim guards it: dropped (an error,
    /// a panic, a cancelled future) releases the step.
    Run(Ticket<StepKey<K>, Vec<u8>, S>),
    /// Another owner of the run (one whose lease passed) is running it.
    Wait(Pending<StepKey<K>, Vec<u8>>),
}

/// One caller's handle on a multi-step run, from
/// [`Store::steps`](crate::Store::steps).
///
/// Each [`run`](Self::run) is one step, checked by its name and its place
/// in the order: a step an earlier run of this key finished replays its
/// stored result without running, and the first unfinished one runs.
/// [`finish`](Self::finish) stores the run's result, which every later
/// handle on the key replays; [`give_up`](Self::give_up) runs the
/// finished steps' compensations instead, in reverse order.
///
/// The run is claimed at the first call: one handle owns it at a time, and
/// another handle's calls wait for the run's end (or for the owner to let
/// it go, and then take it on) unless told otherwise
/// ([`no_wait`](Self::no_wait), [`wait_timeout`](Self::wait_timeout)).
/// Dropping the handle lets the run go: its finished steps stay recorded,
/// and the next handle resumes after them. It holds no lock.
///
/// ```
/// use std::io::Error;
/// use idemstore::steps::StepStore;
///
/// let store: StepStore<String> = StepStore::new();
/// let mut order = store.steps("order-7".to_string());
/// let hold: u64 = order.run("reserve", || Ok::<_, Error>(250))?;
/// let declined = order.run("charge", || Err::<u64, _>(Error::other("card declined")));
/// assert!(declined.is_err());
/// drop(order); // the failed charge is not stored; the reserve is
///
/// let mut retry = store.steps("order-7".to_string());
/// let hold_again: u64 = retry.run("reserve", || -> Result<u64, Error> { unreachable!() })?;
/// let charged: u64 = retry.run("charge", || Ok::<_, Error>(hold_again))?;
/// assert_eq!((hold, hold_again, charged), (250, 250, 250));
/// retry.finish(format!("paid {charged}"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Steps<'a, K, S = RandomState> {
    pub(crate) store: StepStore<K, S>,
    pub(crate) key: K,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) wait: Wait,
    pub(crate) state: State<K, S>,
    pub(crate) done: Vec<Done<'a>>,
}

impl<K: fmt::Debug, S> fmt::Debug for Steps<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Unclaimed => "unclaimed",
            State::Owner(_) => "owner",
            State::Ended(Ended::Finished { .. }) => "finished",
            State::Ended(Ended::GaveUp) => "given up",
        };
        let steps: Vec<&str> = self.done.iter().map(|d| d.name.as_str()).collect();
        f.debug_struct("Steps")
            .field("key", &self.key)
            .field("state", &state)
            .field("steps", &steps)
            .finish()
    }
}

/// Steps' answer once the run is claimed.
pub(crate) enum Begin<K> {
    Ready,
    Wait(Pending<StepKey<K>, Vec<u8>>),
}

impl<'a, K, S> Steps<'a, K, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(crate) fn new(store: StepStore<K, S>, key: K, fingerprint: Option<Fingerprint>) -> Self {
        Steps {
            store,
            key,
            fingerprint,
            wait: Wait::Forever,
            state: State::Unclaimed,
            done: Vec::new(),
        }
    }

    /// If another caller holds the run, fail with [`RunError::InFlight`] at
    /// once instead of waiting for it.
    pub fn no_wait(mut self) -> Self {
        self.wait = Wait::No;
        self
    }

    /// If another caller holds the run, wait for it at most `timeout`
    /// (real time), then fail with [`RunError::InFlight`]. The sync forms
    /// only: wrap an async form in your runtime's timeout.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait = Wait::For(timeout);
        self
    }

    /// The run's key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The names of the steps this handle went through so far, in order.
    pub fn steps(&self) -> impl Iterator<Item = &str> + use<'_, 'a, K, S> {
        self.done.iter().map(|d| d.name.as_str())
    }

    fn part(&self, part: Part) -> StepKey<K> {
        StepKey::new(self.key.clone(), part)
    }

    fn next(&self) -> u32 {
        u32::try_from(self.done.len()).unwrap_or(u32::MAX)
    }

    /// Claims the run, if this handle has not yet: owns it, reads how it
    /// ended, or hands back the owner to wait for.
    pub(crate) fn begin_claim(&mut self) -> Result<Begin<K>, RunError> {
        if !matches!(self.state, State::Unclaimed) {
            return Ok(Begin::Ready);
        }
        let key = self.part(Part::Run);
        let claimed = match self.fingerprint {
            Some(fingerprint) => self.store.claim_with(key, fingerprint),
            None => self.store.claim(key),
        };
        match claimed? {
            Claim::Owner(ticket) => self.state = State::Owner(ticket),
            Claim::Completed(record) => self.state = State::Ended(Ended::decode(&record)?),
            Claim::InFlight(_) if self.wait == Wait::No => return Err(RunError::InFlight),
            Claim::InFlight(pending) => return Ok(Begin::Wait(pending)),
        }
        Ok(Begin::Ready)
    }

    /// After a wait for the run's owner: true once the run's end is known;
    /// false if the owner let it go (claim again).
    pub(crate) fn waited(&mut self, waited: Result<Vec<u8>, WaitError>) -> Result<bool, RunError> {
        match waited {
            Ok(record) => {
                self.state = State::Ended(Ended::decode(&record)?);
                Ok(true)
            }
            Err(WaitError::Abandoned | WaitError::LeaseExpired) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn begin(&mut self) -> Result<(), RunError> {
        loop {
            let Begin::Wait(pending) = self.begin_claim()? else {
                return Ok(());
            };
            let waited = match self.wait {
                Wait::For(timeout) => pending.wait_timeout(timeout),
                Wait::Forever | Wait::No => pending.wait(),
            };
            if self.waited(waited)? {
                return Ok(());
            }
        }
    }

    /// Claims the next step, named `name`, once the run is claimed.
    pub(crate) fn claim_step(&self, name: &str) -> Result<StepClaim<K, S>, RunError> {
        let index = self.next();
        let run = match &self.state {
            State::Unclaimed => unreachable!("a step is claimed after the run"),
            State::Ended(Ended::GaveUp) => return Err(RunError::GivenUp),
            State::Ended(Ended::Finished { steps, .. }) => {
                return match steps.get(index as usize) {
                    Some((recorded, bytes)) if recorded == name => {
                        Ok(StepClaim::Recorded(bytes.clone()))
                    }
                    recorded => Err(RunError::StepMismatch {
                        index,
                        asked: name.to_string(),
                        recorded: recorded.map(|(n, _)| n.clone()),
                    }),
                };
            }
            State::Owner(run) => run,
        };
        // Each step renews the run's lease: a run lasts as long as its
        // steps keep coming, each within a lease.
        run.renew().map_err(|_| RunError::Superseded)?;
        let key = self.part(Part::Step(index));
        match self
            .store
            .claim_with(key, step_fingerprint(self.fingerprint, name))
        {
            Ok(Claim::Owner(ticket)) => {
                // A run given up (by this handle or one before it) runs no
                // new step; the claim's drop releases the step.
                if self.store.get(&self.part(Part::GiveUp)).is_some() {
                    return Err(RunError::GivenUp);
                }
                Ok(StepClaim::Run(ticket))
            }
            Ok(Claim::Completed(record)) => {
                Ok(StepClaim::Recorded(split_step(&record)?.1.to_vec()))
            }
            Ok(Claim::InFlight(pending)) => Ok(StepClaim::Wait(pending)),
            Err(crate::ClaimError::Mismatch) => Err(self.mismatch(index, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Why step `index` refused `name`'s fingerprint: another step is
    /// recorded there, or the same step with another payload.
    fn mismatch(&self, index: u32, name: &str) -> RunError {
        let recorded = self
            .store
            .get(&self.part(Part::Step(index)))
            .and_then(|record| split_step(&record).ok().map(|(name, _)| name));
        if recorded.as_deref() == Some(name) {
            RunError::PayloadMismatch
        } else {
            RunError::StepMismatch {
                index,
                asked: name.to_string(),
                recorded,
            }
        }
    }

    /// Records the result of the step this handle just ran.
    pub(crate) fn complete_step(
        &mut self,
        name: &str,
        ticket: Ticket<StepKey<K>, Vec<u8>, S>,
        bytes: &[u8],
    ) -> Result<(), RunError> {
        match ticket.complete(step_record(name, bytes)) {
            Ok(()) => Ok(()),
            Err(CompleteError::Superseded(_)) => Err(RunError::Superseded),
            Err(CompleteError::Journal { error, .. }) => Err(RunError::Journal(error)),
        }
    }

    /// Notes a step this handle went through.
    pub(crate) fn push(&mut self, name: &str, bytes: Vec<u8>, undo: Option<Undo<'a>>) {
        self.done.push(Done {
            name: name.to_string(),
            bytes,
            undo,
        });
    }

    /// A step recorded after the last one this handle asked for, if any.
    fn unvisited(&self) -> Result<(), RunError> {
        let index = self.next();
        match self.store.get(&self.part(Part::Step(index))) {
            None => Ok(()),
            Some(record) => Err(RunError::Unvisited {
                index,
                name: split_step(&record)?.0,
            }),
        }
    }

    /// `finish`'s decision once the run is claimed: the replayed result,
    /// or the record to store.
    pub(crate) fn finish_claimed<R: Codec>(&mut self, result: R) -> Result<Outcome<R>, RunError> {
        match &self.state {
            State::Unclaimed => unreachable!("finish claims the run first"),
            State::Ended(Ended::Finished { result, .. }) => {
                return Ok(Outcome::Replayed(R::decode(result)?))
            }
            State::Ended(Ended::GaveUp) => return Err(RunError::GivenUp),
            State::Owner(run) => run.renew().map_err(|_| RunError::Superseded)?,
        }
        self.unvisited()?;
        if self.store.get(&self.part(Part::GiveUp)).is_some() {
            return Err(RunError::GivenUp);
        }
        let mut bytes = Vec::new();
        result.encode(&mut bytes)?;
        let ended = Ended::Finished {
            result: bytes,
            steps: self
                .done
                .iter()
                .map(|d| (d.name.clone(), d.bytes.clone()))
                .collect(),
        };
        self.end(ended)?;
        Ok(Outcome::Executed(result))
    }

    /// Completes the run's key with how it ended.
    fn end(&mut self, ended: Ended) -> Result<(), RunError> {
        let State::Owner(ticket) = std::mem::replace(&mut self.state, State::Unclaimed) else {
            unreachable!("only the run's owner ends it");
        };
        match ticket.complete(ended.encode()) {
            Ok(()) => {
                self.state = State::Ended(ended);
                Ok(())
            }
            // The claim is gone either way: a later call claims the run
            // again (and resumes).
            Err(CompleteError::Superseded(_)) => Err(RunError::Superseded),
            Err(CompleteError::Journal { error, .. }) => Err(RunError::Journal(error)),
        }
    }

    /// `give_up`'s checks once the run is claimed: false if it was given
    /// up before (nothing to do).
    pub(crate) fn give_up_claimed(&self) -> Result<bool, RunError> {
        match &self.state {
            State::Unclaimed => unreachable!("give_up claims the run first"),
            State::Ended(Ended::Finished { .. }) => Err(RunError::Finished),
            State::Ended(Ended::GaveUp) => Ok(false),
            State::Owner(run) => {
                run.renew().map_err(|_| RunError::Superseded)?;
                self.unvisited()?;
                Ok(true)
            }
        }
    }

    pub(crate) fn give_up_key(&self) -> StepKey<K> {
        self.part(Part::GiveUp)
    }

    pub(crate) fn undo_key(&self, index: u32) -> StepKey<K> {
        self.part(Part::Undo(index))
    }

    pub(crate) fn renew(&self) -> Result<(), RunError> {
        match &self.state {
            State::Owner(run) => run.renew().map_err(|_| RunError::Superseded),
            _ => Ok(()),
        }
    }

    /// Ends a run whose compensations all ran.
    pub(crate) fn gave_up(&mut self) -> Result<(), RunError> {
        self.end(Ended::GaveUp)?;
        // Nothing is left to compensate; let the caller's closures go.
        self.done.iter_mut().for_each(|d| d.undo = None);
        Ok(())
    }

    // ------------------------------------------------------------ sync forms

    /// Runs the step `name`, at most once per run while its result is
    /// retained: if an earlier run of this key finished it, its stored
    /// result comes back and `operation` does not run. The result is
    /// stored in its [`Codec`] encoding; an `Err` is returned and not
    /// stored, and the step is released, so a retry runs it again.
    ///
    /// Steps are checked by name and place: a step at an index where the
    /// run recorded another is [`RunError::StepMismatch`].
    pub fn run<T, E, F>(&mut self, name: &str, operation: F) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Result<T, E>,
    {
        self.run_sync(name, operation, |_| None)
    }

    /// As [`run`](Self::run), with a compensation: if the run is given up
    /// ([`give_up`](Self::give_up)), `undo` runs once with this step's
    /// result, after the compensations of the steps that follow it.
    ///
    /// A handle that resumes a run registers the compensations again as
    /// its steps replay, so call `run_with_undo` on every attempt.
    pub fn run_with_undo<T, E, F, U, UE>(
        &mut self,
        name: &str,
        operation: F,
        undo: U,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Result<T, E>,
        U: FnMut(T) -> Result<(), UE> + Send + 'a,
        UE: Into<UndoError>,
    {
        self.run_sync(name, operation, |bytes| {
            Some(Undo::sync::<T, _, _>(bytes, undo))
        })
    }

    fn run_sync<T, E, F>(
        &mut self,
        name: &str,
        operation: F,
        undo: impl FnOnce(Vec<u8>) -> Option<Undo<'a>>,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Result<T, E>,
    {
        self.begin()?;
        let bytes = loop {
            match self.claim_step(name)? {
                StepClaim::Recorded(bytes) => break bytes,
                StepClaim::Run(ticket) => {
                    let value = operation().map_err(StepError::Failed)?;
                    let mut bytes = Vec::new();
                    value.encode(&mut bytes).map_err(RunError::from)?;
                    self.complete_step(name, ticket, &bytes)?;
                    self.push(name, bytes.clone(), undo(bytes));
                    return Ok(value);
                }
                StepClaim::Wait(pending) => match pending.wait() {
                    Ok(record) => break split_step(&record).map_err(RunError::from)?.1.to_vec(),
                    Err(WaitError::Abandoned | WaitError::LeaseExpired) => continue,
                    Err(e) => return Err(RunError::from(e).into()),
                },
            }
        };
        let value = T::decode(&bytes).map_err(RunError::from)?;
        self.push(name, bytes.clone(), undo(bytes));
        Ok(value)
    }

    /// Stores `result` as the run's result and ends the run: every later
    /// handle on the key gets [`Outcome::Replayed`] with it (and its steps'
    /// stored results), and nothing runs again. A handle on a run that
    /// finished before gets the stored result, whatever `result` is.
    ///
    /// Refused with [`RunError::Unvisited`] if the run recorded a step
    /// after the last one this handle asked for, and with
    /// [`RunError::GivenUp`] if the run was given up.
    pub fn finish<R: Codec>(&mut self, result: R) -> Result<Outcome<R>, RunError> {
        self.begin()?;
        self.finish_claimed(result)
    }

    /// Gives the run up: marks it given up (from then on no step runs),
    /// then runs the compensation of each step this handle went through, in
    /// reverse order, each at most once: a compensation that finished is
    /// recorded and never runs again, so after a crash or a failed
    /// compensation the next `give_up` resumes where this one stopped.
    /// Steps given no compensation are skipped. Once all ran, the run ends
    /// given up: later handles get [`RunError::GivenUp`] from `run` and
    /// `finish`, and `Ok` from `give_up`.
    ///
    /// Refused with [`RunError::Finished`] on a finished run, and with
    /// [`RunError::Unvisited`] if the run recorded a step this handle did
    /// not ask for (its compensation would be unknown).
    pub fn give_up(&mut self) -> Result<(), RunError> {
        self.begin()?;
        if !self.give_up_claimed()? {
            return Ok(());
        }
        let mark = self.give_up_key();
        self.store
            .execute(mark, || Ok::<_, Infallible>(Vec::new()))
            .map_err(|e| from_execute(e, |never| match never {}))?;
        for index in (0..self.done.len()).rev() {
            self.renew()?;
            let key = self.undo_key(index as u32);
            let Steps { store, done, .. } = self;
            let done = &mut done[index];
            let undo = match &mut done.undo {
                None => continue,
                Some(Undo::Async(_)) => {
                    return Err(RunError::AsyncUndo {
                        index: index as u32,
                        name: done.name.clone(),
                    })
                }
                Some(Undo::Sync(undo)) => undo,
            };
            store
                .execute(key, || undo().map(|()| Vec::new()))
                .map_err(|e| {
                    from_execute(e, |error| RunError::Undo {
                        index: index as u32,
                        name: done.name.clone(),
                        error,
                    })
                })?;
        }
        self.gave_up()
    }
}
