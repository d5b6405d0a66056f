//! The `PredictionStore` trait: where predictions are kept, keyed by model and data id.

mod elasticsearch;
mod memory;
pub mod node_pool;
pub mod write_behind;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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

/// Why a store operation failed, or the store client could not be built. Messages are
/// for logs, never for clients.
///
/// Sources are behind `Arc` so the error stays `Clone`: every request coalesced onto one
/// lookup gets the same result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The settings do not make a client: no URL, a scheme other than http(s), or
    /// credentials that cannot go into a header (construction only; start-up reports it
    /// as invalid settings).
    #[error("the store settings are invalid: {0}")]
    InvalidSettings(&'static str),
    /// The store URL does not parse (construction only).
    #[error("the store URL is invalid")]
    InvalidUrl(#[source] url::ParseError),
    /// The HTTP client could not be built, e.g. no TLS backend (construction only).
    #[error("the HTTP client of the store cannot be built")]
    HttpClient(#[source] Arc<reqwest::Error>),
    /// No complete answer: the connection was refused or reset, the timeout passed, or
    /// the body broke off; the source says which. An outage, not a refusal: the
    /// write-behind queue does not count it against a write.
    #[error("the prediction store is unreachable")]
    Unreachable(#[source] Arc<reqwest::Error>),
    /// The store answered with an unexpected status.
    #[error("the prediction store answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// A bulk request was answered 200, but some of its items were not written.
    #[error("{failed} of {items} bulk items were not written; the first: {error_type}: {reason}")]
    BulkItems {
        /// Items that failed.
        failed: usize,
        /// Items sent.
        items: usize,
        /// The first failed item's `error.type`, e.g. `mapper_parsing_exception`.
        error_type: String,
        /// The first failed item's `error.reason`.
        reason: String,
    },
    /// A request body could not be serialized (nothing was sent).
    #[error("a request to the prediction store could not be serialized")]
    Encode(#[source] Arc<serde_json::Error>),
    /// An answer or a stored document could not be read back: not the expected JSON, or
    /// a document that does not hold its key's prediction.
    #[error("an answer of the prediction store could not be decoded")]
    Decode(#[source] Arc<serde_json::Error>),
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
