//! [`StoredResponse`]: what the layer keeps for a key and replays.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::key::RequestKey;

/// The header marking a replayed response, as Stripe and the IETF draft's
/// examples name it.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A response kept for replay: status, headers and body. Cloning it is
/// cheap (an `Arc` inside), so waiters and replays share one copy.
///
/// ```
/// use http::{Response, StatusCode};
/// use idemstore::http::StoredResponse;
///
/// let response = Response::builder().status(201).header("location", "/orders/1").body(()).unwrap();
/// let stored = StoredResponse::new(response.status(), response.headers(), "{\"id\":1}");
/// assert_eq!(stored.status(), StatusCode::CREATED);
/// assert_eq!(stored.headers()["location"], "/orders/1");
/// assert_eq!(stored.body(), "{\"id\":1}");
/// ```
#[derive(Clone)]
pub struct StoredResponse(Arc<Parts>);

struct Parts {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StoredResponse {
    /// A stored response. Connection-specific headers (`Connection`,
    /// `Transfer-Encoding`, `Keep-Alive`, ...) and `Content-Length` are left
    /// out: the server sets them again for each replay.
    pub fn new(status: StatusCode, headers: &HeaderMap, body: impl Into<Bytes>) -> Self {
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if !is_per_connection(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        StoredResponse(Arc::new(Parts {
            status,
            headers: kept,
            body: body.into(),
        }))
    }

    /// A stored response of exactly these parts (read back from a journal).
    #[cfg(feature = "journal")]
    pub(crate) fn from_parts(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        StoredResponse(Arc::new(Parts {
            status,
            headers,
            body,
        }))
    }

    /// The stored status; a 201 stays 201 on replay.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The stored headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The stored body.
    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// The replay: the stored status, headers and body, plus
    /// `Idempotent-Replayed: true`.
    pub(crate) fn replay(&self) -> Response<Bytes> {
        let mut response = Response::new(self.0.body.clone());
        *response.status_mut() = self.0.status;
        *response.headers_mut() = self.0.headers.clone();
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// The default [`weigher`](crate::Builder::weigher) of an
/// [`HttpStore`](super::HttpStore): what a stored response and its key hold,
/// in bytes, for [`max_bytes`](crate::Builder::max_bytes).
///
/// It counts the body, each stored header's name and value plus its slot in
/// the header map, the response's fixed parts (status, map, shared
/// allocation), and the key's scope, path and client key plus the key's own
/// size. The body counts at its length even where it shares a larger
/// buffer. A pure function of the key and the response, as a weigher must
/// be. Compose it for a weigher of your own:
///
/// ```
/// use idemstore::http::{self, HttpStore};
/// // Also count the entry's own node and an allowance for the allocator.
/// let store = HttpStore::builder()
///     .max_bytes(256 << 20)
///     .weigher(|key, response| http::weigh(key, response) + 128)
///     .build()?;
/// # let _ = store;
/// # Ok::<(), idemstore::ConfigError>(())
/// ```
pub fn weigh(key: &RequestKey, response: &StoredResponse) -> usize {
    let parts = &*response.0;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| HEADER_SLOT + name.as_str().len() + value.len())
        .sum();
    let key = size_of::<RequestKey>() + key.scope.len() + key.path.len() + key.key.len();
    // The `Arc`'s two counts beside the parts.
    let response = size_of::<StoredResponse>() + 2 * size_of::<usize>() + size_of::<Parts>();
    key + response + headers + parts.body.len()
}

/// A stored header's slot in its map, besides its name's and value's bytes.
const HEADER_SLOT: usize = size_of::<(HeaderName, HeaderValue)>() + 2 * size_of::<usize>();

impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResponse")
            .field("status", &self.0.status)
            .field("headers", &self.0.headers)
            .field("body_len", &self.0.body.len())
            .finish()
    }
}

fn is_per_connection(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name == "keep-alive"
}

/// The default of [`IdempotencyLayer::store_if`](super::IdempotencyLayer::store_if):
/// 2xx and 4xx responses, except 408 and 429.
///
/// A 2xx means the request's work is done and a 4xx that the request itself
/// is at fault, so retrying it must give the same answer. 408 (Request
/// Timeout) and 429 (Too Many Requests) say "try again later", and 5xx says
/// the server failed: those release the key so the retry runs. 3xx
/// responses are not stored either; a service that answers a POST with
/// `303 See Other` after doing the work opts in with
/// [`store_if`](super::IdempotencyLayer::store_if).
///
/// ```
/// use http::StatusCode;
/// use idemstore::http::default_store_if;
///
/// assert!(default_store_if(StatusCode::CREATED));
/// assert!(default_store_if(StatusCode::NOT_FOUND));
/// assert!(!default_store_if(StatusCode::TOO_MANY_REQUESTS));
/// assert!(!default_store_if(StatusCode::SERVICE_UNAVAILABLE));
/// ```
pub fn default_store_if(status: StatusCode) -> bool {
    (status.is_success() || status.is_client_error())
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_everything_and_marks_itself() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, "/orders/1".parse().unwrap());
        headers.append(header::SET_COOKIE, "a=1".parse().unwrap());
        headers.append(header::SET_COOKIE, "b=2".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "7".parse().unwrap());
        headers.insert(header::CONNECTION, "close".parse().unwrap());
        let stored = StoredResponse::new(StatusCode::CREATED, &headers, "order 1");
        let replay = stored.replay();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()[header::LOCATION], "/orders/1");
        assert_eq!(
            replay.headers().get_all(header::SET_COOKIE).iter().count(),
            2
        );
        assert!(replay.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(replay.headers().get(header::CONNECTION).is_none());
        assert_eq!(replay.headers()[IDEMPOTENT_REPLAYED], "true");
        assert_eq!(replay.body(), "order 1");
    }

    #[test]
    fn the_weight_counts_body_headers_and_key() {
        let key = RequestKey::new("tenant", http::Method::POST, "/orders", "k1");
        let bare = StoredResponse::new(StatusCode::CREATED, &HeaderMap::new(), "");
        let base = weigh(&key, &bare);
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, "/orders/1".parse().unwrap());
        let full = StoredResponse::new(StatusCode::CREATED, &headers, "order 1");
        let header = HEADER_SLOT + "location".len() + "/orders/1".len();
        assert_eq!(weigh(&key, &full), base + header + "order 1".len());
        let longer = RequestKey::new("tenant", http::Method::POST, "/orders", "k1-longer");
        assert_eq!(weigh(&longer, &bare), base + "-longer".len());
        // Pure: the same entry weighs the same every time.
        assert_eq!(weigh(&key, &full.clone()), weigh(&key, &full));
    }

    #[test]
    fn by_default_only_final_non_retryable_answers_are_stored() {
        for code in [200, 201, 204, 400, 404, 409, 422] {
            assert!(
                default_store_if(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [101, 303, 408, 429, 500, 502, 503] {
            assert!(
                !default_store_if(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }
}
