//! The live model: as last learned from the model service, refreshed on an interval and
//! followed when a model answer names another version or run.

use tracing::Instrument;

use super::{PredictionError, PredictionService};
use crate::domain::ModelInfo;
use crate::telemetry::untraced_span;

impl PredictionService {
    /// Re-reads the live model from the model service (called on an interval).
    pub async fn refresh_live_model(&self) {
        let result = self
            .model
            .model_info()
            .instrument(untraced_span("refresh live model"))
            .await;
        match result {
            Ok(model) => self.set_live(model),
            Err(error) => tracing::debug!(
                error = &error as &dyn std::error::Error,
                "cannot refresh the live model"
            ),
        }
    }

    /// The live model: as last learned, or asked for now if never learned.
    pub(super) async fn live_model(&self) -> Result<ModelInfo, PredictionError> {
        if let Some(model) = self.read_live() {
            return Ok(model);
        }
        let model = self.model.model_info().await?;
        self.set_live(model.clone());
        Ok(model)
    }

    /// The live model as last learned, if any.
    pub(super) fn read_live(&self) -> Option<ModelInfo> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records `model` as the live model, logged when it changed.
    pub(super) fn set_live(&self, model: ModelInfo) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if live.as_ref() != Some(&model) {
            tracing::info!(
                ml.model.name = %model.name,
                ml.model.version = %model.version,
                ml.run_id = %model.run_id,
                "live model version learned"
            );
            *live = Some(model);
        }
    }
}
