//! Metrics (feature `metrics`) and tracing events (feature `tracing`, with
//! `tower` for the HTTP layer's). Each test's servers run on its own
//! current-thread runtime, and its metrics recorder is installed for its
//! thread only (its tracing subscriber keeps only its thread's events), so
//! tests running side by side never see each other's data.
#![cfg(any(feature = "metrics", all(feature = "tower", feature = "tracing")))]

#[cfg(feature = "metrics")]
mod metrics_export {
    use idemstore::{Claim, Fingerprint, Store};
    use metrics::Label;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    pub type Values = Vec<(String, Vec<Label>, DebugValue)>;

    /// Every metric's value, by name and labels. A snapshot drains the
    /// recorder (counters and gauges read as zero after it), so take one.
    pub fn values(recorder: &DebuggingRecorder) -> Values {
        let snapshot = recorder.snapshotter().snapshot().into_vec();
        snapshot
            .into_iter()
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let labels = key.labels().cloned().collect();
                (key.name().to_owned(), labels, value)
            })
            .collect()
    }

    pub fn value<'a>(values: &'a Values, name: &str, labels: &[Label]) -> Option<&'a DebugValue> {
        values
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| v)
    }

    #[test]
    fn record_exports_every_stats_field() {
        let store: Store<u32, u32> = Store::builder()
            .max_entries(10)
            .max_bytes(1000)
            .build()
            .unwrap();
        if let Ok(Claim::Owner(ticket)) = store.claim_with(1, Fingerprint::of(&1)) {
            ticket.complete(10).unwrap();
        }
        let _replay = store.claim_with(1, Fingerprint::of(&1));
        let _mismatch = store.claim_with(1, Fingerprint::of(&2));
        let _in_flight = store.claim(2);

        let recorder = DebuggingRecorder::new();
        let labels = [Label::new("store", "orders")];
        metrics::with_local_recorder(&recorder, || {
            idemstore::metrics::describe();
            idemstore::metrics::record_with_labels(&store.stats(), &labels);
        });
        let expect = [
            ("idemstore_entries", DebugValue::Gauge(2.0.into())),
            ("idemstore_in_flight", DebugValue::Gauge(1.0.into())),
            // The default weigher: `size_of` a u32 key and a u32 value.
            ("idemstore_bytes", DebugValue::Gauge(8.0.into())),
            ("idemstore_max_entries", DebugValue::Gauge(10.0.into())),
            ("idemstore_max_bytes", DebugValue::Gauge(1000.0.into())),
            ("idemstore_claims_total", DebugValue::Counter(2)),
            ("idemstore_replays_total", DebugValue::Counter(1)),
            ("idemstore_mismatches_total", DebugValue::Counter(1)),
            ("idemstore_waits_total", DebugValue::Counter(0)),
            ("idemstore_abandons_total", DebugValue::Counter(0)),
            ("idemstore_takeovers_total", DebugValue::Counter(0)),
            ("idemstore_expirations_total", DebugValue::Counter(0)),
            ("idemstore_refusals_total", DebugValue::Counter(0)),
        ];
        let snapshot = recorder.snapshotter().snapshot().into_vec();
        assert!(snapshot
            .iter()
            .all(|(key, _, _, _)| key.kind() != MetricKind::Histogram));
        assert_eq!(snapshot.len(), expect.len());

        // Recording sets absolute values: twice is the same as once.
        metrics::with_local_recorder(&recorder, || {
            idemstore::metrics::record_with_labels(&store.stats(), &labels);
            idemstore::metrics::record_with_labels(&store.stats(), &labels);
        });
        let exported = values(&recorder);
        for (name, want) in expect {
            assert_eq!(value(&exported, name, &labels), Some(&want), "{name}");
        }
    }
}

#[cfg(feature = "tower")]
mod server {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use idemstore::http::{HttpStore, IdempotencyLayer, InFlightPolicy};
    use tokio::sync::{mpsc, Notify};

    pub struct Hold {
        pub entered: mpsc::UnboundedSender<()>,
        pub release: Notify,
    }

    /// Echoes the body with 201; "fail" answers 500; "hold" waits for
    /// `release` first.
    async fn handler(State(hold): State<Arc<Hold>>, body: Bytes) -> (StatusCode, Bytes) {
        match &body[..] {
            b"fail" => return (StatusCode::INTERNAL_SERVER_ERROR, body),
            b"hold" => {
                let _ = hold.entered.send(());
                hold.release.notified().await;
            }
            _ => {}
        }
        (StatusCode::CREATED, body)
    }

    pub struct Server {
        pub addr: SocketAddr,
        pub hold: Arc<Hold>,
        pub entered: mpsc::UnboundedReceiver<()>,
        client: Client<HttpConnector, Full<Bytes>>,
    }

    impl Server {
        /// Must run on the test's current-thread runtime, so the server's
        /// tasks report to the test thread's recorder and subscriber.
        pub async fn start(in_flight: InFlightPolicy) -> Server {
            let (entered_tx, entered) = mpsc::unbounded_channel();
            let hold = Arc::new(Hold {
                entered: entered_tx,
                release: Notify::new(),
            });
            let layer = IdempotencyLayer::new(HttpStore::new()).in_flight(in_flight);
            let app = Router::new()
                .route("/orders", post(handler))
                .with_state(hold.clone())
                .layer(layer);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            let client = Client::builder(TokioExecutor::new()).build_http();
            Server {
                addr,
                hold,
                entered,
                client,
            }
        }

        pub fn send(
            &self,
            key: Option<&str>,
            body: &'static str,
        ) -> impl std::future::Future<Output = StatusCode> + Send + 'static {
            let mut request = Request::post(format!("http://{}/orders", self.addr));
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let request = request.body(Full::new(Bytes::from_static(body.as_bytes())));
            let response = self.client.request(request.unwrap());
            async move {
                let response = response.await.unwrap();
                let status = response.status();
                response.into_body().collect().await.unwrap();
                status
            }
        }

        /// One request of every kind the layer reports on.
        pub async fn exercise(&mut self) {
            assert_eq!(self.send(Some("a"), "1 cup").await, StatusCode::CREATED);
            assert_eq!(self.send(Some("a"), "1 cup").await, StatusCode::CREATED);
            assert_eq!(
                self.send(Some("a"), "2 cups").await,
                StatusCode::UNPROCESSABLE_ENTITY
            );
            assert_eq!(
                self.send(Some("b"), "fail").await,
                StatusCode::INTERNAL_SERVER_ERROR
            );
            assert_eq!(self.send(None, "1 cup").await, StatusCode::BAD_REQUEST);
            // A duplicate waits for a held request until its short deadline.
            let first = tokio::spawn(self.send(Some("c"), "hold"));
            self.entered.recv().await.unwrap();
            assert_eq!(self.send(Some("c"), "hold").await, StatusCode::CONFLICT);
            self.hold.release.notify_one();
            assert_eq!(first.await.unwrap(), StatusCode::CREATED);
        }
    }
}

#[cfg(all(feature = "tower", feature = "metrics"))]
#[tokio::test]
async fn the_http_layer_counts_requests_by_outcome() {
    use std::time::Duration;

    use idemstore::http::InFlightPolicy;
    use metrics::Label;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let wait = InFlightPolicy::Wait(Duration::from_millis(20));
    server::Server::start(wait).await.exercise().await;

    let exported = metrics_export::values(&recorder);
    let requests = |outcome: &'static str| {
        let labels = [Label::new("outcome", outcome)];
        metrics_export::value(&exported, "idemstore_http_requests_total", &labels)
    };
    for (outcome, count) in [
        ("stored", 2),
        ("replayed", 1),
        ("key_reused", 1),
        ("not_stored", 1),
        ("key_missing", 1),
        ("in_flight", 1),
    ] {
        assert_eq!(
            requests(outcome),
            Some(&DebugValue::Counter(count)),
            "{outcome}"
        );
    }
    assert_eq!(requests("dropped"), None);
    let waits = metrics_export::value(&exported, "idemstore_http_wait_seconds", &[]);
    assert!(matches!(waits, Some(DebugValue::Histogram(w)) if w.len() == 1));
}

#[cfg(all(feature = "tower", feature = "tracing"))]
mod events {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use idemstore::http::InFlightPolicy;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Keeps the `event` field of every `idemstore::http` event, and the
    /// names of the spans opened, on one thread only: the test's, where its
    /// current-thread runtime runs the server.
    struct Collect {
        thread: std::thread::ThreadId,
        events: Arc<Mutex<Vec<String>>>,
        spans: Arc<Mutex<Vec<&'static str>>>,
        next_span: AtomicU64,
    }

    impl Collect {
        fn mine(&self) -> bool {
            std::thread::current().id() == self.thread
        }
    }

    struct EventName<'a>(&'a mut Option<String>);

    impl Visit for EventName<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "event" {
                *self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl Subscriber for Collect {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "idemstore::http"
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            if self.mine() {
                self.spans.lock().unwrap().push(span.metadata().name());
            }
            Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if !self.mine() {
                return;
            }
            let mut name = None;
            event.record(&mut EventName(&mut name));
            self.events.lock().unwrap().extend(name);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test]
    async fn the_http_layer_emits_named_events_in_a_span() {
        let collect = Collect {
            thread: std::thread::current().id(),
            events: Arc::default(),
            spans: Arc::default(),
            next_span: AtomicU64::new(0),
        };
        let (events, spans) = (collect.events.clone(), collect.spans.clone());
        // Global, not scoped: tracing caches each callsite's interest, and a
        // scoped subscriber can miss callsites another test thread hit first.
        // This is the binary's only test that sets one.
        tracing::subscriber::set_global_default(collect).unwrap();
        let wait = InFlightPolicy::Wait(Duration::from_millis(20));
        super::server::Server::start(wait).await.exercise().await;

        let events = events.lock().unwrap().clone();
        for name in [
            "claim",
            "store",
            "replay",
            "mismatch",
            "abandon",
            "refuse",
            "wait",
            "wait_timeout",
            "finish",
        ] {
            assert!(
                events.iter().any(|e| e == name),
                "no {name:?} in {events:?}"
            );
        }
        let claims = events.iter().filter(|e| *e == "claim").count();
        assert_eq!(claims, 3, "{events:?}");
        let spans = spans.lock().unwrap();
        assert!(
            spans.len() >= 7 && spans.iter().all(|s| *s == "idempotency"),
            "{spans:?}"
        );
    }
}
