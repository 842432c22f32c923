//! Error types. Each says what happened and what the caller can do next.

use std::error::Error;
use std::fmt;

/// Why [`Store::claim`](crate::Store::claim) gave no claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimError {
    /// The key is in use (in flight or completed) with a different payload
    /// [`Fingerprint`](crate::Fingerprint). Nothing was stored or returned:
    /// the caller reused a key for another request.
    Mismatch,
    /// The store holds `max_entries` live entries, or its completed
    /// entries weigh `max_bytes` or more. None is evicted to make room,
    /// because that would silently weaken the idempotency guarantee; retry
    /// once entries expire, or raise the limit.
    Full,
    /// The store cannot hand out a fencing token it has recorded: its
    /// journal failed to write a token reservation. Nothing was claimed;
    /// retry later.
    Unavailable,
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Mismatch => {
                f.write_str("idempotency key reused with a different payload fingerprint")
            }
            ClaimError::Full => {
                f.write_str("store is full: every entry is in flight or inside its retention")
            }
            ClaimError::Unavailable => {
                f.write_str("store unavailable: its journal could not record a token reservation")
            }
        }
    }
}

impl Error for ClaimError {}

/// Why waiting for an in-flight owner's result ended without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The owner gave the claim up without a result: it returned an error,
    /// panicked, was dropped or cancelled, or the entry was removed. The key
    /// is claimable again; a retry may run the operation.
    Abandoned,
    /// The owner's lease passed on the store's clock before it completed. The
    /// key is claimable again (a new claim takes it over).
    LeaseExpired,
    /// The caller's own wait deadline passed. The owner is unaffected and may
    /// still complete.
    Timeout,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Abandoned => "the in-flight owner abandoned the claim without a result",
            WaitError::LeaseExpired => "the in-flight owner's lease expired before it completed",
            WaitError::Timeout => "timed out waiting for the in-flight owner's result",
        })
    }
}

impl Error for WaitError {}

/// Why [`Store::execute`](crate::Store::execute) returned no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The operation ran and returned this error. Nothing was stored, so a
    /// retry runs the operation again.
    Failed(E),
    /// The key could not be claimed.
    Claim(ClaimError),
    /// Waiting for a duplicate's owner failed in a way a retry cannot fix
    /// here (such as a timeout).
    Wait(WaitError),
    /// The operation ran, but its result could not be recorded in the
    /// journal, so it was not stored: the key is released and a retry runs
    /// the operation again.
    #[cfg(feature = "journal")]
    Journal(crate::journal::JournalError),
}

impl<E: fmt::Display> fmt::Display for ExecuteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecuteError::Failed(e) => write!(f, "operation failed: {e}"),
            ExecuteError::Claim(e) => write!(f, "could not claim the key: {e}"),
            ExecuteError::Wait(e) => write!(f, "could not wait for the owner: {e}"),
            #[cfg(feature = "journal")]
            ExecuteError::Journal(e) => write!(f, "the result was not recorded: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for ExecuteError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ExecuteError::Failed(e) => Some(e),
            ExecuteError::Claim(e) => Some(e),
            ExecuteError::Wait(e) => Some(e),
            #[cfg(feature = "journal")]
            ExecuteError::Journal(e) => Some(e),
        }
    }
}

impl<E> From<ClaimError> for ExecuteError<E> {
    fn from(e: ClaimError) -> Self {
        ExecuteError::Claim(e)
    }
}

/// A completion, renewal or release refused because the claim is no longer
/// current: its lease passed and another owner took the key over, or the
/// entry was removed or swept. The value comes back to the caller untouched.
///
/// This is the fencing check: a paused owner can never overwrite or delete
/// the record of the owner that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded<T>(pub T);

impl<T> fmt::Display for Superseded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("claim superseded: its lease passed and the key was taken over or removed")
    }
}

impl<T: fmt::Debug> Error for Superseded<T> {}

/// Why [`Ticket::complete`](crate::Ticket::complete) stored nothing. The
/// value comes back to the caller untouched either way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompleteError<V> {
    /// The claim is no longer current (see [`Superseded`]): its lease passed
    /// and another owner took the key over, or the entry was removed.
    Superseded(V),
    /// The journal could not record the result, so it was not stored: the
    /// key is released (a retry runs the operation again) and the store
    /// keeps serving reads.
    #[cfg(feature = "journal")]
    Journal {
        /// The value that was not stored.
        value: V,
        /// What went wrong.
        error: crate::journal::JournalError,
    },
}

impl<V> CompleteError<V> {
    /// The value that was not stored.
    pub fn into_value(self) -> V {
        match self {
            CompleteError::Superseded(value) => value,
            #[cfg(feature = "journal")]
            CompleteError::Journal { value, .. } => value,
        }
    }
}

impl<V> From<Superseded<V>> for CompleteError<V> {
    fn from(Superseded(value): Superseded<V>) -> Self {
        CompleteError::Superseded(value)
    }
}

impl<V> fmt::Display for CompleteError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompleteError::Superseded(_) => fmt::Display::fmt(&Superseded(()), f),
            #[cfg(feature = "journal")]
            CompleteError::Journal { error, .. } => write!(f, "result not recorded: {error}"),
        }
    }
}

impl<V: fmt::Debug> Error for CompleteError<V> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CompleteError::Superseded(_) => None,
            #[cfg(feature = "journal")]
            CompleteError::Journal { error, .. } => Some(error),
        }
    }
}

/// An invalid [`Builder`](crate::Builder) setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `ttl` was zero: completed results would never be replayed.
    ZeroTtl,
    /// `lease` was zero: every claim would be taken over at once.
    ZeroLease,
    /// `lease` and `ttl` were both set, the lease the longer. The in-flight
    /// lease must be the shorter of the two, or a stuck owner would outlive
    /// any stored result. (A default never conflicts: with only one of them
    /// set, the other follows it.)
    LeaseLongerThanTtl,
    /// `shards` was zero, not a power of two, or above 65 536.
    Shards(usize),
    /// `max_entries` was zero.
    ZeroMaxEntries,
    /// `max_bytes` was zero.
    ZeroMaxBytes,
    /// `sweep_interval` was zero.
    ZeroSweepInterval,
    /// The background sweeper thread could not be spawned.
    Spawn(String),
    /// The journal could not be opened or replayed.
    #[cfg(feature = "journal")]
    Journal(crate::journal::JournalError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroTtl => f.write_str("ttl must be greater than zero"),
            ConfigError::ZeroLease => f.write_str("lease must be greater than zero"),
            ConfigError::LeaseLongerThanTtl => f.write_str("lease must not be longer than ttl"),
            ConfigError::Shards(n) => {
                write!(
                    f,
                    "shards must be a power of two between 1 and 65536, got {n}"
                )
            }
            ConfigError::ZeroMaxEntries => f.write_str("max_entries must be greater than zero"),
            ConfigError::ZeroMaxBytes => f.write_str("max_bytes must be greater than zero"),
            ConfigError::ZeroSweepInterval => {
                f.write_str("sweep_interval must be greater than zero")
            }
            ConfigError::Spawn(e) => write!(f, "could not spawn the sweeper thread: {e}"),
            #[cfg(feature = "journal")]
            ConfigError::Journal(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl Error for ConfigError {}
