//! The embedded in-memory store: the default when no search URL is configured, so the
//! gateway runs on a machine with nothing else installed (development, demos, tests).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::{Lease, LeaseGrant, LeaseOutcome, LeaseVersion, PredictionStore, StoreFuture};
use crate::domain::{PredictionKey, StoredPrediction};

/// Predictions in a process-local map; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Predictions by key; a plain lock is enough: no await happens while it is held.
    predictions: RwLock<HashMap<PredictionKey, StoredPrediction>>,
    /// Computation leases by key, with the last version handed out, under one lock so a
    /// check and its write are one step, as a conditional write is in Elasticsearch.
    /// Several services sharing one store see each other's leases, like replicas.
    leases: Mutex<Leases>,
}

#[derive(Debug, Default)]
struct Leases {
    by_key: HashMap<PredictionKey, Lease>,
    /// The `seq_no` of the last lease written: versions never repeat.
    seq_no: u64,
}

impl Leases {
    /// Stores a lease for `grant` under `key` at a new version.
    fn write(&mut self, key: &PredictionKey, grant: &LeaseGrant) -> Lease {
        self.seq_no += 1;
        let version = LeaseVersion {
            seq_no: self.seq_no,
            primary_term: 1,
        };
        let lease = Lease::granted(key, grant, version);
        self.by_key.insert(key.clone(), lease.clone());
        lease
    }

    /// Whether the lease of `lease`'s key is still at `lease`'s version.
    fn is_at(&self, lease: &Lease) -> bool {
        self.by_key
            .get(&lease.key)
            .is_some_and(|held| held.version == lease.version)
    }
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

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PredictionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>> {
        Box::pin(async move { Ok(self.read().get(key).cloned()) })
    }

    fn put<'a>(&'a self, prediction: &'a StoredPrediction) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.predictions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(prediction.key(), prediction.clone());
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a PredictionKey,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async move {
            let mut leases = self.leases();
            if leases.by_key.contains_key(key) {
                return Ok(LeaseOutcome::HeldElsewhere);
            }
            Ok(LeaseOutcome::Acquired(leases.write(key, grant)))
        })
    }

    fn lease<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move { Ok(self.leases().by_key.get(key).cloned()) })
    }

    fn take_over_lease<'a>(
        &'a self,
        expired: &'a Lease,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move {
            let mut leases = self.leases();
            if !leases.is_at(expired) {
                return Ok(None);
            }
            Ok(Some(leases.write(&expired.key, grant)))
        })
    }

    fn release_lease<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut leases = self.leases();
            if leases.is_at(lease) {
                leases.by_key.remove(&lease.key);
            }
            Ok(())
        })
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
        store.put(&prediction).await.unwrap();
        assert_eq!(store.get(&key_v1).await.unwrap(), Some(prediction));
        assert_eq!(store.get(&key_v2).await.unwrap(), None);
    }

    fn grant(holder: &str, ttl_ms: u64) -> LeaseGrant {
        LeaseGrant {
            holder: holder.into(),
            ttl: std::time::Duration::from_millis(ttl_ms),
            trace_id: "1".repeat(32),
        }
    }

    #[tokio::test]
    async fn a_lease_is_created_once_taken_over_once_and_released_only_by_its_version() {
        let store = MemoryStore::new();
        let (key, _) = stored("1");

        let LeaseOutcome::Acquired(first) =
            store.acquire_lease(&key, &grant("a", 0)).await.unwrap()
        else {
            panic!("no lease existed");
        };
        let second = store.acquire_lease(&key, &grant("b", 0)).await.unwrap();
        let read = store
            .lease(&key)
            .await
            .unwrap()
            .expect("the lease is stored");
        let taken = store.take_over_lease(&read, &grant("b", 60_000)).await;
        let late = store.take_over_lease(&read, &grant("c", 60_000)).await;
        store.release_lease(&first).await.unwrap();

        assert_eq!(second, LeaseOutcome::HeldElsewhere);
        assert_eq!((read.holder.as_str(), read.is_expired()), ("a", true));
        let taken = taken.unwrap().expect("b takes over the expired lease");
        assert_eq!(late.unwrap(), None, "c read the version b replaced");
        assert_eq!(
            store.lease(&key).await.unwrap(),
            Some(taken.clone()),
            "a's release did not delete b's lease"
        );
        store.release_lease(&taken).await.unwrap();
        assert_eq!(store.lease(&key).await.unwrap(), None);
    }
}
