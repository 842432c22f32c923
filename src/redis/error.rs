//! The Redis store's errors. Each says what happened and what the caller
//! can do next; a backend failure is always an [`Error`], bounded in time
//! (rule 27).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::CodecError;
use crate::error::ConfigError;

/// The backend failed: nothing was claimed, stored or released by this call
/// (or, for a completion, it is not known to be stored, and is not
/// reported as stored).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached or dropped the connection. Retry
    /// later: the store reconnects by itself.
    Unavailable(Arc<redis::RedisError>),
    /// The server did not answer within the store's timeout.
    Timeout(Duration),
    /// A Redis key under the store's prefix was written by something else
    /// (another type, or a hash without idemstore's marker). It is left
    /// untouched; no value is read from it.
    Foreign {
        /// The Redis key, lossily as UTF-8.
        key: String,
        /// What was found there.
        found: String,
    },
    /// A stored value did not decode as the store's value type, or a value
    /// or key could not be encoded.
    Codec(CodecError),
    /// The server answered something the scripts never send.
    Protocol(String),
    /// An invalid setting.
    Config(ConfigError),
    /// `build` ran outside a Tokio runtime: the store needs one for its
    /// subscription and for the releases of dropped tickets.
    NoRuntime,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable(e) => write!(f, "redis unavailable: {e}"),
            Error::Timeout(d) => write!(f, "redis did not answer within {d:?}"),
            Error::Foreign { key, found } => write!(
                f,
                "redis key {key:?} under the store's prefix was not written by idemstore ({found})"
            ),
            Error::Codec(e) => write!(f, "redis value could not be encoded or decoded: {e}"),
            Error::Protocol(e) => write!(f, "unexpected reply from redis: {e}"),
            Error::Config(e) => fmt::Display::fmt(e, f),
            Error::NoRuntime => f.write_str("the redis store must be built inside a Tokio runtime"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Unavailable(e) => Some(&**e),
            Error::Codec(e) => Some(e),
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(Arc::new(e))
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

/// Why [`RedisStore::claim`](super::RedisStore::claim) gave no claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClaimError {
    /// The key is in use with a different payload fingerprint (rule 5).
    Mismatch,
    /// The backend failed; nothing was claimed.
    Backend(Error),
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Mismatch => fmt::Display::fmt(&crate::ClaimError::Mismatch, f),
            ClaimError::Backend(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for ClaimError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ClaimError::Mismatch => None,
            ClaimError::Backend(e) => Some(e),
        }
    }
}

impl From<Error> for ClaimError {
    fn from(e: Error) -> Self {
        ClaimError::Backend(e)
    }
}

/// Why waiting for an in-flight owner ended without a value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WaitError {
    /// The owner released the claim without a result (or the key was
    /// removed). A retry may run the operation.
    Abandoned,
    /// The owner's lease passed on the server's clock; a new claim takes
    /// the key over.
    LeaseExpired,
    /// The caller's own deadline passed; the owner is unaffected.
    Timeout,
    /// The key turned out to be in use with another payload fingerprint
    /// (a duplicate that waited in this process on a claim Redis refused).
    Mismatch,
    /// The backend failed while waiting.
    Backend(Error),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Abandoned => fmt::Display::fmt(&crate::WaitError::Abandoned, f),
            WaitError::LeaseExpired => fmt::Display::fmt(&crate::WaitError::LeaseExpired, f),
            WaitError::Timeout => fmt::Display::fmt(&crate::WaitError::Timeout, f),
            WaitError::Mismatch => fmt::Display::fmt(&crate::ClaimError::Mismatch, f),
            WaitError::Backend(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for WaitError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            WaitError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for WaitError {
    fn from(e: Error) -> Self {
        WaitError::Backend(e)
    }
}

/// Why a completion (or renewal, with `V = ()`) stored nothing. The value
/// comes back untouched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CompleteError<V> {
    /// The claim is no longer current: its lease passed and the key was
    /// taken over, or it was removed (the fencing check, rule 10).
    Superseded(V),
    /// The backend failed: the result is not known to be stored, and is not
    /// reported as stored. The ticket's release was sent, so unless the
    /// server had stored it, a retry runs the operation again.
    Backend {
        /// The value that was not stored.
        value: V,
        /// What went wrong.
        error: Error,
    },
}

impl<V> CompleteError<V> {
    /// The value that was not stored.
    pub fn into_value(self) -> V {
        match self {
            CompleteError::Superseded(value) | CompleteError::Backend { value, .. } => value,
        }
    }
}

impl<V> fmt::Display for CompleteError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompleteError::Superseded(_) => fmt::Display::fmt(&crate::Superseded(()), f),
            CompleteError::Backend { error, .. } => write!(f, "result not stored: {error}"),
        }
    }
}

impl<V: fmt::Debug> StdError for CompleteError<V> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            CompleteError::Superseded(_) => None,
            CompleteError::Backend { error, .. } => Some(error),
        }
    }
}

/// Why [`RedisStore::execute`](super::RedisStore::execute) returned no value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The operation ran and returned this error; nothing was stored and
    /// the key was released (rule 7).
    Failed(E),
    /// The key is in use with another payload fingerprint.
    Mismatch,
    /// The backend failed: the operation did not run, or its result was not
    /// stored (the key was released).
    Backend(Error),
}

impl<E: fmt::Display> fmt::Display for ExecuteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecuteError::Failed(e) => write!(f, "operation failed: {e}"),
            ExecuteError::Mismatch => fmt::Display::fmt(&crate::ClaimError::Mismatch, f),
            ExecuteError::Backend(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: StdError + 'static> StdError for ExecuteError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ExecuteError::Failed(e) => Some(e),
            ExecuteError::Mismatch => None,
            ExecuteError::Backend(e) => Some(e),
        }
    }
}

impl<E> From<Error> for ExecuteError<E> {
    fn from(e: Error) -> Self {
        ExecuteError::Backend(e)
    }
}
