//! Hostile data ids: none reaches another store endpoint or index. Each is either
//! rejected at the edge (400) or becomes a key whose document path is the alias and a
//! 64-hex hash, whatever the id holds.

use serde_json::Value;

use crate::helpers::{MockAnswer, StoreCall, app_with};

/// (description, id) of ids an attacker tries first.
fn hostile_ids() -> Vec<(&'static str, String)> {
    vec![
        ("parent directory", "..".into()),
        ("current directory", ".".into()),
        ("slash", "/".into()),
        ("path traversal", "../../_cluster/settings".into()),
        ("encoded slash", "%2F".into()),
        ("search endpoint", "_search".into()),
        ("all indices", "_all".into()),
        ("wildcard", "*".into()),
        ("multi-index", "a,b".into()),
        ("query string", "1?refresh=true".into()),
        ("fragment", "1#x".into()),
        ("10,000 characters", "a".repeat(10_000)),
        ("NUL byte", "a\0b".into()),
        ("newline (header injection)", "1\r\nx-injected: 1".into()),
        ("non-ASCII", "データ".into()),
    ]
}

/// The only store calls allowed: on the configured alias, with a hashed document id.
fn assert_store_calls_are_confined(app: &crate::helpers::TestApp, description: &str) {
    for call in app.store.calls() {
        let key = match call {
            StoreCall::Get(key) | StoreCall::Put(key) => key,
        };
        let path = gateway::store::document_path("ml-predictions", &key);
        let (prefix, document) = path.rsplit_once('/').unwrap();
        assert_eq!(prefix, "/ml-predictions/_doc", "{description}");
        assert!(
            document.len() == 64 && document.bytes().all(|b| b.is_ascii_hexdigit()),
            "{description}: {path}"
        );
    }
}

#[tokio::test]
async fn hostile_ids_in_the_body_are_rejected_or_confined_to_one_document() {
    let (_model, app) = app_with(MockAnswer::Predicts).await;
    for (description, id) in hostile_ids() {
        let response = app.predict(&id).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let valid = gateway::domain::DataId::parse(&id).is_ok();
        if valid {
            // A valid id that looks like an API name is just a row id.
            assert!(
                status == 200 || status == 404,
                "{description}: {status} {body}"
            );
        } else {
            assert_eq!(status, 400, "{description}: {body}");
            assert_eq!(body["error"]["code"], "invalid_data_id", "{description}");
        }
        assert_store_calls_are_confined(&app, description);
    }
    // Only the valid ones reached the store, each as itself.
    let reached: Vec<String> = app
        .store
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            StoreCall::Get(key) => Some(key.data_id.as_str().to_owned()),
            StoreCall::Put(_) => None,
        })
        .collect();
    assert_eq!(reached, vec!["_search".to_owned(), "_all".to_owned()]);
}

#[tokio::test]
async fn hostile_ids_in_the_path_are_rejected_or_confined_to_one_document() {
    let (model, app) = app_with(MockAnswer::Predicts).await;
    // Paths as an attacker's client sends them, byte for byte.
    let long = format!("/v1/predictions/{}", "a".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("dot-dot segment", b"/v1/predictions/..".to_vec(), &[400]),
        (
            "encoded dot-dot",
            b"/v1/predictions/%2E%2E".to_vec(),
            &[400],
        ),
        ("encoded slash", b"/v1/predictions/a%2Fb".to_vec(), &[400]),
        (
            "double-encoded slash",
            b"/v1/predictions/a%252Fb".to_vec(),
            &[400],
        ),
        ("wildcard", b"/v1/predictions/*".to_vec(), &[400]),
        (
            "search endpoint",
            b"/v1/predictions/_search".to_vec(),
            &[404],
        ),
        (
            "non-UTF-8 bytes",
            b"/v1/predictions/%FF%FE".to_vec(),
            &[400],
        ),
        ("10,000 characters", long.into_bytes(), &[400]),
        // A second segment is a different (unknown) route, never an id with a slash.
        (
            "extra segment",
            b"/v1/predictions/a/_search".to_vec(),
            &[404],
        ),
    ];
    for (description, path, statuses) in cases {
        let (status, body) = app.raw_get(&path).await;
        assert!(statuses.contains(&status), "{description}: {status} {body}");
        assert!(
            body["error"]["code"].is_string(),
            "{description}: JSON error body {body}"
        );
        assert_store_calls_are_confined(&app, description);
    }
    assert_eq!(
        model.predict_calls().await,
        0,
        "reading a prediction never computes one"
    );
}
