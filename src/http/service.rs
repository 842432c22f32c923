//! [`IdempotencyService`]: one request's way through the layer.
//!
//! ```text
//! method not configured ───────────────────────────────► inner (streaming)
//! key: absent ─► 400, or inner when optional │ malformed ─► 400
//! body: read up to the limit ─► 413 / 400 when unreadable
//! claim (scope, method, path, key) in the backend with fingerprint(method,
//!        path, query, fingerprint headers, body):
//!   Mismatch ─► 422            Full ─► 503 store_full
//!   Unavailable (journal, Redis down or slow) ─► 503 store_unavailable
//!   Completed ─► replay (stored status, headers, body + Idempotent-Replayed)
//!   InFlight ─► Reject: 409 │ Wait: the owner's response, replayed;
//!               released (error, drop, lease passed) ─► claim again;
//!               deadline passed ─► 409; unavailable ─► 503
//!   Owner ─► inner; store the response if `store_if` accepts its status and
//!            it fits `max_stored_bytes`, else release the key (and wait for
//!            the store to have the release). An inner error, a panic or a
//!            dropped request drops the ticket, which releases the key and
//!            wakes the waiters.
//! ```
//!
//! The service is generic over the [`Backend`]; over the in-process store
//! each backend call is a ready future, so a request costs what it did
//! before the trait: one boxed future for the whole request, nothing more.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderName, Request, Response};
use http_body::Body;
use tower::Service;

use super::body::{read_bounded, BufferedBody, Read};

use super::key::{self, RequestKey};
use super::layer::{Config, IdempotencyLayer, InFlightPolicy};
use super::observe::{self, event, Outcome};
use super::problem::{display_header, Problem};
use super::response::StoredResponse;
use super::HttpStore;
use crate::backend::{Backend, ClaimError, Claimed, CompleteError, WaitError};
use crate::{Fingerprint, FingerprintHasher};

/// The future an [`IdempotencyService`] returns.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<BufferedBody<B>>, E>> + Send>>;

/// The service [`IdempotencyLayer`] wraps around an inner service.
///
/// The inner service receives requests whose body is a [`BufferedBody`]
/// (the buffered bytes of an idempotent request, or the original body
/// streaming through), and its responses come back as a [`BufferedBody`]
/// too. Axum routers, handlers and most tower HTTP services accept both.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::{BodyExt, Full};
/// use idemstore::http::{BufferedBody, HttpStore, IdempotencyLayer};
/// use tower::{service_fn, Layer, Service};
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark {
/// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
/// #     }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v }
/// #         std::thread::park();
/// #     }
/// # }
/// let create = service_fn(|req: Request<BufferedBody<Full<Bytes>>>| async move {
///     let body = req.into_body().collect().await.unwrap().to_bytes();
///     let mut response = Response::new(Full::new(body));
///     *response.status_mut() = StatusCode::CREATED;
///     Ok::<_, Infallible>(response)
/// });
/// let mut service = IdempotencyLayer::new(HttpStore::new()).layer(create);
/// let request = || {
///     Request::post("/orders")
///         .header("idempotency-key", "k1")
///         .body(Full::new(Bytes::from("2 apples")))
///         .unwrap()
/// };
/// let first = block_on(service.call(request())).unwrap();
/// let retry = block_on(service.call(request())).unwrap();
/// assert_eq!(retry.status(), StatusCode::CREATED);
/// assert!(first.headers().get("idempotent-replayed").is_none());
/// assert_eq!(retry.headers()["idempotent-replayed"], "true");
/// ```
pub struct IdempotencyService<S, B = HttpStore> {
    inner: S,
    layer: IdempotencyLayer<B>,
}

impl<S, B> IdempotencyService<S, B> {
    pub(crate) fn new(inner: S, layer: IdempotencyLayer<B>) -> Self {
        IdempotencyService { inner, layer }
    }

    /// The layer's configuration and store.
    ///
    /// ```
    /// use tower::Layer;
    /// let layer = idemstore::http::IdempotencyLayer::new(Default::default());
    /// let service = layer.layer(my_inner_service());
    /// assert!(service.layer().store().is_empty());
    /// # fn my_inner_service() {}
    /// ```
    pub fn layer(&self) -> &IdempotencyLayer<B> {
        &self.layer
    }
}

impl<S: Clone, B: Clone> Clone for IdempotencyService<S, B> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for IdempotencyService<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, Store, B, ResBody> Service<Request<B>> for IdempotencyService<S, Store>
where
    S: Service<Request<BufferedBody<B>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    Store: Backend<RequestKey, StoredResponse>,
    B: Body + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Send,
    ResBody: Body + Send + 'static,
    ResBody::Data: Buf + Send,
    ResBody::Error: Send,
{
    type Response = Response<BufferedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone left behind is the one to poll for readiness next; the
        // instance that was polled ready goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.layer.config.methods.contains(request.method()) {
            observe::finished(Outcome::PassThrough);
            let response = inner.call(request.map(BufferedBody::stream));
            return Box::pin(async move { Ok(response.await?.map(BufferedBody::stream)) });
        }
        #[cfg(feature = "tracing")]
        let span = tracing::debug_span!(
            target: "idemstore::http",
            "idempotency",
            method = %request.method(),
            path = request.uri().path(),
            key = tracing::field::Empty,
        );
        let future = respond(inner, self.layer.clone(), request);
        #[cfg(feature = "tracing")]
        let future = tracing::Instrument::instrument(future, span);
        Box::pin(future)
    }
}

/// An idempotent request (its method is configured).
async fn respond<S, Store, B, ResBody>(
    mut inner: S,
    layer: IdempotencyLayer<Store>,
    request: Request<B>,
) -> Result<Response<BufferedBody<ResBody>>, S::Error>
where
    S: Service<Request<BufferedBody<B>>, Response = Response<ResBody>>,
    Store: Backend<RequestKey, StoredResponse>,
    B: Body,
    B::Data: Buf,
    ResBody: Body,
    ResBody::Data: Buf,
{
    let config = &*layer.config;
    let (parts, body) = request.into_parts();
    let client_key = match key::from_headers(&parts.headers, &config.header) {
        Ok(Some(client_key)) => client_key,
        Ok(None) if !config.key_required => {
            observe::finished(Outcome::PassThrough);
            let request = Request::from_parts(parts, BufferedBody::stream(body));
            return Ok(inner.call(request).await?.map(BufferedBody::stream));
        }
        Ok(None) => {
            let header = display_header(&config.header);
            return Ok(refuse(Problem::MissingKey { header }, Outcome::KeyMissing));
        }
        Err(reason) => {
            let header = display_header(&config.header);
            return Ok(refuse(
                Problem::InvalidKey { header, reason },
                Outcome::KeyInvalid,
            ));
        }
    };
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("key", client_key.as_str());
    let key = RequestKey {
        scope: config.scope.as_ref().map(|f| f(&parts)).unwrap_or_default(),
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        key: client_key,
    };

    let (chunks, trailers) = match read_bounded(body, config.max_body_bytes).await {
        Read::Complete {
            chunks, trailers, ..
        } => (chunks, trailers),
        Read::TooLarge(_) => {
            let limit = config.max_body_bytes;
            return Ok(refuse(
                Problem::BodyTooLarge { limit },
                Outcome::BodyTooLarge,
            ));
        }
        Read::Failed(_) => return Ok(refuse(Problem::BodyUnreadable, Outcome::BodyUnreadable)),
    };
    let fingerprint = fingerprint(&parts, &config.fingerprint_headers, &chunks);

    let store = &layer.store;
    let arrived = Instant::now();
    let mut lease_expired = false;
    loop {
        match store.claim(&key, fingerprint).await {
            Ok(Claimed::Owner(ticket)) => {
                if lease_expired {
                    event!(info, "takeover", token = Store::token(&ticket));
                }
                event!(debug, "claim", token = Store::token(&ticket));
                let request =
                    Request::from_parts(parts, BufferedBody::from_chunks(chunks, trailers));
                return run_owner(inner, store, config, ticket, request).await;
            }
            Ok(Claimed::Completed(stored)) => return Ok(replay(&stored)),
            Ok(Claimed::InFlight(pending)) => {
                let InFlightPolicy::Wait(wait) = config.in_flight else {
                    event!(debug, "in_flight");
                    return Ok(refuse(
                        Problem::InFlight { waited: None },
                        Outcome::InFlight,
                    ));
                };
                event!(debug, "wait");
                let wait_started = Instant::now();
                let waited = store.wait(pending, arrived.checked_add(wait)).await;
                observe::waited(wait_started.elapsed().as_secs_f64());
                match waited {
                    Ok(stored) => return Ok(replay(&stored)),
                    // The owner let the key go: claim it again (and maybe run).
                    Err(WaitError::Abandoned) => event!(debug, "wait_released"),
                    Err(WaitError::LeaseExpired) => {
                        event!(info, "expiry");
                        lease_expired = true;
                    }
                    Err(WaitError::Mismatch) => {
                        event!(info, "mismatch");
                        return Ok(refuse(Problem::KeyReused, Outcome::KeyReused));
                    }
                    Err(WaitError::Unavailable(error)) => {
                        event!(error, "store_unavailable", error = error.to_string());
                        return Ok(refuse(Problem::StoreUnavailable, Outcome::StoreUnavailable));
                    }
                    Err(WaitError::Timeout) => {
                        event!(info, "wait_timeout");
                        let waited = Some(arrived.elapsed());
                        return Ok(refuse(Problem::InFlight { waited }, Outcome::InFlight));
                    }
                }
            }
            Err(ClaimError::Mismatch) => {
                event!(info, "mismatch");
                return Ok(refuse(Problem::KeyReused, Outcome::KeyReused));
            }
            Err(ClaimError::Unavailable(error)) => {
                event!(error, "store_unavailable", error = error.to_string());
                return Ok(refuse(Problem::StoreUnavailable, Outcome::StoreUnavailable));
            }
            Err(ClaimError::Full) => {
                event!(warn, "store_full");
                return Ok(refuse(Problem::StoreFull, Outcome::StoreFull));
            }
        }
    }
}

/// Runs the inner service as the key's owner and stores what it answers.
async fn run_owner<S, Store, B, ResBody>(
    mut inner: S,
    store: &Store,
    config: &Config,
    ticket: Store::Ticket,
    request: Request<BufferedBody<B>>,
) -> Result<Response<BufferedBody<ResBody>>, S::Error>
where
    S: Service<Request<BufferedBody<B>>, Response = Response<ResBody>>,
    Store: Backend<RequestKey, StoredResponse>,
    B: Body,
    ResBody: Body,
    ResBody::Data: Buf,
{
    // Dropped with the request future (client gone, panic): releases the key.
    let mut owner = Owner {
        store,
        ticket: Some(ticket),
    };
    let response = match inner.call(request).await {
        Ok(response) => response,
        Err(error) => {
            // Released without waiting for the store, so the error (which
            // need not be `Send`) is not held across an await.
            owner.release_now("handler_error", Outcome::HandlerError);
            return Err(error);
        }
    };
    if !(config.store_if)(response.status()) {
        owner.release("status", Outcome::NotStored).await;
        return Ok(response.map(BufferedBody::stream));
    }
    let (parts, body) = response.into_parts();
    let body = match read_bounded(body, config.max_stored_bytes).await {
        Read::Complete {
            chunks,
            trailers: None,
            len,
        } => concat(chunks, len),
        Read::Complete {
            chunks,
            trailers: Some(trailers),
            ..
        } => {
            owner.release("trailers", Outcome::NotStored).await;
            let body = BufferedBody::from_chunks(chunks, Some(trailers));
            return Ok(Response::from_parts(parts, body));
        }
        Read::TooLarge(body) => {
            owner.release("too_large", Outcome::NotStored).await;
            return Ok(Response::from_parts(parts, body));
        }
        Read::Failed(body) => {
            owner.release("body_error", Outcome::NotStored).await;
            return Ok(Response::from_parts(parts, body));
        }
    };
    let stored = StoredResponse::new(parts.status, &parts.headers, body.clone());
    if let Some(ticket) = owner.ticket.take() {
        match store.complete(ticket, stored).await {
            Ok(()) => event!(debug, "store", status = parts.status.as_u16()),
            // The lease passed and another request took the key over: its
            // response is the one stored. This client still gets its own.
            Err(CompleteError::Superseded) => {
                event!(warn, "superseded", status = parts.status.as_u16())
            }
            // The store could not record it (a journal write, Redis): the
            // key is released, and this client still gets the handler's
            // answer (a 503 would make it retry, running the handler again).
            Err(CompleteError::Unavailable(error)) => {
                event!(
                    error,
                    "not_recorded",
                    status = parts.status.as_u16(),
                    error = error.to_string()
                )
            }
        }
    }
    observe::finished(Outcome::Stored);
    Ok(Response::from_parts(parts, BufferedBody::full(body)))
}

/// The owner's ticket while the handler runs.
struct Owner<'a, Store: Backend<RequestKey, StoredResponse>> {
    store: &'a Store,
    ticket: Option<Store::Ticket>,
}

impl<Store: Backend<RequestKey, StoredResponse>> Owner<'_, Store> {
    /// Releases the key so a retry runs the handler again, and waits until
    /// the store has the release.
    async fn release(&mut self, reason: &'static str, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            event!(debug, "abandon", reason = reason);
            observe::finished(outcome);
            self.store.abandon(ticket).await;
        }
    }

    /// Releases the key by dropping the ticket (rule 6): at once over the
    /// in-process store, from a task of its own over Redis.
    fn release_now(&mut self, reason: &'static str, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            event!(debug, "abandon", reason = reason);
            drop(ticket);
            observe::finished(outcome);
        }
    }
}

impl<Store: Backend<RequestKey, StoredResponse>> Drop for Owner<'_, Store> {
    fn drop(&mut self) {
        self.release_now("dropped", Outcome::Dropped);
    }
}

fn replay<B: Body>(stored: &StoredResponse) -> Response<BufferedBody<B>> {
    event!(debug, "replay", status = stored.status().as_u16());
    observe::finished(Outcome::Replayed);
    stored.replay().map(BufferedBody::full)
}

fn refuse<B: Body>(problem: Problem, outcome: Outcome) -> Response<BufferedBody<B>> {
    event!(debug, "refuse", code = problem.code());
    observe::finished(outcome);
    problem.to_response().map(BufferedBody::full)
}

/// The payload's fingerprint: method, path and query, the configured
/// headers, and the body. Each part is length-prefixed, so no two
/// different requests feed the hasher the same bytes.
fn fingerprint(parts: &Parts, headers: &[HeaderName], body: &[Bytes]) -> Fingerprint {
    fn field(hasher: &mut FingerprintHasher, bytes: &[u8]) {
        use std::hash::Hasher;
        hasher.write_usize(bytes.len());
        hasher.write(bytes);
    }
    use std::hash::Hasher;
    let mut hasher = FingerprintHasher::new();
    field(&mut hasher, parts.method.as_str().as_bytes());
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    field(&mut hasher, target.as_bytes());
    for name in headers {
        field(&mut hasher, name.as_str().as_bytes());
        let values = parts.headers.get_all(name);
        hasher.write_usize(values.iter().count());
        for value in values {
            field(&mut hasher, value.as_bytes());
        }
    }
    hasher.write_usize(body.iter().map(Bytes::len).sum());
    for chunk in body {
        hasher.write(chunk);
    }
    hasher.fingerprint()
}

fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut body = BytesMut::with_capacity(len);
    for chunk in chunks {
        body.extend_from_slice(&chunk);
    }
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::{BodyExt, Full};
    use tower::Layer;

    use crate::test_util::block_on;

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn fingerprint_covers_method_target_headers_and_body() {
        let tenant = [HeaderName::from_static("x-currency")];
        let base = parts(Method::POST, "/orders?x=1", &[("x-currency", "EUR")]);
        let body = [Bytes::from("ab"), Bytes::from("c")];
        let fp = fingerprint(&base, &tenant, &body);
        // Chunking does not matter, content does.
        assert_eq!(fp, fingerprint(&base, &tenant, &[Bytes::from("abc")]));
        assert_ne!(fp, fingerprint(&base, &tenant, &[Bytes::from("abd")]));
        let other_query = parts(Method::POST, "/orders?x=2", &[("x-currency", "EUR")]);
        assert_ne!(fp, fingerprint(&other_query, &tenant, &body));
        let other_method = parts(Method::PATCH, "/orders?x=1", &[("x-currency", "EUR")]);
        assert_ne!(fp, fingerprint(&other_method, &tenant, &body));
        let other_header = parts(Method::POST, "/orders?x=1", &[("x-currency", "USD")]);
        assert_ne!(fp, fingerprint(&other_header, &tenant, &body));
        // Headers not configured are not part of it.
        assert_eq!(
            fingerprint(&base, &[], &body),
            fingerprint(&other_header, &[], &body)
        );
    }

    /// Fails its first call with a service error, then answers 201.
    #[derive(Clone, Default)]
    struct Flaky(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Service<Request<BufferedBody<Full<Bytes>>>> for Flaky {
        type Response = Response<Full<Bytes>>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Self::Response, &'static str>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<BufferedBody<Full<Bytes>>>) -> Self::Future {
            let call = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut response = Response::new(Full::new(Bytes::from(format!("call {call}"))));
            *response.status_mut() = http::StatusCode::CREATED;
            std::future::ready(if call == 0 { Err("boom") } else { Ok(response) })
        }
    }

    #[test]
    fn an_inner_service_error_releases_the_key() {
        let store = crate::http::HttpStore::new();
        let mut service = IdempotencyLayer::new(store.clone()).layer(Flaky::default());
        let request = || {
            Request::post("/orders")
                .header("idempotency-key", "k")
                .body(Full::new(Bytes::from("1 lamp")))
                .unwrap()
        };
        assert_eq!(block_on(service.call(request())).unwrap_err(), "boom");
        assert!(store.is_empty(), "the error released the key");
        let retry = block_on(service.call(request())).unwrap();
        assert_eq!(retry.status(), http::StatusCode::CREATED);
        let replay = block_on(service.call(request())).unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let body = block_on(replay.into_body().collect()).unwrap().to_bytes();
        assert_eq!(body, "call 1");
    }

    #[test]
    fn concat_avoids_copying_a_single_chunk() {
        let one = Bytes::from("abc");
        let joined = concat(vec![one.clone()], 3);
        assert_eq!(joined.as_ptr(), one.as_ptr());
        assert_eq!(concat(vec![Bytes::from("a"), Bytes::from("bc")], 3), "abc");
        assert_eq!(concat(Vec::new(), 0), "");
    }
}
