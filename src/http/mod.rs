//! Idempotency-Key middleware for tower and axum services (feature `tower`).
//!
//! [`IdempotencyLayer`] gives an HTTP service the behaviour of
//! [draft-ietf-httpapi-idempotency-key-header]: a request carrying an
//! `Idempotency-Key` runs the handler once, and retries get the first
//! response back, marked `Idempotent-Replayed: true`. Duplicates that arrive
//! while the first is still running wait for its response instead of
//! running again. State lives in an [`HttpStore`], an idemstore
//! [`Store`](crate::Store) keyed by [`RequestKey`] (scope, method, path,
//! client key) holding [`StoredResponse`]s, or in any other
//! [`Backend`](crate::backend::Backend) of them: with feature `redis`, a
//! [`RedisStore`](crate::redis::RedisStore) shared by every replica, so a
//! retry that lands on another replica still replays
//! ([`IdempotencyLayer::with_backend`]).
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use idemstore::http::{HttpStore, IdempotencyLayer};
//!
//! async fn create_order(body: String) -> (http::StatusCode, String) {
//!     (http::StatusCode::CREATED, format!("created from {body}"))
//! }
//!
//! # async fn serve() -> std::io::Result<()> {
//! let layer = IdempotencyLayer::new(HttpStore::new());
//! let app: Router = Router::new().route("/orders", post(create_order)).layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! ## What the layer does
//!
//! | request | answer |
//! | --- | --- |
//! | method not configured (default: only `POST`, `PATCH` apply) | passed through untouched |
//! | no key | 400, or passed through with [`key_required(false)`](IdempotencyLayer::key_required) |
//! | key empty, over 255 characters, not visible ASCII, bad quoted string, repeated | 400 |
//! | body over [`max_body_bytes`](IdempotencyLayer::max_body_bytes) | 413, handler not run |
//! | first request with a key | handler runs; its response is stored (see below) |
//! | same key, same payload, first one finished | the stored status, headers and body, plus `Idempotent-Replayed: true` |
//! | same key, same payload, first one still running | waits and replays it (default, up to 10 s, then 409), or 409 at once |
//! | same key, other method, path, query, body or fingerprinted header | 422 |
//! | store at its `max_entries` or `max_bytes` bound | 503 `store_full` |
//! | store unavailable (a journal write failed; Redis down or slower than its timeout) | 503 `store_unavailable`, handler not run |
//!
//! Every answer the layer makes itself is an RFC 9457
//! `application/problem+json` document; see [`Problem`].
//!
//! ## Which responses are stored
//!
//! By default ([`default_store_if`]) 2xx and 4xx responses except 408 and
//! 429: the handler's work is done (2xx) or the request itself is wrong
//! (4xx), so a retry must get the same answer. 1xx, 3xx and 5xx responses,
//! 408 and 429, inner service errors, panics and requests dropped before they
//! finish (the client went away) release the key, so the retry runs the
//! handler again, as the store's rule 7 says; waiting duplicates then take
//! the key over one at a time. [`store_if`](IdempotencyLayer::store_if)
//! changes the rule (Stripe, for one, stores 5xx too). A response body over
//! [`max_stored_bytes`](IdempotencyLayer::max_stored_bytes) is sent to the
//! client as it streams but not stored, and releases the key.
//!
//! A handler that runs longer than the store's lease (60 s by default) can
//! be taken over by a duplicate; set the lease above your slowest handler
//! with [`Builder::lease`](crate::Builder::lease).
//!
//! ## Runtime
//!
//! Over the in-process store the layer depends on no async runtime.
//! Waiting duplicates use only their task's waker; their deadline comes from
//! one small timer thread started the first time a duplicate waits. Over a
//! [`RedisStore`](crate::redis::RedisStore) it runs on Tokio, as that store
//! does.
//!
//! [draft-ietf-httpapi-idempotency-key-header]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/

mod body;
#[cfg(feature = "journal")]
mod codec;
mod key;
mod layer;
mod observe;
mod problem;
mod response;
mod service;

pub use body::BufferedBody;
pub use key::{parse_key, KeyError, RequestKey, MAX_KEY_LEN};
pub use layer::{
    IdempotencyLayer, InFlightPolicy, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_STORED_BYTES,
    DEFAULT_WAIT, IDEMPOTENCY_KEY,
};
pub use problem::Problem;
pub use response::{default_store_if, weigh, StoredResponse, IDEMPOTENT_REPLAYED};
pub use service::{IdempotencyService, ResponseFuture};

/// The store behind an [`IdempotencyLayer`]: requests' keys to their
/// stored responses. Build it with [`Store::builder`](crate::Store::builder)
/// to set the TTL, the lease and the `max_entries` and `max_bytes` bounds.
///
/// A byte bound weighs each entry with [`weigh`] (the stored status,
/// headers and body, and the key) unless another
/// [`weigher`](crate::Builder::weigher) is set: the builder picks it by
/// type, for any `Store<RequestKey, StoredResponse>`. At the bound, new keys
/// are answered 503 `store_full`; responses in flight are still stored, so
/// the store can exceed the bound by at most the requests in flight times
/// (`max_stored_bytes` plus their headers and key).
///
/// ```
/// use std::time::Duration;
/// let store = idemstore::http::HttpStore::builder()
///     .ttl(Duration::from_secs(24 * 3600))
///     .lease(Duration::from_secs(30))
///     .max_entries(100_000)
///     // 256 MiB of stored responses; with the layer's 1 MiB
///     // `max_stored_bytes` and at most 64 requests in flight, the store
///     // holds under 320 MiB of them.
///     .max_bytes(256 << 20)
///     .build()?;
/// # let _ = store;
/// # Ok::<(), idemstore::ConfigError>(())
/// ```
pub type HttpStore = crate::Store<RequestKey, StoredResponse>;

/// [`weigh`] as the weigher of `Store<K, V>`, if that is an [`HttpStore`]:
/// the default is picked by type, which stable Rust allows through `Any`
/// rather than specialization. Decided once, at build.
pub(crate) fn default_weigher<K: 'static, V: 'static>() -> Option<crate::table::Weigher<K, V>> {
    let http: crate::table::Weigher<RequestKey, StoredResponse> = Box::new(weigh);
    let any: Box<dyn std::any::Any> = Box::new(http);
    any.downcast::<crate::table::Weigher<K, V>>()
        .ok()
        .map(|weigher| *weigher)
}
