//! The HTTP routes, one file per endpoint group, and the router that joins them.

mod health;
mod openapi;
mod predict;
mod predict_batch;
mod predictions;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::routing::{get, post};

use crate::configuration::ServerSettings;
use crate::domain::{CACHE_IDENTIFIER, CacheStatus, RequestDirectives};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::middleware;
use crate::prediction_service::PredictionService;

pub use openapi::OPENAPI_DOCUMENT;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The cache-aside prediction logic.
    pub predictions: Arc<PredictionService>,
    /// Most ids in one batch request.
    pub max_batch_size: usize,
    /// Set once shutdown began: readiness fails so load balancers move away.
    pub draining: Arc<AtomicBool>,
}

/// Every (method, path) the router serves; the OpenAPI test checks the document
/// against this table and the table against the router.
pub const ROUTES: [(&str, &str); 6] = [
    ("post", "/v1/predict"),
    ("post", "/v1/predict/batch"),
    ("get", "/v1/predictions/{data_id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

/// The full router: the API behind the layer stack, operational routes outside it
/// (probes are neither traced nor shed, so they answer under load).
pub fn router(state: AppState, settings: &ServerSettings, metrics: Metrics) -> Router {
    let api = Router::new()
        .route("/v1/predict", post(predict::predict))
        .route("/v1/predict/batch", post(predict_batch::predict_batch))
        .route(
            "/v1/predictions/{data_id}",
            get(predictions::get_prediction),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let api = middleware::apply(api, settings, metrics);
    // The operational routes answer a wrong method with the API's JSON error too.
    let operational = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::openapi))
        .method_not_allowed_fallback(method_not_allowed);
    operational.merge(api).with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The `Cache-Status` response header (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The request directives of every `Cache-Control` field line of a request (RFC 9111
/// section 5.2; RFC 9110 section 5.3 makes several lines one list).
fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    RequestDirectives::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

/// The `Cache-Status` header of `status`.
pub(crate) fn cache_status_header(status: &CacheStatus) -> [(HeaderName, HeaderValue); 1] {
    // The value holds a token, tokens and integers only, so it is always a valid header
    // value; the bare identifier is the unreachable fallback that keeps this panic-free.
    let value = HeaderValue::from_str(&status.to_string())
        .unwrap_or(HeaderValue::from_static(CACHE_IDENTIFIER));
    [(CACHE_STATUS, value)]
}
