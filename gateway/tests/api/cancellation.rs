//! Work shared between requests outlives the requester: a client that hangs up, or
//! whose deadline passes, never throws away a model call or its store write.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    MockAnswer, MockModelService, TestApp, TestOptions, app_stopping_with_grace, app_with,
    mock_key, poll_until, spawn_app,
};

/// `POST /v1/predict` from a client that gives up after `patience`.
async fn impatient_predict(app: &TestApp, data_id: &str, patience: Duration) {
    let result = app
        .client
        .post(format!("{}/v1/predict", app.base))
        .json(&json!({ "data_id": data_id }))
        .timeout(patience)
        .send()
        .await;
    assert!(result.is_err(), "the client was meant to hang up first");
}

async fn cache_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["cache"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_that_hangs_up_during_a_miss_still_gets_the_prediction_stored() {
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(400)).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    impatient_predict(&app, "row-1", Duration::from_millis(100)).await;
    poll_until(
        async || app.get("/v1/predictions/row-1").await.status() == StatusCode::OK,
        "the prediction to be stored",
        Duration::from_secs(5),
    )
    .await;
    let patient = app.predict("row-1").await;

    assert_eq!(cache_of(patient).await, "hit");
    assert_eq!(
        model.predict_calls().await,
        1,
        "one model call for all of it"
    );
}

#[tokio::test]
async fn a_miss_cut_off_by_shutdown_still_gets_its_prediction_stored() {
    let (model, app) =
        app_stopping_with_grace(Duration::from_millis(800), Duration::from_millis(100)).await;
    let cut_off = tokio::spawn({
        let app = app.clone();
        async move {
            app.client
                .post(format!("{}/v1/predict", app.base))
                .json(&json!({ "data_id": "row-1" }))
                .send()
                .await
        }
    });
    model.wait_until_called("the miss's model call").await;

    app.begin_shutdown();

    assert!(
        cut_off.await.unwrap().is_err(),
        "the request outlasted the grace period and was cut off"
    );
    // The serving threads have ended; the computation runs on the main runtime.
    poll_until(
        async || app.store.stored(&mock_key("row-1")).await.is_some(),
        "the prediction to be stored",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn a_waiter_whose_leader_hung_up_gets_the_leaders_result_without_a_second_call() {
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(400)).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    let leader = impatient_predict(&app, "row-2", Duration::from_millis(100));
    let waiter = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.predict("row-2").await
    };
    let ((), waiter) = tokio::join!(leader, waiter);

    assert_eq!(cache_of(waiter).await, "miss");
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn a_batch_serves_its_stored_predictions_and_lists_the_ids_it_could_not_compute() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    assert_eq!(app.predict("row-1").await.status(), StatusCode::OK);
    model.set_answer(MockAnswer::Unavailable);

    let response = app.batch_with(&["row-1", "row-9"], &[]).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let served: Vec<&str> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data_id"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["row-1"], "{body}");
    assert_eq!(body["errors"][0]["data_id"], "row-9", "{body}");
    assert_eq!(body["errors"][0]["code"], "model_unavailable", "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_batch_with_nothing_to_serve_fails_whole_with_retry_after() {
    let (_model, app) = app_with(MockAnswer::Unavailable).await;

    let response = app.batch_with(&["row-7", "row-8"], &[]).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}
