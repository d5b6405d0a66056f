//! Cache identity and client controls: the run id in the key, the RFC 9111 request
//! directives on `Cache-Control`, the RFC 9211 `Cache-Status` header, the maximum age.

use std::time::Duration;

use chrono::Utc;
use gateway::domain::{DataId, Prediction, StoredPrediction};
use gateway::store::PredictionStore;
use serde_json::Value;

use crate::helpers::{
    MockAnswer, MockModelService, StoreCall, TestApp, TestOptions, app_with, app_with_settings,
    error_code, mock_model, spawn_app,
};

/// Stores a prediction of `data_id` under the mock's model, computed `age` ago.
async fn plant(app: &TestApp, data_id: &str, age: Duration) -> StoredPrediction {
    let prediction = StoredPrediction {
        data_id: DataId::parse(data_id).unwrap(),
        model: mock_model(),
        prediction: Prediction {
            label: "planted".into(),
            probabilities: Default::default(),
            score: None,
        },
        created_at: Utc::now() - age,
        trace_id: "1".repeat(32),
        span_id: "1".repeat(16),
    };
    app.store.put(&prediction).await.unwrap();
    prediction
}

fn cache_status(response: &reqwest::Response) -> String {
    response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Writes of `data_id`'s prediction the gateway asked the store for.
fn writes_of(app: &TestApp, data_id: &str) -> usize {
    app.store
        .calls()
        .iter()
        .filter(|call| matches!(call, StoreCall::Put(key) if key.data_id.as_str() == data_id))
        .count()
}

#[tokio::test]
async fn a_retrained_run_under_the_same_version_label_never_answers_from_the_old_runs_predictions()
{
    let model = MockModelService::start(MockAnswer::Predicts).await;
    // No refresh during the test: only a model answer can tell the gateway of the retrain.
    let app = spawn_app(
        TestOptions::with_model(model.backend())
            .settings(|s| s.model.version_refresh = Duration::from_millis(3_600_000)),
    )
    .await;
    let first: Value = app.predict("row-1").await.json().await.unwrap();
    model.set_run_id("run-1-retrained");

    let other: Value = app.predict("row-2").await.json().await.unwrap();
    let again = app.predict("row-1").await;

    assert_eq!(first["model"]["run_id"], "run-1");
    assert_eq!(other["model"]["run_id"], "run-1-retrained");
    assert_eq!(cache_status(&again), "inference-gateway; fwd=miss; stored");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["cache"], "miss");
    assert_eq!(again["model"]["version"], "1");
    assert_eq!(again["model"]["run_id"], "run-1-retrained");
    assert_eq!(model.predict_calls().await, 3);
}

#[tokio::test]
async fn after_a_retrain_the_old_runs_prediction_is_no_longer_served_once_a_refresh_learns_the_new_run()
 {
    let (model, app) = app_with_settings(MockAnswer::Predicts, |s| {
        s.model.version_refresh = Duration::from_millis(50)
    })
    .await;
    app.predict("row-3").await;
    assert_eq!(app.get("/v1/predictions/row-3").await.status(), 200);

    model.set_run_id("run-1-retrained");

    // Learned by the next refresh (every 50 ms here) or the next model answer, whichever comes first.
    app.wait_until_not_served("row-3", "the retrained run to be learned")
        .await;
    let after: Value = app.predict("row-3").await.json().await.unwrap();
    assert_eq!(after["model"]["run_id"], "run-1-retrained");
    assert_eq!(after["cache"], "miss");
}

#[tokio::test]
async fn hits_misses_and_stored_reads_carry_their_cache_status() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;

    let miss = app.predict("row-4").await;
    let hit = app.predict("row-4").await;
    let stored = app.get("/v1/predictions/row-4").await;
    let not_stored = app.get("/v1/predictions/row-5").await;

    assert_eq!(cache_status(&miss), "inference-gateway; fwd=miss; stored");
    assert_eq!(cache_status(&hit), "inference-gateway; hit");
    assert_eq!(cache_status(&stored), "inference-gateway; hit");
    assert_eq!(not_stored.status(), 404);
    assert_eq!(
        cache_status(&not_stored),
        "inference-gateway; detail=not-cached"
    );
}

#[tokio::test]
async fn no_cache_recomputes_stores_and_answers_miss_even_right_after_a_computation() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    let first: Value = app.predict("row-6").await.json().await.unwrap();

    // Within the coalescing linger of the first computation: it must not be reused.
    let fresh = app.predict_with("row-6", &["No-Cache"]).await;

    assert_eq!(
        cache_status(&fresh),
        "inference-gateway; fwd=request; stored"
    );
    let fresh: Value = fresh.json().await.unwrap();
    assert_eq!(fresh["cache"], "miss");
    assert_eq!(model.predict_calls().await, 2);
    assert_ne!(fresh["created_at"], first["created_at"]);
    assert_eq!(writes_of(&app, "row-6"), 2);
    let stored: Value = app.get("/v1/predictions/row-6").await.json().await.unwrap();
    assert_eq!(stored["created_at"], fresh["created_at"]);
}

#[tokio::test]
async fn no_store_computes_without_writing_and_may_still_be_answered_from_the_store() {
    let (model, app) = app_with(MockAnswer::Predicts).await;

    let unstored = app.predict_with("row-7", &["no-store"]).await;
    assert_eq!(
        cache_status(&unstored),
        "inference-gateway; fwd=miss; stored=?0"
    );
    assert_eq!(writes_of(&app, "row-7"), 0);
    // Nothing lingers from an unwritten computation: the next request computes and stores.
    let stored = app.predict("row-7").await;
    assert_eq!(cache_status(&stored), "inference-gateway; fwd=miss; stored");
    assert_eq!(writes_of(&app, "row-7"), 1);

    // RFC 9111 section 5.2.1.5 forbids storing, not answering from the store.
    let hit = app.predict_with("row-7", &["no-store"]).await;
    assert_eq!(cache_status(&hit), "inference-gateway; hit");
    assert_eq!(model.predict_calls().await, 2);
}

#[tokio::test]
async fn a_no_store_request_does_not_stop_a_shared_computation_from_being_written_for_others() {
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(300)).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    let starter = {
        let app = app.clone();
        tokio::spawn(async move { app.predict_with("row-8", &["no-store"]).await })
    };
    model.wait_until_called("the starter's model call").await;
    let joiner = app.predict("row-8").await;
    let starter = starter.await.unwrap();

    assert_eq!(model.predict_calls().await, 1);
    assert_eq!(
        cache_status(&joiner),
        "inference-gateway; fwd=miss; stored; collapsed"
    );
    assert_eq!(
        cache_status(&starter),
        "inference-gateway; fwd=miss; stored"
    );
    assert_eq!(writes_of(&app, "row-8"), 1);
}

#[tokio::test]
async fn max_age_makes_an_older_stored_prediction_a_stale_miss_and_accepts_a_younger_one() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    plant(&app, "row-9", Duration::from_secs(120)).await;

    let young_enough = app.predict_with("row-9", &["max-age=600"]).await;
    let too_old = app.predict_with("row-9", &["max-age=60"]).await;

    assert_eq!(cache_status(&young_enough), "inference-gateway; hit");
    assert_eq!(
        cache_status(&too_old),
        "inference-gateway; fwd=stale; stored"
    );
    let too_old: Value = too_old.json().await.unwrap();
    assert_eq!(too_old["cache"], "miss");
    assert_ne!(too_old["prediction"]["label"], "planted");
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn only_if_cached_answers_from_the_store_or_504_without_calling_the_model() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    plant(&app, "row-10", Duration::from_secs(120)).await;

    let stored = app.predict_with("row-10", &["only-if-cached"]).await;
    let missing = app.predict_with("row-11", &["only-if-cached"]).await;
    // Consistent with the request's other constraints (RFC 9111 section 5.2.1.7).
    let too_old = app
        .predict_with("row-10", &["only-if-cached", "max-age=60"])
        .await;

    assert_eq!(stored.status(), 200);
    assert_eq!(cache_status(&stored), "inference-gateway; hit");
    for response in [missing, too_old] {
        assert_eq!(response.status(), 504);
        assert_eq!(
            cache_status(&response),
            "inference-gateway; detail=not-cached"
        );
        assert_eq!(error_code(response).await, "not_cached");
    }
    assert_eq!(model.predict_calls().await, 0);
}

#[tokio::test]
async fn the_configured_maximum_age_turns_older_predictions_stale_and_sets_ttl() {
    let (model, app) = app_with_settings(MockAnswer::Predicts, |s| {
        s.store.max_age = Some(Duration::from_secs(60))
    })
    .await;
    plant(&app, "row-12", Duration::from_secs(120)).await;
    plant(&app, "row-13", Duration::from_secs(30)).await;

    let expired = app.predict("row-12").await;
    let fresh = app.get("/v1/predictions/row-13").await;

    assert_eq!(
        cache_status(&expired),
        "inference-gateway; fwd=stale; stored; ttl=60"
    );
    let ttl = cache_status(&fresh);
    assert!(
        ttl == "inference-gateway; hit; ttl=30" || ttl == "inference-gateway; hit; ttl=29",
        "{ttl}"
    );
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn a_batch_honours_each_directive_with_one_cache_status_for_the_batch() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    app.predict("row-20").await;
    plant(&app, "row-21", Duration::from_secs(120)).await;

    let mixed = app.batch_with(&["row-20", "row-22"], &[]).await;
    let all_hits = app.batch_with(&["row-20", "row-22"], &[]).await;
    let stale = app.batch_with(&["row-20", "row-21"], &["max-age=60"]).await;
    let no_store = app.batch_with(&["row-23"], &["no-store"]).await;
    let no_cache = app.batch_with(&["row-20", "row-22"], &["no-cache"]).await;
    let batch_calls = model.batch_calls().await;
    let cached_only = app
        .batch_with(&["row-20", "row-24"], &["only-if-cached"])
        .await;
    let none_cached = app.batch_with(&["row-24"], &["only-if-cached"]).await;

    let statuses: Vec<String> = [&mixed, &all_hits, &stale, &no_store, &no_cache]
        .iter()
        .map(|response| cache_status(response))
        .collect();
    assert_eq!(
        statuses,
        [
            "inference-gateway; fwd=miss; stored",
            "inference-gateway; hit",
            "inference-gateway; fwd=stale; stored",
            "inference-gateway; fwd=miss; stored=?0",
            "inference-gateway; fwd=request; stored",
        ]
    );
    assert_eq!(batch_calls, 4);
    assert_eq!(writes_of(&app, "row-23"), 0);
    let caches: Vec<Value> = no_cache.json::<Value>().await.unwrap()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["cache"].clone())
        .collect();
    assert_eq!(caches, ["miss", "miss"]);
    assert_eq!(cache_status(&cached_only), "inference-gateway; hit");
    let cached_only: Value = cached_only.json().await.unwrap();
    assert_eq!(cached_only["predictions"][0]["data_id"], "row-20");
    assert_eq!(cached_only["errors"][0]["data_id"], "row-24");
    assert_eq!(cached_only["errors"][0]["code"], "not_cached");
    assert_eq!(none_cached.status(), 504);
    assert_eq!(
        cache_status(&none_cached),
        "inference-gateway; detail=not-cached"
    );
    assert_eq!(
        model.batch_calls().await,
        batch_calls,
        "only-if-cached calls no model"
    );
}
