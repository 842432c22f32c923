//! An axum service with `POST /orders` behind the Idempotency-Key layer.
//!
//! ```text
//! cargo run --example axum_orders --features tower [-- 127.0.0.1:3000]
//! cargo run --example axum_orders --features tower,redis -- 127.0.0.1:3000 --redis redis://127.0.0.1:6379
//! ```
//!
//! Without `--redis` the layer keeps its state in process; with it, in one
//! Redis that every replica started with the same URL shares, so a retry
//! that lands on another replica still replays (the one line that changes
//! is the store the layer is built over, in [`app`]'s caller). `--work-ms N`
//! makes creating an order take N ms, so duplicates sent together overlap
//! and wait. `GET /orders` says how many orders this replica created.
//!
//! Send the printed curl line twice: the first creates order 1 (201); the
//! second gets the same 201 and body back, marked `Idempotent-Replayed:
//! true`, and creates nothing. Change the body and keep the key: 422
//! (`key_reused`). Leave the key out: 400. The `X-Tenant` header scopes
//! keys, so two tenants may use the same key.
//!
//! A body that is not JSON is answered 400 (`body_not_json`), and JSON that
//! is not an order 422 (`order_invalid`), both as `application/problem+json`.
//! The layer stores those answers like any other 4xx, so a retry with the
//! same key gets the same problem back, marked as a replay, without the
//! handler running again. `tests/example_orders.rs` drives this router;
//! `tests/http_redis.rs` runs two replicas of it on one Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use idemstore::backend::Backend;
use idemstore::http::{HttpStore, IdempotencyLayer, RequestKey, StoredResponse};
use serde_json::{json, Value};

/// The service's state. A real service would keep its orders in a
/// database; this one only counts.
#[derive(Debug, Default)]
pub struct Orders {
    /// The last order id handed out.
    pub last_id: AtomicU64,
    /// Requests that reached the handler: the layer lets one through per
    /// key, and answers duplicates and retries itself.
    pub handled: AtomicU64,
    /// How long creating an order takes (a real service's database write).
    pub work: Duration,
}

/// The whole service: `POST /orders` behind the Idempotency-Key layer, keys
/// scoped by the `X-Tenant` header, over `store`: the in-process
/// [`HttpStore`] or a shared `RedisStore`.
pub fn app<B>(store: B, orders: Arc<Orders>) -> Router
where
    B: Backend<RequestKey, StoredResponse>,
{
    let layer = IdempotencyLayer::with_backend(store).scope(|parts| {
        let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
        tenant.unwrap_or_default().to_owned()
    });
    Router::new()
        .route("/orders", post(create_order).get(count_orders))
        .with_state(orders)
        .layer(layer)
}

/// `GET /orders` (not idempotent-keyed: passed through the layer): how many
/// orders this replica created, as `{"created": n}`.
async fn count_orders(State(orders): State<Arc<Orders>>) -> Response {
    let created = orders.last_id.load(Ordering::SeqCst);
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "created": created }).to_string(),
    )
        .into_response()
}

/// What a client orders: `{"item": "kettle", "qty": 1}`.
struct NewOrder {
    item: String,
    qty: u64,
}

/// Creates an order from the JSON body; a real service would charge a card
/// or write a row here, which is why it must run once per key.
async fn create_order(State(orders): State<Arc<Orders>>, body: Bytes) -> Response {
    orders.handled.fetch_add(1, Ordering::SeqCst);
    let order = match parse_order(&body) {
        Ok(order) => order,
        Err(problem) => return problem.into_response(),
    };
    if !orders.work.is_zero() {
        tokio::time::sleep(orders.work).await;
    }
    let id = orders.last_id.fetch_add(1, Ordering::SeqCst) + 1;
    let created = json!({ "id": id, "order": { "item": order.item, "qty": order.qty } });
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/orders/{id}")),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        created.to_string(),
    )
        .into_response()
}

/// The order in `body`, or the problem to answer with: 400 for a body that
/// is not JSON, 422 for JSON that is not an order.
fn parse_order(body: &[u8]) -> Result<NewOrder, Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Problem {
        status: StatusCode::BAD_REQUEST,
        code: "body_not_json",
        detail: format!("the request body is not JSON: {e}"),
    })?;
    let item = value.get("item").and_then(Value::as_str);
    let qty = value.get("qty").and_then(Value::as_u64);
    match (item, qty) {
        (Some(item), Some(qty)) if !item.is_empty() && qty > 0 => Ok(NewOrder {
            item: item.to_owned(),
            qty,
        }),
        _ => Err(Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "order_invalid",
            detail: r#"an order is {"item": a non-empty string, "qty": a positive integer}"#
                .to_owned(),
        }),
    }
}

/// An RFC 9457 problem, answered as a document shaped like the layer's own.
struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason(),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The store a replica shares through Redis at `url`: responses replayed
/// for a day, a handler given 30 s before a duplicate may take its key
/// over, every call to the server bounded by 1 s.
#[cfg(feature = "redis")]
pub fn redis_store(
    url: &str,
) -> Result<idemstore::redis::RedisStore<RequestKey, StoredResponse>, Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let store = idemstore::redis::RedisStore::builder(client)
        .prefix("orders")
        .ttl(Duration::from_secs(24 * 3600))
        .lease(Duration::from_secs(30))
        .timeout(Duration::from_secs(1))
        .build()?;
    Ok(store)
}

/// The service on the address and with the store `args` name
/// (`[ADDR] [--redis URL] [--work-ms N]`), until it is stopped.
pub async fn run(args: impl IntoIterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut args = args.into_iter();
    let (mut addr, mut redis, mut work) = ("127.0.0.1:3000".to_owned(), None, Duration::ZERO);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => redis = Some(args.next().ok_or("--redis takes a URL")?),
            "--work-ms" => {
                let ms = args.next().ok_or("--work-ms takes a number")?;
                work = Duration::from_millis(ms.parse()?);
            }
            _ => addr = arg,
        }
    }
    let orders = Arc::new(Orders {
        work,
        ..Orders::default()
    });
    let app = match redis {
        // Shared by every replica started with the same URL.
        #[cfg(feature = "redis")]
        Some(url) => app(redis_store(&url)?, orders),
        #[cfg(not(feature = "redis"))]
        Some(_) => {
            return Err("--redis needs the example built with `--features tower,redis`".into())
        }
        // In process: responses are replayed for a day; a handler gets 30 s
        // before a duplicate may take its key over.
        None => {
            let store = HttpStore::builder()
                .ttl(Duration::from_secs(24 * 3600))
                .lease(Duration::from_secs(30))
                .max_entries(100_000)
                .build()?;
            app(store, orders)
        }
    };

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!(
        "try (twice): curl -i http://{addr}/orders -H 'Idempotency-Key: order-1' \
         -H 'Content-Type: application/json' -d '{{\"item\":\"kettle\",\"qty\":1}}'"
    );
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().skip(1)).await
}
