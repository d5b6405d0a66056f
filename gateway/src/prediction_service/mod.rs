//! The cache-aside prediction path for the live model run.

mod coalescing;
mod leases;
mod live_model;
mod readiness;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{
    CacheResult, CacheStatus, DataId, Forward, ForwardReason, Handling, ModelInfo, PredictionKey,
    RequestDirectives, StoredPrediction,
};
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::store::write_behind::WriteBehind;
use crate::store::{PredictionStore, StoreError};
use crate::telemetry::link_to_computing_trace;

use coalescing::Flights;
use leases::{LeaseSettings, Lookup};
pub use readiness::DependencyStatus;

/// Why a prediction could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PredictionError {
    /// The model service failed (unknown id, down, timeout, bad answer).
    #[error(transparent)]
    Model(#[from] ModelClientError),
    /// The store failed where no fallback exists (reading a stored prediction).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task computing the prediction ended without a result (a bug: it panicked).
    #[error("the computation of this prediction ended without a result")]
    Aborted,
    /// `only-if-cached` (RFC 9111 section 5.2.1.7): no stored prediction satisfies the
    /// request, and the model may not be asked.
    #[error("no stored prediction satisfies the request and only-if-cached forbids computing one")]
    NotCached,
}

/// A served prediction and how it was obtained.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The prediction with its model, time and computing trace.
    pub prediction: StoredPrediction,
    /// Hit, miss or bypass.
    pub cache: CacheResult,
    /// How the cache handled it, for the `Cache-Status` header.
    pub status: CacheStatus,
}

/// The predictions of a batch, in the order asked, and the ids that got none.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One outcome per id that got a prediction, in the order of the request (duplicates once).
    pub items: Vec<Outcome>,
    /// Ids the model service does not know.
    pub not_found: Vec<DataId>,
    /// Ids whose prediction could not be computed, with why (e.g. the model is down while
    /// the others were answered from the store).
    pub failed: Vec<(DataId, PredictionError)>,
    /// How the cache handled the batch as a whole (one `Cache-Status` member): `hit` when
    /// no model call was made; else `fwd=` the reason of its one model call (see
    /// [`ForwardReason::of_batch`]) and `stored` when its bulk write was acknowledged;
    /// `detail=bypass` when the multi-get failed; `ttl` the least of the items'.
    pub status: CacheStatus,
}

/// The cache-aside logic; no HTTP types.
///
/// The cache-aside prediction path: look the prediction up for the live model run,
/// compute it on a miss, store it with the computing trace, as the client's RFC 9111
/// request directives allow. Coalescing (in process and across replicas), the live model
/// and readiness have a file each.
///
/// Computations are detached from the requests that wait for them: a model call and its
/// store write run in their own task, inside the trace of the request that started them,
/// so a client hang-up or a request deadline never throws shared work away.
pub struct PredictionService {
    /// Where predictions are kept.
    store: Arc<dyn PredictionStore>,
    /// The model service.
    model: ModelClient,
    /// The live model as last learned from the model service (`None` until first learned).
    live: RwLock<Option<ModelInfo>>,
    /// Computations in progress (and lingering), one per key: the coalescing table.
    flights: Flights,
    /// Cache outcome counter.
    metrics: Metrics,
    /// Writes the store refused, retried in the background.
    write_behind: Arc<WriteBehind>,
    /// Stored predictions older than this are not served (`None`: no maximum age).
    max_age: Option<Duration>,
    /// How flights lease their key in the store, so replicas compute it once.
    leases: LeaseSettings,
    /// The runtime that computes misses apart from their requesters (the main one, which
    /// outlives the serving threads' runtimes, `serving_threads.rs`).
    background: tokio::runtime::Handle,
}

impl PredictionService {
    /// A service over `store` and `model`; misses are computed on the runtime this is
    /// called on.
    ///
    /// Panics outside a tokio runtime.
    pub fn new(
        store: Arc<dyn PredictionStore>,
        model: ModelClient,
        metrics: Metrics,
        write_behind: Arc<WriteBehind>,
    ) -> Self {
        Self {
            write_behind,
            store,
            model,
            live: RwLock::new(None),
            flights: Arc::default(),
            metrics,
            max_age: None,
            leases: LeaseSettings::default(),
            background: tokio::runtime::Handle::current(),
        }
    }

    /// Leases each computation for `ttl` (`GATEWAY__STORE__LEASE_TTL_MS`), and waits for
    /// another replica's computation `wait_limit` at most (the request deadline less the
    /// model timeout, so that it can still compute in time).
    pub fn with_leases(mut self, ttl: Duration, wait_limit: Duration) -> Self {
        self.leases = LeaseSettings::new(ttl, wait_limit);
        self
    }

    /// Serves no stored prediction older than `max_age` (`None`: no maximum age).
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// The prediction for `data_id` under the live model: from the store, or computed, as
    /// `directives` allow: `no-cache` skips the lookup, `max-age` and the configured maximum
    /// age turn older stored predictions into misses, `no-store` keeps this request's
    /// computation out of the store, `only-if-cached` answers [`PredictionError::NotCached`]
    /// instead of calling the model.
    pub async fn predict(
        self: &Arc<Self>,
        data_id: DataId,
        directives: RequestDirectives,
    ) -> Result<Outcome, PredictionError> {
        let span = Span::current();
        span.set_attribute("ml.data_id", data_id.as_str().to_owned());
        span.set_attribute("ml.cache.directive", directives.attribute());
        let model = self.live_model().await?;
        let key = PredictionKey::new(&model, data_id);
        let (reason, lookup) = if directives.no_cache {
            (ForwardReason::Request, Lookup::Skipped)
        } else {
            match self.store.get(&key).await {
                Ok(Some(stored)) if self.is_fresh(&stored, &directives) => {
                    link_to_computing_trace(&span, &stored);
                    return Ok(self.served(self.hit(stored), &directives));
                }
                Ok(Some(stale)) => (ForwardReason::Stale, Lookup::Stale(stale.created_at)),
                Ok(None) => (ForwardReason::Miss, Lookup::Missed),
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "store lookup failed; answering from the model"
                    );
                    (ForwardReason::Miss, Lookup::Failed)
                }
            }
        };
        let bypass = lookup == Lookup::Failed;
        if directives.only_if_cached {
            return Err(PredictionError::NotCached);
        }
        let (computed, collapsed) = self.compute_once(key, &directives, lookup).await?;
        let status = CacheStatus {
            handling: Handling::Forwarded(Forward {
                reason,
                stored: computed.stored,
                collapsed,
                bypass,
            }),
            ttl: self.ttl(&computed.prediction),
        };
        let cache = if bypass {
            CacheResult::Bypass
        } else {
            CacheResult::Miss
        };
        let outcome = Outcome {
            prediction: computed.prediction,
            cache,
            status,
        };
        Ok(self.served(outcome, &directives))
    }

    /// Records a single prediction's outcome on the server span and the cache counter.
    fn served(&self, outcome: Outcome, directives: &RequestDirectives) -> Outcome {
        let span = Span::current();
        let model = &outcome.prediction.model;
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        span.set_attribute("ml.cache.result", outcome.cache.as_str());
        self.count(outcome.cache, directives);
        outcome
    }

    /// A stored prediction served as a hit.
    fn hit(&self, prediction: StoredPrediction) -> Outcome {
        let status = CacheStatus {
            handling: Handling::Hit,
            ttl: self.ttl(&prediction),
        };
        Outcome {
            prediction,
            cache: CacheResult::Hit,
            status,
        }
    }

    /// The predictions of `data_ids`: one multi-get, one batched model call for the misses,
    /// one bulk write, as `directives` allow (the same rules as [`Self::predict`], applied
    /// to every id; under `only-if-cached` the misses are listed as failed with
    /// [`PredictionError::NotCached`]). Batches are not coalesced with single requests, but
    /// their model call and write are detached like theirs. Hits are served even when the
    /// misses cannot be computed; only when no id gets a prediction does the batch fail as
    /// a whole.
    pub async fn predict_batch(
        self: &Arc<Self>,
        data_ids: Vec<DataId>,
        directives: RequestDirectives,
    ) -> Result<BatchOutcome, PredictionError> {
        let span = Span::current();
        span.set_attribute("ml.cache.directive", directives.attribute());
        let mut seen = HashSet::new();
        let data_ids: Vec<DataId> = data_ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let model = self.live_model().await?;
        let keys: Vec<PredictionKey> = data_ids
            .iter()
            .map(|id| PredictionKey::new(&model, id.clone()))
            .collect();
        let (found, bypass) = if directives.no_cache {
            (vec![None; keys.len()], false)
        } else {
            match self.store.get_many(&keys).await {
                Ok(found) => (found, false),
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "store multi-get failed; answering from the model"
                    );
                    (vec![None; keys.len()], true)
                }
            }
        };
        // Each id: served from the store, or sent to the model and why.
        let lookups: Vec<Result<StoredPrediction, ForwardReason>> = found
            .into_iter()
            .map(|found| match found {
                Some(stored) if self.is_fresh(&stored, &directives) => Ok(stored),
                Some(_) => Err(ForwardReason::Stale),
                None if directives.no_cache => Err(ForwardReason::Request),
                None => Err(ForwardReason::Miss),
            })
            .collect();
        let misses: Vec<DataId> = data_ids
            .iter()
            .zip(&lookups)
            .filter(|(_, lookup)| lookup.is_err())
            .map(|(id, _)| id.clone())
            .collect();
        let mut computed = HashMap::new();
        let mut not_found = Vec::new();
        let mut failure = None;
        let mut stored = false;
        let forward = if directives.only_if_cached {
            failure = Some(PredictionError::NotCached);
            None
        } else {
            ForwardReason::of_batch(
                lookups
                    .iter()
                    .filter_map(|lookup| lookup.as_ref().err().copied()),
            )
        };
        if forward.is_some() {
            let this = Arc::clone(self);
            let computing = span.context();
            let store = !directives.no_store;
            let task = self.background.spawn(
                async move { this.compute_batch(misses, &computing, store).await }
                    .with_context(span.context()),
            );
            match task.await.unwrap_or(Err(PredictionError::Aborted)) {
                Ok(batch) => {
                    computed = batch.predictions;
                    not_found = batch.not_found;
                    stored = batch.stored;
                }
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "cannot compute the batch's misses; serving its hits"
                    );
                    failure = Some(error);
                }
            }
        }
        let miss_result = if bypass {
            CacheResult::Bypass
        } else {
            CacheResult::Miss
        };
        let mut items = Vec::with_capacity(data_ids.len());
        let mut failed = Vec::new();
        for (data_id, lookup) in data_ids.into_iter().zip(lookups) {
            let outcome = match lookup {
                Ok(prediction) => self.hit(prediction),
                Err(reason) => match computed.remove(&data_id) {
                    Some(prediction) => Outcome {
                        status: CacheStatus {
                            handling: Handling::Forwarded(Forward {
                                reason,
                                stored,
                                collapsed: false,
                                bypass,
                            }),
                            ttl: self.ttl(&prediction),
                        },
                        prediction,
                        cache: miss_result,
                    },
                    None => {
                        if let Some(error) = &failure {
                            failed.push((data_id, error.clone()));
                        }
                        continue;
                    }
                },
            };
            self.count(outcome.cache, &directives);
            items.push(outcome);
        }
        if let Some(error) = failure
            && items.is_empty()
        {
            return Err(error);
        }
        let handling = match forward {
            None => Handling::Hit,
            Some(reason) => Handling::Forwarded(Forward {
                reason,
                stored,
                collapsed: false,
                bypass,
            }),
        };
        let status = CacheStatus {
            handling,
            ttl: items.iter().filter_map(|item| item.status.ttl).min(),
        };
        let hits = items.iter().filter(|o| o.cache == CacheResult::Hit).count();
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        span.set_attribute("ml.batch.size", seen.len() as i64);
        span.set_attribute("ml.batch.hits", hits as i64);
        span.set_attribute("ml.batch.not_found", not_found.len() as i64);
        span.set_attribute("ml.batch.failed", failed.len() as i64);
        Ok(BatchOutcome {
            items,
            not_found,
            failed,
            status,
        })
    }

    /// The stored prediction for `data_id` under the live model, if one satisfies
    /// `directives` and the configured maximum age; never calls `/predict`.
    pub async fn stored(
        &self,
        data_id: DataId,
        directives: RequestDirectives,
    ) -> Result<Option<Outcome>, PredictionError> {
        let span = Span::current();
        span.set_attribute("ml.data_id", data_id.as_str().to_owned());
        span.set_attribute("ml.cache.directive", directives.attribute());
        let model = self.live_model().await?;
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        let stored = self.store.get(&PredictionKey::new(&model, data_id)).await?;
        let Some(stored) = stored.filter(|s| !directives.no_cache && self.is_fresh(s, &directives))
        else {
            return Ok(None);
        };
        link_to_computing_trace(&span, &stored);
        span.set_attribute("ml.cache.result", CacheResult::Hit.as_str());
        self.count(CacheResult::Hit, &directives);
        Ok(Some(self.hit(stored)))
    }

    /// Counts a served prediction by outcome and by the directives that applied (no ids).
    fn count(&self, cache: CacheResult, directives: &RequestDirectives) {
        self.metrics.cache_results.add(
            1,
            &[
                KeyValue::new("ml.cache.result", cache.as_str()),
                KeyValue::new("ml.cache.directive", directives.attribute()),
            ],
        );
    }

    /// How old `prediction` is (zero if its clock was ahead of ours).
    fn age(prediction: &StoredPrediction) -> Duration {
        (Utc::now() - prediction.created_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether `prediction` may answer a request with `directives`: not older than the
    /// configured maximum age nor than the request's `max-age`.
    fn is_fresh(&self, prediction: &StoredPrediction, directives: &RequestDirectives) -> bool {
        let age = Self::age(prediction);
        self.max_age.is_none_or(|max_age| age <= max_age) && directives.accepts_age(age)
    }

    /// The remaining freshness lifetime of `prediction` in whole seconds, when a maximum
    /// age is configured (RFC 9211 `ttl`; negative once stale).
    fn ttl(&self, prediction: &StoredPrediction) -> Option<i64> {
        // No clock read on the hit path when no maximum age is configured (the default).
        let max_age = self.max_age?;
        let age = i64::try_from(Self::age(prediction).as_secs()).unwrap_or(i64::MAX);
        Some(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX) - age)
    }

    /// The batched model call and (when `store`) bulk write of a batch's misses.
    async fn compute_batch(
        &self,
        misses: Vec<DataId>,
        computing: &opentelemetry::Context,
        store: bool,
    ) -> Result<ComputedBatch, PredictionError> {
        let answer = self.model.predict_batch(&misses).await?;
        let span_context = computing.span().span_context().clone();
        let created_at = Utc::now();
        let mut computed = HashMap::with_capacity(answer.predictions.len());
        let mut writes = Vec::with_capacity(answer.predictions.len());
        for item in answer.predictions {
            let Ok(data_id) = DataId::parse(&item.data_id) else {
                continue;
            };
            let stored = StoredPrediction::computed(
                data_id.clone(),
                answer.model.clone(),
                item.prediction,
                created_at,
                &span_context,
            );
            writes.push(stored.clone());
            computed.insert(data_id, stored);
        }
        let not_found = answer
            .not_found
            .iter()
            .filter_map(|id| DataId::parse(id).ok())
            .collect();
        if self.read_live().as_ref() != Some(&answer.model) {
            self.set_live(answer.model.clone());
        }
        let stored = if !store || writes.is_empty() {
            false
        } else if let Err(error) = self.store.put_many(&writes).await {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot store the batch's predictions; queued for a retry"
            );
            for prediction in writes {
                self.write_behind.enqueue(prediction);
            }
            false
        } else {
            true
        };
        Ok(ComputedBatch {
            predictions: computed,
            not_found,
            stored,
        })
    }
}

/// What a batch's model call gave.
struct ComputedBatch {
    /// The predictions by id.
    predictions: HashMap<DataId, StoredPrediction>,
    /// The ids the model service does not know.
    not_found: Vec<DataId>,
    /// Whether the bulk write was acknowledged.
    stored: bool,
}
