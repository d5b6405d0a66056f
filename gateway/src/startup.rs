//! `Application`: a bound gateway (port 0 allowed) served until a shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::task::JoinHandle;

use crate::configuration::{ServerSettings, Settings, client_address};
use crate::domain::{DataId, PredictionKey};
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::prediction_service::PredictionService;
use crate::routes::{self, AppState};
use crate::server::{ConnectionLimits, Shutdown};
use crate::serving_threads::ServingThreads;
use crate::store::write_behind::WriteBehind;
use crate::store::{ElasticsearchStore, MemoryStore, PredictionStore, StoreError};

/// How long start-up waits for the store to accept the index creation: a store that is
/// still starting (compose, CI) should not fail the gateway.
const STORE_STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// How long shutdown waits for queued writes: long enough for a recovered store; with
/// the default drain delay and grace period, short of Kubernetes' default 30 s kill.
const WRITE_BEHIND_DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listener could not be bound.
    #[error("cannot bind {address}")]
    Bind {
        /// What was asked for.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store settings cannot be used: no URL, or credentials that cannot be sent
    /// (bad URLs are refused when the settings are loaded).
    #[error("invalid store settings")]
    StoreSettings(#[source] StoreError),
    /// The store could not be set up: unreachable past the start-up deadline, or it
    /// refused the index.
    #[error("cannot set up the prediction store")]
    Store(#[source] StoreError),
    /// The model client could not be built (no HTTP client).
    #[error("cannot set up the model client")]
    Model(#[source] ModelClientError),
    /// The serving threads or their runtimes could not be started.
    #[error("cannot start the serving threads")]
    ServingThreads(#[source] std::io::Error),
}

impl From<StoreError> for StartupError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidSettings(_) => Self::StoreSettings(error),
            error => Self::Store(error),
        }
    }
}

impl From<ModelClientError> for StartupError {
    fn from(error: ModelClientError) -> Self {
        Self::Model(error)
    }
}

/// A bound, ready-to-serve gateway.
///
/// Builds the store, clients and router, binds first (port 0 allowed),
/// exposes the real address, serves until a shutdown future completes, then shuts down
/// in stages: readiness fails at once, requests are still served for a drain delay, then
/// the server stops accepting and in-flight requests get a grace period.
pub struct Application {
    /// Bound before serving, so the real port is known (port 0 in tests), with its
    /// serving threads waiting.
    serving_threads: ServingThreads,
    /// Where clients reach it.
    address: SocketAddr,
    /// The routes and layers.
    router: Router,
    /// Refreshes the live model version; stopped with the application.
    refresher: JoinHandle<()>,
    /// Drained after the last request finished.
    write_behind: Arc<WriteBehind>,
    /// Set on shutdown: readiness answers 503 from then on.
    draining: Arc<AtomicBool>,
    /// Connection limits and shutdown timing.
    server: ServerSettings,
}

impl Application {
    /// Builds the store named by the settings (Elasticsearch if a URL is set, creating
    /// its index; the embedded in-memory store otherwise), then everything else.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let metrics = Metrics::new();
        let store: Arc<dyn PredictionStore> = match &settings.store.url {
            Some(_) => {
                let store = ElasticsearchStore::new(&settings.store, metrics.clone())?;
                ensure_index(&store).await?;
                Arc::new(store)
            }
            None => {
                tracing::info!("no store URL configured: using the embedded in-memory store");
                Arc::new(MemoryStore::new())
            }
        };
        Self::build_with_store(settings, store, metrics).await
    }

    /// Builds around a given store (tests use a recording one).
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn PredictionStore>,
        metrics: Metrics,
    ) -> Result<Self, StartupError> {
        let bind = settings.server.bind_address();
        let listener = std::net::TcpListener::bind(&bind)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| StartupError::Bind {
                address: bind.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map(client_address)
            .map_err(|source| StartupError::Bind {
                address: bind,
                source,
            })?;
        let serving_threads = ServingThreads::start(
            ServingThreads::count(settings.server.worker_threads),
            listener,
        )
        .await
        .map_err(StartupError::ServingThreads)?;
        let model = ModelClient::new(&settings.model, metrics.clone())?;
        let write_behind = Arc::new(WriteBehind::start(
            Arc::clone(&store),
            settings.store.write_behind_capacity,
            settings.store.write_behind_max_attempts,
        ));
        let predictions = Arc::new(
            PredictionService::new(store, model, metrics.clone(), Arc::clone(&write_behind))
                .with_max_age(settings.store.max_age)
                .with_leases(
                    settings.store.lease_ttl,
                    // A flight that gives up waiting for another replica still has a model
                    // call's time before its requesters' deadline (`check()`: model timeout
                    // < request deadline).
                    settings
                        .server
                        .request_timeout
                        .saturating_sub(settings.model.timeout),
                ),
        );
        let refresher = tokio::spawn(refresh_live_model(
            Arc::clone(&predictions),
            settings.model.version_refresh,
        ));
        let draining = Arc::new(AtomicBool::new(false));
        let state = AppState {
            predictions,
            max_batch_size: settings.server.max_batch_size,
            draining: Arc::clone(&draining),
        };
        let router = routes::router(state, &settings.server, metrics);
        Ok(Self {
            serving_threads,
            address,
            router,
            refresher,
            write_behind,
            draining,
            server: settings.server,
        })
    }

    /// The address clients use (`127.0.0.1:<real port>` for a wildcard bind).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `shutdown` completes, then: `/readyz` answers 503 at once while
    /// requests are still served (each response closing its connection) for the drain
    /// delay, so load balancers move away; then the server stops accepting, in-flight
    /// requests get the grace period, the rest is closed, and the write-behind queue drains.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let limits = ConnectionLimits {
            header_read_timeout: self.server.header_read_timeout,
            idle_timeout: self.server.idle_timeout,
            max_connections: self.server.max_connections,
        }
        .fitted_to_descriptor_limit();
        let stages = Shutdown::default();
        let serving = tokio::spawn(
            self.serving_threads
                .serve(self.router, limits, stages.clone()),
        );
        shutdown.await;
        self.draining.store(true, Ordering::Relaxed);
        stages.close_connections_after_responses();
        tracing::info!(
            drain_delay_ms = self.server.shutdown_drain_delay.as_millis() as u64,
            "shutdown: readiness failing; still serving for the drain delay"
        );
        tokio::time::sleep(self.server.shutdown_drain_delay).await;
        tracing::info!(
            grace_ms = self.server.shutdown_grace.as_millis() as u64,
            "shutdown: no longer accepting; finishing in-flight requests"
        );
        stages.stop_accepting(self.server.shutdown_grace);
        let _ = serving.await;
        self.refresher.abort();
        self.write_behind.drain(WRITE_BEHIND_DRAIN_DEADLINE).await;
        tracing::info!("shutdown: connections closed, write-behind drained; flushing telemetry");
    }
}

/// Creates the index, retrying while the store is unreachable, then waits until reads
/// through the alias and of the lease index are answered: a node answers 503 while a new
/// index's shards are still recovering, and a gateway that reported ready then would
/// bypass its cache (or compute without leases).
async fn ensure_index(store: &ElasticsearchStore) -> Result<(), StoreError> {
    let deadline = Instant::now() + STORE_STARTUP_DEADLINE;
    let created = Backoff::new(deadline, Duration::from_millis(200), Duration::from_secs(2));
    created
        .retry(
            || store.ensure_index(),
            |error| matches!(error, StoreError::Unreachable(_)),
            |error| {
                tracing::warn!(
                    cause = error as &dyn std::error::Error,
                    "store not reachable yet; retrying"
                );
            },
        )
        .await?;
    let probe = PredictionKey {
        model_name: "startup-probe".into(),
        model_version: "0".into(),
        run_id: "0".into(),
        data_id: DataId::parse("startup-probe").expect("the probe's id is a valid data id"),
    };
    let readable = Backoff::new(deadline, Duration::from_millis(50), Duration::from_secs(1));
    readable
        .retry(
            || async {
                store.get(&probe).await?;
                store.lease(&probe).await
            },
            |_| true,
            |error| {
                tracing::info!(
                    cause = error as &dyn std::error::Error,
                    "index not readable yet; waiting"
                );
            },
        )
        .await
        .map(|_| ())
}

/// Retries of a start-up step: delays doubling from `first` up to `max`, until `deadline`.
struct Backoff {
    deadline: Instant,
    first: Duration,
    max: Duration,
}

impl Backoff {
    fn new(deadline: Instant, first: Duration, max: Duration) -> Self {
        Self {
            deadline,
            first,
            max,
        }
    }

    /// Runs `attempt` until it succeeds; an error is returned once the deadline has passed
    /// or when `retryable` says retrying cannot help, else reported to `on_retry`.
    async fn retry<T, E, F>(
        &self,
        mut attempt: impl FnMut() -> F,
        retryable: impl Fn(&E) -> bool,
        on_retry: impl Fn(&E),
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let mut delay = self.first;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if Instant::now() < self.deadline && retryable(&error) => {
                    on_retry(&error);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Re-reads the live model version every `interval`.
async fn refresh_live_model(predictions: Arc<PredictionService>, interval: Duration) {
    // At least 1 ms: `interval` panics on zero, and `..._VERSION_REFRESH_MS=0` means
    // "as often as possible".
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        predictions.refresh_live_model().await;
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
