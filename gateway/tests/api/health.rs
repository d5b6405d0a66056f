//! `GET /healthz` and `GET /readyz`.

use serde_json::{Value, json};

use crate::helpers::{
    MockAnswer, MockModelService, ModelBackend, TestOptions, app_with, spawn_app,
};

#[tokio::test]
async fn liveness_is_200_even_when_dependencies_are_down() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readiness_is_503_naming_the_dependency_that_does_not_answer() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    // (description, the gateway's dependencies, what readiness names as failing)
    let cases = [
        (
            "the model service is down",
            TestOptions::with_model(ModelBackend::Down),
            json!(["model"]),
        ),
        (
            "the store fails",
            TestOptions::with_model(model.backend()).failing_store(),
            json!(["store"]),
        ),
    ];
    for (description, options, failing) in cases {
        let app = spawn_app(options).await;

        let response = app.get("/readyz").await;

        assert_eq!(response.status(), 503, "{description}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["failing"], failing, "{description}");
    }
}

#[tokio::test]
async fn readiness_is_200_when_both_answer() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["model"]["live_model"]["version"], "1");
}
