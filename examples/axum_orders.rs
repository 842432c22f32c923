//! An axum service with `POST /orders` behind the Idempotency-Key layer.
//!
//! ```text
//! cargo run --example axum_orders --features tower [-- 127.0.0.1:3000]
//! ```
//!
//! Send the printed curl line twice: the first creates order 1 (201); the
//! second gets the same 201 and body back, marked `Idempotent-Replayed:
//! true`, and creates nothing. Change the body and keep the key: 422.
//! Leave the key out: 400. The `X-Tenant` header scopes keys, so two
//! tenants may use the same key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use idemstore::http::{HttpStore, IdempotencyLayer};

/// Creates an order from whatever JSON came in; a real service would
/// charge a card or write a row here, which is why it must run once.
async fn create_order(State(next_id): State<Arc<AtomicU64>>, body: String) -> impl IntoResponse {
    let id = next_id.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/orders/{id}")),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        format!(r#"{{"id":{id},"order":{body}}}"#),
    )
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
    let layer = IdempotencyLayer::new(store).scope(|parts| {
        let tenant = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
        tenant.unwrap_or_default().to_owned()
    });
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(Arc::new(AtomicU64::new(0)))
        .layer(layer);

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
