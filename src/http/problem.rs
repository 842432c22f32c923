//! The layer's own error answers, as RFC 9457 `application/problem+json`.

use std::fmt::{self, Write};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::key::KeyError;

/// Why the layer answered a request itself instead of running the handler.
///
/// Each becomes an `application/problem+json` response (RFC 9457) with
/// `type` `about:blank`, `title` the status's reason phrase, `status`, a
/// `detail` sentence for people, and a stable `code` member for programs:
///
/// ```json
/// {"type":"about:blank","title":"Unprocessable Entity","status":422,
///  "code":"key_reused","detail":"..."}
/// ```
///
/// ```
/// use http::StatusCode;
/// use idemstore::http::Problem;
///
/// assert_eq!(Problem::KeyReused.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// assert_eq!(Problem::KeyReused.code(), "key_reused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// 400: the request carries no key and the layer requires one.
    MissingKey {
        /// The header the key was expected in.
        header: String,
    },
    /// 400: the key header is malformed.
    InvalidKey {
        /// The header the key was read from.
        header: String,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// 413: the request body is longer than the layer buffers.
    BodyTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// 400: reading the request body failed.
    BodyUnreadable,
    /// 422: the key was already used for a request with another method,
    /// path, query, body or fingerprinted header.
    KeyReused,
    /// 409: a request with this key is still being processed. Retry later
    /// (the response carries `Retry-After`).
    InFlight {
        /// How long this request waited for the first one, if it waited.
        waited: Option<Duration>,
    },
    /// 503: the store is at its `max_entries` bound and refuses new keys.
    StoreFull,
    /// 503: the store could not answer (its journal failed; a Redis server
    /// is down or slower than the store's timeout). The handler was not
    /// run.
    StoreUnavailable,
}

impl Problem {
    /// The HTTP status the problem is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Problem::MissingKey { .. } | Problem::InvalidKey { .. } | Problem::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Problem::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::InFlight { .. } => StatusCode::CONFLICT,
            Problem::StoreFull | Problem::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable, machine-readable name, sent as the `code` member.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::MissingKey { .. } => "key_missing",
            Problem::InvalidKey { .. } => "key_invalid",
            Problem::BodyTooLarge { .. } => "body_too_large",
            Problem::BodyUnreadable => "body_unreadable",
            Problem::KeyReused => "key_reused",
            Problem::InFlight { .. } => "request_in_flight",
            Problem::StoreFull => "store_full",
            Problem::StoreUnavailable => "store_unavailable",
        }
    }

    /// The problem document as JSON text.
    ///
    /// ```
    /// use idemstore::http::Problem;
    /// let json = Problem::StoreFull.to_json();
    /// assert!(json.starts_with(r#"{"type":"about:blank","title":"Service Unavailable","status":503,"#));
    /// ```
    pub fn to_json(&self) -> String {
        let status = self.status();
        let mut out = String::with_capacity(256);
        out.push_str(r#"{"type":"about:blank","title":"#);
        push_json_string(&mut out, status.canonical_reason().unwrap_or(""));
        let _ = write!(out, r#","status":{},"code":"#, status.as_u16());
        push_json_string(&mut out, self.code());
        out.push_str(r#","detail":"#);
        push_json_string(&mut out, &self.to_string());
        out.push('}');
        out
    }

    /// The response carrying this problem.
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from(self.to_json()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(
            self,
            Problem::InFlight { .. } | Problem::StoreFull | Problem::StoreUnavailable
        ) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The `detail` member: one sentence saying what happened and what to do.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingKey { header } => write!(
                f,
                "This request requires an {header} header: a unique value (such as a UUID) \
                 that you reuse only to retry the same request."
            ),
            Problem::InvalidKey { header, reason } => write!(
                f,
                "The {header} header is invalid: {reason}. Use 1 to 255 visible ASCII \
                 characters, optionally as a quoted string."
            ),
            Problem::BodyTooLarge { limit } => write!(
                f,
                "The request body is larger than the {limit} bytes accepted for \
                 idempotent requests; nothing was processed."
            ),
            Problem::BodyUnreadable => {
                f.write_str("The request body could not be read completely; nothing was processed.")
            }
            Problem::KeyReused => f.write_str(
                "This idempotency key was already used for a different request (another \
                 method, path, query, body or fingerprinted header). Use a new key for a \
                 new request.",
            ),
            Problem::InFlight { waited: None } => f.write_str(
                "A request with this idempotency key is still being processed. Retry \
                 after it completes to get its response.",
            ),
            Problem::InFlight {
                waited: Some(waited),
            } => write!(
                f,
                "A request with this idempotency key is still being processed after \
                 waiting {} ms for it. Retry later to get its response.",
                waited.as_millis()
            ),
            Problem::StoreFull => {
                f.write_str("The server cannot accept new idempotency keys right now; retry later.")
            }
            Problem::StoreUnavailable => f.write_str(
                "The server cannot record idempotency keys right now, so the request was not \
                 processed; retry later.",
            ),
        }
    }
}

/// A header name as people write it: `idempotency-key` -> `Idempotency-Key`.
pub(crate) fn display_header(name: &http::HeaderName) -> String {
    let mut out = String::with_capacity(name.as_str().len());
    let mut word_start = true;
    for c in name.as_str().chars() {
        out.push(if word_start {
            c.to_ascii_uppercase()
        } else {
            c
        });
        word_start = c == '-';
    }
    out
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_escaped_and_complete() {
        let problem = Problem::MissingKey {
            header: "x-\"odd\"\n".into(),
        };
        let json = problem.to_json();
        assert!(json.starts_with(
            r#"{"type":"about:blank","title":"Bad Request","status":400,"code":"key_missing","detail":"This request requires an x-\"odd\"\n header"#
        ));
        assert!(json.ends_with(r#"retry the same request."}"#));
    }

    #[test]
    fn header_names_read_as_written() {
        let name = http::HeaderName::from_static("idempotency-key");
        assert_eq!(display_header(&name), "Idempotency-Key");
    }

    #[test]
    fn responses_carry_the_media_type_and_retry_hint() {
        let response = Problem::InFlight { waited: None }.to_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let response = Problem::KeyReused.to_response();
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }
}
