//! The cache-aside prediction path: look the prediction up for the live model version,
//! compute it on a miss (one model call per key however many requests wait for it),
//! store it with the computing trace, and follow the model service's live version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tokio::sync::OnceCell;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{CacheResult, DataId, ModelInfo, PredictionKey, StoredPrediction};
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::store::{PredictionStore, StoreError};
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
}

/// A served prediction and how it was obtained.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The prediction with its model, time and computing trace.
    pub prediction: StoredPrediction,
    /// Hit, miss or bypass.
    pub cache: CacheResult,
}

/// The predictions of a batch, in the order asked, and the ids no row exists for.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One outcome per known id, in the order of the request (duplicates once).
    pub items: Vec<Outcome>,
    /// Ids the model service does not know.
    pub not_found: Vec<DataId>,
}

/// The state of each dependency, for readiness.
#[derive(Debug, Clone)]
pub struct DependencyStatus {
    /// Store kind and its check's result.
    pub store: (&'static str, Result<(), String>),
    /// The model service check's result (the live model when up).
    pub model: Result<ModelInfo, String>,
}

type Flight = OnceCell<Result<StoredPrediction, PredictionError>>;

/// The cache-aside logic; no HTTP types.
pub struct PredictionService {
    /// Where predictions are kept.
    store: Arc<dyn PredictionStore>,
    /// The model service.
    model: ModelClient,
    /// The live model as last learned from the model service (`None` until first learned).
    live: RwLock<Option<ModelInfo>>,
    /// Computations in progress (and lingering), one per key: the coalescing table.
    flights: Arc<Mutex<HashMap<PredictionKey, Arc<Flight>>>>,
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
    pub async fn predict(&self, data_id: DataId) -> Result<Outcome, PredictionError> {
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
        self.metrics.cache_results.add(
            1,
            &[KeyValue::new("ml.cache.result", outcome.cache.as_str())],
        );
        Ok(outcome)
    }

    /// The predictions of `data_ids`: one multi-get, one batched model call for the misses,
    /// one bulk write. Batches are not coalesced with single requests.
    pub async fn predict_batch(
        &self,
        data_ids: Vec<DataId>,
    ) -> Result<BatchOutcome, PredictionError> {
        let span = Span::current();
        let mut seen = std::collections::HashSet::new();
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
        let mut computed: HashMap<DataId, StoredPrediction> = HashMap::new();
        let mut not_found = Vec::new();
        if !misses.is_empty() {
            let answer = self.model.predict_batch(&misses).await?;
            let cx = span.context();
            let span_context = cx.span().span_context().clone();
            let created_at = Utc::now();
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
            not_found = answer
                .not_found
                .iter()
                .filter_map(|id| DataId::parse(id).ok())
                .collect();
            if answer.model != model {
                self.set_live(answer.model.clone());
            }
            if let Err(error) = self.store.put_many(&writes).await {
                tracing::warn!(error = %error, "cannot store the batch's predictions; queued for a retry");
                for (key, prediction) in writes {
                    self.write_behind.enqueue(key, prediction);
                }
            }
        }
        let mut items = Vec::with_capacity(data_ids.len());
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
                    None => continue,
                },
            };
            self.metrics.cache_results.add(
                1,
                &[KeyValue::new("ml.cache.result", outcome.cache.as_str())],
            );
            items.push(outcome);
        }
        let hits = items.iter().filter(|o| o.cache == CacheResult::Hit).count();
        span.set_attribute("ml.model.name", model.name.clone());
        span.set_attribute("ml.model.version", model.version.clone());
        span.set_attribute("ml.run_id", model.run_id.clone());
        span.set_attribute("ml.batch.size", seen.len() as i64);
        span.set_attribute("ml.batch.hits", hits as i64);
        span.set_attribute("ml.batch.not_found", not_found.len() as i64);
        Ok(BatchOutcome { items, not_found })
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
        let stored = self.store.get(&PredictionKey::new(&model, data_id)).await?;
        if let Some(stored) = &stored {
            link_to_computing_trace(&span, stored);
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
        &self,
        key: PredictionKey,
        cache: CacheResult,
    ) -> Result<Outcome, PredictionError> {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.clone()).or_default().clone()
        };
        let led = AtomicBool::new(false);
        let result = flight
            .get_or_init(|| async {
                led.store(true, Ordering::Relaxed);
                self.compute(&key).await
            })
            .await
            .clone();
        if led.load(Ordering::Relaxed) {
            self.land(key, flight, result.is_ok());
        } else if let Ok(stored) = &result {
            // Served by another request's model call: point at the trace that made it.
            link_to_computing_trace(&Span::current(), stored);
        }
        result.map(|prediction| Outcome { prediction, cache })
    }

    /// Removes a finished flight: after [`COALESCE_LINGER`] on success, at once on failure
    /// (so the next request tries again).
    fn land(&self, key: PredictionKey, flight: Arc<Flight>, succeeded: bool) {
        let flights = Arc::clone(&self.flights);
        let remove = move || {
            let mut flights = flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&key);
            }
        };
        if succeeded {
            tokio::spawn(async move {
                tokio::time::sleep(COALESCE_LINGER).await;
                remove();
            });
        } else {
            remove();
        }
    }

    /// One model call and one store write, recorded with the current (computing) span.
    async fn compute(&self, key: &PredictionKey) -> Result<StoredPrediction, PredictionError> {
        let answer = self.model.predict(&key.data_id).await?;
        let cx = Span::current().context();
        let span_context = cx.span().span_context().clone();
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

/// Links `span` to the span that computed `stored`, so a hit leads to its original trace.
fn link_to_computing_trace(span: &Span, stored: &StoredPrediction) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(&stored.trace_id),
        SpanId::from_hex(&stored.span_id),
    ) else {
        return;
    };
    span.add_link_with_attributes(
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ),
        vec![KeyValue::new("ml.link.reason", "computed_prediction")],
    );
}

/// A span whose parent is not sampled: background calls (version refresh, readiness)
/// are neither exported nor make the model service record a trace for every probe.
fn untraced_span(name: &'static str) -> Span {
    let span = tracing::info_span!(target: "gateway::background", "background", otel.name = name);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1)
        | 1;
    let parent = SpanContext::new(
        TraceId::from(nanos),
        SpanId::from(nanos as u64),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    span
}
