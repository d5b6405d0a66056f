//! The cache-aside prediction path: look the prediction up for the live model version,
//! compute it on a miss (one model call per key however many requests wait for it),
//! store it with the computing trace, and follow the model service's live version.
//!
//! Computations are detached from the requests that wait for them: a model call and its
//! store write run in their own task, inside the trace of the request that started them,
//! so a client hang-up or a request deadline never throws shared work away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::TraceContextExt;
use tokio::sync::watch;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{CacheResult, DataId, ModelInfo, PredictionKey, StoredPrediction};
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::store::{PredictionStore, StoreError};
use crate::trace_context::{link_to_computing_trace, untraced_span};
use crate::write_behind::WriteBehind;

/// How long a finished computation stays joinable after its result was stored: a request
/// whose store lookup raced the write still gets this result instead of a second model call.
const COALESCE_LINGER: Duration = Duration::from_secs(2);

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
}

/// A served prediction and how it was obtained.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The prediction with its model, time and computing trace.
    pub prediction: StoredPrediction,
    /// Hit, miss or bypass.
    pub cache: CacheResult,
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
}

/// The state of each dependency, for readiness.
#[derive(Debug, Clone)]
pub struct DependencyStatus {
    /// Store kind and its check's result.
    pub store: (&'static str, Result<(), String>),
    /// The model service check's result (the live model when up).
    pub model: Result<ModelInfo, String>,
}

type FlightResult = Result<StoredPrediction, PredictionError>;
/// A computation in progress: `None` until its result is published.
type Flight = watch::Receiver<Option<FlightResult>>;
type Flights = Arc<Mutex<HashMap<PredictionKey, Flight>>>;

/// The cache-aside logic; no HTTP types.
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
}

impl PredictionService {
    /// A service over `store` and `model`.
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
        }
    }

    /// The prediction for `data_id` under the live model: from the store, or computed.
    pub async fn predict(self: &Arc<Self>, data_id: DataId) -> Result<Outcome, PredictionError> {
        let span = Span::current();
        span.set_attribute("ml.data_id", data_id.as_str().to_owned());
        let model = self.live_model().await?;
        let key = PredictionKey::new(&model, data_id);
        let outcome = match self.store.get(&key).await {
            Ok(Some(stored)) => {
                link_to_computing_trace(&span, &stored);
                Outcome {
                    prediction: stored,
                    cache: CacheResult::Hit,
                }
            }
            Ok(None) => self.compute_once(key, CacheResult::Miss).await?,
            Err(error) => {
                tracing::warn!(error = %error, "store lookup failed; answering from the model");
                self.compute_once(key, CacheResult::Bypass).await?
            }
        };
        let model = &outcome.prediction.model;
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        span.set_attribute("ml.cache.result", outcome.cache.as_str());
        self.count(outcome.cache);
        Ok(outcome)
    }

    /// The predictions of `data_ids`: one multi-get, one batched model call for the misses,
    /// one bulk write. Batches are not coalesced with single requests, but their model call
    /// and write are detached like theirs. Hits are served even when the misses cannot be
    /// computed; only when no id gets a prediction does the batch fail as a whole.
    pub async fn predict_batch(
        self: &Arc<Self>,
        data_ids: Vec<DataId>,
    ) -> Result<BatchOutcome, PredictionError> {
        let span = Span::current();
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
        let (found, miss_result) = match self.store.get_many(&keys).await {
            Ok(found) => (found, CacheResult::Miss),
            Err(error) => {
                tracing::warn!(error = %error, "store multi-get failed; answering from the model");
                (vec![None; keys.len()], CacheResult::Bypass)
            }
        };
        let misses: Vec<DataId> = data_ids
            .iter()
            .zip(&found)
            .filter(|(_, found)| found.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut computed = HashMap::new();
        let mut not_found = Vec::new();
        let mut failure = None;
        if !misses.is_empty() {
            let this = Arc::clone(self);
            let computing = span.context();
            let task = tokio::spawn(
                async move { this.compute_batch(misses, &computing).await }
                    .with_context(span.context()),
            );
            match task.await.unwrap_or(Err(PredictionError::Aborted)) {
                Ok((predictions, unknown)) => {
                    computed = predictions;
                    not_found = unknown;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot compute the batch's misses; serving its hits");
                    failure = Some(error);
                }
            }
        }
        let mut items = Vec::with_capacity(data_ids.len());
        let mut failed = Vec::new();
        for (data_id, found) in data_ids.into_iter().zip(found) {
            let outcome = match found {
                Some(prediction) => Outcome {
                    prediction,
                    cache: CacheResult::Hit,
                },
                None => match computed.remove(&data_id) {
                    Some(prediction) => Outcome {
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
            self.count(outcome.cache);
            items.push(outcome);
        }
        if let Some(error) = failure
            && items.is_empty()
        {
            return Err(error);
        }
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
        })
    }

    /// The stored prediction for `data_id` under the live model, if any; never calls `/predict`.
    pub async fn stored(
        &self,
        data_id: DataId,
    ) -> Result<Option<StoredPrediction>, PredictionError> {
        let span = Span::current();
        span.set_attribute("ml.data_id", data_id.as_str().to_owned());
        let model = self.live_model().await?;
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        let stored = self.store.get(&PredictionKey::new(&model, data_id)).await?;
        if let Some(stored) = &stored {
            link_to_computing_trace(&span, stored);
            span.set_attribute("ml.cache.result", CacheResult::Hit.as_str());
            self.count(CacheResult::Hit);
        }
        Ok(stored)
    }

    /// Re-reads the live model from the model service (called on an interval).
    pub async fn refresh_live_model(&self) {
        let result = self
            .model
            .model_info()
            .instrument(untraced_span("refresh live model"))
            .await;
        match result {
            Ok(model) => self.set_live(model),
            Err(error) => tracing::debug!(error = %error, "cannot refresh the live model"),
        }
    }

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

    fn count(&self, cache: CacheResult) {
        self.metrics
            .cache_results
            .add(1, &[KeyValue::new("ml.cache.result", cache.as_str())]);
    }

    /// The live model: as last learned, or asked for now if never learned.
    async fn live_model(&self) -> Result<ModelInfo, PredictionError> {
        if let Some(model) = self.read_live() {
            return Ok(model);
        }
        let model = self.model.model_info().await?;
        self.set_live(model.clone());
        Ok(model)
    }

    fn read_live(&self) -> Option<ModelInfo> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_live(&self, model: ModelInfo) {
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

    /// Computes the prediction of `key`, or joins the computation already running for it.
    async fn compute_once(
        self: &Arc<Self>,
        key: PredictionKey,
        cache: CacheResult,
    ) -> Result<Outcome, PredictionError> {
        let mut flight = self.join_or_start(key);
        let result = match flight.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or(Err(PredictionError::Aborted)),
            // The computing task ended without publishing: it panicked.
            Err(_) => Err(PredictionError::Aborted),
        };
        let prediction = result?;
        let span = Span::current();
        if prediction.trace_id != span.context().span().span_context().trace_id().to_string() {
            // Served by another request's model call: point at the trace that made it.
            link_to_computing_trace(&span, &prediction);
        }
        Ok(Outcome { prediction, cache })
    }

    /// The flight of `key`: the one in progress, or a new one computing in its own task,
    /// inside the current (requesting) trace, whatever becomes of the requester.
    fn join_or_start(self: &Arc<Self>, key: PredictionKey) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(&key) {
            return flight.clone();
        }
        let (publish, flight) = watch::channel(None);
        flights.insert(key.clone(), flight.clone());
        drop(flights);
        let landing = Landing {
            flights: Arc::clone(&self.flights),
            key,
            flight: flight.clone(),
        };
        let this = Arc::clone(self);
        let requesting = Span::current().context();
        let computing = requesting.clone();
        let task = async move {
            let result = this.compute(&landing.key, &computing).await;
            let succeeded = result.is_ok();
            publish.send_replace(Some(result));
            if succeeded {
                tokio::time::sleep(COALESCE_LINGER).await;
            }
            drop(landing);
        };
        tokio::spawn(task.with_context(requesting));
        flight
    }

    /// One model call and one store write, recorded with the computing trace.
    async fn compute(
        &self,
        key: &PredictionKey,
        computing: &opentelemetry::Context,
    ) -> Result<StoredPrediction, PredictionError> {
        let answer = self.model.predict(&key.data_id).await?;
        let span_context = computing.span().span_context().clone();
        let stored = StoredPrediction {
            data_id: key.data_id.clone(),
            model: answer.model,
            prediction: answer.prediction,
            created_at: Utc::now(),
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
        };
        // The model may have switched versions since the live one was learned: follow it,
        // and store the prediction under the version that made it.
        if stored.model.version != key.model_version || stored.model.name != key.model_name {
            self.set_live(stored.model.clone());
        }
        let store_key = PredictionKey::new(&stored.model, key.data_id.clone());
        match self.store.put(&store_key, &stored).await {
            Ok(()) => tracing::info!(
                ml.data_id = %stored.data_id,
                ml.model.version = %stored.model.version,
                "prediction computed and stored"
            ),
            Err(error) => {
                tracing::warn!(error = %error, "cannot store the prediction; queued for a retry");
                self.write_behind.enqueue(store_key, stored.clone());
            }
        }
        Ok(stored)
    }

    /// The batched model call and bulk write of a batch's misses: the predictions by id
    /// and the ids the model service does not know.
    async fn compute_batch(
        &self,
        misses: Vec<DataId>,
        computing: &opentelemetry::Context,
    ) -> Result<(HashMap<DataId, StoredPrediction>, Vec<DataId>), PredictionError> {
        let answer = self.model.predict_batch(&misses).await?;
        let span_context = computing.span().span_context().clone();
        let created_at = Utc::now();
        let mut computed = HashMap::with_capacity(answer.predictions.len());
        let mut writes = Vec::with_capacity(answer.predictions.len());
        for item in answer.predictions {
            let Ok(data_id) = DataId::parse(&item.data_id) else {
                continue;
            };
            let stored = StoredPrediction {
                data_id: data_id.clone(),
                model: answer.model.clone(),
                prediction: item.prediction,
                created_at,
                trace_id: span_context.trace_id().to_string(),
                span_id: span_context.span_id().to_string(),
            };
            writes.push((
                PredictionKey::new(&answer.model, data_id.clone()),
                stored.clone(),
            ));
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
        if let Err(error) = self.store.put_many(&writes).await {
            tracing::warn!(error = %error, "cannot store the batch's predictions; queued for a retry");
            for (key, prediction) in writes {
                self.write_behind.enqueue(key, prediction);
            }
        }
        Ok((computed, not_found))
    }
}

/// Removes a flight from the coalescing table when dropped: after the linger on success,
/// at once on failure (so the next request tries again), and also if the computing task
/// panicked (unwinding drops it), so no key is left joined to a dead flight.
struct Landing {
    flights: Flights,
    key: PredictionKey,
    flight: Flight,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|f| f.same_channel(&self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// A short cause for readiness bodies: no addresses, no upstream text.
fn store_summary(error: &StoreError) -> String {
    match error {
        StoreError::Unreachable(_) => "unreachable".into(),
        StoreError::Status { status, .. } => format!("answered {status}"),
        StoreError::Decode(_) => "undecodable answer".into(),
    }
}

/// A short cause for readiness bodies: no addresses, no upstream text.
fn model_summary(error: &ModelClientError) -> String {
    match error {
        ModelClientError::Unavailable(_) => "unavailable".into(),
        ModelClientError::Timeout => "timeout".into(),
        ModelClientError::CircuitOpen { .. } => "circuit open".into(),
        ModelClientError::UnknownDataId => "unexpected 404".into(),
        ModelClientError::BadAnswer(_) => "bad answer".into(),
    }
}
