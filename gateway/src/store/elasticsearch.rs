//! The Elasticsearch implementation of `PredictionStore`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Uri};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute::{
    DB_COLLECTION_NAME, DB_NAMESPACE, DB_OPERATION_BATCH_SIZE, DB_OPERATION_NAME,
    DB_RESPONSE_STATUS_CODE, DB_SYSTEM_NAME, ERROR_TYPE, HTTP_REQUEST_METHOD,
    HTTP_REQUEST_RESEND_COUNT, SERVER_ADDRESS, SERVER_PORT, URL_FULL,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::node_pool::NodePool;
use super::transport::{Answer, Transport};
use super::{Lease, LeaseGrant, LeaseOutcome, PredictionStore, StoreError, StoreFuture};
use crate::configuration::StoreSettings;
use crate::domain::{DataId, ModelInfo, Prediction, PredictionKey, StoredPrediction};
use crate::metrics::Metrics;
use crate::telemetry;

// Lease requests, a child module so it reaches `call` and the operations.
#[path = "leases.rs"]
mod leases;

/// Everything but unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// `db.system.name` of every span and measurement.
const DB_SYSTEM: &str = "elasticsearch";

/// `db.operation.parameter.<key>` for the document id path part: the conventions define
/// the key as a template, so the crate has no constant for one key.
const DB_OPERATION_PARAMETER_ID: &str = "db.operation.parameter.id";

/// The index template deploy/elasticsearch loads; its `mappings` are the index's.
const INDEX_TEMPLATE: &str =
    include_str!("../../../deploy/elasticsearch/ml-predictions.index-template.json");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");

/// The document id of `key`: hex SHA-256 of its length-prefixed parts (model name,
/// version label, run id, data id). 64 characters from `[0-9a-f]`, whatever the data id
/// holds; the raw id is kept in the document. The run id is part of it so a retrained
/// model under a reused label writes beside the old run's predictions, never over them.
pub fn document_id(key: &PredictionKey) -> String {
    let mut hash = Sha256::new();
    for part in [
        &key.model_name,
        &key.model_version,
        &key.run_id,
        key.data_id.as_str(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// The request path of `key`'s document under `alias`, every segment percent-encoded.
pub fn document_path(alias: &str, key: &PredictionKey) -> String {
    format!(
        "/{}/_doc/{}",
        utf8_percent_encode(alias, SEGMENT),
        utf8_percent_encode(&document_id(key), SEGMENT)
    )
}

/// Predictions in an Elasticsearch (or OpenSearch) index behind an alias.
///
/// The Elasticsearch implementation of `PredictionStore`: one traced helper per request,
/// documents addressed by a hash of the key so no input can change a request path.
/// Nodes are picked, and failed ones set aside, by [`NodePool`]; a request safe to repeat
/// that could not reach its node is sent once more to another.
///
/// Requests go over hyper's pooled client (`transport.rs`) rather than the `elasticsearch`
/// crate's transport: the gateway only ever used the crate's raw `send`, which rebuilt the
/// URL, the auth header and four default headers on every call and asked for gzip answers;
/// on a cache hit that was most of the gateway's CPU and doubled the node's
/// (gateway/README.md, "Performance").
pub struct ElasticsearchStore {
    /// The HTTP client of each thread, with the timeout, the fixed headers (auth, user
    /// agent, compression choice); a thread's requests share its connection pool.
    transport: Transport,
    /// The cluster's nodes, in the order the settings list them (the pool's indices).
    nodes: Vec<Node>,
    /// Which node to ask next, and which are dead.
    pool: NodePool,
    /// `db.namespace`: the cluster name, learned once from `GET /` at start-up; unset if
    /// the credentials may not read it (an index-only API key), then spans go without it.
    cluster_name: OnceLock<String>,
    /// One entry per request kind, built once.
    operations: Operations,
    /// `db.client.operation.duration`, `ml.store.node.marked_dead`.
    metrics: Metrics,
}

/// One node as spans, measurements and logs name it.
struct Node {
    /// `server.address`.
    server_address: String,
    /// `server.port` (i64: the OpenTelemetry layer records unsigned fields as strings).
    server_port: i64,
    /// `server.address` and `server.port`, the attributes of `ml.store.node.marked_dead`.
    attributes: [KeyValue; 2],
}

/// What does not change between two requests of one kind: URL, span name, metric attributes.
struct Operation {
    /// `db.operation.name`: the endpoint id of the Elasticsearch API.
    name: &'static str,
    /// `db.collection.name`: the index or alias addressed, if any.
    collection: Option<String>,
    /// `{db.operation.name} {db.collection.name}`, as the conventions name the span.
    span_name: String,
    /// Whether sending the request twice does what sending it once does, so a request
    /// that may not have reached its node can be sent to another: every operation but
    /// `delete_by_query` (reads, writes by document id, index creation).
    retry_safe: bool,
    /// What differs by node, one entry per node in the pool's order.
    nodes: Vec<NodeOperation>,
}

/// An [`Operation`] on one node.
struct NodeOperation {
    /// The URL of requests with a fixed path; for operations on one document, the base
    /// the document id is appended to (no operation has both a document and a fixed
    /// query).
    url: String,
    /// Attributes of `db.client.operation.duration` for a call that succeeded.
    metric_attributes: Vec<KeyValue>,
}

struct Operations {
    info: Operation,
    get: Operation,
    index: Operation,
    mget: Operation,
    bulk: Operation,
    create_index: Operation,
    alias_exists: Operation,
    search: Operation,
    delete_by_query: Operation,
    /// Computation leases, in `<alias>-leases` (`leases.rs`).
    leases: leases::LeaseOperations,
}

/// The stored document. Field names follow the index mapping in [`ElasticsearchStore::mapping`].
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    data_id: String,
    model: ModelInfo,
    prediction: Prediction,
    created_at: DateTime<Utc>,
    trace: IdField,
    span: IdField,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdField {
    id: String,
}

#[derive(Debug, Deserialize)]
struct GetResponse {
    found: bool,
    #[serde(rename = "_source")]
    source: Option<Document>,
}

#[derive(Debug, Deserialize)]
struct MgetResponse {
    docs: Vec<GetResponse>,
}

/// A `_bulk` answer: `errors` says whether any item failed; each item is keyed by its
/// action (`index` here), with an `error` object when it failed.
#[derive(Debug, Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    error: Option<BulkItemError>,
}

#[derive(Debug, Deserialize)]
struct BulkItemError {
    #[serde(rename = "type")]
    error_type: String,
    #[serde(default)]
    reason: String,
}

/// A `_search` answer with the `runs` terms aggregation of `recent_runs`.
#[derive(Debug, Deserialize)]
struct SearchResponse {
    aggregations: RunAggregations,
}

#[derive(Debug, Deserialize)]
struct RunAggregations {
    runs: Buckets,
}

#[derive(Debug, Deserialize)]
struct Buckets {
    buckets: Vec<Bucket>,
}

#[derive(Debug, Deserialize)]
struct Bucket {
    /// A string for a keyword field; kept as any JSON value so another kind is skipped
    /// rather than failing the whole answer.
    key: serde_json::Value,
}

/// A `_delete_by_query` answer.
#[derive(Debug, Deserialize)]
struct DeleteByQueryResponse {
    deleted: u64,
    #[serde(default)]
    failures: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct InfoResponse {
    cluster_name: String,
}

/// A request body and its media type (`Bytes`: a retry sends it again without a copy).
struct Payload {
    content_type: HeaderValue,
    bytes: Bytes,
}

/// One call's variable parts, beside its [`Operation`].
struct Call<'a> {
    method: Method,
    body: Option<Payload>,
    /// The document id: appended to the operation's URL, and `db.operation.parameter.id`.
    document: Option<&'a str>,
    /// Operations in a batch request, for `db.operation.batch.size`.
    batch_size: Option<usize>,
    /// A query string for the request (`if_seq_no=..&if_primary_term=..` of a conditional
    /// write); operations whose URL carries a fixed query have none.
    query: Option<String>,
}

impl Call<'_> {
    /// A request to its operation's fixed URL (every operation but `get` and `index`,
    /// whose URL names the document).
    fn fixed(method: Method, body: Option<Payload>) -> Self {
        Self {
            method,
            body,
            document: None,
            batch_size: None,
            query: None,
        }
    }
}

impl ElasticsearchStore {
    /// A client for the nodes of `settings.url` (checked at load: http(s) URLs, the
    /// credentials already taken out of them); does not contact the store. Credentials
    /// from the URLs or the settings apply to every node.
    ///
    /// Errors: [`StoreError::InvalidSettings`] when no URL is set or the credentials
    /// cannot go into a header.
    pub fn new(settings: &StoreSettings, metrics: Metrics) -> Result<Self, StoreError> {
        let Some(store_nodes) = &settings.url else {
            return Err(StoreError::InvalidSettings("no store URL is configured"));
        };
        let base_urls = store_nodes.urls();
        let authorization = if let Some(api_key) = &settings.api_key {
            Some(format!("ApiKey {}", api_key.expose_secret()))
        } else if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            Some(basic_authorization(user, password.expose_secret()))
        } else {
            store_nodes
                .credentials()
                .map(|(user, password)| basic_authorization(user, password.expose_secret()))
        };
        let authorization = authorization
            .map(|authorization| {
                let mut value = HeaderValue::try_from(authorization).map_err(|_| {
                    StoreError::InvalidSettings("the store credentials cannot go into a header")
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let transport = Transport::new(
            authorization,
            settings.timeout,
            settings.compression,
            settings.max_idle_connections_per_node,
        );
        let alias = utf8_percent_encode(&settings.index_alias, SEGMENT).to_string();
        let index = settings.index_name();
        let nodes: Vec<Node> = base_urls
            .iter()
            .map(|base_url| {
                let server_address = base_url.host_str().unwrap_or_default().to_owned();
                let server_port = i64::from(base_url.port_or_known_default().unwrap_or_default());
                Node {
                    attributes: [
                        KeyValue::new(SERVER_ADDRESS, server_address.clone()),
                        KeyValue::new(SERVER_PORT, server_port),
                    ],
                    server_address,
                    server_port,
                }
            })
            .collect();
        let operation = |name: &'static str, collection: Option<&str>, path: String| {
            let per_node = base_urls.iter().zip(&nodes).map(|(base_url, node)| {
                let base = base_url.as_str().trim_end_matches('/');
                let mut metric_attributes = vec![
                    KeyValue::new(DB_SYSTEM_NAME, DB_SYSTEM),
                    KeyValue::new(DB_OPERATION_NAME, name),
                    node.attributes[0].clone(),
                    node.attributes[1].clone(),
                ];
                if let Some(collection) = collection {
                    metric_attributes
                        .push(KeyValue::new(DB_COLLECTION_NAME, collection.to_owned()));
                }
                let url = format!("{base}{path}");
                assert!(
                    Uri::try_from(&url).is_ok(),
                    "an http(s) base URL and a percent-encoded path make a URI: {url}"
                );
                NodeOperation {
                    url,
                    metric_attributes,
                }
            });
            Operation {
                name,
                collection: collection.map(str::to_owned),
                span_name: match collection {
                    Some(collection) => format!("{name} {collection}"),
                    None => name.to_owned(),
                },
                retry_safe: name != "delete_by_query",
                nodes: per_node.collect(),
            }
        };
        let document_path = format!("/{alias}/_doc");
        let alias_name = Some(settings.index_alias.as_str());
        let operations = Operations {
            info: operation("info", None, "/".into()),
            get: operation("get", alias_name, document_path.clone()),
            index: operation("index", alias_name, document_path),
            mget: operation("mget", alias_name, format!("/{alias}/_mget")),
            bulk: operation("bulk", alias_name, format!("/{alias}/_bulk")),
            create_index: operation(
                "indices.create",
                Some(&index),
                format!("/{}", utf8_percent_encode(&index, SEGMENT)),
            ),
            alias_exists: operation("indices.exists", alias_name, format!("/{alias}")),
            search: operation("search", alias_name, format!("/{alias}/_search")),
            // Conflicts with concurrent writes are skipped; refreshed so a count after it is right.
            delete_by_query: operation(
                "delete_by_query",
                alias_name,
                format!("/{alias}/_delete_by_query?conflicts=proceed&refresh=true"),
            ),
            leases: leases::LeaseOperations::new(&settings.lease_index(), &operation),
        };
        Ok(Self {
            transport,
            pool: NodePool::new(
                nodes.len(),
                settings.dead_node_backoff,
                settings.max_dead_node_backoff,
            ),
            nodes,
            cluster_name: OnceLock::new(),
            operations,
            metrics,
        })
    }

    /// The explicit mapping of the versioned index: keyword ids and versions, a date
    /// `created_at`, float scores; dynamic mapping stays on for `ml.*` fields. Read from
    /// the committed index template, its one source, so both sides make the same index.
    pub fn mapping() -> serde_json::Value {
        let template: serde_json::Value =
            serde_json::from_str(INDEX_TEMPLATE).expect("the committed index template is JSON");
        template["template"]["mappings"].clone()
    }

    /// Learns the cluster name (for `db.namespace`), then creates the versioned index with
    /// its mapping and the alias over it, and the lease index, each unless it exists.
    ///
    /// Errors: [`StoreError::Unreachable`] if the store does not answer,
    /// [`StoreError::Status`] if it refuses an index.
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        self.learn_cluster_name().await?;
        let body = json!({
            "mappings": Self::mapping(),
            "aliases": {self.alias_name(): {"is_write_index": true}}
        });
        self.create_index_unless_exists(&self.operations.create_index, &body)
            .await?;
        self.ensure_lease_index().await
    }

    /// `PUT` of an index by `op` with `body`; an index that already exists is not an error.
    async fn create_index_unless_exists(
        &self,
        op: &Operation,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let answer = self
            .call(op, Call::fixed(Method::PUT, Some(json_payload(body)?)))
            .await?;
        match answer.status {
            200..=299 => Ok(()),
            400 if String::from_utf8_lossy(&answer.body)
                .contains("resource_already_exists_exception") =>
            {
                Ok(())
            }
            status => Err(status_error(status, &answer.body)),
        }
    }

    /// `GET /` once, for the cluster name. A refusal (credentials limited to the index) is
    /// not an error: spans then go without `db.namespace`.
    async fn learn_cluster_name(&self) -> Result<(), StoreError> {
        if self.cluster_name.get().is_some() {
            return Ok(());
        }
        let op = &self.operations.info;
        let answer = self.call(op, Call::fixed(Method::GET, None)).await?;
        match serde_json::from_slice::<InfoResponse>(&answer.body) {
            Ok(info) if answer.status == 200 => {
                let _ = self.cluster_name.set(info.cluster_name);
            }
            _ => tracing::warn!(
                status = answer.status,
                "the store did not tell its cluster name; store spans go without db.namespace"
            ),
        }
        Ok(())
    }

    fn alias_name(&self) -> &str {
        self.operations
            .get
            .collection
            .as_deref()
            .unwrap_or_default()
    }

    /// The one traced helper every request goes through: a database client span per
    /// attempt, named by the semantic conventions, trace context injected from inside it,
    /// a metric per attempt.
    ///
    /// The node comes from the pool. When it cannot be reached (connect error, timeout, a
    /// broken body) or answers 502/503/504, it is marked dead, and a request that is
    /// [`Operation::retry_safe`] is sent once more to another node, in a span of its own
    /// with `http.request.resend_count = 1` (semantic conventions, HTTP client spans).
    /// The answer or error is the last attempt's.
    async fn call(&self, op: &Operation, call: Call<'_>) -> Result<Answer, StoreError> {
        let node = self.pool.select(Instant::now());
        let result = self.attempt(op, &call, node, None).await;
        if !self.report(node, &result) || !op.retry_safe {
            return result;
        }
        let Some(other) = self.pool.select_other(node, Instant::now()) else {
            return result;
        };
        let retry = self.attempt(op, &call, other, Some(1)).await;
        self.report(other, &retry);
        retry
    }

    /// Tells the pool how `node` answered; whether it failed (could not be reached, or
    /// answered 502/503/504, a proxy's or a node's own "not now"). A node newly marked
    /// dead is logged (warn) and counted; a failed node that answers again is logged (info).
    fn report(&self, node: usize, result: &Result<Answer, StoreError>) -> bool {
        let failed = match result {
            Ok(answer) => matches!(answer.status, 502..=504),
            Err(error) => matches!(error, StoreError::Unreachable(_)),
        };
        let address = &self.nodes[node];
        if !failed {
            if self.pool.mark_alive(node) {
                tracing::info!(
                    server.address = address.server_address.as_str(),
                    server.port = address.server_port,
                    "store node alive again"
                );
            }
            return false;
        }
        let death = self.pool.mark_dead(node, Instant::now());
        // Only the change is logged and counted: while every node is down, each request
        // tries one and extends its back-off, which would otherwise log once per request.
        if death.newly_dead {
            tracing::warn!(
                server.address = address.server_address.as_str(),
                server.port = address.server_port,
                consecutive_failures = death.consecutive_failures,
                backoff_ms = i64::try_from(death.backoff.as_millis()).unwrap_or(i64::MAX),
                "store node marked dead"
            );
            self.metrics
                .store_node_marked_dead
                .add(1, &address.attributes);
        }
        true
    }

    /// One request of `call` to `node`, in its own client span.
    ///
    /// The span is at debug level: OpenTelemetry takes the gateway's spans at every level
    /// (`telemetry::otel_layer`), while the console layer, at `info` by default, then skips
    /// formatting its fields into text on every request for logs that never show it.
    async fn attempt(
        &self,
        op: &Operation,
        call: &Call<'_>,
        node: usize,
        resend_count: Option<i64>,
    ) -> Result<Answer, StoreError> {
        let address = &self.nodes[node];
        let on_node = &op.nodes[node];
        let mut url = String::with_capacity(on_node.url.len() + 80);
        url.push_str(&on_node.url);
        if let Some(id) = call.document {
            url.push('/');
            url.extend(utf8_percent_encode(id, SEGMENT));
        }
        if let Some(query) = &call.query {
            url.push('?');
            url.push_str(query);
        }
        let span = tracing::debug_span!(
            target: "gateway::store",
            "elasticsearch",
            otel.name = op.span_name.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            { DB_SYSTEM_NAME } = DB_SYSTEM,
            { DB_NAMESPACE } = self.cluster_name.get().map(String::as_str),
            { DB_OPERATION_NAME } = op.name,
            { DB_COLLECTION_NAME } = op.collection.as_deref(),
            { DB_OPERATION_PARAMETER_ID } = call.document,
            { DB_OPERATION_BATCH_SIZE } = call.batch_size.filter(|&n| n > 1).map(|n| n as i64),
            { DB_RESPONSE_STATUS_CODE } = Empty,
            { HTTP_REQUEST_METHOD } = call.method.as_str(),
            { HTTP_REQUEST_RESEND_COUNT } = resend_count,
            { URL_FULL } = url.as_str(),
            { SERVER_ADDRESS } = address.server_address.as_str(),
            { SERVER_PORT } = address.server_port,
            { ERROR_TYPE } = Empty,
        );
        let uri = Uri::try_from(url)
            .expect("a base that made a URI, a percent-encoded id and our own query make one");
        let mut headers = HeaderMap::new();
        telemetry::inject_trace_context(&span.context(), &mut headers);
        let body = call.body.as_ref().map(|payload| {
            headers.insert(CONTENT_TYPE, payload.content_type.clone());
            payload.bytes.clone()
        });
        let started = Instant::now();
        let result = self
            .transport
            .send(call.method.clone(), uri, headers, body)
            .instrument(span.clone())
            .await
            .map_err(|e| StoreError::Unreachable(Arc::new(e)));
        let elapsed = started.elapsed().as_secs_f64();
        let error_type = match &result {
            Ok(answer) => {
                span.record(DB_RESPONSE_STATUS_CODE, status_text(answer.status).as_ref());
                is_error(op, answer.status).then(|| status_text(answer.status))
            }
            Err(_) => Some(Cow::Borrowed("unreachable")),
        };
        match error_type {
            None => self
                .metrics
                .db_duration
                .record(elapsed, &on_node.metric_attributes),
            Some(error_type) => {
                span.record("otel.status_code", "ERROR");
                span.record(ERROR_TYPE, error_type.as_ref());
                let mut attributes = on_node.metric_attributes.clone();
                attributes.push(KeyValue::new(ERROR_TYPE, error_type));
                if let Ok(answer) = &result {
                    attributes.push(KeyValue::new(
                        DB_RESPONSE_STATUS_CODE,
                        status_text(answer.status),
                    ));
                }
                self.metrics.db_duration.record(elapsed, &attributes);
            }
        }
        result
    }
}

/// Whether an answer is an error for the span and the metric.
///
/// A 404 on `get` is not: it is how the store says "no such document", which is the cache
/// miss the gateway expects on the first request for every key. Marking it an error would
/// turn every miss into a failed span and count it in the store's error rate. (A 404 for
/// a missing index comes back from `get` as an error all the same, see its body check.)
/// Nor is a 409 on a lease request: it is how the store says another replica holds or
/// took over the lease (`leases.rs`).
fn is_error(op: &Operation, status: u16) -> bool {
    status >= 400 && !(status == 404 && op.name == "get") && !leases::is_conflict(op, status)
}

/// `Basic base64(user:password)`, computed once rather than on every request.
fn basic_authorization(user: &str, password: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

fn json_payload(value: &impl Serialize) -> Result<Payload, StoreError> {
    Ok(Payload {
        content_type: JSON,
        bytes: serde_json::to_vec(value)
            .map_err(|e| StoreError::Encode(Arc::new(e)))?
            .into(),
    })
}

/// A status as `db.response.status_code` and `error.type` carry it, without allocating
/// for the statuses a store answers in practice.
fn status_text(status: u16) -> Cow<'static, str> {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        409 => "409".into(),
        429 => "429".into(),
        500 => "500".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
}

impl Document {
    fn of(prediction: &StoredPrediction) -> Self {
        Self {
            data_id: prediction.data_id.as_str().to_owned(),
            model: prediction.model.clone(),
            prediction: prediction.prediction.clone(),
            created_at: prediction.created_at,
            trace: IdField {
                id: prediction.trace_id.clone(),
            },
            span: IdField {
                id: prediction.span_id.clone(),
            },
        }
    }

    /// The prediction this document holds, checked against the key it was read for.
    fn into_prediction(self, key: &PredictionKey) -> Result<StoredPrediction, StoreError> {
        let data_id = DataId::parse(&self.data_id)
            .map_err(|e| undecodable(format_args!("stored data_id: {e}")))?;
        // The hash is the key; a document whose fields disagree with it (another run's
        // prediction included) is not ours.
        if data_id != key.data_id || !key.is_of(&self.model) {
            return Err(undecodable(format_args!(
                "document {} does not hold the prediction of its key",
                document_id(key)
            )));
        }
        Ok(StoredPrediction {
            data_id,
            model: self.model,
            prediction: self.prediction,
            created_at: self.created_at,
            trace_id: self.trace.id,
            span_id: self.span.id,
        })
    }
}

impl PredictionStore for ElasticsearchStore {
    fn get<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<StoredPrediction>> {
        Box::pin(async move {
            let id = document_id(key);
            let call = Call {
                method: Method::GET,
                body: None,
                document: Some(&id),
                batch_size: None,
                query: None,
            };
            let answer = self.call(&self.operations.get, call).await?;
            let found: GetResponse = match answer.status {
                200 => serde_json::from_slice(&answer.body).map_err(decode_error)?,
                404 => {
                    // 404 with `found: false` is a missing document; without it, a missing index.
                    match serde_json::from_slice::<GetResponse>(&answer.body) {
                        Ok(response) if !response.found => return Ok(None),
                        _ => return Err(status_error(404, &answer.body)),
                    }
                }
                status => return Err(status_error(status, &answer.body)),
            };
            match found.source.filter(|_| found.found) {
                Some(document) => document.into_prediction(key).map(Some),
                None => Ok(None),
            }
        })
    }

    fn put<'a>(&'a self, prediction: &'a StoredPrediction) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let id = document_id(&prediction.key());
            let call = Call {
                method: Method::PUT,
                body: Some(json_payload(&Document::of(prediction))?),
                document: Some(&id),
                batch_size: None,
                query: None,
            };
            let answer = self.call(&self.operations.index, call).await?;
            match answer.status {
                200..=299 => Ok(()),
                status => Err(status_error(status, &answer.body)),
            }
        })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [PredictionKey],
    ) -> StoreFuture<'a, Vec<Option<StoredPrediction>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = keys.iter().map(document_id).collect();
            let op = &self.operations.mget;
            let call = Call {
                batch_size: Some(keys.len()),
                ..Call::fixed(Method::POST, Some(json_payload(&json!({ "ids": ids }))?))
            };
            let answer = self.call(op, call).await?;
            if answer.status != 200 {
                return Err(status_error(answer.status, &answer.body));
            }
            let response: MgetResponse =
                serde_json::from_slice(&answer.body).map_err(decode_error)?;
            if response.docs.len() != keys.len() {
                return Err(undecodable("mget answered for other ids"));
            }
            response
                .docs
                .into_iter()
                .zip(keys)
                .map(|(doc, key)| match doc.source.filter(|_| doc.found) {
                    Some(document) => document.into_prediction(key).map(Some),
                    None => Ok(None),
                })
                .collect()
        })
    }

    fn put_many<'a>(&'a self, predictions: &'a [StoredPrediction]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if predictions.is_empty() {
                return Ok(());
            }
            let mut body = Vec::new();
            for prediction in predictions {
                let action = json!({ "index": { "_id": document_id(&prediction.key()) } });
                serde_json::to_writer(&mut body, &action)
                    .and_then(|()| {
                        body.push(b'\n');
                        serde_json::to_writer(&mut body, &Document::of(prediction))
                    })
                    .map_err(|e| StoreError::Encode(Arc::new(e)))?;
                body.push(b'\n');
            }
            let op = &self.operations.bulk;
            let payload = Payload {
                content_type: NDJSON,
                bytes: body.into(),
            };
            let call = Call {
                batch_size: Some(predictions.len()),
                ..Call::fixed(Method::POST, Some(payload))
            };
            let answer = self.call(op, call).await?;
            if answer.status != 200 {
                return Err(status_error(answer.status, &answer.body));
            }
            bulk_outcome(&answer.body, predictions.len())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let op = &self.operations.alias_exists;
            let answer = self.call(op, Call::fixed(Method::HEAD, None)).await?;
            match answer.status {
                200 => Ok(()),
                status => Err(status_error(status, &answer.body)),
            }
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a PredictionKey,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(self.create_lease(key, grant))
    }

    fn lease<'a>(&'a self, key: &'a PredictionKey) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(self.read_lease(key))
    }

    fn take_over_lease<'a>(
        &'a self,
        expired: &'a Lease,
        grant: &'a LeaseGrant,
    ) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(self.replace_lease(expired, grant))
    }

    fn release_lease<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(self.delete_lease(lease))
    }

    fn kind(&self) -> &'static str {
        "elasticsearch"
    }
}

/// Retention (`gateway purge`): which runs hold predictions, and deleting the others'.
impl ElasticsearchStore {
    /// Up to `limit` run ids holding predictions, the most recent first: ordered by their
    /// newest `created_at` (one `_search` with a terms aggregation on `model.run_id`).
    /// Predictions written in the last refresh interval (1 s) may not be counted yet.
    pub async fn recent_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let body = json!({
            "size": 0,
            "aggs": {"runs": {
                "terms": {"field": "model.run_id", "size": limit.max(1), "order": {"newest": "desc"}},
                "aggs": {"newest": {"max": {"field": "created_at"}}}
            }}
        });
        let response: SearchResponse = self.post_json(&self.operations.search, &body).await?;
        Ok(response
            .aggregations
            .runs
            .buckets
            .into_iter()
            .filter_map(|bucket| bucket.key.as_str().map(str::to_owned))
            .take(limit)
            .collect())
    }

    /// Deletes every prediction whose run is not in `keep` (one `_delete_by_query`,
    /// refreshed after, version conflicts with concurrent writes skipped); the number deleted.
    pub async fn delete_runs_except(&self, keep: &[String]) -> Result<u64, StoreError> {
        let body = json!({"query": {"bool": {"must_not": {"terms": {"model.run_id": keep}}}}});
        let response: DeleteByQueryResponse = self
            .post_json(&self.operations.delete_by_query, &body)
            .await?;
        if !response.failures.is_empty() {
            return Err(StoreError::Status {
                status: 200,
                body: format!(
                    "delete-by-query: {} failures, the first: {}",
                    response.failures.len(),
                    response.failures[0]
                ),
            });
        }
        Ok(response.deleted)
    }

    /// POSTs `body` to `op`'s fixed URL and decodes a 200 answer as `T`; another status
    /// is [`StoreError::Status`].
    async fn post_json<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &impl Serialize,
    ) -> Result<T, StoreError> {
        let call = Call::fixed(Method::POST, Some(json_payload(body)?));
        let answer = self.call(op, call).await?;
        if answer.status != 200 {
            return Err(status_error(answer.status, &answer.body));
        }
        serde_json::from_slice(&answer.body).map_err(decode_error)
    }
}

/// The outcome of a `_bulk` request answered 200 for `items` items: written, or the
/// count of failed items and the first one's error.
fn bulk_outcome(body: &[u8], items: usize) -> Result<(), StoreError> {
    let response: BulkResponse = serde_json::from_slice(body).map_err(decode_error)?;
    if !response.errors {
        return Ok(());
    }
    let mut errors = response
        .items
        .into_iter()
        .filter_map(|item| item.into_values().next().and_then(|result| result.error));
    let first = errors.next();
    let failed = usize::from(first.is_some()) + errors.count();
    let (error_type, reason) = first.map_or_else(
        // `errors: true` without a failed item in the list: say so rather than invent one.
        || ("unknown".to_owned(), "no item carries an error".to_owned()),
        |error| (error.error_type, error.reason),
    );
    Err(StoreError::BulkItems {
        failed,
        items,
        error_type,
        reason,
    })
}

fn decode_error(error: serde_json::Error) -> StoreError {
    StoreError::Decode(Arc::new(error))
}

/// A [`StoreError::Decode`] for an answer that is valid JSON but does not hold what it
/// must: serde's own error for data it rejects, so every decode failure has one type.
fn undecodable(message: impl std::fmt::Display) -> StoreError {
    decode_error(serde::de::Error::custom(message))
}

fn status_error(status: u16, body: &[u8]) -> StoreError {
    let text = String::from_utf8_lossy(body);
    StoreError::Status {
        status,
        body: text.chars().take(300).collect(),
    }
}

/// A store for the nodes of `url` (one URL or a comma-separated list), every other
/// setting at its default; not contacted (tests of this module and of `leases`).
#[cfg(test)]
fn store_at(url: &str) -> ElasticsearchStore {
    let settings = StoreSettings {
        url: Some(url.parse().expect("a test's node list")),
        ..crate::configuration::Settings::default().store
    };
    ElasticsearchStore::new(&settings, Metrics::default()).expect("a test's settings")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key(data_id: &str) -> PredictionKey {
        PredictionKey {
            model_name: "iris".into(),
            model_version: "3".into(),
            run_id: "run-a".into(),
            data_id: DataId::parse(data_id).unwrap(),
        }
    }

    #[test]
    fn the_mapping_is_the_committed_index_templates() {
        let mapping = ElasticsearchStore::mapping();

        assert_eq!(mapping["dynamic"], true);
        assert_eq!(mapping["properties"]["created_at"]["type"], "date");
        assert_eq!(
            mapping["properties"]["model"]["properties"]["run_id"]["type"],
            "keyword"
        );
    }

    #[test]
    fn a_missing_document_is_not_an_error_but_a_missing_index_elsewhere_is() {
        let store = store_at("http://127.0.0.1:9200");
        let cases = [
            (&store.operations.get, 404, false, "missing document on get"),
            (&store.operations.get, 500, true, "server error on get"),
            (&store.operations.alias_exists, 404, true, "missing alias"),
            (&store.operations.index, 201, false, "created"),
        ];
        for (op, status, error, description) in cases {
            assert_eq!(is_error(op, status), error, "{description}");
        }
    }

    /// STAND-IN for a search node, on a raw socket (only the connection count matters
    /// here): answers every request "not found" after `delay`; counts open connections
    /// and the most open at once.
    async fn counting_node(delay: std::time::Duration) -> (String, Arc<[AtomicUsize; 2]>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts: Arc<[AtomicUsize; 2]> = Arc::default();
        let counting = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counts = Arc::clone(&counting);
                let open = counts[0].fetch_add(1, Ordering::SeqCst) + 1;
                counts[1].fetch_max(open, Ordering::SeqCst);
                tokio::spawn(async move {
                    let body = br#"{"found":false}"#;
                    let answer = [
                        format!("HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
                        body,
                    ]
                    .concat();
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                        head.extend_from_slice(&buffer[..read]);
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            tokio::time::sleep(delay).await;
                            if stream.write_all(&answer).await.is_err() {
                                break;
                            }
                        }
                    }
                    counts[0].fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, counts)
    }

    #[tokio::test]
    async fn after_a_burst_the_connections_beyond_the_idle_limit_close() {
        let (url, counts) = counting_node(std::time::Duration::from_millis(200)).await;
        let settings = StoreSettings {
            url: Some(url.parse().unwrap()),
            max_idle_connections_per_node: 2,
            ..crate::configuration::Settings::default().store
        };
        let store = Arc::new(ElasticsearchStore::new(&settings, Metrics::default()).unwrap());
        let mut burst = tokio::task::JoinSet::new();
        for n in 0..6 {
            let store = Arc::clone(&store);
            burst.spawn(async move { store.get(&key(&format!("row-{n}"))).await });
        }

        let answers = burst.join_all().await;

        assert!(answers.iter().all(|answer| matches!(answer, Ok(None))));
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            6,
            "one connection per request at once"
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while counts[0].load(Ordering::SeqCst) > 2 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            counts[0].load(Ordering::SeqCst),
            2,
            "the idle ones kept open"
        );
    }

    #[test]
    fn urls_and_span_names_are_built_once_from_the_settings_without_credentials() {
        let store = store_at("https://user:secret@search.example:9243/");

        assert_eq!(
            store.operations.get.nodes[0].url.as_str(),
            "https://search.example:9243/ml-predictions/_doc"
        );
        assert_eq!(
            store.operations.mget.nodes[0].url.as_str(),
            "https://search.example:9243/ml-predictions/_mget"
        );
        assert_eq!(store.operations.get.span_name, "get ml-predictions");
        assert_eq!(
            store.operations.create_index.span_name,
            "indices.create ml-predictions-v1"
        );
        assert_eq!(
            (
                store.nodes[0].server_address.as_str(),
                store.nodes[0].server_port
            ),
            ("search.example", 9243)
        );
    }

    #[test]
    fn every_node_gets_its_own_urls_and_metric_attributes_built_once() {
        let store = store_at("http://u:p@es-0:9200 , https://u:p@es-1.example:9243/");

        let urls: Vec<&str> = store
            .operations
            .mget
            .nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "http://es-0:9200/ml-predictions/_mget",
                "https://es-1.example:9243/ml-predictions/_mget"
            ]
        );
        let address = |attributes: &[KeyValue]| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == SERVER_ADDRESS)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            address(&store.operations.get.nodes[1].metric_attributes).as_deref(),
            Some("es-1.example")
        );
        assert_eq!(
            (
                store.nodes[1].server_address.as_str(),
                store.nodes[1].server_port
            ),
            ("es-1.example", 9243)
        );
        assert_eq!(store.pool.len(), 2);
    }

    #[test]
    fn only_delete_by_query_is_not_sent_again_to_another_node() {
        let store = store_at("http://127.0.0.1:9200");
        let ops = &store.operations;
        for op in [
            &ops.info,
            &ops.get,
            &ops.index,
            &ops.mget,
            &ops.bulk,
            &ops.create_index,
            &ops.alias_exists,
            &ops.search,
        ] {
            assert!(op.retry_safe, "{}", op.name);
        }
        assert!(!ops.delete_by_query.retry_safe);
    }

    #[test]
    fn basic_credentials_are_encoded_once_as_the_header_says() {
        assert_eq!(
            basic_authorization("elastic", "changeme"),
            "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
        );
    }

    #[test]
    fn document_paths_are_the_alias_and_64_hex_characters_whatever_the_id() {
        // Ids that pass validation but look like API names or paths.
        for id in ["_search", "_doc", "a..b", "_all", "x:y", "_cat.indices"] {
            let path = document_path("ml-predictions", &key(id));
            let (prefix, doc) = path.rsplit_once('/').unwrap();
            assert_eq!(prefix, "/ml-predictions/_doc", "{id}");
            assert_eq!(doc.len(), 64, "{id}");
            assert!(doc.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn document_ids_differ_by_model_version() {
        let mut other = key("1");
        other.model_version = "4".into();
        assert_ne!(document_id(&key("1")), document_id(&other));
    }

    #[test]
    fn document_ids_differ_by_run_under_one_version_label() {
        let mut retrained = key("1");
        retrained.run_id = "run-b".into();
        assert_ne!(document_id(&key("1")), document_id(&retrained));
    }

    #[test]
    fn a_document_of_another_run_is_not_read_as_the_keys_prediction() {
        let document = Document {
            data_id: "1".into(),
            model: ModelInfo {
                name: "iris".into(),
                version: "3".into(),
                run_id: "run-b".into(),
            },
            prediction: Prediction {
                label: "a".into(),
                probabilities: Default::default(),
                score: None,
            },
            created_at: Utc::now(),
            trace: IdField { id: "0".repeat(32) },
            span: IdField { id: "0".repeat(16) },
        };
        assert!(matches!(
            document.into_prediction(&key("1")),
            Err(StoreError::Decode(_))
        ));
    }

    #[test]
    fn store_settings_that_cannot_make_a_client_are_invalid_not_unreachable() {
        // Bad URLs are refused when the settings are loaded (see `configuration`); what
        // is left: no URL at all, and credentials that cannot go into a header.
        let cases = [
            (None, None, "no URL"),
            (
                Some("http://a:9200"),
                Some("id:key\nX-Injected: 1"),
                "an API key with a line break",
            ),
        ];
        for (url, api_key, description) in cases {
            let settings = StoreSettings {
                url: url.map(|url| url.parse().unwrap()),
                api_key: api_key.map(secrecy::SecretString::from),
                ..crate::configuration::Settings::default().store
            };
            match ElasticsearchStore::new(&settings, Metrics::default()) {
                Err(StoreError::InvalidSettings(_)) => {}
                Err(other) => panic!("{description}: {other:?}"),
                Ok(_) => panic!("{description}: accepted"),
            }
        }
    }

    #[test]
    fn a_bulk_answer_with_failed_items_gives_their_count_and_the_first_error() {
        // As Elasticsearch 8 answers a bulk request with one item written, one refused by
        // the mapping and one rejected under load.
        let answer = br#"{"errors":true,"took":12,"items":[
            {"index":{"_index":"ml-predictions-v1","_id":"a1","_version":1,"result":"created",
              "_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,
              "status":201}},
            {"index":{"_index":"ml-predictions-v1","_id":"b2","status":400,
              "error":{"type":"document_parsing_exception",
                "reason":"[1:87] failed to parse field [prediction.score] of type [float]",
                "caused_by":{"type":"illegal_argument_exception",
                  "reason":"For input string: \"high\""}}}},
            {"index":{"_index":"ml-predictions-v1","_id":"c3","status":429,
              "error":{"type":"es_rejected_execution_exception",
                "reason":"rejected execution of coordinating operation"}}}
        ]}"#;

        let error = bulk_outcome(answer, 3).unwrap_err();

        let StoreError::BulkItems {
            failed,
            items,
            error_type,
            reason,
        } = &error
        else {
            panic!("not a bulk item failure: {error:?}");
        };
        assert_eq!((*failed, *items), (2, 3));
        assert_eq!(error_type, "document_parsing_exception");
        assert!(reason.contains("prediction.score"), "{reason}");
        // Answered 200: retried like any other refusal the store may get over.
        assert!(!error.is_permanent());
    }

    #[test]
    fn a_bulk_answer_without_errors_is_a_write() {
        let answer = br#"{"errors":false,"took":3,"items":[
            {"index":{"_index":"ml-predictions-v1","_id":"a1","result":"created","status":201}}
        ]}"#;
        assert!(bulk_outcome(answer, 1).is_ok());
    }

    #[test]
    fn an_answer_that_is_not_the_expected_json_is_a_decode_error_from_serde() {
        // A proxy's error page where the node's JSON should be.
        let error = bulk_outcome(b"<html><body>502 Bad Gateway</body></html>", 1).unwrap_err();

        let StoreError::Decode(source) = &error else {
            panic!("not a decode error: {error:?}");
        };
        assert!(source.is_syntax(), "{source}");
    }

    #[test]
    fn length_prefixes_keep_keys_apart_that_concatenate_alike() {
        let a = PredictionKey {
            model_name: "ab".into(),
            model_version: "c".into(),
            run_id: "r".into(),
            data_id: DataId::parse("d").unwrap(),
        };
        let b = PredictionKey {
            model_name: "a".into(),
            model_version: "bc".into(),
            run_id: "r".into(),
            data_id: DataId::parse("d").unwrap(),
        };
        assert_ne!(document_id(&a), document_id(&b));
    }
}
