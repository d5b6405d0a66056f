//! `Application`: builds the store, clients and router, binds first (port 0 allowed),
//! exposes the real address, and serves until a shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::configuration::{Settings, client_address};
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::prediction_service::PredictionService;
use crate::routes::{self, AppState};
use crate::store::{ElasticsearchStore, MemoryStore, PredictionStore, StoreError};
use crate::write_behind::WriteBehind;

/// How long start-up waits for the store to accept the index creation: a store that is
/// still starting (compose, CI) should not fail the gateway.
const STORE_STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// How long shutdown waits for queued writes: long enough for a recovered store,
/// short of an orchestrator's kill deadline (30 s by default in Kubernetes).
const WRITE_BEHIND_DRAIN_DEADLINE: Duration = Duration::from_secs(10);

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
    /// The store could not be set up.
    #[error("cannot set up the prediction store")]
    Store(#[from] StoreError),
    /// The model client could not be built.
    #[error("cannot set up the model client")]
    Model(#[from] ModelClientError),
}

/// A bound, ready-to-serve gateway.
pub struct Application {
    /// Bound before serving, so the real port is known (port 0 in tests).
    listener: TcpListener,
    /// Where clients reach it.
    address: SocketAddr,
    /// The routes and layers.
    router: Router,
    /// Refreshes the live model version; stopped with the application.
    refresher: JoinHandle<()>,
    /// Drained after the last request finished.
    write_behind: Arc<WriteBehind>,
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
        let listener = TcpListener::bind(&bind)
            .await
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
        let model = ModelClient::new(&settings.model, metrics.clone())?;
        let write_behind = Arc::new(WriteBehind::start(
            Arc::clone(&store),
            settings.store.write_behind_capacity,
        ));
        let predictions = Arc::new(PredictionService::new(
            store,
            model,
            metrics.clone(),
            Arc::clone(&write_behind),
        ));
        let refresher = tokio::spawn(refresh_live_model(
            Arc::clone(&predictions),
            settings.model.version_refresh(),
        ));
        let state = AppState {
            predictions,
            max_batch_size: settings.server.max_batch_size,
        };
        let router = routes::router(state, &settings.server, metrics);
        Ok(Self {
            listener,
            address,
            router,
            refresher,
            write_behind,
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

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish and drains the write-behind queue.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.refresher.abort();
        self.write_behind.drain(WRITE_BEHIND_DRAIN_DEADLINE).await;
        result
    }
}

/// Creates the index, retrying while the store is unreachable, up to a deadline.
async fn ensure_index(store: &ElasticsearchStore) -> Result<(), StoreError> {
    let deadline = Instant::now() + STORE_STARTUP_DEADLINE;
    let mut delay = Duration::from_millis(200);
    loop {
        match store.ensure_index().await {
            Ok(()) => return Ok(()),
            Err(StoreError::Unreachable(cause)) if Instant::now() < deadline => {
                tracing::warn!(cause = %cause, "store not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Re-reads the live model version every `interval`.
async fn refresh_live_model(predictions: Arc<PredictionService>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
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
    tracing::info!("shutdown requested: draining in-flight requests");
}
