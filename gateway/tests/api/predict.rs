//! `POST /v1/predict`: the cache-aside flow and every status code of the spec.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    MockAnswer, MockModelService, ModelBackend, TestOptions, app_with, app_with_settings,
    assert_json_error, error_code, join_all, mock_key, poll_until, spawn_app,
};

#[tokio::test]
async fn a_first_request_is_a_miss_and_a_second_a_hit_with_one_model_call() {
    let (model, app) = app_with(MockAnswer::Predicts).await;

    let first: Value = app.predict("row-1").await.json().await.unwrap();
    let second: Value = app.predict("row-1").await.json().await.unwrap();

    assert_eq!(first["cache"], "miss");
    assert_eq!(second["cache"], "hit");
    assert_eq!(model.predict_calls().await, 1);
    assert_eq!(second["prediction"], first["prediction"]);
    assert_eq!(second["created_at"], first["created_at"]);
    assert_eq!(first["model"]["version"], "1");
    assert_eq!(first["data_id"], "row-1");
    assert_ne!(first["trace_id"], second["trace_id"]);
}

#[tokio::test]
async fn the_stored_prediction_records_the_trace_that_computed_it() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;

    let response: Value = app.predict("row-2").await.json().await.unwrap();

    let key = mock_key("row-2");
    let stored = app.store.stored(&key).await.expect("stored");
    assert_eq!(stored.trace_id, response["trace_id"].as_str().unwrap());
    assert_eq!(stored.span_id.len(), 16);
}

#[tokio::test]
async fn the_response_continues_the_callers_trace_and_says_so_in_a_header() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let response = app
        .client
        .post(format!("{}/v1/predict", app.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"data_id": "row-3"}))
        .send()
        .await
        .unwrap();

    let header = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"], trace_id);
    assert!(header.starts_with(&format!("00-{trace_id}-")), "{header}");
}

#[tokio::test]
async fn concurrent_requests_for_one_new_id_cost_one_model_call() {
    // The delay keeps the first model call open while the others arrive.
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(200)).await;
    let app = spawn_app(TestOptions::with_model(model.backend())).await;

    let requests = (0..50).map(|_| {
        let app = app.clone();
        async move { app.predict("row-hot").await }
    });
    let responses = join_all(requests).await;

    for response in responses {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(model.predict_calls().await, 1);
}

#[tokio::test]
async fn a_new_model_version_is_never_answered_from_the_old_versions_predictions() {
    let (model, app) = app_with_settings(MockAnswer::Predicts, |s| {
        s.model.version_refresh = Duration::from_millis(50)
    })
    .await;
    let first: Value = app.predict("row-4").await.json().await.unwrap();
    assert_eq!(first["cache"], "miss");

    model.set_version("2");
    // Once the gateway has learned version 2, version 1's prediction is not "stored".
    app.wait_until_not_served("row-4", "version 2 to be learned")
        .await;
    let after: Value = app.predict("row-4").await.json().await.unwrap();

    assert_eq!(after["cache"], "miss");
    assert_eq!(after["model"]["version"], "2");
    assert_eq!(model.predict_calls().await, 2);
}

#[tokio::test]
async fn an_unreachable_store_is_bypassed_and_the_model_answers() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let app = spawn_app(TestOptions::with_model(model.backend()).failing_store()).await;

    let response = app.predict("row-5").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-status"],
        "inference-gateway; fwd=miss; stored=?0; detail=bypass",
        "the write went to the write-behind queue, not the store"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cache"], "bypass");
}

#[tokio::test]
async fn an_unknown_data_id_is_404() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;

    let response = app.predict("unknown-9").await;

    assert_json_error(response, 404, "unknown_data_id").await;
}

#[tokio::test]
async fn a_model_service_that_is_down_gives_503_with_retry_after() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;

    let response = app.predict("row-6").await;

    assert!(response.headers().contains_key("retry-after"));
    assert_json_error(response, 503, "model_unavailable").await;
}

#[tokio::test]
async fn an_undecodable_model_answer_gives_an_opaque_502() {
    let (_model, app) = app_with(MockAnswer::Malformed).await;

    let response = app.predict("row-7").await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_bad_answer");
    assert!(
        !body.to_string().contains("unexpected"),
        "5xx must not echo upstream text"
    );
}

#[tokio::test]
async fn a_model_that_does_not_answer_in_time_gives_504() {
    let (_model, app) = app_with_settings(MockAnswer::Hangs, |s| {
        s.model.timeout = Duration::from_millis(200)
    })
    .await;

    let response = app.predict("row-8").await;

    assert_json_error(response, 504, "model_timeout").await;
}

#[tokio::test]
async fn a_request_past_its_total_deadline_gives_504() {
    // A body that never finishes keeps the handler waiting on the client, not the model:
    // only the total deadline can end it.
    let (_model, app) = app_with_settings(MockAnswer::Predicts, |s| {
        s.model.timeout = Duration::from_millis(100);
        s.server.request_timeout = Duration::from_millis(200);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 40\r\n\r\n{\"data_id\": ",
        )
        .await
        .unwrap();

    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the client finished its body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);

    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("deadline_exceeded"), "{answer}");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_are_shed_with_503_and_retry_after() {
    let (model, app) = app_with_settings(MockAnswer::Hangs, |s| {
        s.server.max_in_flight = 1;
        s.model.timeout = Duration::from_millis(3_000);
    })
    .await;
    let stuck = {
        let client = app.client.clone();
        let url = format!("{}/v1/predict", app.base);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&serde_json::json!({"data_id": "row-stuck"}))
                .send()
                .await
        })
    };
    // Wait until the first request holds the only slot (it reached the model).
    model
        .wait_until_called("the first request to reach the model")
        .await;

    let response = app.predict("row-10").await;

    assert_eq!(response.headers()["retry-after"], "1");
    assert_json_error(response, 503, "overloaded").await;
    stuck.abort();
}

#[tokio::test]
async fn bodies_the_gateway_cannot_use_get_the_fitting_4xx() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;
    let limit = gateway::configuration::Settings::default()
        .server
        .max_body_bytes;
    let oversized = format!("{{\"data_id\": \"{}\"}}", "a".repeat(limit));
    // (description, content type, body, status, error code)
    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            b"{\"data_id\":".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "not JSON at all",
            Some("application/json"),
            b"data_id=1".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "non-UTF-8 bytes",
            Some("application/json"),
            b"{\"data_id\": \"\xff\xfe\"}".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "wrong content type",
            Some("text/plain"),
            b"{\"data_id\": \"1\"}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            None,
            b"{\"data_id\": \"1\"}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            Some("application/json"),
            oversized.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "missing data_id",
            Some("application/json"),
            b"{}".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "data_id of the wrong type",
            Some("application/json"),
            b"{\"data_id\": 5}".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "a list instead of an object",
            Some("application/json"),
            b"[\"1\"]".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "an empty data_id",
            Some("application/json"),
            b"{\"data_id\": \"\"}".to_vec(),
            400,
            "invalid_data_id",
        ),
    ];
    for (description, content_type, body, status, code) in cases {
        let response = app.post_raw(content_type, body).await;
        assert_eq!(response.status(), status, "{description}");
        assert_eq!(error_code(response).await, code, "{description}");
    }
    assert!(
        app.store.calls().is_empty(),
        "no rejected body reaches the store"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;

    let not_found = app.get("/v2/nothing").await;
    let wrong_method = app.get("/v1/predict").await;

    assert_json_error(not_found, 404, "not_found").await;
    assert_json_error(wrong_method, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_model_that_keeps_failing_opens_the_circuit_hits_still_serve_and_it_closes_again() {
    let (model, app) = app_with_settings(MockAnswer::Predicts, |s| {
        s.model.timeout = Duration::from_millis(1_000);
        s.model.breaker_threshold = 2;
        s.model.breaker_cool_down = Duration::from_millis(300);
    })
    .await;
    assert_eq!(app.predict("row-cached").await.status(), 200);
    model.set_answer(MockAnswer::Hangs);
    for id in ["row-a", "row-b"] {
        assert_eq!(app.predict(id).await.status(), 504, "{id}");
    }
    let calls_when_opened = model.predict_calls().await;

    let started = std::time::Instant::now();
    let refused = app.predict("row-c").await;
    let refused_in = started.elapsed();
    let hit = app.predict("row-cached").await;

    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(
        refused_in < Duration::from_millis(150),
        "failed fast: {refused_in:?}"
    );
    assert_eq!(error_code(refused).await, "model_unavailable");
    assert_eq!(
        model.predict_calls().await,
        calls_when_opened,
        "no call while open"
    );
    assert_eq!(hit.status(), 200, "hits are served while the model is down");

    model.set_answer(MockAnswer::Predicts);
    poll_until(
        async || app.predict("row-d").await.status() == 200,
        "the circuit to close",
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn a_write_the_store_refused_is_retried_until_the_store_takes_it() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;
    app.store.set_failing(true);

    let response: Value = app.predict("row-later").await.json().await.unwrap();
    app.store.set_failing(false);

    assert_eq!(response["cache"], "bypass");
    let key = mock_key("row-later");
    poll_until(
        async || app.store.stored(&key).await.is_some(),
        "the queued write to land",
        Duration::from_secs(5),
    )
    .await;
    let stored = app.store.stored(&key).await.unwrap();
    assert_eq!(stored.trace_id, response["trace_id"].as_str().unwrap());
}
