//! `POST /v1/predict`: the cached prediction of one data id, or a computed one, as the
//! request's `Cache-Control` allows; the answer says how in `Cache-Status`.

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
use crate::prediction_service::Outcome;
use crate::telemetry;

/// The request body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PredictRequest {
    /// The row to predict.
    #[schema(value_type = DataId)]
    data_id: String,
}

/// A prediction as clients receive it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionResponse {
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
    /// The trace of this request (32 hex).
    pub trace_id: String,
}

impl From<Outcome> for PredictionResponse {
    fn from(outcome: Outcome) -> Self {
        let stored = outcome.prediction;
        Self {
            data_id: stored.data_id.as_str().to_owned(),
            prediction: stored.prediction,
            model: stored.model,
            cache: outcome.cache,
            created_at: stored.created_at,
            trace_id: telemetry::current_trace_id(),
        }
    }
}

/// The error answers of `POST /v1/predict`.
pub struct PredictErrors;

declare_errors!(
    PredictErrors,
    groups: [layer_errors(), body_errors(), model_errors()],
    own: [
        ApiError::InvalidDataId(DataIdError::ForbiddenCharacter),
        ApiError::UnknownDataId,
        ApiError::NotCached,
    ],
);

/// Serves the prediction of one data id, honouring the request's `Cache-Control`
/// directives and answering with `Cache-Status`.
#[utoipa::path(
    post,
    path = "/v1/predict",
    operation_id = "predict",
    summary = "The cached prediction of one data id, or compute, store and return it",
    request_body = PredictRequest,
    responses(
        (status = 200, description = "The prediction", body = PredictionResponse),
        PredictErrors,
    ),
)]
pub async fn predict(
    State(state): State<AppState>,
    directives: RequestDirectives,
    body: ObjectBody,
) -> Result<([(HeaderName, HeaderValue); 1], Json<PredictionResponse>), ApiError> {
    let request: PredictRequest = parse_object_body(body)?;
    let data_id = DataId::parse(&request.data_id)?;
    let outcome = state.predictions.predict(data_id, directives).await?;
    Ok((cache_status_header(&outcome.status), Json(outcome.into())))
}
