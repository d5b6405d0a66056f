//! `GET /openapi.json` describes every route the router serves.

use serde_json::Value;

use crate::helpers::{ModelBackend, TestOptions, spawn_app};

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_every_documented_route_is_served() {
    let app = spawn_app(TestOptions::with_model(ModelBackend::Down)).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut served: Vec<(String, String)> = gateway::routes::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    served.sort();
    assert_eq!(documented_sorted, served);

    // And the table matches the router: each route answers something other than
    // "no such route" or "wrong method".
    for (method, path) in &served {
        let path = path.replace("{data_id}", "row-1");
        let url = format!("{}{path}", app.base);
        let request = match method.as_str() {
            "get" => app.client.get(url),
            "post" => app
                .client
                .post(url)
                .json(&serde_json::json!({"data_id": "row-1"})),
            other => panic!("unexpected method {other}"),
        };
        let response = request.send().await.unwrap();
        assert!(
            response.status() != 404 && response.status() != 405
                || response
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v == "application/json")
                    && !matches!(
                        response.json::<Value>().await.unwrap()["error"]["code"].as_str(),
                        Some("not_found" | "method_not_allowed")
                    ),
            "{method} {path} is documented but not served"
        );
    }
}
