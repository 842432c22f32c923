//! The async forms of [`Steps`]: the same decisions as the sync forms
//! (`src/steps/run.rs`), waiting by `.await` and running async operations.
//! Each is cancel-safe as `execute_async` is: a future dropped while it
//! runs a step releases that step (its claim's drop), and one dropped while
//! it waits only withdraws its wait.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hash};

use super::error::{from_execute, RunError, StepError, UndoError};
use super::key::split_step;
use super::run::{Begin, StepClaim, Steps, Undo};
use crate::codec::Codec;
use crate::error::WaitError;
use crate::store::Outcome;

impl<'a, K, S> Steps<'a, K, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    async fn begin_async(&mut self) -> Result<(), RunError> {
        loop {
            let Begin::Wait(pending) = self.begin_claim()? else {
                return Ok(());
            };
            let waited = pending.into_future().await;
            if self.waited(waited)? {
                return Ok(());
            }
        }
    }

    /// The async form of [`run`](Self::run): `operation` returns a future.
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
    /// # }
    /// use idemstore::steps::StepStore;
    /// let store: StepStore<u64> = StepStore::new();
    /// block_on(async {
    ///     let mut order = store.steps(7);
    ///     let hold: u32 = order.run_async("reserve", || async { Ok::<_, std::io::Error>(3) }).await?;
    ///     order.finish_async(hold).await?;
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn run_async<T, E, F, Fut>(
        &mut self,
        name: &str,
        operation: F,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_future(name, operation, |_| None).await
    }

    /// The async form of [`run_with_undo`](Self::run_with_undo): the
    /// operation and its compensation return futures. Only
    /// [`give_up_async`](Self::give_up_async) runs the compensation.
    pub async fn run_with_undo_async<T, E, F, Fut, U, UF, UE>(
        &mut self,
        name: &str,
        operation: F,
        undo: U,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        U: FnMut(T) -> UF + Send + 'a,
        UF: Future<Output = Result<(), UE>> + Send + 'a,
        UE: Into<UndoError> + 'a,
    {
        let undo = |bytes| Some(Undo::future::<T, _, _, _>(bytes, undo));
        self.run_future(name, operation, undo).await
    }

    async fn run_future<T, E, F, Fut>(
        &mut self,
        name: &str,
        operation: F,
        undo: impl FnOnce(Vec<u8>) -> Option<Undo<'a>>,
    ) -> Result<T, StepError<E>>
    where
        T: Codec,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.begin_async().await?;
        let bytes = loop {
            match self.claim_step(name)? {
                StepClaim::Recorded(bytes) => break bytes,
                StepClaim::Run(ticket) => {
                    let value = operation().await.map_err(StepError::Failed)?;
                    let mut bytes = Vec::new();
                    value.encode(&mut bytes).map_err(RunError::from)?;
                    self.complete_step(name, ticket, &bytes)?;
                    self.push(name, bytes.clone(), undo(bytes));
                    return Ok(value);
                }
                StepClaim::Wait(pending) => match pending.into_future().await {
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

    /// The async form of [`finish`](Self::finish).
    pub async fn finish_async<R: Codec>(&mut self, result: R) -> Result<Outcome<R>, RunError> {
        self.begin_async().await?;
        self.finish_claimed(result)
    }

    /// The async form of [`give_up`](Self::give_up): runs sync and async
    /// compensations alike.
    pub async fn give_up_async(&mut self) -> Result<(), RunError> {
        self.begin_async().await?;
        if !self.give_up_claimed()? {
            return Ok(());
        }
        let mark = self.give_up_key();
        self.store
            .execute_async(mark, || async { Ok::<_, Infallible>(Vec::new()) })
            .await
            .map_err(|e| from_execute(e, |never| match never {}))?;
        for index in (0..self.done.len()).rev() {
            self.renew()?;
            let key = self.undo_key(index as u32);
            let Steps { store, done, .. } = self;
            let done = &mut done[index];
            let ran = match &mut done.undo {
                None => continue,
                Some(Undo::Sync(undo)) => {
                    store
                        .execute_async(key, || async { undo().map(|()| Vec::new()) })
                        .await
                }
                Some(Undo::Async(undo)) => {
                    store
                        .execute_async(key, || async { undo().await.map(|()| Vec::new()) })
                        .await
                }
            };
            ran.map_err(|e| {
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
