//! The embedded in-memory store: the default when no search URL is configured, so the
//! gateway runs on a machine with nothing else installed (development, demos, tests).

use std::collections::HashMap;
use std::sync::RwLock;

use super::{PredictionStore, StoreFuture};
use crate::domain::{PredictionKey, StoredPrediction};

/// Predictions in a process-local map; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Predictions by key; a plain lock is enough: no await happens while it is held.
    predictions: RwLock<HashMap<PredictionKey, StoredPrediction>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored predictions.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PredictionKey, StoredPrediction>> {
        // A poisoned lock only means another request panicked mid-insert of a whole value.
        self.predictions.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl PredictionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>> {
        Box::pin(async move { Ok(self.read().get(key).cloned()) })
    }

    fn put<'a>(
        &'a self,
        key: &'a PredictionKey,
        prediction: &'a StoredPrediction,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.predictions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), prediction.clone());
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DataId, ModelInfo, Prediction};

    fn stored(version: &str) -> (PredictionKey, StoredPrediction) {
        let model = ModelInfo {
            name: "m".into(),
            version: version.into(),
            run_id: "r".into(),
        };
        let data_id = DataId::parse("7").unwrap();
        let prediction = StoredPrediction {
            data_id: data_id.clone(),
            model: model.clone(),
            prediction: Prediction {
                label: "a".into(),
                probabilities: Default::default(),
                score: None,
            },
            created_at: chrono::Utc::now(),
            trace_id: "0".repeat(32),
            span_id: "0".repeat(16),
        };
        (PredictionKey::new(&model, data_id), prediction)
    }

    #[tokio::test]
    async fn a_stored_prediction_is_found_under_its_key_only() {
        let store = MemoryStore::new();
        let (key_v1, prediction) = stored("1");
        let (key_v2, _) = stored("2");
        store.put(&key_v1, &prediction).await.unwrap();
        assert_eq!(store.get(&key_v1).await.unwrap(), Some(prediction));
        assert_eq!(store.get(&key_v2).await.unwrap(), None);
    }
}
