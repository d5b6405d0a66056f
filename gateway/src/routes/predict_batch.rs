//! `POST /v1/predict/batch`: the predictions of up to `max_batch_size` ids in one request,
//! as the request's `Cache-Control` allows; one `Cache-Status` for the batch.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{body_errors, declare_errors, layer_errors, model_errors};
use super::{AppState, ObjectBody, cache_status_header, parse_object_body};
use crate::domain::{CacheResult, DataId, DataIdError, ModelInfo, Prediction, RequestDirectives};
use crate::error::ApiError;
use crate::telemetry;

/// The request body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PredictBatchRequest)]
struct BatchRequest {
    /// The rows to predict: 1 to `GATEWAY__SERVER__MAX_BATCH_SIZE` (default 1,000) ids.
    #[schema(value_type = Vec<DataId>, min_items = 1)]
    data_ids: Vec<String>,
}

/// One prediction of a batch.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemError {
    /// The row.
    pub data_id: String,
    /// The code of the JSON error body the id would have got alone, e.g.
    /// `model_unavailable`, `model_timeout`; `not_cached` under `only-if-cached`.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// The batch response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PredictBatchResponse)]
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

/// The error answers of `POST /v1/predict/batch`: only when no id can be served does the
/// whole batch fail.
pub struct PredictBatchErrors;

declare_errors!(
    PredictBatchErrors,
    groups: [layer_errors(), body_errors(), model_errors()],
    own: [
        ApiError::InvalidBatchDataId {
            index: 0,
            error: DataIdError::ForbiddenCharacter,
        },
        ApiError::InvalidBody("data_ids must hold 1 to 1000 ids; it holds 0".into()),
        ApiError::NotCached,
    ],
);

/// Serves the predictions of several ids, honouring the request's `Cache-Control`
/// directives for every id; `Cache-Status` describes the batch (see
/// [`crate::prediction_service::BatchOutcome::status`]), each item's `cache` the item.
#[utoipa::path(
    post,
    path = "/v1/predict/batch",
    operation_id = "predict_batch",
    summary = "The predictions of up to 1,000 ids: one multi-get, one batched model call \
        for the misses, one bulk write",
    request_body = BatchRequest,
    responses(
        (
            status = 200,
            description = "The predictions that could be served, in the order asked \
                (duplicates once), the unknown ids, and the ids whose prediction could not \
                be computed with their error code (e.g. stored predictions are served while \
                the model service is down). Only when no id can be served does the whole \
                batch fail with the error's status.",
            body = BatchResponse,
        ),
        PredictBatchErrors,
    ),
)]
pub async fn predict_batch(
    State(state): State<AppState>,
    directives: RequestDirectives,
    body: ObjectBody,
) -> Result<([(HeaderName, HeaderValue); 1], Json<BatchResponse>), ApiError> {
    let request: BatchRequest = parse_object_body(body)?;
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
        .predict_batch(data_ids, directives)
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
        trace_id: telemetry::current_trace_id(),
    });
    Ok((cache_status, response))
}
