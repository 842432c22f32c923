//! The `axum_orders` example's router, driven in process: its answers are
//! JSON, bad input gets a 4xx problem, and the layer replays that problem
//! to a retry with the same key without running the handler again.
#![cfg(feature = "tower")]

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use idemstore::http::HttpStore;
use serde_json::{json, Value};
use tower::Service;

#[path = "../examples/axum_orders.rs"]
#[allow(dead_code)] // the example's `main`
mod axum_orders;

use axum_orders::Orders;

fn service() -> (Router, Arc<Orders>) {
    let orders = Arc::new(Orders::default());
    let store = HttpStore::builder().build().expect("valid settings");
    (axum_orders::app(store, orders.clone()), orders)
}

struct Answer {
    status: StatusCode,
    content_type: String,
    replayed: bool,
    body: Value,
}

/// Sends `POST /orders` with `key` and `body` through the router.
async fn post(app: &Router, key: &str, body: &str) -> Answer {
    let request = Request::post("/orders")
        .header("idempotency-key", key)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let mut app = app.clone();
    poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx))
        .await
        .unwrap();
    let response: Response<Body> = app.call(request).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        content_type,
        replayed,
        body,
    }
}

#[tokio::test]
async fn an_order_is_created_once_and_its_answer_is_json() {
    let (app, orders) = service();
    let body = r#"{"item":"kettle \"deluxe\"","qty":2}"#;
    let first = post(&app, "order-1", body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.content_type, "application/json");
    assert!(!first.replayed);
    assert_eq!(
        first.body,
        json!({ "id": 1, "order": { "item": "kettle \"deluxe\"", "qty": 2 } })
    );

    let retry = post(&app, "order-1", body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed);
    assert_eq!(retry.body, first.body);
    assert_eq!(orders.handled.load(Ordering::SeqCst), 1);
    assert_eq!(orders.last_id.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_problem_replayed_to_the_retry() {
    let (app, orders) = service();
    let first = post(&app, "order-5", "{not json").await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST);
    assert_eq!(first.content_type, "application/problem+json");
    assert!(!first.replayed);
    assert_eq!(first.body["status"], 400);
    assert_eq!(first.body["code"], "body_not_json");

    let retry = post(&app, "order-5", "{not json").await;
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert_eq!(retry.content_type, "application/problem+json");
    assert!(retry.replayed, "the stored 400 is replayed");
    assert_eq!(retry.body, first.body);
    assert_eq!(
        orders.handled.load(Ordering::SeqCst),
        1,
        "the handler ran once"
    );
    assert_eq!(orders.last_id.load(Ordering::SeqCst), 0, "no order made");
}

#[tokio::test]
async fn json_that_is_not_an_order_is_a_422_problem_replayed_to_the_retry() {
    let (app, orders) = service();
    for (n, body) in [
        r#"{"item":"kettle","qty":0}"#,
        r#"{"item":"","qty":1}"#,
        r#"{"qty":1}"#,
        r#"[1,2]"#,
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("bad-{n}");
        let first = post(&app, &key, body).await;
        assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(first.content_type, "application/problem+json");
        assert_eq!(first.body["code"], "order_invalid");
        let retry = post(&app, &key, body).await;
        assert_eq!(retry.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(retry.replayed);
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(orders.handled.load(Ordering::SeqCst), 4);
    assert_eq!(orders.last_id.load(Ordering::SeqCst), 0);
}

/// The layer's own 422, for a key reused with another body, is told apart
/// from the handler's by its `code`.
#[tokio::test]
async fn a_key_reused_with_another_body_is_the_layers_422() {
    let (app, orders) = service();
    let first = post(&app, "order-9", r#"{"item":"kettle","qty":1}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let reused = post(&app, "order-9", r#"{"item":"kettle","qty":3}"#).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.body["code"], "key_reused");
    assert!(!reused.replayed);
    assert_eq!(orders.handled.load(Ordering::SeqCst), 1);
}
