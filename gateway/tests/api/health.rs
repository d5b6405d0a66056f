//! `GET /healthz` and `GET /readyz`.

use serde_json::Value;

use crate::helpers::{MockAnswer, MockModelService, ModelBackend, TestOptions, spawn_app};

#[tokio::test]
async fn liveness_is_200_even_when_dependencies_are_down() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readiness_is_503_naming_the_model_service_when_it_is_down() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["model"]));
}

#[tokio::test]
async fn readiness_is_503_naming_the_store_when_it_fails() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let mut options = TestOptions::with_model(model.backend());
    options.failing_store = true;
    let app = spawn_app(options).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["store"]));
}

#[tokio::test]
async fn readiness_is_200_when_both_answer() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["model"]["live_model"]["version"], "1");
}
