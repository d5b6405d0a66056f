//! Prediction types shared by the service, the store and the routes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::DataId;

/// The model that made (or would make) a prediction, as the model service names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(as = Model)]
pub struct ModelInfo {
    /// Model name, first part of the cache key.
    pub name: String,
    /// Model version label, second part of the cache key. Labels get reused (retrain in
    /// place, rollback), so the label alone does not identify the artifact.
    pub version: String,
    /// Training run that produced this artifact, third part of the cache key: the identity
    /// of the trained model, so a retrained model under the same label never sees the old
    /// run's predictions.
    pub run_id: String,
}

/// What the model answered for one row, as the model gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    /// Predicted class.
    pub label: String,
    /// Probability per class.
    #[serde(default)]
    pub probabilities: BTreeMap<String, f64>,
    /// A single score, for models that give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A prediction with everything the store keeps about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPrediction {
    /// The row it is for.
    pub data_id: DataId,
    /// The model version that computed it.
    pub model: ModelInfo,
    /// The prediction itself.
    pub prediction: Prediction,
    /// When the model computed it.
    pub created_at: DateTime<Utc>,
    /// Trace id (32 hex) of the request that computed it; a hit links back to it.
    pub trace_id: String,
    /// Span id (16 hex) of the span that computed it.
    pub span_id: String,
}

impl StoredPrediction {
    /// A prediction the model just computed, recorded with the span context of the
    /// request that computed it (its trace and span ids, 32 and 16 hex characters).
    pub fn computed(
        data_id: DataId,
        model: ModelInfo,
        prediction: Prediction,
        created_at: DateTime<Utc>,
        computing: &opentelemetry::trace::SpanContext,
    ) -> Self {
        Self {
            data_id,
            model,
            prediction,
            created_at,
            trace_id: computing.trace_id().to_string(),
            span_id: computing.span_id().to_string(),
        }
    }

    /// The key it is stored under: its model (name, version label, run) and its row.
    pub fn key(&self) -> PredictionKey {
        PredictionKey::new(&self.model, self.data_id.clone())
    }
}

/// The cache key (SPEC "Cache semantics"): a prediction is only ever served for the same
/// model name, version label and training run that computed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PredictionKey {
    /// Model name.
    pub model_name: String,
    /// Model version label.
    pub model_version: String,
    /// Training run id of the model artifact.
    pub run_id: String,
    /// The row.
    pub data_id: DataId,
}

impl PredictionKey {
    /// The key of `data_id` under `model`.
    pub fn new(model: &ModelInfo, data_id: DataId) -> Self {
        Self {
            model_name: model.name.clone(),
            model_version: model.version.clone(),
            run_id: model.run_id.clone(),
            data_id,
        }
    }

    /// Whether `model` is the model of this key (name, version label and run).
    pub fn is_of(&self, model: &ModelInfo) -> bool {
        self.model_name == model.name
            && self.model_version == model.version
            && self.run_id == model.run_id
    }
}

/// How a prediction was obtained (`cache` in the response, `ml.cache.result` on spans).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheResult {
    /// Found in the store for the live model version.
    Hit,
    /// Not in the store: computed by the model (or by a concurrent request for the same key).
    Miss,
    /// The store could not be used: computed by the model without the cache.
    Bypass,
}

impl CacheResult {
    /// The value used in responses, span attributes and metric attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}
