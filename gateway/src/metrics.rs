//! The gateway's instruments, named and bucketed by the OpenTelemetry semantic conventions.

use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

/// Seconds-based buckets of the HTTP duration histograms (semantic conventions).
const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Seconds-based buckets of the database client histogram (semantic conventions).
const DB_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Every instrument, built once from the global meter provider (after telemetry set-up).
///
/// Attributes are low-cardinality only (method, route, status, outcome): never
/// ids or paths, which would blow the per-instrument cardinality limit.
#[derive(Clone)]
pub struct Metrics {
    /// `http.server.request.duration`, seconds.
    pub server_duration: Histogram<f64>,
    /// `http.server.active_requests`.
    pub server_active: UpDownCounter<i64>,
    /// `http.client.request.duration` of model service calls, seconds.
    pub client_duration: Histogram<f64>,
    /// `db.client.operation.duration` of store requests, seconds.
    pub db_duration: Histogram<f64>,
    /// `ml.cache.results`: predictions served, by `ml.cache.result`.
    pub cache_results: Counter<u64>,
    /// `ml.store.node.marked_dead`: times a store node was marked dead, by
    /// `server.address` and `server.port` (one series per configured node).
    pub store_node_marked_dead: Counter<u64>,
    /// `ml.coalescing.leases`: computations coordinated through the store's lease, by
    /// `ml.coalescing.lease` (`acquired`, `taken_over`, `held_elsewhere`, `ignored`,
    /// `unavailable`).
    pub coalescing_leases: Counter<u64>,
}

impl Metrics {
    /// Instruments from the global meter provider.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("inference-gateway");
        Self {
            server_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
            server_active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("Number of active HTTP server requests.")
                .build(),
            client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests to the model service.")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
            db_duration: meter
                .f64_histogram("db.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of prediction store operations.")
                .with_boundaries(DB_BUCKETS.to_vec())
                .build(),
            cache_results: meter
                .u64_counter("ml.cache.results")
                .with_unit("{prediction}")
                .with_description("Predictions served, by cache outcome.")
                .build(),
            store_node_marked_dead: meter
                .u64_counter("ml.store.node.marked_dead")
                .with_unit("{event}")
                .with_description("Times a store node was marked dead and skipped for a back-off.")
                .build(),
            coalescing_leases: meter
                .u64_counter("ml.coalescing.leases")
                .with_unit("{computation}")
                .with_description("Computations coordinated across replicas, by lease outcome.")
                .build(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
