//! Request coalescing: the flight table, one detached computation per key however many
//! requests wait for it (across replicas through the store's lease, `leases.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::TraceContextExt;
use tokio::sync::watch;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::leases::{Coordination, LeaseUse, Lookup};
use super::{PredictionError, PredictionService};
use crate::domain::{PredictionKey, RequestDirectives, StoredPrediction};
use crate::store::Lease;
use crate::telemetry::link_to_computing_trace;

/// How long a finished computation stays joinable after its result was stored: a request
/// whose store lookup raced the write still gets this result instead of a second model call.
const COALESCE_LINGER: Duration = Duration::from_secs(2);

/// A computed prediction and whether the store acknowledged its write.
#[derive(Debug, Clone)]
pub(super) struct Computed {
    /// The prediction, with its computing trace.
    pub(super) prediction: StoredPrediction,
    /// Whether the store acknowledged its write.
    pub(super) stored: bool,
    /// How the flight used the cross-replica lease (`None`: it did not try, the store
    /// lookup having failed).
    pub(super) lease: Option<LeaseUse>,
}

type FlightResult = Result<Computed, PredictionError>;
/// A computation in progress: `None` until its result is published.
type Flight = watch::Receiver<Option<FlightResult>>;

/// A flight in the coalescing table and whether its prediction is to be written: true as
/// soon as one requester (starter or joiner) did not say `no-store`, so a `no-store`
/// request never makes a shared computation skip the write the others expect. Set and
/// read under the table's lock, so no joiner slips in after the decision.
pub(super) struct FlightEntry {
    flight: Flight,
    store: Arc<AtomicBool>,
}

/// The coalescing table: one flight per key.
pub(super) type Flights = Arc<Mutex<HashMap<PredictionKey, FlightEntry>>>;

impl PredictionService {
    /// Computes the prediction of `key`, or joins a computation already running for it
    /// that `directives` accept, here or (through the lease) on another replica; also says
    /// whether it waited for another's computation (`collapsed`). `lookup` is what this
    /// request's store lookup saw; a flight it starts coordinates by it.
    pub(super) async fn compute_once(
        self: &Arc<Self>,
        key: PredictionKey,
        directives: &RequestDirectives,
        lookup: Lookup,
    ) -> Result<(Computed, bool), PredictionError> {
        let (mut flight, joined) = self.join_or_start(key, directives, lookup);
        let result = match flight.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or(Err(PredictionError::Aborted)),
            // The computing task ended without publishing: it panicked.
            Err(_) => Err(PredictionError::Aborted),
        };
        let computed = result?;
        let span = Span::current();
        if let Some(lease) = computed.lease {
            span.set_attribute("ml.coalescing.lease", lease.as_str());
        }
        let collapsed = joined || computed.lease == Some(LeaseUse::HeldElsewhere);
        let own_trace = span.context().span().span_context().trace_id().to_string();
        if computed.prediction.trace_id != own_trace {
            // Served by another request's model call: point at the trace that made it.
            link_to_computing_trace(&span, &computed.prediction);
        }
        Ok((computed, collapsed))
    }

    /// Whether a request with `directives` may take the result of `flight`: one still
    /// computing is as fresh as its own call would be; a finished (lingering) one is a
    /// stored prediction by now, so `no-cache` never takes it and `max-age` and the
    /// maximum age judge its age. A failed one is shared, as before it is forgotten.
    fn may_join(&self, flight: &Flight, directives: &RequestDirectives) -> bool {
        match &*flight.borrow() {
            None | Some(Err(_)) => true,
            Some(Ok(done)) => !directives.no_cache && self.is_fresh(&done.prediction, directives),
        }
    }

    /// The flight of `key`: the one in progress if `directives` accept it (then `true`),
    /// or a new one computing in its own task, inside the current (requesting) trace,
    /// whatever becomes of the requester. A new flight replaces one the request could not
    /// join in the table; that one still lands for its own waiters.
    fn join_or_start(
        self: &Arc<Self>,
        key: PredictionKey,
        directives: &RequestDirectives,
        lookup: Lookup,
    ) -> (Flight, bool) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = flights.get(&key)
            && self.may_join(&entry.flight, directives)
        {
            if !directives.no_store {
                entry.store.store(true, Ordering::Relaxed);
            }
            return (entry.flight.clone(), true);
        }
        let (publish, flight) = watch::channel(None);
        let store = Arc::new(AtomicBool::new(!directives.no_store));
        let entry = FlightEntry {
            flight: flight.clone(),
            store: Arc::clone(&store),
        };
        flights.insert(key.clone(), entry);
        drop(flights);
        let landing = Landing {
            flights: Arc::clone(&self.flights),
            key,
            flight: flight.clone(),
            store,
            lookup,
        };
        let this = Arc::clone(self);
        let requesting = Span::current().context();
        let computing = requesting.clone();
        let task = async move {
            let (result, lease) = this.compute(&landing, &computing).await;
            // Linger only where a write may race a lookup; unwritten results are gone at once.
            let linger = result.is_ok() && landing.store.load(Ordering::Relaxed);
            publish.send_replace(Some(result));
            // After the answer, so no requester waits for it; after the write, so a replica
            // that sees the lease gone finds the prediction.
            if let Some(lease) = lease {
                this.release_lease(&lease).await;
            }
            if linger {
                tokio::time::sleep(COALESCE_LINGER).await;
            }
            drop(landing);
        };
        self.background.spawn(task.with_context(requesting));
        (flight, false)
    }

    /// The prediction of the flight: another replica's, if it holds the key's lease and
    /// lands its prediction in time; else computed here (see [`Self::call_model`]), and
    /// the lease it computed under, to release once the result is published.
    async fn compute(
        &self,
        landing: &Landing,
        computing: &opentelemetry::Context,
    ) -> (FlightResult, Option<Lease>) {
        let coordination = self
            .coordinate(&landing.key, landing.lookup, computing)
            .await;
        let (lease, lease_use) = match coordination {
            Coordination::Landed(prediction) => {
                let computed = Computed {
                    prediction,
                    stored: true,
                    lease: Some(LeaseUse::HeldElsewhere),
                };
                return (Ok(computed), None);
            }
            Coordination::Compute { lease, lease_use } => (lease, lease_use),
        };
        let result = self
            .call_model(landing, computing)
            .await
            .map(|computed| Computed {
                lease: lease_use,
                ..computed
            });
        (result, lease)
    }

    /// One model call and, unless every requester said `no-store`, one store write,
    /// recorded with the computing trace.
    async fn call_model(
        &self,
        landing: &Landing,
        computing: &opentelemetry::Context,
    ) -> FlightResult {
        let key = &landing.key;
        let answer = self.model.predict(&key.data_id).await?;
        let span_context = computing.span().span_context().clone();
        let stored = StoredPrediction::computed(
            key.data_id.clone(),
            answer.model,
            answer.prediction,
            Utc::now(),
            &span_context,
        );
        // The model may have switched (version or run) since the live one was learned:
        // follow it, and store the prediction under the model that made it.
        if !key.is_of(&stored.model) {
            self.set_live(stored.model.clone());
        }
        if !landing.decide_store() {
            return Ok(Computed {
                prediction: stored,
                stored: false,
                lease: None,
            });
        }
        match self.store.put(&stored).await {
            Ok(()) => {
                tracing::info!(
                    ml.data_id = %stored.data_id,
                    ml.model.version = %stored.model.version,
                    ml.run_id = %stored.model.run_id,
                    "prediction computed and stored"
                );
                Ok(Computed {
                    prediction: stored,
                    stored: true,
                    lease: None,
                })
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "cannot store the prediction; queued for a retry"
                );
                self.write_behind.enqueue(stored.clone());
                Ok(Computed {
                    prediction: stored,
                    stored: false,
                    lease: None,
                })
            }
        }
    }
}

/// Removes a flight from the coalescing table when dropped: after the linger on success,
/// at once on failure (so the next request tries again), and also if the computing task
/// panicked (unwinding drops it), so no key is left joined to a dead flight.
struct Landing {
    flights: Flights,
    key: PredictionKey,
    flight: Flight,
    /// Whether to write the prediction (the entry's flag).
    store: Arc<AtomicBool>,
    /// What the starter's lookup saw: how the flight coordinates with other replicas.
    lookup: Lookup,
}

impl Landing {
    /// Whether to write the computed prediction, decided once under the table's lock. A
    /// flight nobody wants written leaves the table at once, so a request that does want
    /// its prediction stored starts its own flight instead of joining an unwritten one.
    fn decide_store(&self) -> bool {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        let store = self.store.load(Ordering::Relaxed);
        if !store
            && flights
                .get(&self.key)
                .is_some_and(|entry| entry.flight.same_channel(&self.flight))
        {
            flights.remove(&self.key);
        }
        store
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|entry| entry.flight.same_channel(&self.flight))
        {
            flights.remove(&self.key);
        }
    }
}
