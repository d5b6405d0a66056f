//! Replicas of one deployment: gateways sharing one store compute a key once between
//! them, through the store's computation lease.

use std::time::{Duration, Instant};

use gateway::store::{Lease, LeaseGrant, LeaseOutcome, PredictionStore};
use serde_json::Value;

use crate::helpers::{
    MockAnswer, MockModelService, RecordingStore, TestOptions, join_all, mock_key, spawn_app,
};

/// The answer is 200, given within 2 s of `since`, after this replica's one model call.
async fn assert_computed_here_within_2_s(
    response: reqwest::Response,
    since: Instant,
    model: &MockModelService,
) {
    assert_eq!(response.status(), 200);
    assert!(
        since.elapsed() < Duration::from_secs(2),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(model.predict_calls().await, 1);
}

/// Leaves a lease on `data_id` as another replica computing it would: `ttl` long, not
/// released unless the test does.
async fn other_replicas_lease(store: &RecordingStore, data_id: &str, ttl: Duration) -> Lease {
    let key = mock_key(data_id);
    let grant = LeaseGrant {
        holder: "other-replica".into(),
        ttl,
        trace_id: "d".repeat(32),
    };
    match store.inner().acquire_lease(&key, &grant).await.unwrap() {
        LeaseOutcome::Acquired(lease) => lease,
        LeaseOutcome::HeldElsewhere => panic!("the key was leased already"),
    }
}

fn cache_status(response: &reqwest::Response) -> String {
    response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn concurrent_misses_for_one_key_across_three_replicas_cost_one_model_call() {
    // Arrange: three gateways on one store, one slow model service.
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(400)).await;
    let store = RecordingStore::shared();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let replica =
            spawn_app(TestOptions::with_model(model.backend()).shared_store(&store)).await;
        // Learns the live model now, so the nine requests below start their lookups together.
        assert_eq!(replica.get("/v1/predictions/warm-up").await.status(), 404);
        replicas.push(replica);
    }

    // Act: nine concurrent requests for one new key, three per replica.
    let requests = (0..9).map(|i| {
        let replica = replicas[i % 3].clone();
        async move {
            let response = replica.predict("cust-shared").await;
            let status = response.status().as_u16();
            let cache_status = cache_status(&response);
            let body: Value = response.json().await.unwrap();
            (status, cache_status, body)
        }
    });
    let answers = join_all(requests).await;

    // Assert: one model call; every request answered the one prediction it made.
    assert_eq!(model.predict_calls().await, 1);
    let computing_trace = answers[0].2["trace_id"].clone();
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["cache"], "miss", "{body}");
        assert_eq!(body["created_at"], answers[0].2["created_at"], "{body}");
    }
    let collapsed = answers
        .iter()
        .filter(|(_, cache_status, _)| cache_status.contains("collapsed"))
        .count();
    assert_eq!(collapsed, 8, "all but the computing request: {answers:?}");
    let served_traces: std::collections::HashSet<String> = answers
        .iter()
        .map(|(_, _, body)| body["trace_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(served_traces.contains(computing_trace.as_str().unwrap()));
    let key = mock_key("cust-shared");
    assert_eq!(
        store.inner().lease(&key).await.unwrap(),
        None,
        "the computing replica released its lease"
    );
}

#[tokio::test]
async fn a_lease_left_by_a_dead_replica_is_taken_over_once_it_expires() {
    // Arrange: a replica died holding the lease of the key, for one more second.
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let store = RecordingStore::shared();
    let ttl = Duration::from_secs(1);
    other_replicas_lease(&store, "cust-orphan", ttl).await;
    let app = spawn_app(TestOptions::with_model(model.backend()).shared_store(&store)).await;

    // Act
    let started = Instant::now();
    let response = app.predict("cust-orphan").await;
    let elapsed = started.elapsed();

    // Assert: answered by its own model call once the lease expired, not before.
    assert_eq!(response.status(), 200);
    assert!(!cache_status(&response).contains("collapsed"));
    assert!(elapsed >= ttl - Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < ttl + Duration::from_millis(1_500), "{elapsed:?}");
    assert_eq!(model.predict_calls().await, 1);
    let key = mock_key("cust-orphan");
    assert!(store.stored(&key).await.is_some());
    assert_eq!(store.inner().lease(&key).await.unwrap(), None, "released");
}

#[tokio::test]
async fn a_lease_whose_holder_never_lands_is_waited_for_only_as_long_as_a_computation_still_fits() {
    // Arrange: another replica holds the key's lease for a minute and never writes (its
    // store writes hang, as while a killed node's shards move); the request deadline is
    // 2 s and a model call may take 1 s.
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let store = RecordingStore::shared();
    other_replicas_lease(&store, "cust-stuck", Duration::from_secs(60)).await;
    let app = spawn_app(
        TestOptions::with_model(model.backend())
            .shared_store(&store)
            .settings(|settings| {
                settings.server.request_timeout = Duration::from_secs(2);
                settings.model.timeout = Duration::from_secs(1);
            }),
    )
    .await;

    // Act
    let started = Instant::now();
    let response = app.predict("cust-stuck").await;
    let elapsed = started.elapsed();

    // Assert: it waited, then computed in time instead of answering 504 at the deadline.
    assert_eq!(response.status(), 200);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn a_no_cache_request_does_not_wait_for_another_replicas_lease() {
    // Arrange: another replica holds the key's lease for a minute.
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let store = RecordingStore::shared();
    other_replicas_lease(&store, "cust-busy", Duration::from_secs(60)).await;
    let app = spawn_app(TestOptions::with_model(model.backend()).shared_store(&store)).await;

    // Act
    let started = Instant::now();
    let response = app.predict_with("cust-busy", &["no-cache"]).await;

    // Assert: computed at once.
    assert_computed_here_within_2_s(response, started, &model).await;
}

#[tokio::test]
async fn a_lease_released_without_a_prediction_lets_a_waiting_replica_compute_at_once() {
    // Arrange: another replica holds the lease for a minute; its model call will fail.
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let store = RecordingStore::shared();
    let lease = other_replicas_lease(&store, "cust-failed", Duration::from_secs(60)).await;
    let app = spawn_app(TestOptions::with_model(model.backend()).shared_store(&store)).await;
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { app.predict("cust-failed").await }
    });

    // Act: the other replica gives up and releases its lease, having written nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.inner().release_lease(&lease).await.unwrap();
    let released = Instant::now();
    let response = waiting.await.unwrap();

    // Assert: computed here, within a poll or two of the release, not after the minute.
    assert_computed_here_within_2_s(response, released, &model).await;
}
