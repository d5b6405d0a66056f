//! `GET /v1/predictions/{data_id}`: reads the store for the live version, never computes.

use serde_json::Value;

use crate::helpers::{MockAnswer, app_with, assert_json_error};

#[tokio::test]
async fn a_prediction_never_computed_is_404_and_the_model_is_not_called() {
    let (model, app) = app_with(MockAnswer::Predicts).await;

    let response = app.get("/v1/predictions/row-1").await;

    assert_json_error(response, 404, "prediction_not_found").await;
    assert_eq!(model.predict_calls().await, 0);
}

#[tokio::test]
async fn a_computed_prediction_is_returned_as_stored() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    let computed: Value = app.predict("row-2").await.json().await.unwrap();

    let stored: Value = app.get("/v1/predictions/row-2").await.json().await.unwrap();

    assert_eq!(stored["prediction"], computed["prediction"]);
    assert_eq!(stored["created_at"], computed["created_at"]);
    assert_eq!(stored["cache"], "hit");
    assert_eq!(model.predict_calls().await, 1);
}
