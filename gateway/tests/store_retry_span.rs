//! A store request retried on another node is its own client span there, with
//! `http.request.resend_count` (semantic conventions, HTTP client spans). Its own test
//! binary: it installs a tracing subscriber, which tests running beside it in one
//! process would race (tracing's callsite interest is global).

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

#[tokio::test]
async fn a_retry_is_its_own_span_on_the_other_node_with_a_resend_count() {
    // Arrange: a node answering 503 to everything, then a live one (round robin starts
    // at the first).
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
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
    let key = PredictionKey {
        model_name: "iris".into(),
        model_version: "3".into(),
        run_id: "run-a".into(),
        data_id: DataId::parse("1").unwrap(),
    };

    // Act
    let found = store.get(&key).await.unwrap();

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
