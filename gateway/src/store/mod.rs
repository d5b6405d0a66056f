//! The `PredictionStore` trait: where predictions are kept, keyed by model and data id.

mod elasticsearch;
mod memory;
pub mod node_pool;
mod transport;
pub mod write_behind;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::elasticsearch::{ElasticsearchStore, document_id, document_path};
pub use memory::MemoryStore;
pub use transport::TransportError;

use crate::domain::{PredictionKey, StoredPrediction};

/// The future a store operation returns (boxed so stores can sit behind `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Keeps predictions by (model name, model version, data id).
pub trait PredictionStore: Send + Sync + 'static {
    /// The stored prediction of `key`, if any.
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>>;

    /// Stores `prediction` under its key ([`StoredPrediction::key`]), replacing what was
    /// there.
    fn put<'a>(&'a self, prediction: &'a StoredPrediction) -> StoreFuture<'a, ()>;

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

    /// Stores every prediction under its key (one bulk request where the store has one).
    fn put_many<'a>(&'a self, predictions: &'a [StoredPrediction]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for prediction in predictions {
                self.put(prediction).await?;
            }
            Ok(())
        })
    }

    /// Whether the store answers (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Creates the lease of `key`'s computation for `grant` if no lease exists (Elasticsearch
    /// `op_type=create`): [`LeaseOutcome::Acquired`] then, else [`LeaseOutcome::HeldElsewhere`],
    /// even when the existing lease has expired (take it over with [`Self::take_over_lease`]).
    /// A store without leases grants every one: replicas then each compute.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a PredictionKey,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async move { Ok(LeaseOutcome::Acquired(Lease::ungranted(key, grant))) })
    }

    /// The lease of `key`'s computation as the store holds it now, expired or not; `None`
    /// when there is none (never taken, or released).
    fn lease<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<Lease>> {
        let _ = key;
        Box::pin(async { Ok(None) })
    }

    /// Replaces `expired` (as [`Self::lease`] read it) by a lease on the same key for
    /// `grant`, only if nobody changed it since (Elasticsearch optimistic concurrency
    /// control: `if_seq_no` and `if_primary_term`); `None` when another holder got there
    /// first.
    fn take_over_lease<'a>(
        &'a self,
        expired: &'a Lease,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move { Ok(Some(Lease::ungranted(&expired.key, grant))) })
    }

    /// Deletes `lease` if it is still the one the store holds (the same optimistic
    /// concurrency check), so a lease another replica took over is never deleted. A lease
    /// already gone or taken over is not an error.
    fn release_lease<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        let _ = lease;
        Box::pin(async { Ok(()) })
    }

    /// A short name for logs and readiness bodies (`elasticsearch`, `memory`).
    fn kind(&self) -> &'static str;
}

/// What a replica asks for when it leases a key's computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The asking process: random per process, so a lease names who computes.
    pub holder: String,
    /// How long the lease holds unless released; it must outlast a model call.
    pub ttl: Duration,
    /// The computing trace (32 hex), stored so Kibana can jump to the trace that computes.
    pub trace_id: String,
}

/// A lease on one key's computation, as stored. Created only where none exists, taken
/// over once expired, released by its holder when the prediction is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The key whose computation it leases (Elasticsearch stores the lease under the
    /// key's [`document_id`], so take-overs and releases need nothing else).
    pub key: PredictionKey,
    /// The process holding it ([`LeaseGrant::holder`]).
    pub holder: String,
    /// When it expires; another replica may take it over after.
    pub expires_at: DateTime<Utc>,
    /// The trace computing under it.
    pub trace_id: String,
    /// The version a take-over or release must match (Elasticsearch `_seq_no` and
    /// `_primary_term`).
    pub version: LeaseVersion,
}

/// A stored document's version for optimistic concurrency control (Elasticsearch
/// `_seq_no`, `_primary_term`): a conditional write or delete succeeds only while the
/// document is still at this version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseVersion {
    /// `_seq_no`.
    pub seq_no: u64,
    /// `_primary_term`.
    pub primary_term: u64,
}

impl Lease {
    /// The lease `grant` asks for on `key`, expiring `grant.ttl` from now, at `version`.
    pub fn granted(key: &PredictionKey, grant: &LeaseGrant, version: LeaseVersion) -> Self {
        let expires_at = chrono::Duration::from_std(grant.ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_add_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Self {
            key: key.clone(),
            holder: grant.holder.clone(),
            expires_at,
            trace_id: grant.trace_id.clone(),
            version,
        }
    }

    /// What a store without leases grants: a lease nobody else sees.
    fn ungranted(key: &PredictionKey, grant: &LeaseGrant) -> Self {
        Self::granted(key, grant, LeaseVersion::default())
    }

    /// Whether it has expired by the clock of this process.
    pub fn is_expired(&self) -> bool {
        self.expires_at <= Utc::now()
    }
}

/// The answer to [`PredictionStore::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// No lease existed: this one is the caller's; it computes, then releases it.
    Acquired(Lease),
    /// A lease exists (maybe expired): another replica computes, or did and died.
    HeldElsewhere,
}

/// Why a store operation failed, or the store client could not be built. Messages are
/// for logs, never for clients.
///
/// Sources are behind `Arc` so the error stays `Clone`: every request coalesced onto one
/// lookup gets the same result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The settings do not make a client: no URL, or credentials that cannot go into a
    /// header (construction only; start-up reports it as invalid settings). Bad URLs are
    /// refused earlier, when the settings are loaded.
    #[error("the store settings are invalid: {0}")]
    InvalidSettings(&'static str),
    /// No complete answer: the connection was refused or reset, the timeout passed, or
    /// the body broke off; the source says which. An outage, not a refusal: the
    /// write-behind queue does not count it against a write.
    #[error("the prediction store is unreachable")]
    Unreachable(#[source] Arc<TransportError>),
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
