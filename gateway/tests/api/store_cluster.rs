//! The store client over several nodes: a node that cannot be reached is skipped for its
//! back-off, a request safe to repeat is answered by another node, a purge is not repeated.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::configuration::Settings;
use gateway::metrics::Metrics;
use gateway::store::{ElasticsearchStore, PredictionStore, StoreError};
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{
    MockAnswer, MockModelService, TestOptions, closed_port_url, poll_until, spawn_app,
};

/// How long a node is skipped after its first failure, in these tests: longer than the
/// requests sent within it take on a loaded machine, short enough to wait out.
const BACKOFF_MS: u64 = 1_500;

/// MOCK of one search node, for in-process tests only (the end-to-end suite runs a real
/// node): answers what the gateway asks of its store (cluster info, index creation, the
/// alias check, a miss on every document read, writes and leases acknowledged, an empty
/// purge), or 503 to everything.
struct MockSearchNode {
    server: MockServer,
}

impl MockSearchNode {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let routes = [
            ("GET", "^/$", json!({"cluster_name": "mock-cluster"}), 200),
            (
                "PUT",
                "^/ml-predictions-v1$",
                json!({"acknowledged": true}),
                200,
            ),
            ("HEAD", "^/ml-predictions$", json!({}), 200),
            (
                "PUT",
                "^/ml-predictions-leases$",
                json!({"acknowledged": true}),
                200,
            ),
            (
                "GET",
                "^/ml-predictions-leases/_doc/",
                json!({"found": false}),
                404,
            ),
            (
                "PUT",
                "^/ml-predictions-leases/_create/",
                json!({"result": "created", "_seq_no": 0, "_primary_term": 1}),
                201,
            ),
            (
                "DELETE",
                "^/ml-predictions-leases/_doc/",
                json!({"result": "deleted"}),
                200,
            ),
            (
                "GET",
                "^/ml-predictions/_doc/",
                json!({"found": false}),
                404,
            ),
            (
                "PUT",
                "^/ml-predictions/_doc/",
                json!({"result": "created"}),
                201,
            ),
            (
                "POST",
                "^/ml-predictions/_bulk$",
                json!({"errors": false, "items": []}),
                200,
            ),
            (
                "POST",
                "^/ml-predictions/_delete_by_query$",
                json!({"deleted": 0, "failures": []}),
                200,
            ),
        ];
        for (verb, pattern, body, status) in routes {
            Mock::given(method(verb))
                .and(path_regex(pattern))
                .respond_with(ResponseTemplate::new(status).set_body_json(body))
                .mount(&server)
                .await;
        }
        Mock::given(method("POST"))
            .and(path("/ml-predictions/_mget"))
            .respond_with(|request: &Request| {
                let body: Value = request.body_json().unwrap_or_default();
                let docs: Vec<Value> = body["ids"]
                    .as_array()
                    .map(|ids| ids.iter().map(|_| json!({"found": false})).collect())
                    .unwrap_or_default();
                ResponseTemplate::new(200).set_body_json(json!({ "docs": docs }))
            })
            .mount(&server)
            .await;
        Self { server }
    }

    /// A node that answers 503 to every request (a node leaving, or a proxy before it).
    async fn unavailable() -> Self {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        Self { server }
    }

    fn url(&self) -> String {
        self.server.uri()
    }

    /// Requests received, all of them or those whose path ends with `suffix`.
    async fn requests(&self, suffix: &str) -> usize {
        let received = self.server.received_requests().await.unwrap_or_default();
        received
            .iter()
            .filter(|request| request.url.path().ends_with(suffix))
            .count()
    }
}

/// Ways a node can be unreachable.
#[derive(Debug, Clone, Copy)]
enum DeadNode {
    /// Nothing listens on its port: connection refused at once.
    NothingListening,
    /// A listener that is never accepted from: the kernel completes the handshake and
    /// the request waits out the store timeout. Connections are counted afterwards, by
    /// accepting what queued up.
    NeverAccepted,
    /// A listener that accepts and closes every connection at once (a node crashing).
    ClosesAtOnce,
}

/// A dead node and its count of connection attempts where one can be had.
struct DeadListener {
    url: String,
    listener: Option<tokio::net::TcpListener>,
    accepted: Arc<AtomicUsize>,
}

impl DeadListener {
    async fn start(kind: DeadNode) -> Self {
        let accepted = Arc::new(AtomicUsize::new(0));
        match kind {
            DeadNode::NothingListening => Self {
                url: closed_port_url().await,
                listener: None,
                accepted,
            },
            DeadNode::NeverAccepted => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                Self {
                    url: format!("http://{}", listener.local_addr().unwrap()),
                    listener: Some(listener),
                    accepted,
                }
            }
            DeadNode::ClosesAtOnce => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let count = accepted.clone();
                tokio::spawn(async move {
                    while let Ok((socket, _)) = listener.accept().await {
                        count.fetch_add(1, Ordering::SeqCst);
                        drop(socket);
                    }
                });
                Self {
                    url,
                    listener: None,
                    accepted,
                }
            }
        }
    }

    /// Connections made to it so far; `None` when nothing listens to count them.
    async fn connections(&self, kind: DeadNode) -> Option<usize> {
        match kind {
            DeadNode::NothingListening => None,
            DeadNode::ClosesAtOnce => Some(self.accepted.load(Ordering::SeqCst)),
            DeadNode::NeverAccepted => {
                let listener = self.listener.as_ref().unwrap();
                // Whatever completed its handshake is queued; take it all, then stop.
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(20), listener.accept()).await
                {
                    self.accepted.fetch_add(1, Ordering::SeqCst);
                }
                Some(self.accepted.load(Ordering::SeqCst))
            }
        }
    }
}

fn cluster_settings(urls: String) -> impl FnOnce(&mut Settings) + Send + 'static {
    move |settings: &mut Settings| {
        settings.store.url = Some(urls.parse().expect("the nodes' URLs are http URLs"));
        settings.store.timeout = Duration::from_millis(300);
        settings.store.dead_node_backoff = Duration::from_millis(BACKOFF_MS);
        settings.store.max_dead_node_backoff = Duration::from_millis(2 * BACKOFF_MS);
    }
}

/// `POST /v1/predict` of `data_id`, asserting it is answered 200 from the model, the
/// store reached (not `bypass`).
async fn assert_answered(app: &crate::helpers::TestApp, data_id: &str, description: &str) {
    let response = app.predict(data_id).await;
    assert_eq!(response.status(), 200, "{description}: {data_id}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cache"], "miss", "{description}: {data_id}: {body}");
}

#[tokio::test]
async fn a_dead_store_node_is_skipped_for_its_backoff_and_every_request_is_answered() {
    let cases = [
        (DeadNode::NothingListening, "nothing listening"),
        (DeadNode::NeverAccepted, "a listener never accepted from"),
        (
            DeadNode::ClosesAtOnce,
            "a listener closing every connection",
        ),
    ];
    for (kind, description) in cases {
        // Arrange: the dead node first, so the first request of start-up goes to it.
        let dead = DeadListener::start(kind).await;
        let live = MockSearchNode::start().await;
        let model = MockModelService::start(MockAnswer::Predicts).await;
        let urls = format!("{} , {}", dead.url, live.url());
        let started = Instant::now();
        let app =
            spawn_app(TestOptions::with_model(model.backend()).settings(cluster_settings(urls)))
                .await;
        let before = dead.connections(kind).await;

        // Act: requests within the back-off of the death start-up saw.
        let phase = Instant::now();
        for i in 0..5 {
            assert_answered(&app, &format!("cluster-{i}"), description).await;
        }
        let phase_took = phase.elapsed();
        let during = dead.connections(kind).await;

        // Assert
        if let (Some(before), Some(during)) = (before, during) {
            assert!(before >= 1, "{description}: start-up asked the first node");
            if phase_took < Duration::from_millis(BACKOFF_MS) {
                assert!(
                    during - before <= 1,
                    "{description}: {} connections within the back-off",
                    during - before
                );
            }
            let mut next = 5;
            poll_until(
                async || {
                    next += 1;
                    assert_answered(&app, &format!("cluster-{next}"), description).await;
                    dead.connections(kind).await.unwrap() > during
                },
                "the dead node to be tried again after its back-off",
                Duration::from_secs(15),
            )
            .await;
            assert!(
                started.elapsed() >= Duration::from_millis(BACKOFF_MS),
                "{description}: tried again before its back-off was over"
            );
        }
        assert!(live.requests("").await > 0, "{description}");
    }
}

#[tokio::test]
async fn a_request_a_node_answers_503_is_answered_by_the_other_node() {
    // Arrange
    let unavailable = MockSearchNode::unavailable().await;
    let live = MockSearchNode::start().await;
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let urls = format!("{},{}", unavailable.url(), live.url());

    // Act
    let app =
        spawn_app(TestOptions::with_model(model.backend()).settings(cluster_settings(urls))).await;

    // Assert
    for i in 0..4 {
        assert_answered(&app, &format!("unavailable-{i}"), "one node answering 503").await;
    }
    assert!(
        unavailable.requests("").await >= 1,
        "start-up asked it first"
    );
}

#[tokio::test]
async fn a_lookup_is_sent_again_to_another_node_but_a_purge_is_not() {
    // Each on a fresh client, whose first request goes to the first node, the one
    // answering 503.
    let cases = ["lookup", "purge"];
    for case in cases {
        // Arrange
        let unavailable = MockSearchNode::unavailable().await;
        let live = MockSearchNode::start().await;
        let mut settings = Settings::default();
        cluster_settings(format!("{},{}", unavailable.url(), live.url()))(&mut settings);
        let store = ElasticsearchStore::new(&settings.store, Metrics::new()).unwrap();

        // Act and assert
        match case {
            "lookup" => {
                let key = gateway::domain::PredictionKey {
                    model_name: "iris".into(),
                    model_version: "1".into(),
                    run_id: "run-1".into(),
                    data_id: gateway::domain::DataId::parse("retried").unwrap(),
                };
                assert!(
                    store.get(&key).await.unwrap().is_none(),
                    "a miss, from the live node"
                );
                assert_eq!(unavailable.requests("").await, 1, "{case}");
                assert_eq!(live.requests("").await, 1, "{case}: sent again");
            }
            _ => {
                let error = store
                    .delete_runs_except(&["run-1".into()])
                    .await
                    .unwrap_err();
                assert!(
                    matches!(error, StoreError::Status { status: 503, .. }),
                    "{case}: {error:?}"
                );
                assert_eq!(unavailable.requests("").await, 1, "{case}");
                assert_eq!(live.requests("").await, 0, "{case}: never sent again");
            }
        }
    }
}
