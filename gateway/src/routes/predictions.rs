//! `GET /v1/predictions/{data_id}`: the stored prediction for the live model; never computes.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::predict::PredictionResponse;
use super::{AppState, cache_status_header, request_directives};
use crate::domain::DataId;
use crate::error::ApiError;

/// Reads the stored prediction of one data id: `Cache-Status: inference-gateway; hit`, or
/// 404 `prediction_not_found` with `detail=not-cached`. The request is `only-if-cached` by
/// nature; its `max-age` (and `no-cache`, which no stored prediction satisfies) apply.
pub async fn get_prediction(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<([(HeaderName, HeaderValue); 1], Json<PredictionResponse>), ApiError> {
    let Path(raw) = path?;
    let data_id = DataId::parse(&raw)?;
    let outcome = state
        .predictions
        .stored(data_id, request_directives(&headers))
        .await?
        .ok_or(ApiError::PredictionNotFound)?;
    Ok((cache_status_header(&outcome.status), Json(outcome.into())))
}
