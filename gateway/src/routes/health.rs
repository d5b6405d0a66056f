//! `GET /healthz` (liveness) and `GET /readyz` (readiness: the store and the model answer).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// 200 while the process serves.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the store and the model service answer; 503 naming the failing ones, or
/// 503 `draining` from the moment shutdown began (the dependencies are not asked then).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "failing": [], "checks": {}})),
        );
    }
    let status = state.predictions.check_dependencies().await;
    let (store_kind, store) = status.store;
    let mut failing = Vec::new();
    let store = match store {
        Ok(()) => json!({"status": "up", "kind": store_kind}),
        Err(error) => {
            failing.push("store");
            json!({"status": "down", "kind": store_kind, "error": error})
        }
    };
    let model = match status.model {
        Ok(model) => json!({"status": "up", "live_model": model}),
        Err(error) => {
            failing.push("model");
            json!({"status": "down", "error": error})
        }
    };
    let code = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let summary = if failing.is_empty() {
        "ready"
    } else {
        "not_ready"
    };
    (
        code,
        Json(json!({
            "status": summary,
            "failing": failing,
            "checks": {"store": store, "model": model}
        })),
    )
}
