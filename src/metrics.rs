//! [`Stats`] through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`).
//!
//! The store keeps its own counters; [`record`] copies a snapshot into
//! whatever recorder the application installed (Prometheus, StatsD, ...).
//! Call it when the exporter scrapes, or from a periodic task. Counters are
//! set to their absolute values, so calling it often is harmless.
//!
//! | name | kind | meaning ([`Stats`] field) |
//! | --- | --- | --- |
//! | `idemstore_entries` | gauge | entries held (`entries`) |
//! | `idemstore_in_flight` | gauge | entries in flight (`in_flight`) |
//! | `idemstore_bytes` | gauge | what the completed entries weigh (`bytes`; 0 unless a byte bound or weigher is set) |
//! | `idemstore_max_entries` | gauge | the entry bound, only where set (`max_entries`) |
//! | `idemstore_max_bytes` | gauge | the byte bound, only where set (`max_bytes`) |
//! | `idemstore_claims_total` | counter | claims that made the caller the owner (`claims`) |
//! | `idemstore_replays_total` | counter | claims answered with a stored value (`replays`) |
//! | `idemstore_waits_total` | counter | duplicates that waited on an in-flight key (`waits`) |
//! | `idemstore_abandons_total` | counter | claims released without a result (`abandons`) |
//! | `idemstore_takeovers_total` | counter | keys taken over after a lease passed (`takeovers`) |
//! | `idemstore_expirations_total` | counter | entries removed as their retention or lease passed (`expirations`) |
//! | `idemstore_mismatches_total` | counter | claims refused for another fingerprint (`mismatches`) |
//! | `idemstore_refusals_total` | counter | claims refused because the store was full (`refusals`) |
//!
//! With feature `tower` too, the HTTP layer counts every request it
//! finishes in `idemstore_http_requests_total{outcome}` and records how long
//! duplicates waited in the histogram `idemstore_http_wait_seconds`; the
//! outcomes are listed in the README.

use ::metrics::{counter, describe_counter, describe_gauge, gauge, Label};

use crate::Stats;

/// Reads one counter from a snapshot.
type Read = fn(&Stats) -> u64;

/// Each counter's name, description and how to read it from a snapshot.
const COUNTERS: [(&str, &str, Read); 8] = [
    (
        "idemstore_claims_total",
        "Claims that made the caller the owner.",
        |s| s.claims,
    ),
    (
        "idemstore_replays_total",
        "Claims answered with a stored value.",
        |s| s.replays,
    ),
    (
        "idemstore_waits_total",
        "Duplicates that waited on an in-flight key.",
        |s| s.waits,
    ),
    (
        "idemstore_abandons_total",
        "Claims released without a result.",
        |s| s.abandons,
    ),
    (
        "idemstore_takeovers_total",
        "Keys taken over after an owner's lease passed.",
        |s| s.takeovers,
    ),
    (
        "idemstore_expirations_total",
        "Entries removed because their retention or lease passed.",
        |s| s.expirations,
    ),
    (
        "idemstore_mismatches_total",
        "Claims refused because the payload fingerprint differed.",
        |s| s.mismatches,
    ),
    (
        "idemstore_refusals_total",
        "Claims refused because the store was full.",
        |s| s.refusals,
    ),
];

/// Sets every store metric from `stats`.
///
/// ```
/// use idemstore::Store;
/// let store: Store<u32, u32> = Store::new();
/// let _ = store.execute(1, || Ok::<_, ()>(1));
/// idemstore::metrics::record(&store.stats()); // a no-op without a recorder
/// ```
pub fn record(stats: &Stats) {
    record_with_labels(stats, &[]);
}

/// Like [`record`], with labels on every metric, such as the store's name
/// when an application runs several.
///
/// ```
/// use metrics::Label;
/// let stats = idemstore::Stats::default();
/// idemstore::metrics::record_with_labels(&stats, &[Label::new("store", "orders")]);
/// ```
pub fn record_with_labels(stats: &Stats, labels: &[Label]) {
    gauge!("idemstore_entries", labels.iter()).set(stats.entries as f64);
    gauge!("idemstore_in_flight", labels.iter()).set(stats.in_flight as f64);
    gauge!("idemstore_bytes", labels.iter()).set(stats.bytes as f64);
    if let Some(max) = stats.max_entries {
        gauge!("idemstore_max_entries", labels.iter()).set(max as f64);
    }
    if let Some(max) = stats.max_bytes {
        gauge!("idemstore_max_bytes", labels.iter()).set(max as f64);
    }
    for (name, _, read) in COUNTERS {
        counter!(name, labels.iter()).absolute(read(stats));
    }
}

/// Registers a description of every metric this crate emits with the
/// installed recorder. Optional; call it once at start-up.
///
/// ```
/// idemstore::metrics::describe();
/// ```
pub fn describe() {
    describe_gauge!("idemstore_entries", "Entries held, in flight or completed.");
    describe_gauge!("idemstore_in_flight", "Entries in flight.");
    describe_gauge!(
        "idemstore_bytes",
        ::metrics::Unit::Bytes,
        "What the completed entries weigh, as the store's weigher counts them."
    );
    describe_gauge!("idemstore_max_entries", "The store's bound on entries.");
    describe_gauge!(
        "idemstore_max_bytes",
        ::metrics::Unit::Bytes,
        "The store's bound on what completed entries weigh."
    );
    for (name, description, _) in COUNTERS {
        describe_counter!(name, description);
    }
    describe_counter!(
        "idemstore_http_requests_total",
        "Requests the HTTP layer finished, by outcome."
    );
    ::metrics::describe_histogram!(
        "idemstore_http_wait_seconds",
        ::metrics::Unit::Seconds,
        "How long duplicates waited for the first request with their key."
    );
}
