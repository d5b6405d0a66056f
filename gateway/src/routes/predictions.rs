//! `GET /v1/predictions/{data_id}`: the stored prediction for the live model; never computes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue};

use super::openapi::{declare_errors, layer_errors, model_errors};
use super::predict::PredictionResponse;
use super::{AppState, cache_status_header};
use crate::domain::{DataId, DataIdError, RequestDirectives};
use crate::error::ApiError;
use crate::store::{StoreError, TransportError};

/// The error answers of `GET /v1/predictions/{data_id}`: it reads the live model from the
/// model service, then the store, which it cannot do without.
pub struct GetPredictionErrors;

declare_errors!(
    GetPredictionErrors,
    groups: [layer_errors(), model_errors()],
    own: [
        ApiError::InvalidPath("invalid UTF-8 in path parameter".into()),
        ApiError::InvalidDataId(DataIdError::ForbiddenCharacter),
        ApiError::PredictionNotFound,
        ApiError::Store(StoreError::Unreachable(Arc::new(TransportError::Timeout(
            Duration::ZERO
        )))),
    ],
);

/// Reads the stored prediction of one data id: `Cache-Status: inference-gateway; hit`, or
/// 404 `prediction_not_found` with `detail=not-cached`. The request is `only-if-cached` by
/// nature; its `max-age` (and `no-cache`, which no stored prediction satisfies) apply.
#[utoipa::path(
    get,
    path = "/v1/predictions/{data_id}",
    operation_id = "get_prediction",
    summary = "The stored prediction for the live model version; never calls the model",
    params(("data_id" = DataId, Path, description = "The row")),
    responses(
        (
            status = 200,
            description = "The stored prediction (`cache` is always `hit`)",
            body = PredictionResponse,
        ),
        GetPredictionErrors,
    ),
)]
pub async fn get_prediction(
    State(state): State<AppState>,
    directives: RequestDirectives,
    path: Result<Path<String>, PathRejection>,
) -> Result<([(HeaderName, HeaderValue); 1], Json<PredictionResponse>), ApiError> {
    let Path(raw) = path?;
    let data_id = DataId::parse(&raw)?;
    let outcome = state
        .predictions
        .stored(data_id, directives)
        .await?
        .ok_or(ApiError::PredictionNotFound)?;
    Ok((cache_status_header(&outcome.status), Json(outcome.into())))
}
