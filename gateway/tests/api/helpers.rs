//! The typed harness of the API tests: `spawn_app` starts the real gateway on port 0
//! with a recording store, in front of a model service of the test's choosing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::configuration::Settings;
use gateway::domain::{DataId, ModelInfo, PredictionKey, StoredPrediction};
use gateway::metrics::Metrics;
use gateway::startup::Application;
use gateway::store::{
    Lease, LeaseGrant, LeaseOutcome, MemoryStore, PredictionStore, StoreError, StoreFuture,
    TransportError,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::http::Method;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A running gateway and what the test can observe around it.
#[derive(Clone)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bound address (for raw-socket requests).
    pub address: SocketAddr,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// Every store operation, in order.
    pub store: Arc<RecordingStore>,
    /// Completes the gateway's shutdown future (as SIGTERM does) when sent to.
    shutdown: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

/// Where the gateway's model service is, for one test.
pub enum ModelBackend {
    /// A closed port: the real behaviour of a model service that is down.
    Down,
    /// A [`MockModelService`] at this base URL.
    Mock(String),
}

/// Knobs a test may turn before the gateway starts.
pub struct TestOptions {
    /// The model service.
    pub model: ModelBackend,
    /// Adjusts the settings (timeouts, limits).
    pub settings: Box<dyn FnOnce(&mut Settings) + Send>,
    /// A store that fails every call, to see the bypass path.
    pub failing_store: bool,
    /// A store shared with other gateways (replicas of one deployment); else its own.
    pub store: Option<Arc<RecordingStore>>,
}

impl TestOptions {
    /// The gateway in front of `model`, default settings.
    pub fn with_model(model: ModelBackend) -> Self {
        Self {
            model,
            settings: Box::new(|_| {}),
            failing_store: false,
            store: None,
        }
    }

    /// Uses `store`, shared with other gateways started on it: replicas of one deployment.
    pub fn shared_store(mut self, store: &Arc<RecordingStore>) -> Self {
        self.store = Some(Arc::clone(store));
        self
    }

    /// Also adjusts the settings.
    pub fn settings(mut self, adjust: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.settings = Box::new(adjust);
        self
    }

    /// Uses a store that fails every call, to see the bypass path.
    pub fn failing_store(mut self) -> Self {
        self.failing_store = true;
        self
    }
}

/// A mock model service giving `answer` and the gateway in front of it, default settings.
/// Keep the mock bound (`_model` at least): dropping it stops it.
pub async fn app_with(answer: MockAnswer) -> (MockModelService, TestApp) {
    app_with_settings(answer, |_| {}).await
}

/// [`app_with`], the gateway's settings adjusted by `adjust`.
pub async fn app_with_settings(
    answer: MockAnswer,
    adjust: impl FnOnce(&mut Settings) + Send + 'static,
) -> (MockModelService, TestApp) {
    let model = MockModelService::start(answer).await;
    let app = spawn_app(TestOptions::with_model(model.backend()).settings(adjust)).await;
    (model, app)
}

/// A mock model service answering predictions after `model_delay`, and the gateway in front
/// of it that, once asked to shut down, stops accepting at once (no drain delay) and gives
/// requests in flight `grace`.
pub async fn app_stopping_with_grace(
    model_delay: Duration,
    grace: Duration,
) -> (MockModelService, TestApp) {
    let model = MockModelService::start_with_delay(MockAnswer::Predicts, model_delay).await;
    let app = spawn_app(
        TestOptions::with_model(model.backend()).settings(move |settings| {
            settings.server.shutdown_drain_delay = Duration::ZERO;
            settings.server.shutdown_grace = grace;
        }),
    )
    .await;
    (model, app)
}

/// The mock's model before any switch: `iris-classifier` version 1, `run-1`.
pub fn mock_model() -> ModelInfo {
    ModelInfo {
        name: "iris-classifier".into(),
        version: "1".into(),
        run_id: "run-1".into(),
    }
}

/// The key under which the gateway stores `data_id`'s prediction of [`mock_model`].
pub fn mock_key(data_id: &str) -> PredictionKey {
    PredictionKey::new(&mock_model(), DataId::parse(data_id).unwrap())
}

/// Starts the gateway on port 0 and returns once it accepts connections.
pub async fn spawn_app(options: TestOptions) -> TestApp {
    gateway::telemetry::init_for_tests();
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.model.url = match options.model {
        ModelBackend::Down => closed_port_url().await,
        ModelBackend::Mock(url) => url,
    }
    .parse()
    .expect("the model stand-in's URL is an http URL");
    settings.model.timeout = Duration::from_millis(2_000);
    settings.model.connect_timeout = Duration::from_millis(500);
    (options.settings)(&mut settings);
    settings
        .check()
        .expect("the test's settings are ones the gateway accepts");
    let store = options
        .store
        .unwrap_or_else(|| Arc::new(RecordingStore::new(options.failing_store)));
    // A test that names store nodes gets the Elasticsearch client in front of them (and
    // `store` records nothing).
    let application = if settings.store.url.is_some() {
        Application::build(settings).await
    } else {
        Application::build_with_store(settings, store.clone(), Metrics::new()).await
    }
    .expect("the gateway builds");
    let address = application.address();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until_stopped(async move {
        // A dropped sender (the test ended) is not a shutdown request.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    TestApp {
        base: format!("http://{address}"),
        address,
        client: reqwest::Client::new(),
        store,
        shutdown: Arc::new(Mutex::new(Some(shutdown))),
    }
}

/// A URL on which nothing listens (bound, then released).
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

impl TestApp {
    /// Starts the gateway's shutdown, as SIGTERM does.
    pub fn begin_shutdown(&self) {
        if let Some(shutdown) = self.shutdown.lock().unwrap().take() {
            let _ = shutdown.send(());
        }
    }

    /// `GET` of a path of the gateway.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /v1/predict` with a JSON body.
    pub async fn predict(&self, data_id: &str) -> reqwest::Response {
        self.predict_with(data_id, &[]).await
    }

    /// `POST /v1/predict` with one `Cache-Control` field line per entry of `cache_control`.
    pub async fn predict_with(&self, data_id: &str, cache_control: &[&str]) -> reqwest::Response {
        self.post_json("/v1/predict", json!({ "data_id": data_id }), cache_control)
            .await
    }

    /// `POST /v1/predict/batch` with one `Cache-Control` field line per entry.
    pub async fn batch_with(&self, data_ids: &[&str], cache_control: &[&str]) -> reqwest::Response {
        self.post_json(
            "/v1/predict/batch",
            json!({ "data_ids": data_ids }),
            cache_control,
        )
        .await
    }

    /// `POST` of `body` as JSON to a path of the gateway, with one `Cache-Control` field
    /// line per entry of `cache_control`.
    async fn post_json(
        &self,
        path: &str,
        body: Value,
        cache_control: &[&str],
    ) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        for line in cache_control {
            request = request.header("cache-control", *line);
        }
        request.send().await.expect("request sent")
    }

    /// Polls until `GET /v1/predictions/{data_id}` answers 404: the gateway learned a
    /// model (version or run) that the stored prediction is not of.
    pub async fn wait_until_not_served(&self, data_id: &str, description: &str) {
        let path = format!("/v1/predictions/{data_id}");
        poll_until(
            async || self.get(&path).await.status() == 404,
            description,
            Duration::from_secs(5),
        )
        .await;
    }

    /// `POST /v1/predict` with a raw body and content type.
    pub async fn post_raw(&self, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/v1/predict", self.base))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("request sent")
    }

    /// A GET with the path written to the socket byte for byte (HTTP clients normalise
    /// `..` and re-encode; an attacker's client does not). Returns status and body.
    pub async fn raw_get(&self, path: &[u8]) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(path);
        request.extend_from_slice(b" HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        // The body may be chunked; the JSON object sits between the first '{' and last '}'.
        let json = match (body.find('{'), body.rfind('}')) {
            (Some(start), Some(end)) => {
                serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        (status, json)
    }
}

/// Asserts the JSON error shape and returns its `code`.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    assert_error_shape(&body);
    body["error"]["code"].as_str().unwrap().to_owned()
}

/// Asserts the answer is `status` with the JSON error shape and error `code`.
pub async fn assert_json_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(error_code(response).await, code);
}

/// `{"error": {"code", "message", "trace_id"}}` with a 32-hex trace id.
pub fn assert_error_shape(body: &Value) {
    let error = &body["error"];
    assert!(error["code"].is_string(), "no error.code in {body}");
    assert!(error["message"].is_string(), "no error.message in {body}");
    let trace_id = error["trace_id"].as_str().expect("error.trace_id");
    assert_eq!(trace_id.len(), 32, "trace id {trace_id:?}");
}

/// One store operation as the gateway asked for it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreCall {
    /// A lookup.
    Get(PredictionKey),
    /// A write.
    Put(PredictionKey),
}

/// The in-memory store, recording every operation (or failing them all).
pub struct RecordingStore {
    inner: MemoryStore,
    calls: Mutex<Vec<StoreCall>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RecordingStore {
    /// A store for gateways started with [`TestOptions::shared_store`].
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new(false))
    }

    fn new(failing: bool) -> Self {
        Self {
            inner: MemoryStore::new(),
            calls: Mutex::default(),
            failing: std::sync::atomic::AtomicBool::new(failing),
        }
    }

    /// Makes every call fail (the store is down) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<StoreCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The stored prediction of `key`.
    pub async fn stored(&self, key: &PredictionKey) -> Option<StoredPrediction> {
        self.inner.get(key).await.unwrap()
    }

    /// The memory store underneath, to act as another replica would (lease calls are
    /// not recorded).
    pub fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// An outage while set to fail, without recording a call.
    fn available(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(outage())
        } else {
            Ok(())
        }
    }

    fn record(&self, call: StoreCall) -> Result<(), StoreError> {
        self.calls.lock().unwrap().push(call);
        if self.failing.load(Ordering::SeqCst) {
            Err(outage())
        } else {
            Ok(())
        }
    }
}

/// The error of a store "set to fail": an outage, as the store reports one.
fn outage() -> StoreError {
    StoreError::Unreachable(Arc::new(TransportError::Timeout(Duration::from_secs(2))))
}

impl PredictionStore for RecordingStore {
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>> {
        Box::pin(async move {
            self.record(StoreCall::Get(key.clone()))?;
            self.inner.get(key).await
        })
    }

    fn put<'a>(&'a self, prediction: &'a StoredPrediction) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.record(StoreCall::Put(prediction.key()))?;
            self.inner.put(prediction).await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.available() })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a PredictionKey,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async move {
            self.available()?;
            self.inner.acquire_lease(key, grant).await
        })
    }

    fn lease<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move {
            self.available()?;
            self.inner.lease(key).await
        })
    }

    fn take_over_lease<'a>(
        &'a self,
        expired: &'a Lease,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move {
            self.available()?;
            self.inner.take_over_lease(expired, grant).await
        })
    }

    fn release_lease<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.available()?;
            self.inner.release_lease(lease).await
        })
    }

    fn kind(&self) -> &'static str {
        "recording"
    }
}

/// Polls `condition` every 10 ms until it holds; fails the test, naming `description`, if it
/// still does not after `timeout`. The twin of the Python harness's `poll_until`.
pub async fn poll_until(
    mut condition: impl AsyncFnMut() -> bool,
    description: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {description}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits all futures concurrently (a small stand-in for `futures::future::join_all`).
pub async fn join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("request task"));
    }
    outputs
}

/// How the mock answers `POST /predict`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MockAnswer {
    /// A well-formed prediction; ids starting with `unknown` get the contract's 404.
    Predicts,
    /// 200 with a body that is not a prediction. The real model service cannot be made
    /// to do this; it is the only way to see the gateway's 502 for an undecodable answer.
    Malformed,
    /// Never answers. The real service's latency fault is exercised end to end; here a
    /// hang keeps the in-process timeout and admission tests fast and deterministic.
    Hangs,
    /// 503 to `POST /predict` and `POST /predict/batch`, as a model service that is
    /// shutting down answers, while `GET /model` still answers.
    Unavailable,
}

/// Longer than any test runs: how [`MockAnswer::Hangs`] never answers.
const HANG: Duration = Duration::from_secs(3_600);

/// MOCK of the model service, for in-process tests only (the end-to-end suite runs the
/// real one): a `wiremock` server answering the contract's `GET /model`, `POST /predict`
/// and `POST /predict/batch` in the mode the test picked. Calls are counted from the
/// requests wiremock recorded.
pub struct MockModelService {
    server: MockServer,
    state: Arc<MockState>,
}

/// What a test may change while the mock runs; read by the responders on each request.
struct MockState {
    answer: Mutex<MockAnswer>,
    version: Mutex<String>,
    /// The run id served, when set apart from the version (a retrain under the same label).
    run_id: Mutex<Option<String>>,
    /// Delay before each prediction, so concurrent requests overlap.
    delay: Duration,
}

impl MockModelService {
    /// Starts the mock on port 0.
    pub async fn start(answer: MockAnswer) -> Self {
        Self::start_with_delay(answer, Duration::ZERO).await
    }

    /// Starts the mock on port 0, answering predictions after `delay`.
    pub async fn start_with_delay(answer: MockAnswer, delay: Duration) -> Self {
        let state = Arc::new(MockState {
            answer: Mutex::new(answer),
            version: Mutex::new("1".into()),
            run_id: Mutex::new(None),
            delay,
        });
        let server = MockServer::start().await;
        // (method, path, the answer from the state)
        let routes: [(Method, &str, MockRoute); 3] = [
            (Method::GET, "/model", MockState::model_answer),
            (Method::POST, "/predict", MockState::predict),
            (Method::POST, "/predict/batch", MockState::predict_batch),
        ];
        for (verb, route, answer) in routes {
            let state = state.clone();
            Mock::given(method(verb))
                .and(path(route))
                .respond_with(move |request: &Request| answer(&state, request))
                .mount(&server)
                .await;
        }
        Self { server, state }
    }

    /// Polls until the mock has received a `POST /predict` (a request reached the model).
    pub async fn wait_until_called(&self, description: &str) {
        poll_until(
            async || self.predict_calls().await > 0,
            description,
            Duration::from_secs(5),
        )
        .await;
    }

    /// `POST /predict/batch` calls received.
    pub async fn batch_calls(&self) -> usize {
        self.calls_to("/predict/batch").await
    }

    /// `POST /predict` calls received.
    pub async fn predict_calls(&self) -> usize {
        self.calls_to("/predict").await
    }

    async fn calls_to(&self, route: &str) -> usize {
        let received = self
            .server
            .received_requests()
            .await
            .expect("wiremock records requests by default");
        received
            .iter()
            .filter(|request| request.method == Method::POST && request.url.path() == route)
            .count()
    }

    /// Changes how `POST /predict` answers from now on.
    pub fn set_answer(&self, answer: MockAnswer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Switches the served model version.
    pub fn set_version(&self, version: &str) {
        *self.state.version.lock().unwrap() = version.to_owned();
    }

    /// Serves another training run under the same version label (a retrain in place).
    pub fn set_run_id(&self, run_id: &str) {
        *self.state.run_id.lock().unwrap() = Some(run_id.to_owned());
    }

    /// The gateway's view of this mock.
    pub fn backend(&self) -> ModelBackend {
        ModelBackend::Mock(self.server.uri())
    }
}

/// How the mock answers one of its routes.
type MockRoute = fn(&MockState, &Request) -> ResponseTemplate;

impl MockState {
    fn model_answer(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(self.model_info())
    }

    fn answer(&self) -> MockAnswer {
        *self.answer.lock().unwrap()
    }

    fn model_info(&self) -> Value {
        let version = self.version.lock().unwrap().clone();
        let run_id = self.run_id.lock().unwrap().clone();
        let run_id = run_id.unwrap_or_else(|| format!("run-{version}"));
        json!({"name": "iris-classifier", "version": version, "run_id": run_id})
    }

    fn predict(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().unwrap_or_default();
        let data_id = body["data_id"].as_str().unwrap_or_default();
        let template = match self.answer() {
            MockAnswer::Hangs => return ResponseTemplate::new(200).set_delay(HANG),
            MockAnswer::Unavailable => ResponseTemplate::new(503),
            MockAnswer::Malformed => {
                ResponseTemplate::new(200).set_body_string("{\"unexpected\": true}")
            }
            MockAnswer::Predicts if data_id.starts_with("unknown") => ResponseTemplate::new(404)
                .set_body_json(
                    json!({"error": {"code": "unknown_data_id", "message": "no such row"}}),
                ),
            MockAnswer::Predicts => ResponseTemplate::new(200).set_body_json(json!({
                "data_id": data_id,
                "prediction": {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1}},
                "model": self.model_info(),
            })),
        };
        template.set_delay(self.delay)
    }

    /// Batches are never delayed, and only [`MockAnswer::Unavailable`] changes their answer.
    fn predict_batch(&self, request: &Request) -> ResponseTemplate {
        if self.answer() == MockAnswer::Unavailable {
            return ResponseTemplate::new(503);
        }
        let body: Value = request.body_json().expect("a JSON batch request");
        let (unknown, known): (Vec<&str>, Vec<&str>) = body["data_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .partition(|id| id.starts_with("unknown"));
        let predictions: Vec<Value> = known
            .iter()
            .map(|id| json!({"data_id": id, "prediction": {"label": "setosa", "probabilities": {"setosa": 1.0}}}))
            .collect();
        ResponseTemplate::new(200).set_body_json(
            json!({"model": self.model_info(), "predictions": predictions, "not_found": unknown}),
        )
    }
}
