//! An axum service with `POST /orders` behind the Idempotency-Key layer.
//!
//! ```text
//! cargo run --example axum_orders --features tower [-- 127.0.0.1:3000]
//! ```
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
//! handler running again. `tests/example_orders.rs` drives this router.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use idemstore::http::{HttpStore, IdempotencyLayer};
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
}

/// The whole service: `POST /orders` behind the Idempotency-Key layer, keys
/// scoped by the `X-Tenant` header.
pub fn app(store: HttpStore, orders: Arc<Orders>) -> Router {
    let layer = IdempotencyLayer::new(store).scope(|parts| {
        let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
        tenant.unwrap_or_default().to_owned()
    });
    Router::new()
        .route("/orders", post(create_order))
        .with_state(orders)
        .layer(layer)
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    // Responses are replayed for a day; a handler gets 30 s before a
    // duplicate may take its key over.
    let store = HttpStore::builder()
        .ttl(Duration::from_secs(24 * 3600))
        .lease(Duration::from_secs(30))
        .max_entries(100_000)
        .build()?;
    let app = app(store, Arc::default());

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
