//! Cross-replica coalescing: before a flight calls the model it leases the key in the
//! store, or waits for the replica holding the lease to land the prediction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tokio::time::Instant;

use super::PredictionService;
use crate::domain::{PredictionKey, StoredPrediction};
use crate::store::{Lease, LeaseGrant, LeaseOutcome, StoreError};

/// The first pause between two looks at another replica's lease and prediction; it
/// doubles up to [`LAST_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(25);
/// The longest pause between two looks.
const LAST_POLL: Duration = Duration::from_millis(200);

/// How this process takes leases: who it is, for how long, how long it waits for others.
#[derive(Debug, Clone)]
pub(super) struct LeaseSettings {
    /// This process in lease documents: 32 random hex digits, new at every start.
    holder: String,
    /// How long a lease holds unless released (`GATEWAY__STORE__LEASE_TTL_MS`).
    ttl: Duration,
    /// How long a flight waits for other replicas at most (the request deadline less the
    /// model timeout, so it can still compute in time); then it computes.
    wait_limit: Duration,
}

impl LeaseSettings {
    /// A new holder id, leasing for `ttl`, waiting `wait_limit` at most.
    pub(super) fn new(ttl: Duration, wait_limit: Duration) -> Self {
        Self {
            holder: RandomIdGenerator::default().new_trace_id().to_string(),
            ttl,
            wait_limit,
        }
    }
}

impl Default for LeaseSettings {
    /// The default `GATEWAY__STORE__LEASE_TTL_MS` (10 s), and the default request deadline
    /// less the default model timeout (10 s - 5 s).
    fn default() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(5))
    }
}

/// What the store lookup before a flight saw; it decides how the flight coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Nothing stored: any prediction another replica lands will do.
    Missed,
    /// A prediction created at this time, too old for the request: only a newer one will do.
    Stale(DateTime<Utc>),
    /// Not looked up (`no-cache`): the flight leases the key, so other replicas wait for
    /// it, but never waits for another's lease (its prediction would be a stored one).
    Skipped,
    /// The store failed: no lease either, as on the bypass path (another store call
    /// would likely fail after its timeout too).
    Failed,
}

/// How a flight used the lease: `ml.coalescing.lease` on the span of every request it
/// served, and the attribute of the `ml.coalescing.leases` counter (once per flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseUse {
    /// No lease existed (or its holder released it without a prediction): this replica
    /// computed under its own.
    Acquired,
    /// The lease of a replica that did not release it expired: this one took it over and
    /// computed.
    TakenOver,
    /// Another replica computed: its prediction was served (`Cache-Status: collapsed`).
    HeldElsewhere,
    /// Another replica held the lease but this one computed anyway: under `no-cache`, or
    /// after waiting as long as it could and still compute before the deadline.
    Ignored,
    /// The lease could not be read or written: computed without (availability first).
    Unavailable,
}

impl LeaseUse {
    /// The attribute value.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Acquired => "acquired",
            Self::TakenOver => "taken_over",
            Self::HeldElsewhere => "held_elsewhere",
            Self::Ignored => "ignored",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What a flight does after coordinating.
pub(super) enum Coordination {
    /// Serve this prediction, landed by the replica that held the lease.
    Landed(StoredPrediction),
    /// Compute here, under `lease` if one is held (released after), counted as `lease_use`.
    Compute {
        lease: Option<Lease>,
        lease_use: Option<LeaseUse>,
    },
}

impl Coordination {
    fn compute(lease: Option<Lease>, lease_use: LeaseUse) -> Self {
        Self::Compute {
            lease,
            lease_use: Some(lease_use),
        }
    }
}

impl PredictionService {
    /// Leases `key` for the computing trace, or waits for the replica holding the lease:
    /// polls (lease first, then prediction: a holder writes before it releases) every
    /// 25 ms doubling to 200 ms, until its prediction lands (served), its lease is
    /// released without one (leased again here) or expires (taken over if nobody else
    /// did first), or the wait limit passes (computed anyway). Any store failure: computed
    /// without a lease. Counts the outcome in `ml.coalescing.leases`.
    pub(super) async fn coordinate(
        &self,
        key: &PredictionKey,
        lookup: Lookup,
        computing: &opentelemetry::Context,
    ) -> Coordination {
        if lookup == Lookup::Failed {
            return Coordination::Compute {
                lease: None,
                lease_use: None,
            };
        }
        let coordination = match self.lease_or_wait(key, lookup, computing).await {
            Ok(coordination) => coordination,
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    ml.data_id = %key.data_id,
                    "the computation lease cannot be used; computing without it"
                );
                Coordination::compute(None, LeaseUse::Unavailable)
            }
        };
        let lease_use = match &coordination {
            Coordination::Landed(_) => Some(LeaseUse::HeldElsewhere),
            Coordination::Compute { lease_use, .. } => *lease_use,
        };
        if let Some(lease_use) = lease_use {
            self.metrics.coalescing_leases.add(
                1,
                &[KeyValue::new("ml.coalescing.lease", lease_use.as_str())],
            );
        }
        coordination
    }

    async fn lease_or_wait(
        &self,
        key: &PredictionKey,
        lookup: Lookup,
        computing: &opentelemetry::Context,
    ) -> Result<Coordination, StoreError> {
        let grant = LeaseGrant {
            holder: self.leases.holder.clone(),
            ttl: self.leases.ttl,
            trace_id: computing.span().span_context().trace_id().to_string(),
        };
        if let LeaseOutcome::Acquired(lease) = self.store.acquire_lease(key, &grant).await? {
            return Ok(Coordination::compute(Some(lease), LeaseUse::Acquired));
        }
        if lookup == Lookup::Skipped {
            return Ok(Coordination::compute(None, LeaseUse::Ignored));
        }
        tracing::debug!(ml.data_id = %key.data_id, "another replica holds the lease; waiting");
        let give_up_at = Instant::now() + self.leases.wait_limit;
        let mut pause = FIRST_POLL;
        loop {
            let now = Instant::now();
            if now >= give_up_at {
                tracing::warn!(
                    ml.data_id = %key.data_id,
                    "another replica's computation outlasted the time this one can wait; computing"
                );
                return Ok(Coordination::compute(None, LeaseUse::Ignored));
            }
            tokio::time::sleep(pause.min(give_up_at - now)).await;
            pause = (pause * 2).min(LAST_POLL);
            let current = self.store.lease(key).await?;
            if let Some(landed) = self.store.get(key).await?
                && lookup.accepts(&landed)
            {
                return Ok(Coordination::Landed(landed));
            }
            match current {
                // Released without a prediction (its model call failed, or nobody wanted it
                // written): this replica's turn.
                None => {
                    if let LeaseOutcome::Acquired(lease) =
                        self.store.acquire_lease(key, &grant).await?
                    {
                        return Ok(Coordination::compute(Some(lease), LeaseUse::Acquired));
                    }
                }
                Some(expired) if expired.is_expired() => {
                    tracing::info!(
                        ml.data_id = %key.data_id,
                        holder = %expired.holder,
                        computing_trace_id = %expired.trace_id,
                        "taking over an expired computation lease"
                    );
                    if let Some(lease) = self.store.take_over_lease(&expired, &grant).await? {
                        return Ok(Coordination::compute(Some(lease), LeaseUse::TakenOver));
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Releases `lease` (best effort: it expires anyway).
    pub(super) async fn release_lease(&self, lease: &Lease) {
        if let Err(error) = self.store.release_lease(lease).await {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                ml.data_id = %lease.key.data_id,
                "cannot release the computation lease; it expires by itself"
            );
        }
    }
}

impl Lookup {
    /// Whether `landed`, read while another replica held the lease, answers the flight.
    fn accepts(self, landed: &StoredPrediction) -> bool {
        match self {
            Self::Stale(seen) => landed.created_at > seen,
            _ => true,
        }
    }
}
