//! `POST /v1/predict/batch`: one multi-get, one model call for the misses, one bulk write.

use serde_json::{Value, json};

use crate::helpers::{MockAnswer, ModelBackend, TestOptions, app_with, spawn_app};

async fn post_batch(app: &crate::helpers::TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/predict/batch", app.base))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_computes_its_misses_in_one_model_call_and_serves_them_as_hits_next_time() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    app.predict("row-2").await;
    let body = json!({"data_ids": ["row-1", "row-2", "unknown-3", "row-1"]});

    let first: Value = post_batch(&app, body.clone()).await.json().await.unwrap();
    let second: Value = post_batch(&app, body).await.json().await.unwrap();

    let caches = |v: &Value| -> Vec<(String, String)> {
        v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["data_id"].as_str().unwrap().into(),
                    p["cache"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(
        caches(&first),
        [
            ("row-1".into(), "miss".into()),
            ("row-2".into(), "hit".into())
        ]
    );
    assert_eq!(first["not_found"], json!(["unknown-3"]));
    assert_eq!(
        caches(&second),
        [
            ("row-1".into(), "hit".into()),
            ("row-2".into(), "hit".into())
        ]
    );
    assert_eq!(
        model.batch_calls().await,
        2,
        "the unknown id is asked again, the known ones are not"
    );
    assert_eq!(first["trace_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn batches_that_are_empty_too_large_or_hold_a_bad_id_are_rejected() {
    let app = spawn_app(
        TestOptions::with_model(ModelBackend::Down).settings(|s| s.server.max_batch_size = 3),
    )
    .await;
    let cases = [
        ("empty", json!({"data_ids": []}), 422, "invalid_body"),
        (
            "over the limit",
            json!({"data_ids": ["a", "b", "c", "d"]}),
            422,
            "invalid_body",
        ),
        ("not a list", json!({"data_ids": "a"}), 422, "invalid_body"),
        (
            "a hostile id",
            json!({"data_ids": ["a", "../_search"]}),
            400,
            "invalid_data_id",
        ),
    ];
    for (description, body, status, code) in cases {
        let response = post_batch(&app, body).await;
        assert_eq!(response.status(), status, "{description}");
        let text = response.text().await.unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["error"]["code"], code, "{description}");
        if description == "a hostile id" {
            assert!(
                text.contains("data_ids[1]"),
                "the message names the position: {text}"
            );
        }
    }
    assert!(app.store.calls().is_empty());
}
