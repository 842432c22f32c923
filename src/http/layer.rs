//! [`IdempotencyLayer`]: the middleware's configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use tower::Layer;

use super::key::RequestKey;
use super::response::{default_store_if, StoredResponse};
use super::service::IdempotencyService;
use super::HttpStore;
use crate::backend::Backend;

/// The header the client key is read from by default.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Default for [`IdempotencyLayer::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default for [`IdempotencyLayer::max_stored_bytes`]: 1 MiB.
pub const DEFAULT_MAX_STORED_BYTES: usize = 1 << 20;
/// Default wait of [`InFlightPolicy::Wait`]: 10 seconds.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What a duplicate gets while the first request with its key is still
/// being processed.
///
/// ```
/// use std::time::Duration;
/// use idemstore::http::{IdempotencyLayer, InFlightPolicy};
///
/// let store = idemstore::http::HttpStore::new();
/// let patient = IdempotencyLayer::new(store.clone()).in_flight(InFlightPolicy::Wait(Duration::from_secs(30)));
/// let strict = IdempotencyLayer::new(store).in_flight(InFlightPolicy::Reject);
/// # let _ = (patient, strict);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InFlightPolicy {
    /// Wait up to this long for the first request's response and replay
    /// it; answer 409 if it has not finished by then. If the first request
    /// fails and releases the key, the waiting duplicate takes the key and
    /// runs the handler itself. The default, with [`DEFAULT_WAIT`].
    Wait(Duration),
    /// Answer 409 Conflict at once, with `Retry-After`.
    Reject,
}

impl Default for InFlightPolicy {
    fn default() -> Self {
        InFlightPolicy::Wait(DEFAULT_WAIT)
    }
}

type ScopeFn = dyn Fn(&Parts) -> String + Send + Sync;
type StoreIfFn = dyn Fn(StatusCode) -> bool + Send + Sync;

/// The Idempotency-Key middleware as a [`tower::Layer`]: wrap a service
/// (an axum `Router`, a handler, any `Service<http::Request<B>>`) and
/// requests that carry a key run once; retries get the stored response.
///
/// Build it over an [`HttpStore`], whose builder sets how long responses
/// are kept (TTL, default 24 h), how long an owner may run before a
/// duplicate takes over (lease, default 60 s: keep it above your slowest
/// handler) and `max_entries`; or, with [`with_backend`](Self::with_backend),
/// over any [`Backend`] of [`RequestKey`]s and [`StoredResponse`]s, such as
/// a [`RedisStore`](crate::redis::RedisStore) that every replica shares.
/// Then adjust the defaults:
///
/// | setting | default |
/// | --- | --- |
/// | [`methods`](Self::methods) | `POST`, `PATCH` |
/// | [`header`](Self::header) | `Idempotency-Key` |
/// | [`key_required`](Self::key_required) | `true` (a missing key is a 400) |
/// | [`scope`](Self::scope) | none: one scope for every request |
/// | [`fingerprint_headers`](Self::fingerprint_headers) | none (method, path, query and body are always included) |
/// | [`max_body_bytes`](Self::max_body_bytes) | 1 MiB (413 beyond) |
/// | [`in_flight`](Self::in_flight) | wait up to 10 s, then 409 |
/// | [`store_if`](Self::store_if) | [`default_store_if`](super::default_store_if): 2xx and 4xx, except 408 and 429 |
/// | [`max_stored_bytes`](Self::max_stored_bytes) | 1 MiB |
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use idemstore::http::{HttpStore, IdempotencyLayer};
///
/// let store = HttpStore::builder().ttl(Duration::from_secs(3600)).build()?;
/// let layer = IdempotencyLayer::new(store)
///     .methods([Method::POST])
///     .scope(|parts| {
///         let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
///         tenant.unwrap_or_default().to_owned()
///     })
///     .max_body_bytes(64 * 1024);
/// // let app = axum::Router::new().route("/orders", post(create)).layer(layer);
/// # let _ = layer;
/// # Ok::<(), idemstore::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct IdempotencyLayer<B = HttpStore> {
    pub(crate) store: B,
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) header: HeaderName,
    pub(crate) key_required: bool,
    pub(crate) scope: Option<Arc<ScopeFn>>,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) max_body_bytes: usize,
    pub(crate) in_flight: InFlightPolicy,
    pub(crate) store_if: Arc<StoreIfFn>,
    pub(crate) max_stored_bytes: usize,
}

impl IdempotencyLayer {
    /// A layer over the in-process `store` (plain or journaled), with the
    /// defaults listed above.
    ///
    /// ```
    /// use idemstore::http::{HttpStore, IdempotencyLayer};
    /// let layer = IdempotencyLayer::new(HttpStore::new());
    /// # let _ = layer;
    /// ```
    pub fn new(store: HttpStore) -> Self {
        Self::with_backend(store)
    }
}

impl<B: Backend<RequestKey, StoredResponse>> IdempotencyLayer<B> {
    /// A layer over any [`Backend`], with the defaults listed above: the
    /// in-process [`HttpStore`] (what [`new`](IdempotencyLayer::new)
    /// takes), or a [`RedisStore`](crate::redis::RedisStore) shared by every
    /// replica (feature `redis`), which needs a Tokio runtime. A store that
    /// cannot answer (Redis down or slow) is a 503 `store_unavailable`
    /// within the store's timeout, and the handler does not run.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use idemstore::http::IdempotencyLayer;
    /// use idemstore::redis::RedisStore;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// // A `RedisStore<RequestKey, StoredResponse>`, shared by every replica.
    /// let layer = IdempotencyLayer::with_backend(RedisStore::builder(client).build()?);
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn with_backend(store: B) -> Self {
        IdempotencyLayer {
            store,
            config: Arc::new(Config {
                methods: vec![Method::POST, Method::PATCH],
                header: IDEMPOTENCY_KEY,
                key_required: true,
                scope: None,
                fingerprint_headers: Vec::new(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                in_flight: InFlightPolicy::default(),
                store_if: Arc::new(default_store_if),
                max_stored_bytes: DEFAULT_MAX_STORED_BYTES,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The store the layer keeps responses in: read its
    /// [`stats`](crate::Store::stats), or [`remove`](crate::Store::remove) a
    /// key by its [`RequestKey`].
    ///
    /// ```
    /// use http::Method;
    /// use idemstore::http::{IdempotencyLayer, RequestKey};
    /// let layer = IdempotencyLayer::new(Default::default());
    /// assert_eq!(layer.store().stats().claims, 0);
    /// // Let a client retry a request that was answered wrongly:
    /// layer.store().remove(&RequestKey::new("", Method::POST, "/orders", "k1"));
    /// ```
    pub fn store(&self) -> &B {
        &self.store
    }

    /// The methods the layer applies to; requests with other methods pass
    /// through untouched. Default `POST` and `PATCH`.
    ///
    /// ```
    /// use http::Method;
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .methods([Method::POST, Method::PUT, Method::DELETE]);
    /// # let _ = layer;
    /// ```
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.with(|c| c.methods = methods.into_iter().collect())
    }

    /// The header the client key is read from. Default `Idempotency-Key`.
    ///
    /// ```
    /// use http::HeaderName;
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .header(HeaderName::from_static("x-request-id"));
    /// # let _ = layer;
    /// ```
    pub fn header(self, name: HeaderName) -> Self {
        self.with(|c| c.header = name)
    }

    /// Whether a request without a key is refused with 400 (`true`, the
    /// default) or passed through without idempotency (`false`). A present
    /// but malformed key is a 400 either way.
    ///
    /// ```
    /// // Clients that send no key get the handler as if there were no layer.
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default()).key_required(false);
    /// # let _ = layer;
    /// ```
    pub fn key_required(self, required: bool) -> Self {
        self.with(|c| c.key_required = required)
    }

    /// How to tell callers apart: `scope` maps the request head to a string
    /// (a tenant id, a user id from an auth extension, an API key's hash)
    /// that becomes part of the store key, so two scopes' identical client
    /// keys never meet. Runs before the body is read. Default: one scope.
    ///
    /// ```
    /// #[derive(Clone)]
    /// struct AccountId(u64); // put in the request's extensions by an auth layer
    ///
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default()).scope(|parts| {
    ///     parts.extensions.get::<AccountId>().map(|a| a.0.to_string()).unwrap_or_default()
    /// });
    /// # let _ = layer;
    /// ```
    pub fn scope<F>(self, scope: F) -> Self
    where
        F: Fn(&Parts) -> String + Send + Sync + 'static,
    {
        self.with(|c| c.scope = Some(Arc::new(scope)))
    }

    /// Request headers that are part of the payload fingerprint, beside the
    /// method, path, query and body: a key reused with other values of these
    /// headers is a 422. Default none.
    ///
    /// ```
    /// use http::{header, HeaderName};
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .fingerprint_headers([header::CONTENT_TYPE, HeaderName::from_static("x-currency")]);
    /// # let _ = layer;
    /// ```
    pub fn fingerprint_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.with(|c| c.fingerprint_headers = names.into_iter().collect())
    }

    /// The largest request body the layer buffers, in bytes; a longer one
    /// is answered 413 and the handler never runs. Default 1 MiB.
    ///
    /// ```
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .max_body_bytes(64 * 1024);
    /// # let _ = layer;
    /// ```
    pub fn max_body_bytes(self, limit: usize) -> Self {
        self.with(|c| c.max_body_bytes = limit)
    }

    /// What a duplicate gets while the first request is in flight. Default
    /// [`InFlightPolicy::Wait`] for 10 seconds.
    ///
    /// ```
    /// use idemstore::http::{IdempotencyLayer, InFlightPolicy};
    /// let layer = IdempotencyLayer::new(Default::default()).in_flight(InFlightPolicy::Reject);
    /// # let _ = layer;
    /// ```
    pub fn in_flight(self, policy: InFlightPolicy) -> Self {
        self.with(|c| c.in_flight = policy)
    }

    /// Which handler responses are stored and replayed; the others release
    /// the key, so a retry runs the handler again. Handler errors, panics
    /// and dropped requests always release it. Default
    /// [`default_store_if`](super::default_store_if).
    ///
    /// ```
    /// // Store everything once the handler ran, 5xx included (Stripe's choice):
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .store_if(|status| !status.is_informational());
    /// # let _ = layer;
    /// ```
    pub fn store_if<F>(self, store_if: F) -> Self
    where
        F: Fn(StatusCode) -> bool + Send + Sync + 'static,
    {
        self.with(|c| c.store_if = Arc::new(store_if))
    }

    /// The largest response body stored, in bytes. A larger response is
    /// still sent to the client, streaming, but not stored, and the key is
    /// released. Default 1 MiB.
    ///
    /// ```
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default())
    ///     .max_stored_bytes(256 * 1024);
    /// # let _ = layer;
    /// ```
    pub fn max_stored_bytes(self, limit: usize) -> Self {
        self.with(|c| c.max_stored_bytes = limit)
    }
}

impl<S, B: Clone> Layer<S> for IdempotencyLayer<B> {
    type Service = IdempotencyService<S, B>;

    fn layer(&self, inner: S) -> IdempotencyService<S, B> {
        IdempotencyService::new(inner, self.clone())
    }
}

impl<B> fmt::Debug for IdempotencyLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("methods", &c.methods)
            .field("header", &c.header)
            .field("key_required", &c.key_required)
            .field("scoped", &c.scope.is_some())
            .field("fingerprint_headers", &c.fingerprint_headers)
            .field("max_body_bytes", &c.max_body_bytes)
            .field("in_flight", &c.in_flight)
            .field("max_stored_bytes", &c.max_stored_bytes)
            .finish_non_exhaustive()
    }
}
