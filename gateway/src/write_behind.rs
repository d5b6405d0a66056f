//! The write-behind queue: predictions the store could not take are queued (bounded),
//! retried with backoff by one worker, and drained on shutdown. What is dropped (queue
//! full, or still failing at shutdown) is counted and logged, never silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::domain::{PredictionKey, StoredPrediction};
use crate::store::PredictionStore;

/// First retry delay; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay: a recovered store is written to within this time.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Item = (PredictionKey, StoredPrediction);

/// The producer side, shared by every request.
pub struct WriteBehind {
    sender: mpsc::Sender<Item>,
    shutdown: watch::Sender<bool>,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    depth: Arc<AtomicI64>,
    dropped: Counter<u64>,
    /// Keeps the depth gauge registered.
    _depth_gauge: ObservableGauge<i64>,
}

impl WriteBehind {
    /// Starts the worker writing to `store`; at most `capacity` predictions wait.
    pub fn start(store: Arc<dyn PredictionStore>, capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let depth = Arc::new(AtomicI64::new(0));
        let meter = opentelemetry::global::meter("inference-gateway");
        let gauge_depth = Arc::clone(&depth);
        let depth_gauge = meter
            .i64_observable_gauge("gateway.write_behind.queue.depth")
            .with_unit("{prediction}")
            .with_description("Predictions waiting to be written to the store.")
            .with_callback(move |observer| {
                observer.observe(gauge_depth.load(Ordering::Relaxed), &[])
            })
            .build();
        let dropped = meter
            .u64_counter("gateway.write_behind.dropped")
            .with_unit("{prediction}")
            .with_description("Predictions never written to the store.")
            .build();
        let worker = tokio::spawn(run(
            store,
            receiver,
            shutdown_rx,
            Arc::clone(&depth),
            dropped.clone(),
        ));
        Self {
            sender,
            shutdown,
            worker: tokio::sync::Mutex::new(Some(worker)),
            depth,
            dropped,
            _depth_gauge: depth_gauge,
        }
    }

    /// Queues a write; if the queue is full the prediction is dropped (counted, logged).
    pub fn enqueue(&self, key: PredictionKey, prediction: StoredPrediction) {
        match self.sender.try_send((key, prediction)) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.dropped
                    .add(1, &[KeyValue::new("reason", "queue_full")]);
                let (key, _) = error.into_inner();
                tracing::error!(
                    ml.data_id = %key.data_id,
                    "write-behind queue full: prediction dropped, not stored"
                );
            }
        }
    }

    /// Predictions waiting.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Stops retrying and tries every waiting prediction once more, within `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        let _ = self.shutdown.send(true);
        if let Some(worker) = self.worker.lock().await.take()
            && tokio::time::timeout(deadline, worker).await.is_err()
        {
            tracing::error!(
                waiting = self.depth(),
                "write-behind drain did not finish in time; waiting predictions dropped"
            );
        }
    }
}

/// Completes once shutdown is requested (holding no borrow of the channel).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The worker: writes each prediction, retrying with backoff until it succeeds or
/// shutdown is requested; on shutdown, one last try for each and a count of the rest.
async fn run(
    store: Arc<dyn PredictionStore>,
    mut receiver: mpsc::Receiver<Item>,
    mut shutdown: watch::Receiver<bool>,
    depth: Arc<AtomicI64>,
    dropped: Counter<u64>,
) {
    loop {
        let item = tokio::select! {
            item = receiver.recv() => item,
            () = stopped(&mut shutdown) => None,
        };
        let Some((key, prediction)) = item else { break };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let span = tracing::info_span!(target: "gateway::write_behind", "write_behind", otel.name = "write-behind retry");
            match store.put(&key, &prediction).instrument(span).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "write-behind retry failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => {
                    // One more try below, with the rest of the queue.
                    if store.put(&key, &prediction).await.is_err() {
                        dropped.add(1, &[KeyValue::new("reason", "shutdown")]);
                    }
                    break;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        depth.fetch_sub(1, Ordering::Relaxed);
        if *shutdown.borrow() {
            break;
        }
    }
    // Shutdown: one try for everything still queued.
    receiver.close();
    let mut lost = 0_u64;
    while let Ok((key, prediction)) = receiver.try_recv() {
        depth.fetch_sub(1, Ordering::Relaxed);
        if store.put(&key, &prediction).await.is_err() {
            lost += 1;
        }
    }
    if lost > 0 {
        dropped.add(lost, &[KeyValue::new("reason", "shutdown")]);
        tracing::error!(
            lost,
            "write-behind drain: predictions could not be stored before exit"
        );
    }
}
