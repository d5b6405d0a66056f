//! The HTTP routes, one file per endpoint group, and the router that joins them.

mod health;
mod openapi;
mod predict;
mod predict_batch;
mod predictions;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::rejection::JsonRejection;
use axum::{Json, Router};
use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::ServerSettings;
use crate::domain::{CACHE_IDENTIFIER, CacheStatus, HIT_CACHE_STATUS, RequestDirectives};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::middleware;
use crate::prediction_service::PredictionService;

pub use openapi::{DeclaredErrors, body_errors, fallback_errors, layer_errors};
pub use predict::PredictErrors;
pub use predict_batch::PredictBatchErrors;
pub use predictions::GetPredictionErrors;

/// A JSON request body as axum reads it: an object, or why it is not one.
type ObjectBody = Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>;

/// The request `T` in `body`. An object first: serde would otherwise read an array such as
/// `["id"]` as a `T` (a struct deserializes from a sequence too).
fn parse_object_body<T: serde::de::DeserializeOwned>(body: ObjectBody) -> Result<T, ApiError> {
    let Json(object) = body?;
    serde_json::from_value(object.into())
        .map_err(|e| ApiError::InvalidBody(format!("invalid request body: {e}")))
}

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

/// The API routes, each declared once: `routes!` takes the path, the method and the
/// OpenAPI operation from the handler's `#[utoipa::path]`.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(predict::predict))
        .routes(routes!(predict_batch::predict_batch))
        .routes(routes!(predictions::get_prediction))
}

/// The operational routes, declared the same way.
fn operational_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi))
}

/// The full router: the API behind the layer stack, operational routes outside it
/// (probes are neither traced nor shed, so they answer under load).
pub fn router(state: AppState, settings: &ServerSettings, metrics: Metrics) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let api = middleware::apply(api, settings, metrics);
    // The operational routes answer a wrong method with the API's JSON error too.
    let (operational, _) = operational_routes().split_for_parts();
    let operational = operational.method_not_allowed_fallback(method_not_allowed);
    operational.merge(api).with_state(state)
}

/// The OpenAPI document of every route [`router`] serves, from the same declarations.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::document(api_routes().merge(operational_routes()).into_openapi())
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
/// section 5.2; RFC 9110 section 5.3 makes several lines one list), read from the
/// request's parts without copying its header map.
impl<S: Send + Sync> FromRequestParts<S> for RequestDirectives {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestDirectives::parse(
            parts
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .map(HeaderValue::as_bytes),
        ))
    }
}

/// The `Cache-Status` header of `status`.
pub(crate) fn cache_status_header(status: &CacheStatus) -> [(HeaderName, HeaderValue); 1] {
    // The value holds a token, tokens and integers only, so it is always a valid header
    // value; the bare identifier is the unreachable fallback that keeps this panic-free.
    let value = if *status == CacheStatus::HIT {
        // The answer of nearly every hit: written once, not formatted per request.
        HeaderValue::from_static(HIT_CACHE_STATUS)
    } else {
        HeaderValue::from_str(&status.to_string())
            .unwrap_or(HeaderValue::from_static(CACHE_IDENTIFIER))
    };
    [(CACHE_STATUS, value)]
}
