//! [`Steps`]: one caller's handle on a multi-step run, the run protocol
//! (written once, async, over any [`Backend`]) and its sync forms. The
//! async forms (`src/steps/future.rs`) call the same protocol and differ
//! only in how they run operations; the sync forms drive it on the calling
//! thread, which over the in-process store blocks only in a wait.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::error::{RunError, StepError, UndoError};
use super::key::{
    mark_fingerprint, run_fingerprint, split_step, step_fingerprint, step_record, Ended, Part,
    StepKey,
};
use super::StepStore;
use crate::backend::{Backend, Claimed, WaitError};
use crate::codec::Codec;
use crate::fingerprint::Fingerprint;
use crate::store::{Outcome, Store};

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

/// Where this handle stands with the run; `T` is the backend's ticket.
pub(crate) enum State<T> {
    /// Nothing asked yet: the run is claimed at the first call.
    Unclaimed,
    /// This handle owns the run: its claim of the run's key.
    Owner(T),
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
pub(crate) enum StepClaim<T, P> {
    /// Its result, recorded by an earlier run.
    Recorded(Vec<u8>),
    /// Free: this handle runs it. The claim guards it: dropped (an error,
    /// a panic, a cancelled future) releases the step.
    Run(T),
    /// Another owner of the run (one whose lease passed) is running it.
    Wait(P),
}

/// One caller's handle on a multi-step run, from
/// [`Store::steps`](crate::Store::steps) or, with feature `redis`,
/// [`RedisStore::steps`](crate::redis::RedisStore::steps) (`B` is the
/// store; the async forms work over both, the sync forms over the
/// in-process store).
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
pub struct Steps<'a, K, B = StepStore<K>>
where
    B: Backend<StepKey<K>, Vec<u8>>,
{
    pub(crate) store: B,
    pub(crate) key: K,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) wait: Wait,
    pub(crate) state: State<B::Ticket>,
    pub(crate) done: Vec<Done<'a>>,
}

impl<K: fmt::Debug, B: Backend<StepKey<K>, Vec<u8>>> fmt::Debug for Steps<'_, K, B> {
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

impl<'a, K, B> Steps<'a, K, B>
where
    K: Clone + Send + Sync + 'static,
    B: Backend<StepKey<K>, Vec<u8>>,
{
    pub(crate) fn new(store: B, key: K, fingerprint: Option<Fingerprint>) -> Self {
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
    pub fn steps(&self) -> impl Iterator<Item = &str> + use<'_, 'a, K, B> {
        self.done.iter().map(|d| d.name.as_str())
    }

    fn part(&self, part: Part) -> StepKey<K> {
        StepKey::new(self.key.clone(), part)
    }

    fn next(&self) -> u32 {
        u32::try_from(self.done.len()).unwrap_or(u32::MAX)
    }

    /// The deadline of a sync form's wait for the run's owner.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.wait {
            Wait::For(timeout) => Some(Instant::now() + timeout),
            Wait::Forever | Wait::No => None,
        }
    }

    // ------------------------------------------------------- the protocol

    /// Claims the run, if this handle has not yet: owns it, or learns how
    /// it ended, waiting (up to `deadline`) for another owner to end it or
    /// let it go.
    async fn begin(&mut self, deadline: Option<Instant>) -> Result<(), RunError> {
        while matches!(self.state, State::Unclaimed) {
            let key = self.part(Part::Run);
            let claimed = self
                .store
                .claim(&key, run_fingerprint(self.fingerprint))
                .await?;
            let pending = match claimed {
                Claimed::Owner(ticket) => {
                    self.state = State::Owner(ticket);
                    return Ok(());
                }
                Claimed::Completed(record) => {
                    self.state = State::Ended(Ended::decode(&record)?);
                    return Ok(());
                }
                Claimed::InFlight(_) if self.wait == Wait::No => return Err(RunError::InFlight),
                Claimed::InFlight(pending) => pending,
            };
            match self.store.wait(pending, deadline).await {
                Ok(record) => self.state = State::Ended(Ended::decode(&record)?),
                // The owner let the run go: claim it again.
                Err(WaitError::Abandoned | WaitError::LeaseExpired) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // The protocol's steps take `&mut self` though they change nothing: a
    // `&Steps` held across an await would need `Steps: Sync`, which the
    // caller's compensations (`Send` only) are not.

    /// Renews the run's lease if this handle owns it.
    async fn renew(&mut self) -> Result<(), RunError> {
        match &self.state {
            State::Owner(run) => Ok(self.store.renew(run).await?),
            _ => Ok(()),
        }
    }

    /// Whether the run's given-up mark is recorded.
    async fn given_up(&mut self) -> Result<bool, RunError> {
        Ok(self.store.get(&self.part(Part::GiveUp)).await?.is_some())
    }

    /// Claims the next step, named `name`, once the run is claimed.
    async fn claim_step(
        &mut self,
        name: &str,
    ) -> Result<StepClaim<B::Ticket, B::Pending>, RunError> {
        let index = self.next();
        match &self.state {
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
            State::Owner(_) => {}
        }
        // Each step renews the run's lease: a run lasts as long as its
        // steps keep coming, each within a lease.
        self.renew().await?;
        let key = self.part(Part::Step(index));
        let claimed = self
            .store
            .claim(&key, step_fingerprint(self.fingerprint, name))
            .await;
        match claimed {
            Ok(Claimed::Owner(ticket)) => {
                // A run given up (by this handle or one before it) runs no
                // new step: release the step.
                if self.given_up().await? {
                    self.store.abandon(ticket).await;
                    return Err(RunError::GivenUp);
                }
                Ok(StepClaim::Run(ticket))
            }
            Ok(Claimed::Completed(record)) => {
                Ok(StepClaim::Recorded(split_step(&record)?.1.to_vec()))
            }
            Ok(Claimed::InFlight(pending)) => Ok(StepClaim::Wait(pending)),
            Err(crate::backend::ClaimError::Mismatch) => Err(self.mismatch(index, name).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Why step `index` refused `name`'s fingerprint: another step is
    /// recorded there, or the same step with another payload.
    async fn mismatch(&mut self, index: u32, name: &str) -> RunError {
        let recorded = match self.store.get(&self.part(Part::Step(index))).await {
            Ok(record) => record.and_then(|r| split_step(&r).ok().map(|(name, _)| name)),
            Err(e) => return e.into(),
        };
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

    /// Notes a step this handle went through.
    fn push(&mut self, name: &str, bytes: Vec<u8>, undo: Option<Undo<'a>>) {
        self.done.push(Done {
            name: name.to_string(),
            bytes,
            undo,
        });
    }

    /// One step: replays its record, or runs `operation` and records its
    /// result, or waits for another owner of the run that is running it.
    pub(crate) async fn run_step<T, E, F, Fut>(
        &mut self,
        name: &str,
        operation: F,
        undo: impl FnOnce(Vec<u8>) -> Option<Undo<'a>>,
        deadline: Option<Instant>,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.begin(deadline).await?;
        let bytes = loop {
            match self.claim_step(name).await? {
                StepClaim::Recorded(bytes) => break bytes,
                StepClaim::Run(ticket) => {
                    let value = match operation().await {
                        Ok(value) => value,
                        Err(e) => {
                            // Nothing is stored: the step is released for
                            // the retry (as dropping the ticket would).
                            self.store.abandon(ticket).await;
                            return Err(StepError::Failed(e));
                        }
                    };
                    let mut bytes = Vec::new();
                    value.encode(&mut bytes).map_err(RunError::from)?;
                    self.store
                        .complete(ticket, step_record(name, &bytes))
                        .await
                        .map_err(RunError::from)?;
                    self.push(name, bytes.clone(), undo(bytes));
                    return Ok(value);
                }
                StepClaim::Wait(pending) => match self.store.wait(pending, None).await {
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

    /// A step recorded after the last one this handle asked for, if any.
    async fn unvisited(&mut self) -> Result<(), RunError> {
        let index = self.next();
        match self.store.get(&self.part(Part::Step(index))).await? {
            None => Ok(()),
            Some(record) => Err(RunError::Unvisited {
                index,
                name: split_step(&record)?.0,
            }),
        }
    }

    /// `finish`: the replayed result, or the run's end recorded.
    pub(crate) async fn finish_run<R: Codec>(
        &mut self,
        result: R,
        deadline: Option<Instant>,
    ) -> Result<Outcome<R>, RunError> {
        self.begin(deadline).await?;
        match &self.state {
            State::Unclaimed => unreachable!("finish claims the run first"),
            State::Ended(Ended::Finished { result, .. }) => {
                return Ok(Outcome::Replayed(R::decode(result)?))
            }
            State::Ended(Ended::GaveUp) => return Err(RunError::GivenUp),
            State::Owner(_) => {}
        }
        self.renew().await?;
        self.unvisited().await?;
        if self.given_up().await? {
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
        self.end(ended).await?;
        Ok(Outcome::Executed(result))
    }

    /// Completes the run's key with how it ended.
    async fn end(&mut self, ended: Ended) -> Result<(), RunError> {
        let State::Owner(ticket) = std::mem::replace(&mut self.state, State::Unclaimed) else {
            unreachable!("only the run's owner ends it");
        };
        // On an error the claim is gone either way: a later call claims
        // the run again (and resumes).
        self.store.complete(ticket, ended.encode()).await?;
        self.state = State::Ended(ended);
        Ok(())
    }

    /// `give_up`: the mark, then each compensation once, in reverse step
    /// order, then the run's end. `sync` refuses async compensations.
    pub(crate) async fn give_up_run(
        &mut self,
        sync: bool,
        deadline: Option<Instant>,
    ) -> Result<(), RunError> {
        self.begin(deadline).await?;
        match &self.state {
            State::Unclaimed => unreachable!("give_up claims the run first"),
            State::Ended(Ended::Finished { .. }) => return Err(RunError::Finished),
            State::Ended(Ended::GaveUp) => return Ok(()),
            State::Owner(_) => {}
        }
        self.renew().await?;
        self.unvisited().await?;
        let mark = self.part(Part::GiveUp);
        once(&self.store, &mark, || async { Ok::<_, Infallible>(()) })
            .await
            .map_err(|e| match e {
                StepError::Run(e) => e,
                StepError::Failed(never) => match never {},
            })?;
        for index in (0..self.done.len()).rev() {
            self.renew().await?;
            let key = self.part(Part::Undo(index as u32));
            let Steps { store, done, .. } = self;
            let done = &mut done[index];
            let ran = match &mut done.undo {
                None => continue,
                Some(Undo::Async(_)) if sync => {
                    return Err(RunError::AsyncUndo {
                        index: index as u32,
                        name: done.name.clone(),
                    })
                }
                Some(Undo::Sync(undo)) => once(store, &key, || async { undo() }).await,
                Some(Undo::Async(undo)) => once(store, &key, undo).await,
            };
            ran.map_err(|e| match e {
                StepError::Run(e) => e,
                StepError::Failed(error) => RunError::Undo {
                    index: index as u32,
                    name: done.name.clone(),
                    error,
                },
            })?;
        }
        self.end(Ended::GaveUp).await?;
        // Nothing is left to compensate; let the caller's closures go.
        self.done.iter_mut().for_each(|d| d.undo = None);
        Ok(())
    }
}

/// Runs `operation` at most once per `key` (a run's mark, or one
/// compensation), recording only that it ran: `execute` over a backend.
async fn once<K, B, E, F, Fut>(
    store: &B,
    key: &StepKey<K>,
    operation: F,
) -> Result<(), StepError<E>>
where
    B: Backend<StepKey<K>, Vec<u8>>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut operation = Some(operation);
    loop {
        let pending = match store
            .claim(key, mark_fingerprint())
            .await
            .map_err(RunError::from)?
        {
            Claimed::Owner(ticket) => {
                let Some(operation) = operation.take() else {
                    unreachable!("the owner of a key runs its operation once");
                };
                if let Err(e) = operation().await {
                    store.abandon(ticket).await;
                    return Err(StepError::Failed(e));
                }
                return match store.complete(ticket, Vec::new()).await {
                    // It ran; a claim taken over meanwhile changes nothing.
                    Ok(()) | Err(crate::backend::CompleteError::Superseded) => Ok(()),
                    Err(e) => Err(RunError::from(e).into()),
                };
            }
            Claimed::Completed(_) => return Ok(()),
            Claimed::InFlight(pending) => pending,
        };
        match store.wait(pending, None).await {
            Ok(_) => return Ok(()),
            Err(WaitError::Abandoned | WaitError::LeaseExpired) => {}
            Err(e) => return Err(RunError::from(e).into()),
        }
    }
}

// ---------------------------------------------------------------- sync forms

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a sync form's future on the calling thread. Over the in-process
/// store every call is ready at once but a wait, whose waker unparks this
/// thread.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl<'a, K, S> Steps<'a, K, Store<StepKey<K>, Vec<u8>, S>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
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
        let deadline = self.sync_deadline();
        let operation = || std::future::ready(operation());
        block_on(self.run_step(name, operation, |_| None, deadline))
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
        let deadline = self.sync_deadline();
        let operation = || std::future::ready(operation());
        let undo = |bytes| Some(Undo::sync::<T, _, _>(bytes, undo));
        block_on(self.run_step(name, operation, undo, deadline))
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
        let deadline = self.sync_deadline();
        block_on(self.finish_run(result, deadline))
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
        let deadline = self.sync_deadline();
        block_on(self.give_up_run(true, deadline))
    }
}
