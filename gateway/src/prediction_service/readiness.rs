//! Readiness: the state of the store and the model service, with short causes that carry
//! no addresses and no upstream text.

use tracing::Instrument;

use super::PredictionService;
use crate::domain::ModelInfo;
use crate::model_client::ModelClientError;
use crate::store::StoreError;
use crate::telemetry::untraced_span;

/// The state of each dependency, for readiness.
#[derive(Debug, Clone)]
pub struct DependencyStatus {
    /// Store kind and its check's result.
    pub store: (&'static str, Result<(), String>),
    /// The model service check's result (the live model when up).
    pub model: Result<ModelInfo, String>,
}

impl PredictionService {
    /// Checks the store and the model service (readiness); also refreshes the live model.
    pub async fn check_dependencies(&self) -> DependencyStatus {
        let span = untraced_span("readiness");
        let (store, model) = tokio::join!(
            self.store.ping().instrument(span.clone()),
            self.model.model_info().instrument(span),
        );
        if let Ok(model) = &model {
            self.set_live(model.clone());
        }
        DependencyStatus {
            store: (self.store.kind(), store.map_err(|e| store_summary(&e))),
            model: model.map_err(|e| model_summary(&e)),
        }
    }
}

/// A short cause for readiness bodies: no addresses, no upstream text.
fn store_summary(error: &StoreError) -> String {
    match error {
        StoreError::Unreachable(_) => "unreachable".into(),
        StoreError::Status { status, .. } => format!("answered {status}"),
        StoreError::Decode(_) => "undecodable answer".into(),
        StoreError::BulkItems { .. } => "bulk items failed".into(),
        StoreError::Encode(_) => "unserializable request".into(),
        StoreError::InvalidSettings(_) => "misconfigured".into(),
    }
}

/// A short cause for readiness bodies: no addresses, no upstream text.
fn model_summary(error: &ModelClientError) -> String {
    match error {
        ModelClientError::Unreachable(_) | ModelClientError::ServiceUnavailable => {
            "unavailable".into()
        }
        ModelClientError::Timeout(_) => "timeout".into(),
        ModelClientError::CircuitOpen { .. } => "circuit open".into(),
        ModelClientError::UnknownDataId => "unexpected 404".into(),
        ModelClientError::HttpClient(_) => "misconfigured".into(),
        ModelClientError::Request(_)
        | ModelClientError::UnreadableBody(_)
        | ModelClientError::Undecodable { .. }
        | ModelClientError::UnexpectedStatus { .. }
        | ModelClientError::UnaskedDataId { .. } => "bad answer".into(),
    }
}
