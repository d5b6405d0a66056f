//! The one mapping from errors to an HTTP status and the JSON error body
//! `{"error": {"code", "message", "trace_id"}}`: 4xx say what to fix, 5xx are opaque.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute::{
    EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE, EXCEPTION_TYPE,
};
use serde::Serialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{CacheStatus, DataIdError, Handling};
use crate::model_client::ModelClientError;
use crate::prediction_service::PredictionError;
use crate::routes::cache_status_header;
use crate::store::StoreError;
use crate::telemetry;

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The data id does not validate.
    #[error("{0}")]
    InvalidDataId(#[from] DataIdError),
    /// One id of a batch does not validate.
    #[error("data_ids[{index}]: {error}")]
    InvalidBatchDataId {
        /// Its position in the request.
        index: usize,
        /// Why.
        error: DataIdError,
    },
    /// A path parameter could not be decoded (e.g. not UTF-8).
    #[error("{0}")]
    InvalidPath(String),
    /// The body is not JSON.
    #[error("{0}")]
    MalformedBody(String),
    /// The body is JSON but not the expected shape.
    #[error("{0}")]
    InvalidBody(String),
    /// The content type is not `application/json`.
    #[error("the request body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is over the limit.
    #[error("the request body is larger than the gateway accepts")]
    PayloadTooLarge,
    /// The model service does not know the data id.
    #[error("no data row has this data_id")]
    UnknownDataId,
    /// No stored prediction for the live model version.
    #[error("no prediction is stored for this data_id under the live model version")]
    PredictionNotFound,
    /// No such route.
    #[error("no such endpoint; see /openapi.json")]
    RouteNotFound,
    /// The route exists, not with this method.
    #[error("this endpoint does not accept this method; see /openapi.json")]
    MethodNotAllowed,
    /// Admission control shed the request.
    #[error("the gateway is at capacity")]
    Overloaded,
    /// The request's total deadline passed.
    #[error("the request did not complete within its deadline")]
    DeadlineExceeded,
    /// `Cache-Control: only-if-cached` and no stored prediction satisfies the request:
    /// 504, as RFC 9111 section 5.2.1.7 says.
    #[error(
        "no stored prediction satisfies this request, and only-if-cached forbids computing one"
    )]
    NotCached,
    /// The model service failed.
    #[error("model service: {0}")]
    Model(ModelClientError),
    /// The store failed where no fallback exists.
    #[error("store: {0}")]
    Store(StoreError),
    /// A bug (a panic caught by the middleware).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON error body (`Error` in the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail<'a> {
    /// Machine-readable cause, e.g. `model_unavailable`; each route's responses list theirs.
    code: &'a str,
    /// What to fix (4xx) or a fixed sentence (5xx).
    message: String,
    /// The trace of the request (32 hex); quote it when reporting a 5xx.
    trace_id: String,
}

impl ApiError {
    /// Status, machine-readable code, and `Retry-After` seconds where retrying helps.
    fn parts(&self) -> (StatusCode, &'static str, Option<u64>) {
        match self {
            Self::InvalidDataId(_) => (StatusCode::BAD_REQUEST, "invalid_data_id", None),
            Self::InvalidBatchDataId { .. } => (StatusCode::BAD_REQUEST, "invalid_data_id", None),
            Self::InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path", None),
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body", None),
            Self::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", None),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Self::UnknownDataId => (StatusCode::NOT_FOUND, "unknown_data_id", None),
            Self::PredictionNotFound => (StatusCode::NOT_FOUND, "prediction_not_found", None),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1)),
            Self::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", None),
            Self::NotCached => (StatusCode::GATEWAY_TIMEOUT, "not_cached", None),
            Self::Model(ModelClientError::UnknownDataId) => {
                (StatusCode::NOT_FOUND, "unknown_data_id", None)
            }
            Self::Model(
                ModelClientError::Unreachable(_) | ModelClientError::ServiceUnavailable,
            ) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "model_unavailable",
                Some(5),
            ),
            Self::Model(ModelClientError::Timeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, "model_timeout", None)
            }
            Self::Model(ModelClientError::CircuitOpen { retry_after_secs }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "model_unavailable",
                Some(*retry_after_secs),
            ),
            Self::Model(
                ModelClientError::Request(_)
                | ModelClientError::UnreadableBody(_)
                | ModelClientError::Undecodable { .. }
                | ModelClientError::UnexpectedStatus { .. }
                | ModelClientError::UnaskedDataId { .. },
            ) => (StatusCode::BAD_GATEWAY, "model_bad_answer", None),
            // Construction errors stop start-up; one here would be a bug.
            Self::Model(ModelClientError::HttpClient(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
            Self::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                Some(5),
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }

    /// Status, code and whether `Retry-After` is set: what the OpenAPI document says of
    /// this error.
    pub fn documented_parts(&self) -> (StatusCode, &'static str, bool) {
        let (status, code, retry_after) = self.parts();
        (status, code, retry_after.is_some())
    }

    /// The machine-readable code of the JSON error body (also used per item of a batch).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The message of the JSON error body: what to fix for 4xx, an opaque sentence for 5xx.
    pub fn message(&self) -> String {
        self.client_message(self.parts().0)
    }

    /// The message a client sees: the cause for 4xx, a fixed sentence for 5xx.
    fn client_message(&self, status: StatusCode) -> String {
        if !status.is_server_error() {
            return self.to_string();
        }
        match self {
            Self::Overloaded => "the gateway is at capacity; retry after the indicated delay",
            Self::DeadlineExceeded => "the request did not complete within its deadline",
            Self::NotCached => {
                "no stored prediction satisfies this request, and only-if-cached forbids computing one"
            }
            Self::Model(
                ModelClientError::Unreachable(_)
                | ModelClientError::ServiceUnavailable
                | ModelClientError::CircuitOpen { .. },
            ) => "the model service is unavailable; retry later",
            Self::Model(ModelClientError::Timeout(_)) => {
                "the model service did not answer in time"
            }
            Self::Model(ModelClientError::HttpClient(_)) => {
                "internal error; quote the trace_id when reporting it"
            }
            Self::Model(_) => "the model service gave an answer the gateway cannot use",
            Self::Store(_) => "the prediction store is unavailable; retry later",
            _ => "internal error; quote the trace_id when reporting it",
        }
        .to_owned()
    }
}

impl From<PredictionError> for ApiError {
    fn from(error: PredictionError) -> Self {
        match error {
            PredictionError::Model(ModelClientError::UnknownDataId) => Self::UnknownDataId,
            PredictionError::Model(error) => Self::Model(error),
            PredictionError::Store(error) => Self::Store(error),
            PredictionError::Aborted => Self::Internal(error.to_string()),
            PredictionError::NotCached => Self::NotCached,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => Self::MalformedBody(e.body_text()),
            JsonRejection::JsonDataError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::MalformedBody(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::InvalidPath(rejection.body_text())
    }
}

impl ApiError {
    /// The error this one wraps, where the cause chain continues.
    fn cause(&self) -> Option<(String, &(dyn std::error::Error + 'static))> {
        match self {
            Self::Model(error) => Some((type_and_variant(error), error)),
            Self::Store(error) => Some((type_and_variant(error), error)),
            Self::InvalidDataId(error) => Some((type_and_variant(error), error)),
            _ => None,
        }
    }

    /// Records this failure of the current request once, as an `exception` event on its
    /// server span, plus one log line for the log stream.
    ///
    /// An event rather than a log record with `exception.*` attributes: Elastic's
    /// elasticapm processor makes error documents (Kibana's Errors view, grouped by
    /// `exception.type`) from span events named `exception` only; it marks every log
    /// record a plain log. The log line therefore carries no `exception.*` attribute,
    /// so no backend counts the failure twice.
    fn record_failure(&self, code: &'static str) {
        let (exception_type, stacktrace) = self.exception();
        tracing::Span::current().add_event(
            "exception",
            vec![
                KeyValue::new(EXCEPTION_TYPE, exception_type),
                KeyValue::new(EXCEPTION_MESSAGE, self.to_string()),
                KeyValue::new(EXCEPTION_STACKTRACE, stacktrace.clone()),
            ],
        );
        tracing::error!(
            error.code = code,
            "request failed: {}",
            stacktrace.replace('\n', "; ")
        );
    }

    /// `exception.type` and `exception.stacktrace`: this error, then one `caused by:`
    /// line per error of its `source()` chain, down to the transport or serde error.
    fn exception(&self) -> (String, String) {
        let own_type = type_and_variant(self);
        let mut stacktrace = format!("{own_type}: {self}");
        let mut exception_type = own_type;
        let mut source = None;
        if let Some((cause_type, cause)) = self.cause() {
            stacktrace.push_str(&format!("\ncaused by: {cause_type}: {cause}"));
            // The innermost typed error names the failure best (and groups it in Kibana).
            exception_type = cause_type;
            source = cause.source();
        }
        while let Some(cause) = source {
            stacktrace.push_str(&format!("\ncaused by: {cause}"));
            source = cause.source();
        }
        (exception_type, stacktrace)
    }
}

/// `path::Type::Variant` of an error enum value, from its type and its `Debug` form.
fn type_and_variant<E: std::fmt::Debug>(error: &E) -> String {
    let debug = format!("{error:?}");
    let variant = debug
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default();
    format!("{}::{variant}", std::any::type_name::<E>())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = self.parts();
        // A 504 for only-if-cached is the answer the client asked for, not a failure.
        if status.is_server_error() && !matches!(self, Self::NotCached) {
            // The one place a failure is recorded; the client gets the trace id instead.
            self.record_failure(code);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.client_message(status),
                trace_id: telemetry::current_trace_id(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Answers the cache gave without the model or a stored prediction say so (RFC 9211).
        if matches!(self, Self::NotCached | Self::PredictionNotFound) {
            let not_cached = CacheStatus {
                handling: Handling::NotCached,
                ttl: None,
            };
            response
                .headers_mut()
                .extend(cache_status_header(&not_cached));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exception_type_names_the_innermost_error_variant() {
        let error = ApiError::Model(ModelClientError::UnexpectedStatus {
            status: 500,
            body: "Internal Server Error".into(),
        });
        let (cause_type, _) = error.cause().unwrap();
        assert_eq!(
            cause_type,
            "gateway::model_client::ModelClientError::UnexpectedStatus"
        );
        assert_eq!(
            type_and_variant(&ApiError::Overloaded),
            "gateway::error::ApiError::Overloaded"
        );
    }

    #[tokio::test]
    async fn a_model_timeout_is_recorded_down_to_the_transport_error() {
        let timeout = crate::model_client::tests::timed_out_request().await;
        let error = ApiError::Model(ModelClientError::Timeout(std::sync::Arc::new(timeout)));

        let (exception_type, stacktrace) = error.exception();

        assert_eq!(
            exception_type,
            "gateway::model_client::ModelClientError::Timeout"
        );
        // The model client's error, then reqwest's, then what reqwest says timed out.
        assert!(
            stacktrace.matches("\ncaused by: ").count() >= 2,
            "{stacktrace}"
        );
        assert!(stacktrace.contains("timed out"), "{stacktrace}");
    }
}
