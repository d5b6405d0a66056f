//! Connection hygiene: slow and idle clients are cut off, answers the server writes
//! itself are JSON, and shutdown drains in stages.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{MockAnswer, MockModelService, ModelBackend, TestApp, TestOptions, spawn_app};

/// Reads until the peer closes; `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut received))
        .await
        .ok()
        .map(|_| received)
}

/// An answer as written on the socket: status, head and body.
fn parse(answer: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

async fn app_with_timeouts(header_read_ms: u64, idle_ms: u64) -> TestApp {
    spawn_app(
        TestOptions::with_model(ModelBackend::Down).settings(move |settings| {
            settings.server.header_read_timeout = Duration::from_millis(header_read_ms);
            settings.server.idle_timeout = Duration::from_millis(idle_ms);
        }),
    )
    .await
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_is_cut_off_by_the_header_read_timeout() {
    let app = app_with_timeouts(300, 60_000).await;
    let mut stream = connect_and_send(&app, b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n").await;

    assert!(
        closed_within(&mut stream, Duration::from_secs(3))
            .await
            .is_some(),
        "the connection is closed"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let app = app_with_timeouts(60_000, 300).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();

    assert!(
        closed_within(&mut stream, Duration::from_secs(3))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app_with_timeouts(60_000, 300).await;
    let mut stream = connect_and_send(&app, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;

    let answer = closed_within(&mut stream, Duration::from_secs(3))
        .await
        .expect("closed after the idle timeout");

    assert_eq!(parse(&answer).0, 200, "the request itself was answered");
}

#[tokio::test]
async fn a_request_in_progress_is_not_cut_off_by_the_idle_timeout() {
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(600)).await;
    let app = spawn_app(
        TestOptions::with_model(model.backend()).settings(|settings| {
            settings.server.idle_timeout = Duration::from_millis(100);
            settings.server.header_read_timeout = Duration::from_millis(100);
        }),
    )
    .await;

    let response = app.predict("row-1").await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unparsable_and_oversized_request_heads_get_json_errors() {
    let app = app_with_timeouts(5_000, 5_000).await;
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "a header line without a colon",
            "GET /healthz HTTP/1.1\r\nhost: x\r\nnot a header\r\n\r\n".to_owned(),
            400,
        ),
        (
            "more header fields than the server takes",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
        ),
    ];
    for (description, request, expected) in cases {
        let mut stream = connect_and_send(&app, request.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(3))
            .await
            .expect("answered and closed");
        let (status, head, body) = parse(&answer);
        assert_eq!(status, expected, "{description}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{description}: {head}"
        );
        let body: Value = serde_json::from_str(&body).expect(description);
        assert!(body["error"]["code"].is_string(), "{description}: {body}");
    }
}

#[tokio::test]
async fn operational_routes_answer_a_wrong_method_with_a_json_405() {
    let app = app_with_timeouts(5_000, 5_000).await;
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let response = app
            .client
            .delete(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let body: Value = response.json().await.expect(path);
        // Operational routes are not traced, so the trace id is empty.
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "{path}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        assert!(body["error"]["trace_id"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn on_shutdown_readiness_fails_at_once_while_requests_are_still_served_then_it_stops() {
    let model = MockModelService::start(MockAnswer::Predicts).await;
    let app = spawn_app(
        TestOptions::with_model(model.backend()).settings(|settings| {
            settings.server.shutdown_drain_delay = Duration::from_millis(800);
            settings.server.shutdown_grace = Duration::from_millis(500);
        }),
    )
    .await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let readiness = app.get("/readyz").await;
    let prediction = app.predict("row-1").await;

    assert_eq!(readiness.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        prediction.status(),
        StatusCode::OK,
        "still served while draining"
    );
    assert_eq!(
        prediction.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "clients are told to leave"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        TcpStream::connect(app.address).await.is_err(),
        "no longer accepting after the drain delay"
    );
}

/// A new connection to `app` on which `bytes` were sent.
async fn connect_and_send(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// A raw `POST /v1/predict` for `data_id`, on a connection of its own.
async fn send_predict(address: std::net::SocketAddr, data_id: &str) -> TcpStream {
    let body = format!(r#"{{"data_id":"{data_id}"}}"#);
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    stream
}

/// `GET /healthz` on a new connection; the status, or 0 if the connection closed unanswered.
async fn health_on_new_connection(address: std::net::SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered or closed");
    parse(&answer).0
}

#[tokio::test]
async fn at_the_connection_cap_an_idle_connection_makes_room_for_a_new_one() {
    let app = spawn_app(
        TestOptions::with_model(ModelBackend::Down).settings(|settings| {
            settings.server.max_connections = 3;
            // The cap counts the connections of every serving thread.
            settings.server.worker_threads = 2;
        }),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(app.address).await.unwrap());
    }

    let status = health_on_new_connection(app.address).await;

    assert_eq!(status, 200, "an idle connection gave up its place");
    let mut closed = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 1,
        "the gateway closed one of the idle connections"
    );
}

#[tokio::test]
async fn at_the_connection_cap_with_every_connection_busy_a_new_one_is_refused_until_one_ends() {
    let model =
        MockModelService::start_with_delay(MockAnswer::Predicts, Duration::from_millis(1_500))
            .await;
    let app = spawn_app(
        TestOptions::with_model(model.backend()).settings(|settings| {
            settings.server.max_connections = 3;
            settings.server.worker_threads = 2;
        }),
    )
    .await;
    let mut busy = Vec::new();
    for i in 0..3 {
        busy.push(send_predict(app.address, &format!("row-{i}")).await);
    }
    crate::helpers::poll_until(
        async || model.predict_calls().await == 3,
        "three predictions in flight",
        Duration::from_secs(5),
    )
    .await;

    let refused = health_on_new_connection(app.address).await;
    for stream in &mut busy {
        let answer = closed_within(stream, Duration::from_millis(100)).await;
        assert!(answer.is_none(), "a busy connection is never evicted");
    }
    for stream in &mut busy {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "the busy requests finish");
    }
    drop(busy);
    let mut after = 0;
    crate::helpers::poll_until(
        async || {
            after = health_on_new_connection(app.address).await;
            after == 200
        },
        "a new connection answered once the busy ones closed",
        Duration::from_secs(5),
    )
    .await;

    assert_eq!(refused, 0, "closed without an answer at the cap");
    assert_eq!(after, 200);
}

/// What a prediction request in flight gets when the gateway shuts down (no drain delay, a
/// grace period of `grace`) while its model call takes `model_delay`: the bytes written
/// before the connection closed (within 5 s).
async fn answer_in_flight_at_shutdown(model_delay: Duration, grace: Duration) -> Vec<u8> {
    let (model, app) = crate::helpers::app_stopping_with_grace(model_delay, grace).await;
    let mut in_flight = send_predict(app.address, "row-in-flight").await;
    model.wait_until_called("the request in flight").await;

    app.begin_shutdown();

    crate::helpers::poll_until(
        async || TcpStream::connect(app.address).await.is_err(),
        "the gateway to stop accepting",
        Duration::from_secs(3),
    )
    .await;
    closed_within(&mut in_flight, Duration::from_secs(5))
        .await
        .expect("the connection closed, long before the slowest model answer")
}

#[tokio::test]
async fn on_shutdown_a_request_in_flight_is_finished_within_the_grace_period() {
    let answer =
        answer_in_flight_at_shutdown(Duration::from_millis(800), Duration::from_secs(5)).await;

    assert_eq!(
        parse(&answer).0,
        200,
        "finished although no longer accepting"
    );
}

#[tokio::test]
async fn on_shutdown_a_request_outlasting_the_grace_period_is_cut_off_when_it_ends() {
    let answer =
        answer_in_flight_at_shutdown(Duration::from_secs(10), Duration::from_millis(300)).await;

    assert!(answer.is_empty(), "closed unanswered: {answer:?}");
}
