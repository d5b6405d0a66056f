//! The `PredictionStore` trait: where predictions are kept, keyed by model and data id.

mod elasticsearch;
mod memory;

use std::future::Future;
use std::pin::Pin;

pub use self::elasticsearch::{ElasticsearchStore, document_id, document_path};
pub use memory::MemoryStore;

use crate::domain::{PredictionKey, StoredPrediction};

/// The future a store operation returns (boxed so stores can sit behind `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Keeps predictions by (model name, model version, data id).
pub trait PredictionStore: Send + Sync + 'static {
    /// The stored prediction of `key`, if any.
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>>;

    /// Stores `prediction` under `key`, replacing what was there.
    fn put<'a>(
        &'a self,
        key: &'a PredictionKey,
        prediction: &'a StoredPrediction,
    ) -> StoreFuture<'a, ()>;

    /// The stored predictions of `keys`, in order (one multi-get where the store has one).
    fn get_many<'a>(
        &'a self,
        keys: &'a [PredictionKey],
    ) -> StoreFuture<'a, Vec<Option<StoredPrediction>>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(self.get(key).await?);
            }
            Ok(found)
        })
    }

    /// Stores every (key, prediction) pair (one bulk request where the store has one).
    fn put_many<'a>(
        &'a self,
        items: &'a [(PredictionKey, StoredPrediction)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for (key, prediction) in items {
                self.put(key, prediction).await?;
            }
            Ok(())
        })
    }

    /// Whether the store answers (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// A short name for logs and readiness bodies (`elasticsearch`, `memory`).
    fn kind(&self) -> &'static str;
}

/// Why a store operation failed. Messages are for logs, never for clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("the prediction store is unreachable: {0}")]
    Unreachable(String),
    /// The store answered with an unexpected status.
    #[error("the prediction store answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// A stored document could not be read back.
    #[error("a stored prediction could not be decoded: {0}")]
    Decode(String),
}

impl StoreError {
    /// Whether retrying the same request cannot help: a 4xx other than 408 (request
    /// timeout) and 429 (too many requests, Elasticsearch's answer when its queues are
    /// full), as RFC 9110 section 15.5 describes client errors.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 408 | 429))
    }
}
