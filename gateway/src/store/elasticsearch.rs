//! The Elasticsearch implementation of `PredictionStore`: one traced helper per request,
//! documents addressed by a hash of the key so no input can change a request path.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opentelemetry::KeyValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{PredictionStore, StoreError, StoreFuture};
use crate::configuration::StoreSettings;
use crate::domain::{DataId, ModelInfo, Prediction, PredictionKey, StoredPrediction};
use crate::metrics::Metrics;

/// Everything but unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

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
pub struct ElasticsearchStore {
    /// The client; built once, shared by all requests.
    client: Elasticsearch,
    /// Base URL without credentials, for `url.full` and `server.*` span attributes.
    base_url: url::Url,
    /// The alias every read and write goes through.
    alias: String,
    /// The versioned index created behind the alias.
    index: String,
    /// Timeout of one request.
    timeout: Duration,
    /// `db.client.operation.duration`.
    metrics: Metrics,
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

/// A request body: JSON, or newline-delimited JSON for `_bulk`.
enum Payload {
    Json(serde_json::Value),
    NdJson(Vec<u8>),
}

#[derive(Debug, Deserialize)]
struct MgetResponse {
    docs: Vec<GetResponse>,
}

#[derive(Debug, Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// One response: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl ElasticsearchStore {
    /// A client for `settings.url` (which must be set); does not contact the store.
    pub fn new(settings: &StoreSettings, metrics: Metrics) -> Result<Self, StoreError> {
        let raw = settings
            .url
            .as_deref()
            .ok_or_else(|| StoreError::Unreachable("no store URL configured".into()))?;
        let mut base_url = url::Url::parse(raw)
            .map_err(|e| StoreError::Unreachable(format!("invalid store URL: {e}")))?;
        let url_user = base_url.username().to_owned();
        let url_password = base_url.password().unwrap_or_default().to_owned();
        // Credentials leave the URL, so no error message, log or span attribute shows them.
        let _ = base_url.set_username("");
        let _ = base_url.set_password(None);
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(base_url.clone()))
            .timeout(settings.timeout());
        if let Some(api_key) = &settings.api_key {
            builder = builder.auth(Credentials::EncodedApiKey(api_key.expose().to_owned()));
        } else if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.auth(Credentials::Basic(
                user.clone(),
                password.expose().to_owned(),
            ));
        } else if !url_user.is_empty() {
            builder = builder.auth(Credentials::Basic(url_user, url_password));
        }
        let transport = builder
            .build()
            .map_err(|e| StoreError::Unreachable(format!("cannot build the client: {e}")))?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            base_url,
            alias: settings.index_alias.clone(),
            index: settings.index_name(),
            timeout: settings.timeout(),
            metrics,
        })
    }

    /// The explicit mapping of the versioned index: keyword ids and versions, a date
    /// `created_at`, float scores; dynamic mapping stays on for `ml.*` fields.
    pub fn mapping() -> serde_json::Value {
        let keyword = json!({"type": "keyword"});
        json!({
            "dynamic": true,
            "dynamic_templates": [{
                "class_probabilities": {
                    "path_match": "prediction.probabilities.*",
                    "mapping": {"type": "float"}
                }
            }],
            "properties": {
                "data_id": keyword,
                "model": {"properties": {"name": keyword, "version": keyword, "run_id": keyword}},
                "prediction": {"properties": {
                    "label": keyword,
                    "score": {"type": "float"},
                    "probabilities": {"type": "object"}
                }},
                "created_at": {"type": "date"},
                "trace": {"properties": {"id": keyword}},
                "span": {"properties": {"id": keyword}}
            }
        })
    }

    /// Creates the versioned index with its mapping and the alias over it, unless it exists.
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        let body = json!({
            "mappings": Self::mapping(),
            "aliases": {self.alias.as_str(): {"is_write_index": true}}
        });
        let path = format!("/{}", utf8_percent_encode(&self.index, SEGMENT));
        let answer = self
            .call(
                "indices.create",
                &self.index,
                Method::Put,
                &path,
                Some(Payload::Json(body)),
                None,
            )
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

    /// The one traced helper every request goes through: a database client span named by
    /// the semantic conventions, trace context injected from inside it, a timeout, a metric.
    async fn call(
        &self,
        operation: &'static str,
        collection: &str,
        method: Method,
        path: &str,
        body: Option<Payload>,
        document: Option<&str>,
    ) -> Result<Answer, StoreError> {
        let url_full = format!("{}{}", self.base_url.as_str().trim_end_matches('/'), path);
        let span = tracing::info_span!(
            target: "gateway::store",
            "elasticsearch",
            otel.name = %format!("{operation} {collection}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "elasticsearch",
            db.operation.name = operation,
            db.collection.name = %collection,
            db.response.status_code = Empty,
            http.request.method = method_name(method),
            url.full = %url_full,
            server.address = self.base_url.host_str().unwrap_or_default(),
            server.port = self.base_url.port_or_known_default().unwrap_or_default() as i64,
            error.type = Empty,
        );
        if let Some(id) = document {
            span.set_attribute("db.operation.parameter.id", id.to_owned());
        }
        let mut headers = HeaderMap::new();
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers))
        });
        let body = match body {
            Some(Payload::Json(value)) => Some(serde_json::to_vec(&value).unwrap_or_default()),
            Some(Payload::NdJson(bytes)) => {
                headers.insert(
                    elasticsearch::http::headers::CONTENT_TYPE,
                    elasticsearch::http::headers::HeaderValue::from_static("application/x-ndjson"),
                );
                Some(bytes)
            }
            None => None,
        };
        let started = Instant::now();
        let result = async {
            let response = self
                .client
                .send(method, path, headers, None::<&()>, body, Some(self.timeout))
                .await
                .map_err(|e| StoreError::Unreachable(e.to_string()))?;
            let status = response.status_code().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| StoreError::Unreachable(e.to_string()))?;
            Ok::<_, StoreError>(Answer {
                status,
                body: body.to_vec(),
            })
        }
        .instrument(span.clone())
        .await;
        let error_type = match &result {
            Ok(answer) => {
                span.record("db.response.status_code", answer.status.to_string());
                // A missing document is an answer, not an error.
                let missing_document = answer.status == 404 && operation == "get";
                (answer.status >= 400 && !missing_document).then(|| answer.status.to_string())
            }
            Err(_) => Some("unreachable".to_owned()),
        };
        if let Some(error_type) = &error_type {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error_type.as_str());
        }
        let mut attributes = vec![
            KeyValue::new("db.system.name", "elasticsearch"),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.collection.name", collection.to_owned()),
        ];
        if let Some(error_type) = error_type {
            attributes.push(KeyValue::new("error.type", error_type));
        }
        self.metrics
            .db_duration
            .record(started.elapsed().as_secs_f64(), &attributes);
        result
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
            .map_err(|e| StoreError::Decode(format!("stored data_id: {e}")))?;
        // The hash is the key; a document whose fields disagree with it (another run's
        // prediction included) is not ours.
        if data_id != key.data_id || !key.is_of(&self.model) {
            return Err(StoreError::Decode(format!(
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
            let path = document_path(&self.alias, key);
            let answer = self
                .call("get", &self.alias, Method::Get, &path, None, Some(&id))
                .await?;
            let found: GetResponse = match answer.status {
                200 => serde_json::from_slice(&answer.body)
                    .map_err(|e| StoreError::Decode(e.to_string()))?,
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

    fn put<'a>(
        &'a self,
        key: &'a PredictionKey,
        prediction: &'a StoredPrediction,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let id = document_id(key);
            let path = document_path(&self.alias, key);
            let document = Document::of(prediction);
            let body =
                serde_json::to_value(&document).map_err(|e| StoreError::Decode(e.to_string()))?;
            let answer = self
                .call(
                    "index",
                    &self.alias,
                    Method::Put,
                    &path,
                    Some(Payload::Json(body)),
                    Some(&id),
                )
                .await?;
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
            let path = format!("/{}/_mget", utf8_percent_encode(&self.alias, SEGMENT));
            let body = Payload::Json(json!({ "ids": ids }));
            let answer = self
                .call("mget", &self.alias, Method::Post, &path, Some(body), None)
                .await?;
            if answer.status != 200 {
                return Err(status_error(answer.status, &answer.body));
            }
            let response: MgetResponse = serde_json::from_slice(&answer.body)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            if response.docs.len() != keys.len() {
                return Err(StoreError::Decode("mget answered for other ids".into()));
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

    fn put_many<'a>(
        &'a self,
        items: &'a [(PredictionKey, StoredPrediction)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if items.is_empty() {
                return Ok(());
            }
            let mut body = Vec::new();
            for (key, prediction) in items {
                let action = json!({ "index": { "_id": document_id(key) } });
                serde_json::to_writer(&mut body, &action)
                    .and_then(|()| {
                        body.push(b'\n');
                        serde_json::to_writer(&mut body, &Document::of(prediction))
                    })
                    .map_err(|e| StoreError::Decode(e.to_string()))?;
                body.push(b'\n');
            }
            let path = format!("/{}/_bulk", utf8_percent_encode(&self.alias, SEGMENT));
            let answer = self
                .call(
                    "bulk",
                    &self.alias,
                    Method::Post,
                    &path,
                    Some(Payload::NdJson(body)),
                    None,
                )
                .await?;
            if answer.status != 200 {
                return Err(status_error(answer.status, &answer.body));
            }
            let response: BulkResponse = serde_json::from_slice(&answer.body)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            if response.errors {
                let failed = response
                    .items
                    .iter()
                    .filter(|item| item["index"]["error"].is_object())
                    .count();
                return Err(StoreError::Status {
                    status: 200,
                    body: format!("bulk write: {failed} of {} items failed", items.len()),
                });
            }
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let path = format!("/{}", utf8_percent_encode(&self.alias, SEGMENT));
            let answer = self
                .call(
                    "indices.exists",
                    &self.alias,
                    Method::Head,
                    &path,
                    None,
                    None,
                )
                .await?;
            match answer.status {
                200 => Ok(()),
                status => Err(status_error(status, &answer.body)),
            }
        })
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
        let path = format!("/{}/_search", utf8_percent_encode(&self.alias, SEGMENT));
        let body = json!({
            "size": 0,
            "aggs": {"runs": {
                "terms": {"field": "model.run_id", "size": limit.max(1), "order": {"newest": "desc"}},
                "aggs": {"newest": {"max": {"field": "created_at"}}}
            }}
        });
        let answer = self
            .call(
                "search",
                &self.alias,
                Method::Post,
                &path,
                Some(Payload::Json(body)),
                None,
            )
            .await?;
        if answer.status != 200 {
            return Err(status_error(answer.status, &answer.body));
        }
        let response: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| StoreError::Decode(e.to_string()))?;
        let buckets = response["aggregations"]["runs"]["buckets"]
            .as_array()
            .ok_or_else(|| StoreError::Decode("no run aggregation in the answer".into()))?;
        Ok(buckets
            .iter()
            .filter_map(|bucket| bucket["key"].as_str().map(str::to_owned))
            .take(limit)
            .collect())
    }

    /// Deletes every prediction whose run is not in `keep` (one `_delete_by_query`,
    /// refreshed after, version conflicts with concurrent writes skipped); the number deleted.
    pub async fn delete_runs_except(&self, keep: &[String]) -> Result<u64, StoreError> {
        let path = format!(
            "/{}/_delete_by_query?conflicts=proceed&refresh=true",
            utf8_percent_encode(&self.alias, SEGMENT)
        );
        let body = json!({"query": {"bool": {"must_not": {"terms": {"model.run_id": keep}}}}});
        let answer = self
            .call(
                "delete_by_query",
                &self.alias,
                Method::Post,
                &path,
                Some(Payload::Json(body)),
                None,
            )
            .await?;
        if answer.status != 200 {
            return Err(status_error(answer.status, &answer.body));
        }
        let response: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| StoreError::Decode(e.to_string()))?;
        if response["failures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            return Err(status_error(answer.status, &answer.body));
        }
        response["deleted"]
            .as_u64()
            .ok_or_else(|| StoreError::Decode("no deleted count in the answer".into()))
    }
}

fn status_error(status: u16, body: &[u8]) -> StoreError {
    let text = String::from_utf8_lossy(body);
    StoreError::Status {
        status,
        body: text.chars().take(300).collect(),
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

#[cfg(test)]
mod tests {
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
