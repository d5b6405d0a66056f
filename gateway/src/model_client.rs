//! The model service client: one reqwest client with timeouts, an HTTP client span per
//! call with the trace context injected from inside it.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, SERVER_ADDRESS, SERVER_PORT,
    URL_FULL,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::circuit_breaker::{CallOutcome, CircuitBreaker};
use crate::configuration::ModelSettings;
use crate::domain::{DataId, ModelInfo, Prediction};
use crate::metrics::Metrics;
use crate::telemetry;

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelClientError {
    /// Not reachable (connection refused, reset) or answered 503.
    #[error("the model service is unavailable: {0}")]
    Unavailable(String),
    /// Not called: the circuit breaker is open after repeated failures.
    #[error("the model service is failing; calls are refused for {retry_after_secs} s")]
    CircuitOpen {
        /// Seconds until a trial call is let through.
        retry_after_secs: u64,
    },
    /// No answer within the model timeout.
    #[error("the model service did not answer in time")]
    Timeout,
    /// The model service does not know the data id (404).
    #[error("the model service does not know this data id")]
    UnknownDataId,
    /// An answer the gateway cannot use: a server error, an unexpected status, a bad body.
    #[error("the model service gave a bad answer: {0}")]
    BadAnswer(String),
}

/// A prediction as the model service returned it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelAnswer {
    /// The row it is for (checked against the request).
    pub data_id: String,
    /// The prediction.
    pub prediction: Prediction,
    /// The model version that computed it.
    pub model: ModelInfo,
}

/// One prediction of a batch answer (the model is given once for the batch).
#[derive(Debug, Clone, Deserialize)]
pub struct BatchItem {
    /// The row.
    pub data_id: String,
    /// The prediction.
    pub prediction: Prediction,
}

/// The model service's answer to a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchAnswer {
    /// The model version that computed every prediction of the batch.
    pub model: ModelInfo,
    /// Predictions of the known ids.
    pub predictions: Vec<BatchItem>,
    /// Ids the feature store does not know.
    #[serde(default)]
    pub not_found: Vec<String>,
}

/// Client of the model service's HTTP API.
#[derive(Clone)]
pub struct ModelClient {
    /// Built once; connection pool shared by all requests.
    http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:8001`.
    base: url::Url,
    /// `http.client.request.duration`.
    metrics: Metrics,
    /// Fails prediction calls fast while the service is down.
    breaker: Arc<CircuitBreaker>,
}

impl ModelClient {
    /// A client for `settings.url` with the settings' timeouts.
    pub fn new(settings: &ModelSettings, metrics: Metrics) -> Result<Self, ModelClientError> {
        let base = url::Url::parse(&settings.url)
            .map_err(|e| ModelClientError::Unavailable(format!("invalid model URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.connect_timeout())
            .build()
            .map_err(|e| ModelClientError::Unavailable(format!("cannot build client: {e}")))?;
        let breaker = CircuitBreaker::new(settings.breaker_threshold, settings.breaker_cool_down());
        Ok(Self {
            http,
            base,
            metrics,
            breaker,
        })
    }

    /// `POST /predict` for one row.
    pub async fn predict(&self, data_id: &DataId) -> Result<ModelAnswer, ModelClientError> {
        let body = serde_json::json!({ "data_id": data_id.as_str() });
        let answer: ModelAnswer = self
            .guarded(self.call(reqwest::Method::POST, "/predict", Some(body)))
            .await?;
        if answer.data_id != data_id.as_str() {
            return Err(ModelClientError::BadAnswer(format!(
                "asked for {data_id}, answered for {}",
                answer.data_id
            )));
        }
        Ok(answer)
    }

    /// `POST /predict/batch` for several rows in one call.
    pub async fn predict_batch(
        &self,
        data_ids: &[DataId],
    ) -> Result<BatchAnswer, ModelClientError> {
        let ids: Vec<&str> = data_ids.iter().map(DataId::as_str).collect();
        let body = serde_json::json!({ "data_ids": ids });
        let answer: BatchAnswer = self
            .guarded(self.call(reqwest::Method::POST, "/predict/batch", Some(body)))
            .await?;
        let asked: std::collections::HashSet<&str> = ids.iter().copied().collect();
        let answered = answer
            .predictions
            .iter()
            .map(|item| item.data_id.as_str())
            .chain(answer.not_found.iter().map(String::as_str));
        for id in answered {
            if !asked.contains(id) {
                return Err(ModelClientError::BadAnswer(format!(
                    "answered for {id}, which was not asked for"
                )));
            }
        }
        Ok(answer)
    }

    /// `GET /model`: the live model version.
    pub async fn model_info(&self) -> Result<ModelInfo, ModelClientError> {
        self.call(reqwest::Method::GET, "/model", None).await
    }

    /// Runs a prediction call through the circuit breaker. Version reads and readiness
    /// checks are not guarded: they are how the gateway notices the service is back.
    /// If this future is dropped mid-call, the permit reports on drop (see
    /// [`crate::circuit_breaker::Permit`]).
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ModelClientError>>,
    ) -> Result<T, ModelClientError> {
        let permit = self
            .breaker
            .admit()
            .map_err(|open| ModelClientError::CircuitOpen {
                retry_after_secs: open.retry_after.as_secs().max(1),
            })?;
        let result = call.await;
        permit.report(match &result {
            Err(ModelClientError::Unavailable(_) | ModelClientError::Timeout) => {
                CallOutcome::Unreachable
            }
            _ => CallOutcome::Reached,
        });
        result
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ModelClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ModelClientError::Unavailable(e.to_string()))?;
        let server_address = url.host_str().unwrap_or_default().to_owned();
        let server_port = i64::from(url.port_or_known_default().unwrap_or_default());
        let span = tracing::info_span!(
            target: "gateway::model_client",
            "model_call",
            otel.name = method.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
        );
        span.set_attribute(HTTP_REQUEST_METHOD, method.as_str().to_owned());
        span.set_attribute(SERVER_ADDRESS, server_address.clone());
        span.set_attribute(SERVER_PORT, server_port);
        span.set_attribute(URL_FULL, without_credentials(&url));
        let mut headers = HeaderMap::new();
        telemetry::inject_context(&span.context(), &mut headers);
        let mut request = self.http.request(method.clone(), url).headers(headers);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let outcome = async {
            let response = request.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.map_err(classify)?;
            Ok::<_, ModelClientError>((status, bytes))
        }
        .instrument(span.clone())
        .await;
        let mut attributes = vec![
            KeyValue::new(HTTP_REQUEST_METHOD, method.as_str().to_owned()),
            KeyValue::new(SERVER_ADDRESS, server_address),
            KeyValue::new(SERVER_PORT, server_port),
        ];
        let (result, error_type) = match outcome {
            Ok((status, bytes)) => {
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, i64::from(status));
                attributes.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
                let result = match status {
                    200..=299 => serde_json::from_slice(&bytes).map_err(|e| {
                        ModelClientError::BadAnswer(format!("undecodable {status} answer: {e}"))
                    }),
                    404 if path == "/predict" => Err(ModelClientError::UnknownDataId),
                    503 => Err(ModelClientError::Unavailable("answered 503".into())),
                    _ => Err(ModelClientError::BadAnswer(format!(
                        "answered {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ))),
                };
                // A 4xx or 5xx answer is the error, named by its status (conventions); an
                // unusable 2xx answer by what went wrong.
                let error_type = match &result {
                    Err(_) if status >= 400 => Some(status.to_string()),
                    Err(error) => Some(error_type(error).to_owned()),
                    Ok(_) => None,
                };
                (result, error_type)
            }
            Err(error) => {
                let error_type = error_type(&error).to_owned();
                (Err(error), Some(error_type))
            }
        };
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.set_status(opentelemetry::trace::Status::error(error.to_string()));
        }
        // The span and its metric point say the same error.
        if let Some(error_type) = error_type {
            span.set_attribute(ERROR_TYPE, error_type.clone());
            attributes.push(KeyValue::new(ERROR_TYPE, error_type));
        }
        self.metrics
            .client_duration
            .record(started.elapsed().as_secs_f64(), &attributes);
        result
    }
}

/// `url` without its userinfo: credentials in the model URL must not reach telemetry.
pub fn without_credentials(url: &url::Url) -> String {
    let mut url = url.clone();
    strip_credentials(&mut url);
    url.into()
}

fn strip_credentials(url: &mut url::Url) {
    // Only fails for URLs that cannot have userinfo, which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
}

fn classify(mut error: reqwest::Error) -> ModelClientError {
    // reqwest names the URL in its messages, which end up in logs and exception events.
    if let Some(url) = error.url_mut() {
        strip_credentials(url);
    }
    if error.is_timeout() {
        ModelClientError::Timeout
    } else if error.is_connect() || error.is_request() {
        ModelClientError::Unavailable(error.to_string())
    } else {
        ModelClientError::BadAnswer(error.to_string())
    }
}

fn error_type(error: &ModelClientError) -> &'static str {
    match error {
        ModelClientError::Unavailable(_) => "unavailable",
        ModelClientError::Timeout => "timeout",
        ModelClientError::CircuitOpen { .. } => "circuit_open",
        ModelClientError::UnknownDataId => "404",
        ModelClientError::BadAnswer(_) => "bad_answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_a_url_for_telemetry() {
        let url = url::Url::parse("http://user:secret@model.local:8001/predict?x=1").unwrap();
        assert_eq!(
            without_credentials(&url),
            "http://model.local:8001/predict?x=1"
        );
    }
}
