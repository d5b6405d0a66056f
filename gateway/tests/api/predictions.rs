//! `GET /v1/predictions/{data_id}`: reads the store for the live version, never computes.

use serde_json::Value;

use crate::helpers::{MockAnswer, MockModelService, TestOptions, error_code, spawn_app};

#[tokio::test]
async fn a_prediction_never_computed_is_404_and_the_model_is_not_called() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    let response = app.get("/v1/predictions/row-1").await;

    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "prediction_not_found");
    assert_eq!(model.predict_calls().await, 0);
}

#[tokio::test]
async fn a_computed_prediction_is_returned_as_stored() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;
    let computed: Value = app.predict("row-2").await.json().await.unwrap();

    let stored: Value = app.get("/v1/predictions/row-2").await.json().await.unwrap();

    assert_eq!(stored["prediction"], computed["prediction"]);
    assert_eq!(stored["created_at"], computed["created_at"]);
    assert_eq!(stored["cache"], "hit");
    assert_eq!(model.predict_calls().await, 1);
}
