//! `GET /healthz` (liveness) and `GET /readyz` (readiness: the store and the model answer).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

/// The liveness answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// The readiness answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready`, or `draining` once shutdown began.
    status: &'static str,
    /// The dependencies that did not answer: `store`, `model`.
    failing: Vec<&'static str>,
    /// Per dependency: `status` (`up` or `down`) and what was learnt (store `kind`,
    /// `live_model`) or the `error`.
    #[schema(value_type = Object)]
    checks: Value,
}

/// 200 while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness: 200 while the process serves",
    responses((status = 200, description = "Alive", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 when the store and the model service answer; 503 naming the failing ones, or
/// 503 `draining` from the moment shutdown began (the dependencies are not asked then).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness: 200 when the store and the model service answer, 503 naming the \
        failing ones",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, or draining", body = Readiness),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "draining",
                failing: Vec::new(),
                checks: json!({}),
            }),
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
        Json(Readiness {
            status: summary,
            failing,
            checks: json!({"store": store, "model": model}),
        }),
    )
}
