//! Why a step, a run's `finish` or its `give_up` returned no value.

use std::error::Error;
use std::fmt;

use crate::backend::{self, Unavailable};
use crate::codec::CodecError;
use crate::error::{ClaimError, WaitError};
use crate::journal::JournalError;

/// What a compensation may fail with: any error, boxed.
pub type UndoError = Box<dyn Error + Send + Sync>;

/// Why [`Steps::run`](crate::steps::Steps::run) returned no value.
#[derive(Debug)]
pub enum StepError<E> {
    /// The step's operation ran and returned this error. Nothing was
    /// stored: the step is released, and a retry (on this handle, or on a
    /// new one once this one is dropped) runs it again.
    Failed(E),
    /// The run could not go on (see [`RunError`]); the step did not run.
    Run(RunError),
}

impl<E> From<RunError> for StepError<E> {
    fn from(error: RunError) -> Self {
        StepError::Run(error)
    }
}

impl<E: fmt::Display> fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Failed(e) => write!(f, "step failed: {e}"),
            StepError::Run(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: Error + 'static> Error for StepError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StepError::Failed(e) => Some(e),
            StepError::Run(e) => Some(e),
        }
    }
}

/// Why a multi-step run could not go on. Each says what the caller can do
/// next.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The run recorded another step at this index than the one asked for
    /// (`recorded`; `None` when it recorded none, or the step is in flight
    /// elsewhere): the retry's code does not ask for the steps the first
    /// run did, in their order. Nothing ran.
    StepMismatch {
        /// The step's index, from 0.
        index: u32,
        /// The name asked for.
        asked: String,
        /// The name recorded there, if the store has it.
        recorded: Option<String>,
    },
    /// The run's key is in use with another payload fingerprint
    /// ([`Store::steps_with`](crate::Store::steps_with)): the key was
    /// reused for another request. Nothing ran.
    PayloadMismatch,
    /// `finish` or `give_up` was called with a step recorded at `index`
    /// that this handle never asked for: run the steps (their results
    /// replay) up to the last one the run recorded first.
    Unvisited {
        /// The first recorded step this handle did not ask for.
        index: u32,
        /// Its name.
        name: String,
    },
    /// Another caller holds the run and this handle was told not to wait
    /// ([`Steps::no_wait`](crate::steps::Steps::no_wait)), or its wait
    /// ran out. Retry later; the other caller is unaffected.
    InFlight,
    /// The run was given up: no step runs after that. Call
    /// [`give_up`](crate::steps::Steps::give_up) to run (or resume) its
    /// compensations.
    GivenUp,
    /// `give_up` of a run that finished: a finished run stays finished.
    Finished,
    /// This handle's claim of the run passed its lease and another caller
    /// took the run over (or the run's entry was removed). Drop the handle.
    Superseded,
    /// A compensation failed. The compensations after it in the undo order
    /// did not run; `give_up` again resumes here (finished compensations
    /// do not run again).
    Undo {
        /// The index of the step whose compensation failed.
        index: u32,
        /// Its name.
        name: String,
        /// The compensation's error.
        error: UndoError,
    },
    /// The sync [`give_up`](crate::steps::Steps::give_up) met a step
    /// registered with an async compensation: use
    /// [`give_up_async`](crate::steps::Steps::give_up_async).
    AsyncUndo {
        /// The step's index.
        index: u32,
        /// Its name.
        name: String,
    },
    /// A key of the run could not be claimed (a full store, or a journal
    /// that could not record a token reservation).
    Claim(ClaimError),
    /// Waiting for another caller failed in a way a retry here cannot fix.
    Wait(WaitError),
    /// A result could not be encoded, or a stored one did not decode as
    /// the type asked for (the code changed a step's type under its name).
    Codec(CodecError),
    /// A result ran but could not be recorded in the journal, so it was not
    /// stored: the step (or the run's end) is released and a retry runs it
    /// again.
    Journal(JournalError),
    /// The store could not answer (with feature `redis`: the server is
    /// down, slow, or holds a record this run cannot read). Nothing of the
    /// call is known to be recorded; a retry resumes from what is.
    Unavailable(Unavailable),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::StepMismatch {
                index,
                asked,
                recorded: Some(recorded),
            } => write!(
                f,
                "step {index} is `{recorded}` in this run, but `{asked}` was asked for"
            ),
            RunError::StepMismatch {
                index,
                asked,
                recorded: None,
            } => write!(
                f,
                "step {index} (`{asked}`) is not the step this run has at that index"
            ),
            RunError::PayloadMismatch => {
                f.write_str("run key reused with a different payload fingerprint")
            }
            RunError::Unvisited { index, name } => write!(
                f,
                "step {index} (`{name}`) is recorded in this run but was not asked for"
            ),
            RunError::InFlight => f.write_str("another caller is running this run"),
            RunError::GivenUp => f.write_str("the run was given up: no step runs after that"),
            RunError::Finished => f.write_str("the run finished: it cannot be given up"),
            RunError::Superseded => {
                f.write_str("the run's lease passed and another caller took it over")
            }
            RunError::Undo { index, name, error } => {
                write!(
                    f,
                    "the compensation of step {index} (`{name}`) failed: {error}"
                )
            }
            RunError::AsyncUndo { index, name } => write!(
                f,
                "step {index} (`{name}`) has an async compensation: use give_up_async"
            ),
            RunError::Claim(e) => write!(f, "could not claim a key of the run: {e}"),
            RunError::Wait(e) => write!(f, "could not wait for the run's owner: {e}"),
            RunError::Codec(e) => write!(f, "a step's result did not encode or decode: {e}"),
            RunError::Journal(e) => write!(f, "a result was not recorded: {e}"),
            RunError::Unavailable(e) => write!(f, "a key of the run could not be used: {e}"),
        }
    }
}

impl Error for RunError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RunError::Undo { error, .. } => Some(error.as_ref()),
            RunError::Claim(e) => Some(e),
            RunError::Wait(e) => Some(e),
            RunError::Codec(e) => Some(e),
            RunError::Journal(e) => Some(e),
            RunError::Unavailable(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for RunError {
    fn from(error: CodecError) -> Self {
        RunError::Codec(error)
    }
}

impl From<ClaimError> for RunError {
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::Mismatch => RunError::PayloadMismatch,
            other => RunError::Claim(other),
        }
    }
}

impl From<WaitError> for RunError {
    fn from(error: WaitError) -> Self {
        match error {
            WaitError::Timeout => RunError::InFlight,
            other => RunError::Wait(other),
        }
    }
}

/// A store's own failure: the in-process store's journal errors come back
/// as they were (the backend wraps them), any other as `Unavailable`.
impl From<Unavailable> for RunError {
    fn from(error: Unavailable) -> Self {
        if let Some(journal) = error.downcast_ref::<JournalError>() {
            return RunError::Journal(journal.clone());
        }
        if let Some(claim) = error.downcast_ref::<ClaimError>() {
            return RunError::Claim(*claim);
        }
        RunError::Unavailable(error)
    }
}

impl From<backend::ClaimError> for RunError {
    fn from(error: backend::ClaimError) -> Self {
        match error {
            backend::ClaimError::Mismatch => RunError::PayloadMismatch,
            backend::ClaimError::Full => RunError::Claim(ClaimError::Full),
            backend::ClaimError::Unavailable(e) => e.into(),
        }
    }
}

impl From<backend::WaitError> for RunError {
    fn from(error: backend::WaitError) -> Self {
        match error {
            backend::WaitError::Abandoned => RunError::Wait(WaitError::Abandoned),
            backend::WaitError::LeaseExpired => RunError::Wait(WaitError::LeaseExpired),
            backend::WaitError::Timeout => RunError::InFlight,
            backend::WaitError::Mismatch => RunError::PayloadMismatch,
            backend::WaitError::Unavailable(e) => e.into(),
        }
    }
}

impl From<backend::CompleteError> for RunError {
    fn from(error: backend::CompleteError) -> Self {
        match error {
            backend::CompleteError::Superseded => RunError::Superseded,
            backend::CompleteError::Unavailable(e) => e.into(),
        }
    }
}
