//! The Idempotency-Key middleware end to end: an axum server on a loopback
//! socket, spoken to by a real HTTP client (and, where a test needs to cut
//! a connection, by hand over TCP).
//!
//! No test sleeps to order events: a handler that must stay in flight
//! blocks on a `Notify` and reports that it started through a channel.
#![cfg(feature = "tower")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idemstore::http::{HttpStore, IdempotencyLayer, InFlightPolicy, RequestKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// The layer's body limit in these tests.
const BODY_LIMIT: usize = 1024;
/// A bound on every wait for a server-side event, so a broken build fails
/// instead of hanging. Never reached when the tests pass.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the handler does on its next call; `Create` once the script is out.
#[derive(Clone, Copy)]
enum Step {
    Create,
    /// Report `entered`, then wait for `release` before creating.
    Hold,
    /// Answer 500 without creating anything.
    Fail,
    /// Panic without creating anything.
    Panic,
}

/// The orders service's state.
struct Orders {
    created: AtomicU64,
    calls: AtomicUsize,
    script: Mutex<VecDeque<Step>>,
    entered: mpsc::UnboundedSender<()>,
    release: Notify,
    /// Told when a handler call is dropped before it answered.
    dropped: mpsc::UnboundedSender<()>,
}

/// Signals `dropped` unless disarmed: the handler future was cancelled.
struct DropSignal(Option<mpsc::UnboundedSender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// `POST /orders`: creates an order from the body and answers 201.
async fn create_order(State(orders): State<Arc<Orders>>, body: Bytes) -> Response {
    orders.calls.fetch_add(1, Ordering::SeqCst);
    let step = orders
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Step::Create);
    let mut cancelled = DropSignal(Some(orders.dropped.clone()));
    match step {
        Step::Create => {}
        Step::Hold => {
            let _ = orders.entered.send(());
            orders.release.notified().await;
        }
        Step::Fail => {
            cancelled.0 = None;
            return (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable").into_response();
        }
        Step::Panic => {
            cancelled.0 = None;
            panic!("the order handler panicked (on purpose, in a test)");
        }
    }
    cancelled.0 = None;
    let id = orders.created.fetch_add(1, Ordering::SeqCst) + 1;
    let item = String::from_utf8_lossy(&body);
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/orders/{id}")),
            (CONTENT_TYPE, "application/json".to_owned()),
        ],
        format!(r#"{{"id":{id},"item":"{item}"}}"#),
    )
        .into_response()
}

struct Server {
    addr: SocketAddr,
    store: HttpStore,
    orders: Arc<Orders>,
    entered: mpsc::UnboundedReceiver<()>,
    dropped: mpsc::UnboundedReceiver<()>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed") == Some(&HeaderValue::from_static("true"))
    }

    fn problem_code(&self) -> String {
        assert_eq!(
            self.headers[CONTENT_TYPE], "application/problem+json",
            "{:?}",
            self.body
        );
        let body = std::str::from_utf8(&self.body).unwrap();
        let start = body.find(r#""code":""#).expect("a code member") + 8;
        body[start..start + body[start..].find('"').unwrap()].to_owned()
    }
}

impl Server {
    /// The orders service behind the layer on 127.0.0.1, an OS-chosen port.
    /// The scope is the `x-tenant` header.
    async fn start(configure: impl FnOnce(IdempotencyLayer) -> IdempotencyLayer) -> Server {
        Self::start_on(HttpStore::new(), configure).await
    }

    /// As [`start`](Self::start), on `store`.
    async fn start_on(
        store: HttpStore,
        configure: impl FnOnce(IdempotencyLayer) -> IdempotencyLayer,
    ) -> Server {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let (dropped_tx, dropped) = mpsc::unbounded_channel();
        let orders = Arc::new(Orders {
            created: AtomicU64::new(0),
            calls: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            entered: entered_tx,
            release: Notify::new(),
            dropped: dropped_tx,
        });
        let layer = IdempotencyLayer::new(store.clone())
            .scope(|parts| {
                let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
                tenant.unwrap_or_default().to_owned()
            })
            .max_body_bytes(BODY_LIMIT);
        let app = Router::new()
            .route("/orders", post(create_order).get(|| async { "orders" }))
            .with_state(orders.clone())
            .layer(configure(layer));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            addr,
            store,
            orders,
            entered,
            dropped,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn script(&self, steps: &[Step]) {
        self.orders.script.lock().unwrap().extend(steps);
    }

    fn created(&self) -> u64 {
        self.orders.created.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.orders.calls.load(Ordering::SeqCst)
    }

    /// Waits until a held handler call has started.
    async fn entered(&mut self) {
        within(self.entered.recv()).await.expect("handler entered");
    }

    /// A `POST /orders` as the client would send it.
    fn post(&self, key: Option<&[u8]>, tenant: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/orders", self.addr));
        if let Some(key) = key {
            request = request.header("idempotency-key", HeaderValue::from_bytes(key).unwrap());
        }
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = within(self.client.request(request))
            .await
            .expect("a response");
        let (parts, body) = response.into_parts();
        let body = within(body.collect()).await.expect("a body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn order(&self, key: &str, body: &str) -> Answer {
        self.send(self.post(Some(key.as_bytes()), None, body)).await
    }
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the server answered in time")
}

/// Waits until `condition` holds, yielding between checks: it waits for a
/// state, it does not paper over a race with a fixed delay.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_duplicates_create_one_order_and_get_one_answer() {
    const DUPLICATES: usize = 50;
    let server = Server::start(|layer| layer).await;
    // The first request to arrive stays in flight until all the others are
    // waiting on it, so every duplicate really overlaps it.
    server.script(&[Step::Hold]);
    let server = Arc::new(server);
    let requests: Vec<_> = (0..DUPLICATES)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.order("order-50", "1 kettle").await })
        })
        .collect();
    until("49 duplicates wait on the first request", || {
        server.store.stats().waits == DUPLICATES as u64 - 1
    })
    .await;
    assert_eq!(server.calls(), 1);
    server.orders.release.notify_one();

    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert_eq!(server.created(), 1, "exactly one order");
    assert_eq!(server.calls(), 1, "the handler ran once");
    let first = &answers[0];
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, r#"{"id":1,"item":"1 kettle"}"#);
    for answer in &answers {
        assert_eq!(answer.status, first.status);
        assert_eq!(answer.body, first.body);
        assert_eq!(answer.headers[LOCATION], "/orders/1");
    }
    let replays = answers.iter().filter(|a| a.replayed()).count();
    assert_eq!(replays, DUPLICATES - 1, "all but the first are replays");
}

#[tokio::test]
async fn a_retry_after_completion_is_a_marked_replay() {
    let server = Server::start(|layer| layer).await;
    let first = server.order("order-1", "2 mugs").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());

    let retry = server.order("order-1", "2 mugs").await;
    assert_eq!(retry.status, StatusCode::CREATED, "a 201 stays 201");
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers[LOCATION], "/orders/1");
    assert_eq!(retry.headers[CONTENT_TYPE], "application/json");
    assert_eq!((server.created(), server.calls()), (1, 1));
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422() {
    let server = Server::start(|layer| layer).await;
    assert_eq!(
        server.order("order-2", "3 plates").await.status,
        StatusCode::CREATED
    );

    let reused = server.order("order-2", "300 plates").await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.problem_code(), "key_reused");
    assert!(!reused.replayed());
    assert_eq!(server.created(), 1, "nothing ran for the reused key");
    // The original request still replays.
    assert!(server.order("order-2", "3 plates").await.replayed());
}

#[tokio::test]
async fn an_in_flight_duplicate_gets_409_under_the_reject_policy() {
    let mut server = Server::start(|layer| layer.in_flight(InFlightPolicy::Reject)).await;
    server.script(&[Step::Hold]);
    let first = {
        let request = server.post(Some(b"order-3"), None, "1 pan");
        let send = server.client.request(request);
        tokio::spawn(async move { within(send).await.unwrap() })
    };
    server.entered().await;

    let duplicate = server.order("order-3", "1 pan").await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.problem_code(), "request_in_flight");
    assert!(duplicate.headers.contains_key(RETRY_AFTER));

    server.orders.release.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::CREATED);
    let retry = server.order("order-3", "1 pan").await;
    assert!(retry.replayed());
    assert_eq!((server.created(), server.calls()), (1, 1));
}

#[tokio::test]
async fn a_waiting_duplicate_gets_409_when_its_wait_runs_out() {
    let wait = InFlightPolicy::Wait(Duration::from_millis(50));
    let mut server = Server::start(|layer| layer.in_flight(wait)).await;
    server.script(&[Step::Hold]);
    let request = server.post(Some(b"order-4"), None, "1 pot");
    let send = server.client.request(request);
    let first = tokio::spawn(async move { within(send).await.unwrap() });
    server.entered().await;

    // The first request is held until released, so the wait must run out.
    let duplicate = server.order("order-4", "1 pot").await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.problem_code(), "request_in_flight");

    server.orders.release.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(server.created(), 1);
}

#[tokio::test]
async fn missing_empty_long_and_non_ascii_keys_are_400() {
    let server = Server::start(|layer| layer).await;
    let long = vec![b'k'; 256];
    let cases: [(Option<&[u8]>, &str); 5] = [
        (None, "key_missing"),
        (Some(b""), "key_invalid"),
        (Some(&long), "key_invalid"),
        (Some("clé".as_bytes()), "key_invalid"),
        (Some(b"\"unterminated"), "key_invalid"),
    ];
    for (key, code) in cases {
        let answer = server.send(server.post(key, None, "1 fork")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "key {key:?}");
        assert_eq!(answer.problem_code(), code, "key {key:?}");
    }
    assert_eq!(server.calls(), 0, "no handler ran");

    // The longest allowed key, and a quoted one, are fine.
    let longest = vec![b'k'; 255];
    let answer = server
        .send(server.post(Some(&longest), None, "1 fork"))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let quoted = server
        .send(server.post(Some(b"\"order-5\""), None, "1 spoon"))
        .await;
    assert_eq!(quoted.status, StatusCode::CREATED);
    assert!(
        server.order("order-5", "1 spoon").await.replayed(),
        "same key, bare"
    );
}

#[tokio::test]
async fn other_methods_and_optional_keys_pass_through() {
    let server = Server::start(|layer| layer.key_required(false)).await;
    // No key, key optional: the handler runs every time, nothing is stored.
    for _ in 0..2 {
        let answer = server.send(server.post(None, None, "1 cup")).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.replayed());
    }
    assert_eq!(server.created(), 2);
    assert!(server.store.is_empty());
    // GET is not a configured method: a key on it is ignored, even a bad one.
    let get = Request::get(format!("http://{}/orders", server.addr))
        .header("idempotency-key", "")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = server.send(get).await;
    assert_eq!(
        (answer.status, answer.body.as_ref()),
        (StatusCode::OK, &b"orders"[..])
    );
}

#[tokio::test]
async fn an_over_limit_body_is_413_and_creates_nothing() {
    let server = Server::start(|layer| layer).await;
    let big = "x".repeat(BODY_LIMIT + 1);
    let answer = server.order("order-6", &big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.problem_code(), "body_too_large");

    // Without a Content-Length too: chunked, by hand.
    let chunk = "y".repeat(BODY_LIMIT / 2 + 1);
    let mut request = format!(
        "POST /orders HTTP/1.1\r\nHost: {}\r\nIdempotency-Key: order-7\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    );
    for _ in 0..3 {
        request += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
    }
    request += "0\r\n\r\n";
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within(stream.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    assert_eq!((server.calls(), server.created()), (0, 0));
    assert!(server.store.is_empty(), "no key was claimed");
    // A body at the limit is fine.
    let fits = "z".repeat(BODY_LIMIT);
    assert_eq!(
        server.order("order-6", &fits).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_500_releases_the_key_so_the_retry_runs() {
    let server = Server::start(|layer| layer).await;
    server.script(&[Step::Fail]);
    let failed = server.order("order-8", "1 bowl").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body, "database unavailable");

    let retry = server.order("order-8", "1 bowl").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed(), "the retry ran the handler");
    assert_eq!((server.calls(), server.created()), (2, 1));
    assert!(server.order("order-8", "1 bowl").await.replayed());
}

#[tokio::test]
async fn two_scopes_with_the_same_key_stay_apart() {
    let server = Server::start(|layer| layer).await;
    let acme = server
        .send(server.post(Some(b"order-9"), Some("acme"), "1 jar"))
        .await;
    let globex = server
        .send(server.post(Some(b"order-9"), Some("globex"), "5 lids"))
        .await;
    assert_eq!(
        (acme.status, globex.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(!globex.replayed(), "another tenant's key is another key");
    assert_ne!(acme.body, globex.body);
    assert_eq!(server.created(), 2);

    let again = server
        .send(server.post(Some(b"order-9"), Some("acme"), "1 jar"))
        .await;
    assert!(again.replayed());
    assert_eq!(again.body, acme.body);
    let key = RequestKey::new("globex", Method::POST, "/orders", "order-9");
    assert_eq!(server.store.get(&key).unwrap().body(), &globex.body);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_leaves_the_key_claimable() {
    let mut server = Server::start(|layer| layer).await;
    server.script(&[Step::Hold]);
    let body = "1 teapot";
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: {}\r\nIdempotency-Key: order-10\r\n\
         Content-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    server.entered().await;
    drop(stream); // the client gives up while the handler runs

    within(server.dropped.recv())
        .await
        .expect("handler cancelled");
    let retry = server.order("order-10", body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed(), "the retry ran the handler");
    assert_eq!((server.calls(), server.created()), (2, 1));
    assert_eq!(server.store.stats().abandons, 1);
}

#[tokio::test]
async fn a_panicking_handler_releases_the_key() {
    let server = Server::start(|layer| layer).await;
    server.script(&[Step::Panic]);
    // The connection task dies with the handler: no response comes back.
    let request = server.post(Some(b"order-11"), None, "1 sieve");
    assert!(within(server.client.request(request)).await.is_err());

    let retry = server.order("order-11", "1 sieve").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.replayed(), "the retry ran the handler");
    assert_eq!((server.calls(), server.created()), (2, 1));
}

#[tokio::test]
async fn a_response_over_the_stored_bound_is_sent_but_not_stored() {
    let server = Server::start(|layer| layer.max_stored_bytes(16)).await;
    let first = server.order("order-12", "a rather long order line").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, r#"{"id":1,"item":"a rather long order line"}"#);
    assert!(
        server.store.is_empty(),
        "the key was released, nothing stored"
    );

    let retry = server.order("order-12", "a rather long order line").await;
    assert!(!retry.replayed());
    assert_eq!(
        server.created(),
        2,
        "nothing to replay, so the handler ran again"
    );
}

/// A store at its `max_entries` bound refuses a new key with a 503 problem
/// and runs nothing; the keys it holds still replay (rule 14).
#[tokio::test]
async fn a_full_store_is_503_and_runs_nothing() {
    let store = HttpStore::builder().max_entries(1).build().unwrap();
    let server = Server::start_on(store, |layer| layer).await;
    let first = server.order("order-1", "1 kettle").await;
    assert_eq!(first.status, StatusCode::CREATED);

    let refused = server.order("order-2", "2 mugs").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.problem_code(), "store_full");
    assert_eq!(server.calls(), 1, "the handler did not run");

    let retry = server.order("order-1", "1 kettle").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(server.store.stats().refusals, 1);
}

/// A store at its `max_bytes` bound answers a new key with 503 and runs
/// nothing; the response that took it over the bound was stored and
/// replays. Once that entry expires, the store makes room from it and
/// stores again. The bytes counted are the default HTTP weigher's.
#[tokio::test]
async fn a_store_at_its_byte_bound_is_503_until_entries_expire() {
    let clock = idemstore::ManualClock::new();
    let store = HttpStore::builder()
        .max_bytes(1)
        .ttl(Duration::from_secs(60))
        .clock(clock.clone())
        .background_sweeper(false)
        .build()
        .unwrap();
    let server = Server::start_on(store, |layer| layer).await;
    let first = server.order("order-1", "1 kettle").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let key = |client_key: &str| RequestKey::new("", Method::POST, "/orders", client_key);
    let stored = server
        .store
        .get(&key("order-1"))
        .expect("stored over the bound");
    let weight = idemstore::http::weigh(&key("order-1"), &stored);
    assert!(weight > stored.body().len());
    assert_eq!(server.store.stats().bytes, weight);

    let refused = server.order("order-2", "2 mugs").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.problem_code(), "store_full");
    assert_eq!(server.calls(), 1, "the handler did not run");
    let retry = server.order("order-1", "1 kettle").await;
    assert!(retry.replayed());

    clock.advance(Duration::from_secs(60));
    let second = server.order("order-2", "2 mugs").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(!second.replayed());
    let stored = server.store.get(&key("order-2")).expect("stored");
    let stats = server.store.stats();
    assert_eq!((stats.entries, stats.refusals), (1, 1));
    assert_eq!(
        stats.bytes,
        idemstore::http::weigh(&key("order-2"), &stored)
    );
}

/// With a journal, a stored response outlives the store: a retry after a
/// restart gets the same status, headers and body, and the handler does not
/// run again; a reused key is still refused. Each "process" is a runtime of
/// its own, so dropping it drops the server and its store.
#[cfg(feature = "journal")]
#[test]
fn a_retry_after_a_restart_replays_the_journaled_response() {
    let dir = std::env::temp_dir().join(format!("idemstore-http-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http.journal");
    let _ = std::fs::remove_file(&path);
    let open = || {
        HttpStore::builder()
            .journal(&path)
            .fsync(idemstore::Fsync::Always)
            .build()
            .expect("the journal opens")
    };
    let runtime = || tokio::runtime::Runtime::new().unwrap();

    let first = runtime().block_on(async {
        let server = Server::start_on(open(), |layer| layer).await;
        let first = server.order("order-1", "2 mugs").await;
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!(server.created(), 1);
        first
    });

    let store = open();
    assert_eq!(store.journal_report().unwrap().restored, 1);
    runtime().block_on(async {
        let server = Server::start_on(store, |layer| layer).await;
        let retry = server.order("order-1", "2 mugs").await;
        assert!(retry.replayed());
        assert_eq!(retry.status, StatusCode::CREATED);
        assert_eq!(retry.body, first.body);
        assert_eq!(retry.headers[LOCATION], first.headers[LOCATION]);
        assert_eq!(retry.headers[CONTENT_TYPE], first.headers[CONTENT_TYPE]);
        assert_eq!(server.calls(), 0, "the handler did not run again");
        let reused = server.order("order-1", "9 plates").await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
