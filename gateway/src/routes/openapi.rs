//! `GET /openapi.json`: the hand-written OpenAPI 3 description of the gateway.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI document, kept next to the code it describes.
pub const OPENAPI_DOCUMENT: &str = include_str!("../openapi.json");

/// Serves [`OPENAPI_DOCUMENT`].
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT,
    )
}
