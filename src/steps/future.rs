//! The async forms of [`Steps`], over any backend: the in-process store
//! and, with feature `redis`, the Redis store. They call the one run
//! protocol (`src/steps/run.rs`) with async operations. Each is cancel-safe
//! as `execute_async` is: a future dropped while it runs a step releases
//! that step (its claim's drop), and one dropped while it waits only
//! withdraws its wait.

use std::future::Future;

use super::error::{RunError, StepError, UndoError};
use super::key::StepKey;
use super::run::{Steps, Undo};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::store::Outcome;

impl<'a, K, B> Steps<'a, K, B>
where
    K: Clone + Send + Sync + 'static,
    B: Backend<StepKey<K>, Vec<u8>>,
{
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
        self.run_step(name, operation, |_| None, None).await
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
        self.run_step(name, operation, undo, None).await
    }

    /// The async form of [`finish`](Self::finish).
    pub async fn finish_async<R: Codec>(&mut self, result: R) -> Result<Outcome<R>, RunError> {
        self.finish_run(result, None).await
    }

    /// The async form of [`give_up`](Self::give_up): runs sync and async
    /// compensations alike.
    pub async fn give_up_async(&mut self) -> Result<(), RunError> {
        self.give_up_run(false, None).await
    }
}
