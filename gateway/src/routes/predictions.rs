//! `GET /v1/predictions/{data_id}`: the stored prediction for the live model; never computes.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use super::AppState;
use super::predict::PredictionResponse;
use crate::domain::{CacheResult, DataId};
use crate::error::ApiError;
use crate::prediction_service::Outcome;

/// Reads the stored prediction of one data id.
pub async fn get_prediction(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PredictionResponse>, ApiError> {
    let Path(raw) = path?;
    let data_id = DataId::parse(&raw)?;
    let stored = state
        .predictions
        .stored(data_id)
        .await?
        .ok_or(ApiError::PredictionNotFound)?;
    Ok(Json(
        Outcome {
            prediction: stored,
            cache: CacheResult::Hit,
        }
        .into(),
    ))
}
