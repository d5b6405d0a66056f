//! `POST /v1/predict/batch`: the predictions of up to `max_batch_size` ids in one request,
//! as the request's `Cache-Control` allows; one `Cache-Status` for the batch.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AppState, cache_status_header, request_directives};
use crate::domain::{CacheResult, DataId, ModelInfo, Prediction};
use crate::error::{ApiError, current_trace_id};

/// The request body.
#[derive(Debug, Deserialize)]
struct BatchRequest {
    /// The rows to predict.
    data_ids: Vec<String>,
}

/// One prediction of a batch.
#[derive(Debug, Serialize)]
pub struct BatchItem {
    /// The row.
    pub data_id: String,
    /// The prediction, as the model gave it.
    pub prediction: Prediction,
    /// The model version that computed it.
    pub model: ModelInfo,
    /// `hit`, `miss` or `bypass`.
    pub cache: CacheResult,
    /// When the model computed it.
    pub created_at: DateTime<Utc>,
}

/// An id of a batch that got no prediction, and why (the codes of the JSON error body).
#[derive(Debug, Serialize)]
pub struct BatchItemError {
    /// The row.
    pub data_id: String,
    /// Machine-readable cause, e.g. `model_unavailable`.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// The batch response.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    /// One item per id that got a prediction, in the order asked (duplicates once).
    pub predictions: Vec<BatchItem>,
    /// Ids no data row exists for.
    pub not_found: Vec<String>,
    /// Ids whose prediction could not be computed (the others were still answered).
    pub errors: Vec<BatchItemError>,
    /// The trace of this request.
    pub trace_id: String,
}

/// Serves the predictions of several ids, honouring the request's `Cache-Control`
/// directives for every id; `Cache-Status` describes the batch (see
/// [`crate::prediction_service::BatchOutcome::status`]), each item's `cache` the item.
pub async fn predict_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<([(HeaderName, HeaderValue); 1], Json<BatchResponse>), ApiError> {
    let Json(object) = body?;
    let request: BatchRequest = serde_json::from_value(object.into())
        .map_err(|e| ApiError::InvalidBody(format!("invalid request body: {e}")))?;
    let limit = state.max_batch_size;
    if request.data_ids.is_empty() || request.data_ids.len() > limit {
        return Err(ApiError::InvalidBody(format!(
            "data_ids must hold 1 to {limit} ids; it holds {}",
            request.data_ids.len()
        )));
    }
    let data_ids = request
        .data_ids
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            DataId::parse(raw).map_err(|error| ApiError::InvalidBatchDataId { index, error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = state
        .predictions
        .predict_batch(data_ids, request_directives(&headers))
        .await?;
    let cache_status = cache_status_header(&outcome.status);
    let response = Json(BatchResponse {
        predictions: outcome
            .items
            .into_iter()
            .map(|item| BatchItem {
                data_id: item.prediction.data_id.as_str().to_owned(),
                prediction: item.prediction.prediction,
                model: item.prediction.model,
                cache: item.cache,
                created_at: item.prediction.created_at,
            })
            .collect(),
        not_found: outcome
            .not_found
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect(),
        errors: outcome
            .failed
            .into_iter()
            .map(|(data_id, error)| {
                let error = ApiError::from(error);
                BatchItemError {
                    data_id: data_id.as_str().to_owned(),
                    code: error.code(),
                    message: error.message(),
                }
            })
            .collect(),
        trace_id: current_trace_id(),
    });
    Ok((cache_status, response))
}
