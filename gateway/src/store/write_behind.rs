//! The write-behind queue: predictions the store could not take, retried in the background.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::domain::StoredPrediction;
use crate::store::{PredictionStore, StoreError};
use crate::telemetry::link_to_computing_trace;

/// First retry delay; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay: a recovered store is written to within this time.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Writes attempted at once: a store that hangs on one write does not hold up the rest.
const CONCURRENT_ATTEMPTS: usize = 8;

/// Why a prediction was given up (the `reason` attribute of the dropped counter).
#[derive(Debug, Clone, Copy)]
enum GiveUp {
    QueueFull,
    Permanent,
    AttemptsExhausted,
    Shutdown,
}

impl GiveUp {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Permanent => "permanent_error",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::Shutdown => "shutdown",
        }
    }
}

/// One prediction waiting to be written.
#[derive(Debug)]
struct Item {
    prediction: StoredPrediction,
    /// Attempts made by the queue so far (the request's own write is not counted); the
    /// backoff grows with them.
    attempts: u32,
    /// Attempts the store answered with a failure; the limit applies to these.
    refusals: u32,
}

/// An item waiting for its next attempt, ordered by when it is due.
struct Scheduled {
    due: Instant,
    /// Keeps the order stable among items due at the same instant.
    sequence: u64,
    item: Item,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

/// The producer side, shared by every request.
///
/// The write-behind queue: predictions the store could not take are retried, each on its
/// own schedule (exponential backoff, a bounded number of attempts the store answered,
/// several at once), so one bad write never holds the others up; drained on shutdown. Every prediction given
/// up (queue full, a permanent error, attempts used up, shutdown) is counted and logged
/// with its data id and computing trace id, never silent.
pub struct WriteBehind {
    sender: mpsc::UnboundedSender<Item>,
    /// Set to the drain deadline when shutdown starts.
    shutdown: watch::Sender<Option<Instant>>,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Predictions queued, waiting or being attempted; bounded by `capacity`.
    depth: Arc<AtomicI64>,
    capacity: i64,
    dropped: Counter<u64>,
    /// Keeps the depth gauge registered.
    _depth_gauge: ObservableGauge<i64>,
}

impl WriteBehind {
    /// Starts the worker writing to `store`; at most `capacity` predictions wait, each
    /// given up after `max_attempts` failures the store answered (a store that cannot
    /// be reached at all is retried until it can, or until shutdown).
    pub fn start(store: Arc<dyn PredictionStore>, capacity: usize, max_attempts: u32) -> Self {
        let meter = opentelemetry::global::meter("inference-gateway");
        Self::start_on(&meter, store, capacity, max_attempts)
    }

    /// [`Self::start`] with its instruments on `meter`.
    fn start_on(
        meter: &Meter,
        store: Arc<dyn PredictionStore>,
        capacity: usize,
        max_attempts: u32,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(None);
        let depth = Arc::new(AtomicI64::new(0));
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
            .with_description("Predictions given up without being written to the store.")
            .build();
        let worker = Worker {
            store,
            max_attempts: max_attempts.max(1),
            depth: Arc::clone(&depth),
            dropped: dropped.clone(),
            waiting: BinaryHeap::new(),
            sequence: 0,
            attempts: JoinSet::new(),
        };
        let worker = tokio::spawn(worker.run(receiver, shutdown_rx));
        Self {
            sender,
            shutdown,
            worker: tokio::sync::Mutex::new(Some(worker)),
            depth,
            capacity: i64::try_from(capacity.max(1)).unwrap_or(i64::MAX),
            dropped,
            _depth_gauge: depth_gauge,
        }
    }

    /// Queues a write; if the queue is full the prediction is given up (counted, logged).
    pub fn enqueue(&self, prediction: StoredPrediction) {
        let item = Item {
            prediction,
            attempts: 0,
            refusals: 0,
        };
        if self.depth.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            give_up(&self.dropped, &item, GiveUp::QueueFull, None);
            return;
        }
        if let Err(refused) = self.sender.send(item) {
            // The worker has stopped: only after the drain finished.
            self.depth.fetch_sub(1, Ordering::Relaxed);
            give_up(&self.dropped, &refused.0, GiveUp::Shutdown, None);
        }
    }

    /// Predictions queued, waiting or being attempted.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Stops the retry schedule and tries every queued prediction once more, within
    /// `deadline`; what is still not written then is given up, each logged.
    pub async fn drain(&self, deadline: Duration) {
        let _ = self.shutdown.send(Some(Instant::now() + deadline));
        if let Some(worker) = self.worker.lock().await.take() {
            let _ = worker.await;
        }
    }
}

/// The consumer side: schedules, attempts and gives up items.
struct Worker {
    store: Arc<dyn PredictionStore>,
    max_attempts: u32,
    depth: Arc<AtomicI64>,
    dropped: Counter<u64>,
    /// Items waiting for their next attempt, earliest first.
    waiting: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
    /// Attempts in progress, each giving back its item and result.
    attempts: JoinSet<(Item, Result<(), StoreError>)>,
}

impl Worker {
    async fn run(
        mut self,
        mut receiver: mpsc::UnboundedReceiver<Item>,
        mut shutdown: watch::Receiver<Option<Instant>>,
    ) {
        let deadline = loop {
            self.start_due_attempts();
            let next_due = self.waiting.peek().map(|Reverse(s)| s.due);
            tokio::select! {
                item = receiver.recv() => match item {
                    Some(item) => self.schedule(item, FIRST_BACKOFF),
                    None => break None,
                },
                Some(done) = self.attempts.join_next() => self.settle(done),
                () = sleep_until(next_due) => {}
                deadline = drain_deadline(&mut shutdown) => break deadline,
            }
        };
        receiver.close();
        while let Ok(item) = receiver.try_recv() {
            self.schedule(item, Duration::ZERO);
        }
        self.drain(deadline).await;
    }

    /// Shutdown: one last attempt for every item (those in progress finish theirs), until
    /// `deadline`; the rest is given up.
    async fn drain(mut self, deadline: Option<Instant>) {
        let deadline = deadline.unwrap_or_else(Instant::now);
        let mut lost = 0_u64;
        let mut last_tries = Vec::new();
        while let Some(Reverse(scheduled)) = self.waiting.pop() {
            last_tries.push(scheduled.item);
        }
        for item in last_tries {
            self.attempts.spawn(attempt(Arc::clone(&self.store), item));
        }
        loop {
            match tokio::time::timeout_at(deadline, self.attempts.join_next()).await {
                Ok(Some(Ok((item, result)))) => {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    if let Err(error) = result {
                        lost += 1;
                        give_up(&self.dropped, &item, GiveUp::Shutdown, Some(&error));
                    }
                }
                // A panicked attempt lost its item; nothing is left to log but the count.
                Ok(Some(Err(_))) => {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    lost += 1;
                    self.dropped
                        .add(1, &[KeyValue::new("reason", GiveUp::Shutdown.as_str())]);
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::error!(
                        unfinished = self.attempts.len(),
                        "write-behind drain deadline passed with writes unfinished"
                    );
                    let unfinished = self.attempts.len() as u64;
                    self.attempts.abort_all();
                    self.depth.fetch_sub(unfinished as i64, Ordering::Relaxed);
                    lost += unfinished;
                    self.dropped.add(
                        unfinished,
                        &[KeyValue::new("reason", GiveUp::Shutdown.as_str())],
                    );
                    break;
                }
            }
        }
        if lost > 0 {
            tracing::error!(
                lost,
                "write-behind drain: predictions could not be stored before exit"
            );
        }
    }

    fn schedule(&mut self, item: Item, delay: Duration) {
        self.sequence += 1;
        self.waiting.push(Reverse(Scheduled {
            due: Instant::now() + delay,
            sequence: self.sequence,
            item,
        }));
    }

    /// Starts the attempts that are due, up to [`CONCURRENT_ATTEMPTS`] at once.
    fn start_due_attempts(&mut self) {
        let now = Instant::now();
        while self.attempts.len() < CONCURRENT_ATTEMPTS
            && self.waiting.peek().is_some_and(|Reverse(s)| s.due <= now)
        {
            let Some(Reverse(scheduled)) = self.waiting.pop() else {
                break;
            };
            self.attempts
                .spawn(attempt(Arc::clone(&self.store), scheduled.item));
        }
    }

    /// Acts on a finished attempt: done, rescheduled, or given up.
    fn settle(&mut self, done: Result<(Item, Result<(), StoreError>), tokio::task::JoinError>) {
        let Ok((mut item, result)) = done else {
            // A panicked attempt: its item is gone; count it so the depth stays right.
            self.depth.fetch_sub(1, Ordering::Relaxed);
            self.dropped.add(
                1,
                &[KeyValue::new("reason", GiveUp::AttemptsExhausted.as_str())],
            );
            return;
        };
        let Err(error) = result else {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        if !matches!(error, StoreError::Unreachable(_)) {
            // An unreachable store is down for every write, not refusing this one: only
            // answered failures count, so an outage as long as a node restart loses
            // nothing (the queue's capacity and the shutdown drain still bound it).
            item.refusals += 1;
        }
        let reason = if error.is_permanent() {
            Some(GiveUp::Permanent)
        } else if item.refusals >= self.max_attempts {
            Some(GiveUp::AttemptsExhausted)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                give_up(&self.dropped, &item, reason, Some(&error));
            }
            None => {
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << item.attempts.min(16))
                    .min(MAX_BACKOFF);
                tracing::warn!(
                    ml.data_id = %item.prediction.data_id,
                    attempt = item.attempts,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = &error as &dyn std::error::Error,
                    "write-behind write failed; retrying"
                );
                self.schedule(item, backoff);
            }
        }
    }
}

/// One write of `item`, in a span of its own linked to the trace that computed it.
async fn attempt(
    store: Arc<dyn PredictionStore>,
    mut item: Item,
) -> (Item, Result<(), StoreError>) {
    item.attempts += 1;
    let span = tracing::info_span!(
        target: "gateway::write_behind",
        parent: None,
        "write_behind",
        otel.name = "write-behind retry",
        ml.data_id = %item.prediction.data_id,
        ml.write_behind.attempt = i64::from(item.attempts),
    );
    link_to_computing_trace(&span, &item.prediction);
    let result = store.put(&item.prediction).instrument(span).await;
    (item, result)
}

/// Counts and logs one prediction given up.
fn give_up(dropped: &Counter<u64>, item: &Item, reason: GiveUp, error: Option<&StoreError>) {
    dropped.add(1, &[KeyValue::new("reason", reason.as_str())]);
    tracing::error!(
        ml.data_id = %item.prediction.data_id,
        ml.model.version = %item.prediction.model.version,
        computing_trace_id = %item.prediction.trace_id,
        reason = reason.as_str(),
        attempts = item.attempts,
        error = error.map(|error| error as &dyn std::error::Error),
        "write-behind gave up: prediction not stored"
    );
}

/// Completes with the drain deadline once shutdown starts (`None`: the queue was dropped).
async fn drain_deadline(shutdown: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    shutdown
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|deadline| *deadline)
}

/// Completes at `due`, or never when nothing is waiting.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use chrono::Utc;

    use super::*;
    use crate::domain::{DataId, ModelInfo, Prediction, PredictionKey};
    use crate::store::{StoreFuture, TransportError};

    /// A store whose answer to each data id's write follows a script (then succeeds);
    /// records every write attempt.
    #[derive(Default)]
    struct ScriptedStore {
        script: Mutex<HashMap<String, Vec<StoreError>>>,
        attempts: Mutex<Vec<String>>,
        written: Mutex<Vec<String>>,
    }

    impl ScriptedStore {
        fn failing(id: &str, errors: Vec<StoreError>) -> Self {
            let store = Self::default();
            store.script.lock().unwrap().insert(id.into(), errors);
            store
        }

        fn attempts_of(&self, id: &str) -> usize {
            self.attempts
                .lock()
                .unwrap()
                .iter()
                .filter(|a| *a == id)
                .count()
        }

        fn written(&self) -> Vec<String> {
            self.written.lock().unwrap().clone()
        }
    }

    impl PredictionStore for ScriptedStore {
        fn get<'a>(&'a self, _: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>> {
            Box::pin(async { Ok(None) })
        }

        fn put<'a>(&'a self, prediction: &'a StoredPrediction) -> StoreFuture<'a, ()> {
            Box::pin(async move {
                let id = prediction.data_id.as_str().to_owned();
                self.attempts.lock().unwrap().push(id.clone());
                let next = {
                    let mut script = self.script.lock().unwrap();
                    script
                        .get_mut(&id)
                        .and_then(|errors| (!errors.is_empty()).then(|| errors.remove(0)))
                };
                match next {
                    Some(error) => Err(error),
                    None => {
                        self.written.lock().unwrap().push(id);
                        Ok(())
                    }
                }
            })
        }

        fn ping(&self) -> StoreFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }

        fn kind(&self) -> &'static str {
            "scripted"
        }
    }

    fn item(id: &str) -> StoredPrediction {
        let data_id = DataId::parse(id).unwrap();
        let model = ModelInfo {
            name: "m".into(),
            version: "v1".into(),
            run_id: "r".into(),
        };
        StoredPrediction {
            data_id,
            model,
            prediction: Prediction {
                label: "x".into(),
                probabilities: Default::default(),
                score: None,
            },
            created_at: Utc::now(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
        }
    }

    /// Queues the prediction of [`item`] `id`.
    fn enqueue_item(queue: &WriteBehind, id: &str) {
        queue.enqueue(item(id));
    }

    /// An outage as the store reports it.
    fn unreachable() -> StoreError {
        StoreError::Unreachable(std::sync::Arc::new(TransportError::Timeout(
            Duration::from_secs(2),
        )))
    }

    fn status(status: u16) -> StoreError {
        StoreError::Status {
            status,
            body: String::new(),
        }
    }

    async fn wait_for(condition: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_permanently_refused_write_is_given_up_at_once_and_does_not_block_the_next() {
        let store = Arc::new(ScriptedStore::failing("bad", vec![status(400); 100]));
        store
            .script
            .lock()
            .unwrap()
            .insert("flaky".into(), vec![status(503)]);
        let queue = WriteBehind::start(store.clone(), 100, 8);
        enqueue_item(&queue, "bad");
        enqueue_item(&queue, "flaky");

        wait_for(
            || store.written().contains(&"flaky".to_owned()),
            "the flaky write",
        )
        .await;
        wait_for(|| queue.depth() == 0, "an empty queue").await;

        assert_eq!(store.attempts_of("bad"), 1, "a 400 is not retried");
        assert_eq!(
            store.attempts_of("flaky"),
            2,
            "a 503 is retried once, then written"
        );
    }

    #[tokio::test]
    async fn a_write_still_being_retried_does_not_hold_up_the_writes_queued_after_it() {
        let store = Arc::new(ScriptedStore::failing("stuck", vec![status(503); 100]));
        let queue = WriteBehind::start(store.clone(), 100, 8);
        enqueue_item(&queue, "stuck");
        wait_for(|| store.attempts_of("stuck") == 1, "the first attempt").await;
        enqueue_item(&queue, "next");

        wait_for(
            || store.written().contains(&"next".to_owned()),
            "the next write",
        )
        .await;

        assert!(
            store.attempts_of("stuck") < 8,
            "written while the stuck one still had attempts left"
        );
        assert_eq!(queue.depth(), 1, "the stuck one is still queued");
    }

    #[tokio::test]
    async fn a_write_that_keeps_failing_is_given_up_after_the_attempt_limit() {
        let store = Arc::new(ScriptedStore::failing("down", vec![status(503); 100]));
        let queue = WriteBehind::start(store.clone(), 100, 3);
        enqueue_item(&queue, "down");

        wait_for(|| queue.depth() == 0, "the item given up").await;

        assert_eq!(store.attempts_of("down"), 3);
        assert!(store.written().is_empty());
    }

    #[tokio::test]
    async fn a_store_outage_does_not_use_up_the_attempts() {
        let store = Arc::new(ScriptedStore::failing("outage", vec![unreachable(); 4]));
        let queue = WriteBehind::start(store.clone(), 100, 2);
        enqueue_item(&queue, "outage");

        wait_for(|| queue.depth() == 0, "the write").await;

        assert_eq!(store.attempts_of("outage"), 5);
        assert_eq!(store.written(), vec!["outage".to_owned()]);
    }

    #[tokio::test]
    async fn throttling_and_timeouts_are_retried_not_given_up() {
        for code in [408, 429] {
            let store = Arc::new(ScriptedStore::failing("t", vec![status(code)]));
            let queue = WriteBehind::start(store.clone(), 100, 8);
            enqueue_item(&queue, "t");
            wait_for(|| queue.depth() == 0, "the write").await;
            assert_eq!(store.written(), vec!["t".to_owned()], "status {code}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_gives_up_the_newest_prediction() {
        let store = Arc::new(ScriptedStore::failing("a", vec![unreachable(); 100]));
        let queue = WriteBehind::start(store.clone(), 1, 100);
        enqueue_item(&queue, "a");
        enqueue_item(&queue, "b");

        assert_eq!(queue.depth(), 1);
        queue.drain(Duration::from_millis(200)).await;
        assert_eq!(store.attempts_of("b"), 0);
    }

    #[tokio::test]
    async fn the_drain_tries_every_waiting_prediction_once_more() {
        let store = Arc::new(ScriptedStore::failing("late", vec![unreachable()]));
        let queue = WriteBehind::start(store.clone(), 100, 8);
        enqueue_item(&queue, "late");
        wait_for(|| store.attempts_of("late") == 1, "the first attempt").await;

        queue.drain(Duration::from_secs(5)).await;

        assert_eq!(store.written(), vec!["late".to_owned()]);
        assert_eq!(queue.depth(), 0);
    }

    /// Log lines written while it runs, as JSON objects of their fields.
    #[derive(Clone, Default)]
    struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for CapturedLogs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl CapturedLogs {
        fn fields(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).unwrap()["fields"].clone()
                })
                .collect()
        }
    }

    /// The dropped counter's value per `reason`, as a reader of the meter sees it.
    fn dropped_by_reason(
        provider: &opentelemetry_sdk::metrics::SdkMeterProvider,
        exporter: &opentelemetry_sdk::metrics::InMemoryMetricExporter,
    ) -> HashMap<String, u64> {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        provider.force_flush().unwrap();
        let mut by_reason = HashMap::new();
        for resource in exporter.get_finished_metrics().unwrap() {
            for metric in resource.scope_metrics().flat_map(|scope| scope.metrics()) {
                if metric.name() != "gateway.write_behind.dropped" {
                    continue;
                }
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                    for point in sum.data_points() {
                        let reason = point
                            .attributes()
                            .find(|kv| kv.key.as_str() == "reason")
                            .map(|kv| kv.value.to_string())
                            .unwrap_or_default();
                        by_reason.insert(reason, point.value());
                    }
                }
            }
        }
        by_reason
    }

    #[tokio::test]
    async fn every_prediction_given_up_is_counted_by_reason_and_logged_with_its_data_id_and_trace()
    {
        let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_periodic_exporter(exporter.clone())
            .build();
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .json()
                // Every level: tracing's global maximum level is the highest any live
                // subscriber wants, so an `info` one here would hide other tests' debug spans.
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let store = Arc::new(ScriptedStore::failing("refused", vec![status(400)]));
        store
            .script
            .lock()
            .unwrap()
            .insert("unwritable".into(), vec![status(503); 100]);
        let queue = WriteBehind::start_on(
            &opentelemetry::metrics::MeterProvider::meter(&provider, "test"),
            store.clone(),
            2,
            2,
        );

        for id in ["refused", "unwritable", "overflow"] {
            enqueue_item(&queue, id);
        }
        wait_for(|| queue.depth() == 0, "every item given up").await;

        let counted = dropped_by_reason(&provider, &exporter);
        assert_eq!(counted.get("permanent_error"), Some(&1), "{counted:?}");
        assert_eq!(counted.get("attempts_exhausted"), Some(&1), "{counted:?}");
        assert_eq!(counted.get("queue_full"), Some(&1), "{counted:?}");
        let given_up: Vec<_> = logs
            .fields()
            .into_iter()
            .filter(|fields| fields["message"] == "write-behind gave up: prediction not stored")
            .collect();
        let mut logged: Vec<_> = given_up
            .iter()
            .map(|fields| {
                (
                    fields["ml.data_id"].as_str().unwrap(),
                    fields["reason"].as_str().unwrap(),
                )
            })
            .collect();
        logged.sort();
        assert_eq!(
            logged,
            [
                ("overflow", "queue_full"),
                ("refused", "permanent_error"),
                ("unwritable", "attempts_exhausted")
            ]
        );
        assert!(
            given_up
                .iter()
                .all(|fields| fields["computing_trace_id"] == item("x").trace_id.as_str()),
            "each line names the trace that computed the prediction: {given_up:?}"
        );
    }
}
