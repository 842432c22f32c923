//! The Idempotency-Key layer over the Redis store, with the `axum_orders`
//! example's router on a throwaway `redis-server`: two replicas in two
//! processes share one Redis, and a Redis outage is a bounded 503 that runs
//! no handler (rules 24 and 27).
//!
//! The replicas are this test binary itself, re-run with only
//! `replica_child` selected and the example's arguments in
//! `IDEMSTORE_REPLICA_ARGS`, which makes that test run the example's `run`
//! (`127.0.0.1:0 --redis <url> --work-ms <n>`) until its stdin closes.
#![cfg(all(feature = "tower", feature = "redis"))]

#[path = "common/redis_server.rs"]
mod redis_server;

#[path = "../examples/axum_orders.rs"]
#[allow(dead_code)] // the example's `main`
mod axum_orders;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use axum_orders::Orders;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idemstore::http::{RequestKey, StoredResponse};
use idemstore::redis::RedisStore;
use redis_server::RedisServer;

const CHILD_ARGS: &str = "IDEMSTORE_REPLICA_ARGS";
/// The store's bound on each call to Redis in the outage tests.
const TIMEOUT: Duration = Duration::from_millis(200);
/// A bound on every answer, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);
const ORDER: &str = r#"{"item":"kettle","qty":1}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The child's entry: a no-op unless a test started this binary as a
/// replica, in which case it serves the example until its stdin closes
/// (the parent dropped it, or died).
#[test]
fn replica_child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let args = args.split('\n').map(str::to_owned);
    runtime
        .block_on(axum_orders::run(args))
        .expect("the replica serves");
}

/// A replica: the example in a child process, on a loopback port.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(redis_url: &str, work_ms: u64) -> Replica {
        let exe = std::env::current_exe().expect("this test's binary");
        let mut child = Command::new(exe)
            .args(["replica_child", "--exact", "--nocapture", "--quiet"])
            .env(
                CHILD_ARGS,
                format!("127.0.0.1:0\n--redis\n{redis_url}\n--work-ms\n{work_ms}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a replica");
        let stdout = child.stdout.take().expect("its stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the address the example prints, then drains the rest so the
        // child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("an address"));
                }
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .expect("the replica listens in time");
        Replica { child, addr }
    }

    /// How many orders this replica created (`GET /orders`).
    async fn created(&self, client: &HttpClient) -> u64 {
        let request = Request::get(format!("http://{}/orders", self.addr))
            .body(Full::default())
            .unwrap();
        let answer = send(client, request).await;
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        body["created"].as_u64().expect("a count")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    fn problem_code(&self) -> String {
        assert_eq!(self.headers[CONTENT_TYPE], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        body["code"].as_str().expect("a code").to_owned()
    }
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn order(client: &HttpClient, addr: SocketAddr, key: &str, body: &str) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/orders"))
        .header("idempotency-key", key)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(client, request).await
}

/// 50 concurrent duplicates, alternating between two replicas (two
/// processes) on one Redis, while the first of them takes 500 ms to create
/// its order: one order in all, and every answer is the same status and
/// body; all but one are marked replays, the other replica's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_duplicates_across_two_replicas_create_one_order_and_get_one_answer() {
    const DUPLICATES: usize = 50;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let replicas = [
        Replica::start(&server.url(), 500),
        Replica::start(&server.url(), 500),
    ];
    let client = client();
    let requests: Vec<_> = (0..DUPLICATES)
        .map(|i| {
            let (client, addr) = (client.clone(), replicas[i % 2].addr);
            tokio::spawn(async move { (i % 2, order(&client, addr, "order-50", ORDER).await) })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }

    let created = [
        replicas[0].created(&client).await,
        replicas[1].created(&client).await,
    ];
    assert_eq!(created[0] + created[1], 1, "exactly one order: {created:?}");
    let (_, first) = &answers[0];
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&first.body).unwrap(),
        serde_json::json!({ "id": 1, "order": { "item": "kettle", "qty": 1 } })
    );
    for (_, answer) in &answers {
        assert_eq!(answer.status, first.status);
        assert_eq!(answer.body, first.body);
        assert_eq!(answer.headers[LOCATION], "/orders/1");
    }
    let replays = answers.iter().filter(|(_, a)| a.replayed()).count();
    assert_eq!(replays, DUPLICATES - 1, "all but the first are replays");
    let owner = usize::from(created[1] == 1);
    let other: Vec<_> = answers.iter().filter(|(r, _)| *r != owner).collect();
    assert_eq!(other.len(), DUPLICATES / 2);
    assert!(
        other.iter().all(|(_, a)| a.replayed()),
        "the replica that created nothing answered its duplicates with replays"
    );
}

fn store(server: &RedisServer) -> RedisStore<RequestKey, StoredResponse> {
    RedisStore::builder(server.client())
        .prefix("http")
        .timeout(TIMEOUT)
        .lease(Duration::from_secs(5))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("build")
}

/// The example's router over `store`, in this process, on a loopback port.
async fn serve(
    store: RedisStore<RequestKey, StoredResponse>,
    work: Duration,
) -> (SocketAddr, Arc<Orders>) {
    let orders = Arc::new(Orders {
        work,
        ..Orders::default()
    });
    let app = axum_orders::app(store, orders.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, orders)
}

/// Over Redis the layer behaves as over the in-process store: a retry is a
/// marked replay, on this replica or another one (a second store handle and
/// router); a key reused with another body is 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_any_replica_replays_and_a_reused_key_is_422() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, orders_a) = serve(store(&server), Duration::ZERO).await;
    let (b, orders_b) = serve(store(&server), Duration::ZERO).await;
    let client = client();
    let first = order(&client, a, "order-1", ORDER).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    for addr in [a, b] {
        let retry = order(&client, addr, "order-1", ORDER).await;
        assert_eq!(retry.status, StatusCode::CREATED);
        assert!(retry.replayed());
        assert_eq!(retry.body, first.body);
        assert_eq!(retry.headers[LOCATION], first.headers[LOCATION]);
    }
    let reused = order(&client, b, "order-1", r#"{"item":"kettle","qty":9}"#).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.problem_code(), "key_reused");
    let handled = |o: &Orders| o.handled.load(Ordering::SeqCst);
    assert_eq!((handled(&orders_a), handled(&orders_b)), (1, 0));
}

/// Redis killed: a new key and a retry of a stored one are each answered
/// 503 `store_unavailable` within a few of the store's timeouts, and the
/// handler does not run; after a restart the same server process answers
/// again, without a new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_is_a_bounded_503_and_runs_no_handler() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (addr, orders) = serve(store(&server), Duration::ZERO).await;
    let client = client();
    assert_eq!(
        order(&client, addr, "order-1", ORDER).await.status,
        StatusCode::CREATED
    );

    server.kill();
    for key in ["order-2", "order-1"] {
        let started = Instant::now();
        let answer = order(&client, addr, key, ORDER).await;
        let took = started.elapsed();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{key}");
        assert_eq!(answer.problem_code(), "store_unavailable");
        assert!(answer.headers.contains_key("retry-after"));
        assert!(took < TIMEOUT * 5, "{key}: answered in {took:?}");
    }
    assert_eq!(orders.handled.load(Ordering::SeqCst), 1, "no handler ran");

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = order(&client, addr, "order-3", ORDER).await;
        if answer.status == StatusCode::CREATED {
            break;
        }
        assert_eq!(answer.problem_code(), "store_unavailable");
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(orders.handled.load(Ordering::SeqCst), 2);
}

/// Redis killed while a duplicate waits on an owner still running: the
/// owner's client gets its own answer (not recorded), the duplicate a 503
/// `store_unavailable` soon after, not a hang; the handler ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_waiting_through_an_outage_gets_503_not_a_hang() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = store(&server);
    let work = Duration::from_millis(500);
    let (addr, orders) = serve(store.clone(), work).await;
    let client = client();
    let owner = tokio::spawn({
        let client = client.clone();
        async move { order(&client, addr, "order-1", ORDER).await }
    });
    let deadline = Instant::now() + PATIENCE;
    while orders.handled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the owner's handler did not start"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let duplicate = tokio::spawn({
        let client = client.clone();
        async move { order(&client, addr, "order-1", ORDER).await }
    });
    while store.stats().waits == 0 {
        assert!(Instant::now() < deadline, "the duplicate did not wait");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    server.kill();
    let killed = Instant::now();
    let owner = owner.await.unwrap();
    assert_eq!(owner.status, StatusCode::CREATED);
    let duplicate = duplicate.await.unwrap();
    assert_eq!(duplicate.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(duplicate.problem_code(), "store_unavailable");
    assert!(
        killed.elapsed() < work + TIMEOUT * 5,
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(orders.handled.load(Ordering::SeqCst), 1);
}
