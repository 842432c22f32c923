//! What the layer reports: tracing events (feature `tracing`) and metrics
//! (feature `metrics`). Without those features every call here compiles
//! to nothing. The names are listed in the README's "Observability".

/// Emits a tracing event named `$name` on target `idemstore::http`, inside
/// the request's `idempotency` span; a no-op without feature `tracing`.
macro_rules! event {
    ($level:ident, $name:literal $(, $field:ident = $value:expr)* $(,)?) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "idemstore::http", event = $name, $($field = $value,)* $name);
        #[cfg(not(feature = "tracing"))]
        {
            $(let _ = &$value;)*
        }
    }};
}
pub(crate) use event;

/// How the layer finished one request: the `outcome` label of
/// `idemstore_http_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler ran and its response was stored.
    Stored,
    /// The handler ran; its response was not stored (status, size,
    /// trailers or a body error) and the key was released.
    NotStored,
    /// The inner service returned an error; the key was released.
    HandlerError,
    /// The request was dropped (client gone) or panicked while it owned the
    /// key; the key was released.
    Dropped,
    /// A stored response was replayed, at once or after waiting.
    Replayed,
    /// 409: the key was in flight.
    InFlight,
    /// 422: the key was reused with another request.
    KeyReused,
    /// 400: no key.
    KeyMissing,
    /// 400: a malformed key.
    KeyInvalid,
    /// 413: the body was over the limit.
    BodyTooLarge,
    /// 400: the body could not be read.
    BodyUnreadable,
    /// 503: the store refused the key.
    StoreFull,
    /// 503: the store could not record the claim.
    StoreUnavailable,
    /// The layer did not apply (method not configured, or an optional key
    /// was absent).
    PassThrough,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::NotStored => "not_stored",
            Outcome::HandlerError => "handler_error",
            Outcome::Dropped => "dropped",
            Outcome::Replayed => "replayed",
            Outcome::InFlight => "in_flight",
            Outcome::KeyReused => "key_reused",
            Outcome::KeyMissing => "key_missing",
            Outcome::KeyInvalid => "key_invalid",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::BodyUnreadable => "body_unreadable",
            Outcome::StoreFull => "store_full",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::PassThrough => "pass_through",
        }
    }
}

/// Counts a finished request.
pub(crate) fn finished(outcome: Outcome) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REQUESTS, "outcome" => outcome.as_str()).increment(1);
    event!(debug, "finish", outcome = outcome.as_str());
}

/// Records how long a duplicate waited for the first request.
pub(crate) fn waited(seconds: f64) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(WAIT_SECONDS).record(seconds);
    let _ = seconds;
}

/// `idemstore_http_requests_total{outcome}`.
#[cfg(feature = "metrics")]
pub(crate) const REQUESTS: &str = "idemstore_http_requests_total";
/// `idemstore_http_wait_seconds`.
#[cfg(feature = "metrics")]
pub(crate) const WAIT_SECONDS: &str = "idemstore_http_wait_seconds";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_distinct() {
        let all = [
            Outcome::Stored,
            Outcome::NotStored,
            Outcome::HandlerError,
            Outcome::Dropped,
            Outcome::Replayed,
            Outcome::InFlight,
            Outcome::KeyReused,
            Outcome::KeyMissing,
            Outcome::KeyInvalid,
            Outcome::BodyTooLarge,
            Outcome::BodyUnreadable,
            Outcome::StoreFull,
            Outcome::StoreUnavailable,
            Outcome::PassThrough,
        ];
        let mut labels: Vec<_> = all.iter().map(|o| o.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
