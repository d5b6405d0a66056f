//! The model service client: reqwest clients with timeouts (one per thread), an HTTP
//! client span per call with the trace context injected from inside it.

pub mod circuit_breaker;

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

use self::circuit_breaker::{CallOutcome, CircuitBreaker};
use crate::configuration::ModelSettings;
use crate::domain::{DataId, ModelInfo, Prediction};
use crate::metrics::Metrics;
use crate::telemetry;
use crate::thread_client::ThreadClient;

/// Why a model call failed, or the client could not be built.
///
/// Sources are behind `Arc` so the error stays `Clone`: every request coalesced onto one
/// model call gets the same result. Messages name what happened; the source says why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelClientError {
    /// The HTTP client could not be built, e.g. no TLS backend (construction only).
    #[error("the HTTP client of the model service cannot be built")]
    HttpClient(#[source] Arc<reqwest::Error>),
    /// Not reached: the connection was refused or reset, or the name did not resolve.
    #[error("the model service cannot be reached")]
    Unreachable(#[source] Arc<reqwest::Error>),
    /// Reached, and it answered 503: it is starting, stopping or shedding load.
    #[error("the model service answered 503 (unavailable)")]
    ServiceUnavailable,
    /// Not called: the circuit breaker is open after repeated failures.
    #[error("the model service is failing; calls are refused for {retry_after_secs} s")]
    CircuitOpen {
        /// Seconds until a trial call is let through.
        retry_after_secs: u64,
    },
    /// No complete answer within the model timeout (connecting, waiting or reading).
    #[error("the model service did not answer in time")]
    Timeout(#[source] Arc<reqwest::Error>),
    /// The model service does not know the data id (404).
    #[error("the model service does not know this data id")]
    UnknownDataId,
    /// The request failed for a reason other than the network or the clock, e.g. too
    /// many redirects.
    #[error("the request to the model service failed")]
    Request(#[source] Arc<reqwest::Error>),
    /// The answer's body could not be read to its end (the connection broke mid-body).
    #[error("the model service's answer could not be read")]
    UnreadableBody(#[source] Arc<reqwest::Error>),
    /// A 2xx answer whose body is not the expected JSON.
    #[error("the model service's {status} answer could not be decoded")]
    Undecodable {
        /// The answer's HTTP status.
        status: u16,
        /// What serde found wrong.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// An answer with a status the API does not give for this call (a 500, a 404 on a
    /// path other than `/predict`).
    #[error("the model service answered {status}: {body}")]
    UnexpectedStatus {
        /// The answer's HTTP status.
        status: u16,
        /// The start of the answer's body (200 bytes at most), for the logs.
        body: String,
    },
    /// A well-formed answer for a data id the request did not ask for.
    #[error("the model service answered for {data_id}, which was not asked for")]
    UnaskedDataId {
        /// The data id in the answer.
        data_id: String,
    },
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
    /// A client per thread, built alike; a thread's requests share its connection pool.
    http: Arc<ThreadClient<reqwest::Client, reqwest::Error>>,
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
        // An http(s) URL, checked at load: every absolute path joins onto it.
        let base = settings.url.clone();
        let (timeout, connect_timeout) = (settings.timeout, settings.connect_timeout);
        let http = ThreadClient::new(move || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(connect_timeout)
                .build()
        })
        .map(Arc::new)
        .map_err(|e| ModelClientError::HttpClient(Arc::new(e)))?;
        let breaker = CircuitBreaker::new(settings.breaker_threshold, settings.breaker_cool_down);
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
            return Err(ModelClientError::UnaskedDataId {
                data_id: answer.data_id,
            });
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
                return Err(ModelClientError::UnaskedDataId {
                    data_id: id.to_owned(),
                });
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
    /// [`circuit_breaker::Permit`]).
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
            Err(
                ModelClientError::Unreachable(_)
                | ModelClientError::ServiceUnavailable
                | ModelClientError::Timeout(_),
            ) => CallOutcome::Unreachable,
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
            .expect("an http(s) base URL, onto which an absolute path joins");
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
        let mut request = self
            .http
            .with(|client| client.request(method.clone(), url))
            .headers(headers);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let outcome = async {
            let response = request
                .send()
                .await
                .map_err(|e| classify(e, ModelClientError::Request))?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| classify(e, ModelClientError::UnreadableBody))?;
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
                    200..=299 => {
                        serde_json::from_slice(&bytes).map_err(|e| ModelClientError::Undecodable {
                            status,
                            source: Arc::new(e),
                        })
                    }
                    404 if path == "/predict" => Err(ModelClientError::UnknownDataId),
                    503 => Err(ModelClientError::ServiceUnavailable),
                    _ => Err(ModelClientError::UnexpectedStatus {
                        status,
                        body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                    }),
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

/// Names a transport error by what happened; `otherwise` names the rest by the stage
/// it happened in (sending the request, reading the body).
fn classify(
    mut error: reqwest::Error,
    otherwise: fn(Arc<reqwest::Error>) -> ModelClientError,
) -> ModelClientError {
    // reqwest names the URL in its messages, which end up in logs and exception events.
    if let Some(url) = error.url_mut() {
        strip_credentials(url);
    }
    if error.is_timeout() {
        ModelClientError::Timeout(Arc::new(error))
    } else if error.is_connect() || error.is_request() {
        ModelClientError::Unreachable(Arc::new(error))
    } else {
        otherwise(Arc::new(error))
    }
}

/// `error.type` of a failed call that got no usable status (the values the README lists).
fn error_type(error: &ModelClientError) -> &'static str {
    match error {
        ModelClientError::Unreachable(_) | ModelClientError::ServiceUnavailable => "unavailable",
        ModelClientError::Timeout(_) => "timeout",
        ModelClientError::CircuitOpen { .. } => "circuit_open",
        ModelClientError::UnknownDataId => "404",
        ModelClientError::HttpClient(_)
        | ModelClientError::Request(_)
        | ModelClientError::UnreadableBody(_)
        | ModelClientError::Undecodable { .. }
        | ModelClientError::UnexpectedStatus { .. }
        | ModelClientError::UnaskedDataId { .. } => "bad_answer",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::*;
    use crate::configuration::Settings;

    /// A real reqwest timeout: a listener that completes the handshake, never answers.
    pub(crate) async fn timed_out_request() -> reqwest::Error {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/model", silent.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        client.get(url).send().await.unwrap_err()
    }

    /// A stand-in model service answering every request with `status` and `body`.
    async fn answering(status: StatusCode, body: &'static str) -> ModelClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(move || async move { (status, body) });
        tokio::spawn(async move { axum::serve(listener, router).await });
        client_for(url).unwrap()
    }

    fn client_for(url: String) -> Result<ModelClient, ModelClientError> {
        let settings = ModelSettings {
            url: url.parse().unwrap(),
            ..Settings::default().model
        };
        ModelClient::new(&settings, Metrics::default())
    }

    #[test]
    fn credentials_are_stripped_from_a_url_for_telemetry() {
        let url = url::Url::parse("http://user:secret@model.local:8001/predict?x=1").unwrap();
        assert_eq!(
            without_credentials(&url),
            "http://model.local:8001/predict?x=1"
        );
    }

    #[tokio::test]
    async fn answers_the_gateway_cannot_use_say_what_was_wrong_with_them() {
        let model = answering(StatusCode::OK, "{\"name\": \"iris\"").await;
        let error = model.model_info().await.unwrap_err();
        let ModelClientError::Undecodable {
            status: 200,
            source,
        } = &error
        else {
            panic!("not an undecodable 200: {error:?}");
        };
        assert!(source.is_eof(), "{source}");

        let model = answering(StatusCode::INTERNAL_SERVER_ERROR, "model crashed").await;
        let error = model.model_info().await.unwrap_err();
        assert!(
            matches!(&error, ModelClientError::UnexpectedStatus { status: 500, body } if body == "model crashed"),
            "{error:?}"
        );

        let model = answering(StatusCode::SERVICE_UNAVAILABLE, "starting").await;
        let error = model.model_info().await.unwrap_err();
        assert!(
            matches!(error, ModelClientError::ServiceUnavailable),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_for_another_data_id_names_that_id() {
        let model = answering(
            StatusCode::OK,
            r#"{"data_id": "8", "prediction": {"label": "setosa"},
                "model": {"name": "iris", "version": "3", "run_id": "r"}}"#,
        )
        .await;

        let error = model
            .predict(&DataId::parse("7").unwrap())
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ModelClientError::UnaskedDataId { data_id } if data_id == "8"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_with_the_transport_error_as_source() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);

        let error = client_for(url).unwrap().model_info().await.unwrap_err();

        let ModelClientError::Unreachable(source) = &error else {
            panic!("not unreachable: {error:?}");
        };
        assert!(source.is_connect(), "{source:?}");
    }

    #[tokio::test]
    async fn a_timed_out_request_is_a_timeout_whatever_its_stage() {
        let timeout = timed_out_request().await;
        assert!(matches!(
            classify(timeout, ModelClientError::UnreadableBody),
            ModelClientError::Timeout(_)
        ));
    }
}
