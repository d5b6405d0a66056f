//! `GET /openapi.json` documents every answer the router gives, and is the committed
//! snapshot `tests/snapshots/openapi.json`.

use axum::response::IntoResponse;
use gateway::error::ApiError;
use gateway::routes::{
    DeclaredErrors, GetPredictionErrors, PredictBatchErrors, PredictErrors, body_errors,
    fallback_errors, layer_errors,
};
use serde_json::Value;

use crate::helpers::{ModelBackend, TestOptions, spawn_app};

/// What an error really answers: status, code and the headers the document must name.
struct Answer {
    status: u16,
    code: String,
    headers: Vec<&'static str>,
}

async fn answer(error: ApiError) -> Answer {
    let response = error.into_response();
    let status = response.status().as_u16();
    let headers = ["retry-after", "cache-status"]
        .into_iter()
        .filter(|name| response.headers().contains_key(*name))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    Answer {
        status,
        code: body["error"]["code"].as_str().unwrap().to_owned(),
        headers,
    }
}

/// Fails unless `response` (an OpenAPI response object) documents `answer`.
fn assert_documents(response: &Value, answer: &Answer, context: &str) {
    assert_eq!(
        response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
        "{context}: {} is not documented with the JSON error body",
        answer.status
    );
    let description = response["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&format!("`{}`", answer.code)),
        "{context}: {} does not name the code {}",
        answer.status,
        answer.code
    );
    let documented: Vec<String> = response["headers"]
        .as_object()
        .map(|headers| headers.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    for header in &answer.headers {
        assert!(
            documented.iter().any(|h| h == header),
            "{context}: {} {} carries {header}, which the document does not name",
            answer.status,
            answer.code
        );
    }
}

async fn served_document() -> Value {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;
    app.get("/openapi.json").await.json().await.unwrap()
}

#[tokio::test]
async fn every_error_a_route_declares_is_documented_with_its_status_code_and_headers() {
    let document = served_document().await;
    let routes = [
        ("post", "/v1/predict", PredictErrors::errors(), true),
        (
            "post",
            "/v1/predict/batch",
            PredictBatchErrors::errors(),
            true,
        ),
        (
            "get",
            "/v1/predictions/{data_id}",
            GetPredictionErrors::errors(),
            false,
        ),
    ];
    for (method, path, declared, takes_body) in routes {
        let operation = &document["paths"][path][method];
        let context = format!("{method} {path}");
        assert!(operation.is_object(), "{context} is not documented");
        // The layer stack answers on every API route, the body extractor on those with a
        // body, whatever a route declares.
        let mut errors = declared;
        errors.extend(layer_errors());
        if takes_body {
            errors.extend(body_errors());
        }
        for error in errors {
            let answer = answer(error).await;
            let response = &operation["responses"][answer.status.to_string()];
            assert_documents(response, &answer, &context);
            assert!(
                response["headers"]["traceresponse"].is_object(),
                "{context}: {} does not name traceresponse",
                answer.status
            );
        }
        assert!(operation["responses"]["200"]["headers"]["Cache-Status"].is_object());
        assert!(
            operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Cache-Control" && p["in"] == "header"),
            "{context} does not document the Cache-Control request header"
        );
    }
    for (error, name) in fallback_errors()
        .into_iter()
        .zip(["RouteNotFound", "MethodNotAllowed"])
    {
        let answer = answer(error).await;
        assert_documents(&document["components"]["responses"][name], &answer, name);
    }
}

/// A request to send: description, method, path, documented path, content type, body.
type Probe = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    String,
);

#[tokio::test]
async fn every_answer_to_a_probe_is_documented_for_its_route() {
    // Arrange: no model service, so the routes answer their failures too.
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let big = format!(r#"{{"data_id": "{}"}}"#, "a".repeat(300 * 1024));
    let probes: [Probe; 14] = [
        (
            "a valid id, model down",
            "post",
            "/v1/predict",
            "/v1/predict",
            Some("application/json"),
            r#"{"data_id": "row-1"}"#.into(),
        ),
        (
            "a bad id",
            "post",
            "/v1/predict",
            "/v1/predict",
            Some("application/json"),
            r#"{"data_id": "../x"}"#.into(),
        ),
        (
            "not JSON",
            "post",
            "/v1/predict",
            "/v1/predict",
            Some("application/json"),
            "{".into(),
        ),
        (
            "the wrong shape",
            "post",
            "/v1/predict",
            "/v1/predict",
            Some("application/json"),
            "[]".into(),
        ),
        (
            "no content type",
            "post",
            "/v1/predict",
            "/v1/predict",
            None,
            r#"{"data_id": "row-1"}"#.into(),
        ),
        (
            "a body over the limit",
            "post",
            "/v1/predict",
            "/v1/predict",
            Some("application/json"),
            big.clone(),
        ),
        (
            "a valid batch, model down",
            "post",
            "/v1/predict/batch",
            "/v1/predict/batch",
            Some("application/json"),
            r#"{"data_ids": ["row-1"]}"#.into(),
        ),
        (
            "an empty batch",
            "post",
            "/v1/predict/batch",
            "/v1/predict/batch",
            Some("application/json"),
            r#"{"data_ids": []}"#.into(),
        ),
        (
            "a bad id in a batch",
            "post",
            "/v1/predict/batch",
            "/v1/predict/batch",
            Some("application/json"),
            r#"{"data_ids": ["*"]}"#.into(),
        ),
        (
            "a batch over the body limit",
            "post",
            "/v1/predict/batch",
            "/v1/predict/batch",
            Some("application/json"),
            big,
        ),
        (
            "a stored prediction, model down",
            "get",
            "/v1/predictions/row-1",
            "/v1/predictions/{data_id}",
            None,
            String::new(),
        ),
        (
            "a bad id in the path",
            "get",
            "/v1/predictions/a*b",
            "/v1/predictions/{data_id}",
            None,
            String::new(),
        ),
        (
            "readiness, model down",
            "get",
            "/readyz",
            "/readyz",
            None,
            String::new(),
        ),
        (
            "liveness",
            "get",
            "/healthz",
            "/healthz",
            None,
            String::new(),
        ),
    ];
    for (description, method, path, documented_path, content_type, body) in probes {
        // Act
        let url = format!("{}{path}", app.base);
        let mut request = match method {
            "get" => app.client.get(url),
            _ => app.client.post(url).body(body),
        };
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        // Assert
        let status = response.status().as_u16().to_string();
        let documented = &document["paths"][documented_path][method]["responses"][&status];
        assert!(
            documented.is_object(),
            "{description}: {method} {path} answered {status}, which the document does not list"
        );
        if !response.status().is_success() && documented_path.starts_with("/v1/") {
            let code = response.json::<Value>().await.unwrap()["error"]["code"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                documented["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{code}`")),
                "{description}: {method} {path} answered {status} {code}, not documented"
            );
        }
    }
    // The fallbacks, documented as components.
    for (method, path, name) in [
        ("get", "/v1/nothing", "RouteNotFound"),
        ("get", "/v1/predict", "MethodNotAllowed"),
        ("post", "/healthz", "MethodNotAllowed"),
    ] {
        let url = format!("{}{path}", app.base);
        let request = match method {
            "get" => app.client.get(url),
            _ => app.client.post(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let code = response.json::<Value>().await.unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let answer = Answer {
            status,
            code,
            headers: Vec::new(),
        };
        assert_documents(&document["components"]["responses"][name], &answer, path);
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        6,
        "a route is missing or extra: {:?}",
        paths.keys()
    );
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", app.base, path.replace("{data_id}", "row-1"));
            let request = match method.as_str() {
                "get" => app.client.get(url),
                "post" => app
                    .client
                    .post(url)
                    .json(&serde_json::json!({"data_id": "row-1"})),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let code = if response.status() == 404 || response.status() == 405 {
                response.json::<Value>().await.unwrap()["error"]["code"].clone()
            } else {
                Value::Null
            };
            assert!(
                !matches!(code.as_str(), Some("not_found" | "method_not_allowed")),
                "{method} {path} is documented but not served"
            );
        }
    }
}

/// Where the committed document lives; a difference fails the test below.
const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

#[tokio::test]
async fn the_document_matches_the_committed_snapshot() {
    let served = served_document().await;
    let generated = gateway::routes::openapi_document()
        .to_pretty_json()
        .unwrap()
        + "\n";
    assert_eq!(
        served,
        serde_json::from_str::<Value>(&generated).unwrap(),
        "the served document is not the generated one"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == generated,
        "the OpenAPI document differs from {SNAPSHOT}; if the change is intended, run \
         `UPDATE_SNAPSHOTS=1 cargo test -p gateway --test api openapi` and commit the file"
    );
}
