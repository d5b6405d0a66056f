//! What the telemetry shows of a store node failing: the retry's own client span, the
//! dead-node counter, requests per node. Its own test binary, its tests one at a time: a
//! store span first reached while no subscriber wants it has its interest cached as
//! "never" (tracing's callsite cache is global), which hid the span test's spans.

use gateway::configuration::{Settings, StoreSettings};
use gateway::domain::{DataId, PredictionKey};
use gateway::metrics::Metrics;
use gateway::store::{ElasticsearchStore, PredictionStore};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use opentelemetry_semantic_conventions::attribute::{
    ERROR_TYPE, HTTP_REQUEST_RESEND_COUNT, SERVER_PORT, URL_FULL,
};
use tracing_subscriber::layer::SubscriberExt as _;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

/// Held by each test for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A node answering 503 to everything and a live one that has no document (round robin
/// starts at the first), and a store client over both.
async fn unavailable_and_live_nodes() -> (MockServer, MockServer, ElasticsearchStore) {
    let (unavailable, live) = (MockServer::start().await, MockServer::start().await);
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&unavailable)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(404).set_body_string(r#"{"found":false}"#))
        .mount(&live)
        .await;
    let settings = StoreSettings {
        url: Some(
            format!("{},{}", unavailable.uri(), live.uri())
                .parse()
                .unwrap(),
        ),
        ..Settings::default().store
    };
    let store = ElasticsearchStore::new(&settings, Metrics::default()).unwrap();
    (unavailable, live, store)
}

fn key() -> PredictionKey {
    PredictionKey {
        model_name: "iris".into(),
        model_version: "3".into(),
        run_id: "run-a".into(),
        data_id: DataId::parse("1").unwrap(),
    }
}

#[tokio::test]
async fn a_retry_is_its_own_span_on_the_other_node_with_a_resend_count() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Arrange
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    let (unavailable, live, store) = unavailable_and_live_nodes().await;

    // Act
    let found = store.get(&key()).await.unwrap();

    // Assert
    assert!(found.is_none());
    let spans = exporter.get_finished_spans().unwrap();
    let attribute = |span: usize, name: &str| {
        spans[span]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == name)
            .map(|kv| kv.value.to_string())
    };
    let port = |server: &MockServer| Some(server.address().port().to_string());
    assert_eq!(spans.len(), 2, "one span per attempt");
    assert!(spans.iter().all(|span| span.name == "get ml-predictions"));
    assert_eq!(attribute(0, SERVER_PORT), port(&unavailable));
    assert_eq!(attribute(0, ERROR_TYPE).as_deref(), Some("503"));
    assert_eq!(attribute(0, HTTP_REQUEST_RESEND_COUNT), None);
    assert_eq!(attribute(1, SERVER_PORT), port(&live));
    assert_eq!(
        attribute(1, HTTP_REQUEST_RESEND_COUNT).as_deref(),
        Some("1")
    );
    assert!(
        attribute(1, URL_FULL).unwrap().starts_with(&live.uri()),
        "the retry's URL is the other node's"
    );
}

#[tokio::test]
async fn a_node_marked_dead_is_counted_and_requests_are_counted_per_node() {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

    let _alone = ONE_AT_A_TIME.lock().await;
    // Arrange: the global meter provider, read by an in-memory exporter.
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let (unavailable, live, store) = unavailable_and_live_nodes().await;

    // Act: the first lookup finds the first node dead; the second skips it.
    store.get(&key()).await.unwrap();
    store.get(&key()).await.unwrap();

    // Assert: per metric and node (`server.port`), the count recorded.
    provider.force_flush().unwrap();
    let port_of = |attributes: Vec<&opentelemetry::KeyValue>| {
        attributes
            .into_iter()
            .find(|kv| kv.key.as_str() == SERVER_PORT)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    };
    let mut counts: Vec<(String, String, u64)> = Vec::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for metric in resource.scope_metrics().flat_map(|scope| scope.metrics()) {
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum))
                    if metric.name() == "ml.store.node.marked_dead" =>
                {
                    for point in sum.data_points() {
                        let port = port_of(point.attributes().collect());
                        counts.push((metric.name().into(), port, point.value()));
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(histogram))
                    if metric.name() == "db.client.operation.duration" =>
                {
                    for point in histogram.data_points() {
                        let port = port_of(point.attributes().collect());
                        counts.push((metric.name().into(), port, point.count()));
                    }
                }
                _ => {}
            }
        }
    }
    let count = |name: &str, server: &MockServer| {
        let port = server.address().port().to_string();
        counts
            .iter()
            .filter(|(metric, at, _)| metric == name && *at == port)
            .map(|(_, _, value)| value)
            .sum::<u64>()
    };
    assert_eq!(
        count("ml.store.node.marked_dead", &unavailable),
        1,
        "{counts:?}"
    );
    assert_eq!(count("ml.store.node.marked_dead", &live), 0, "{counts:?}");
    assert_eq!(
        count("db.client.operation.duration", &unavailable),
        1,
        "{counts:?}"
    );
    assert_eq!(
        count("db.client.operation.duration", &live),
        2,
        "{counts:?}"
    );
}
