//! Computation leases in Elasticsearch: one document per key in `<alias>-leases`, created
//! only if absent, taken over and released under optimistic concurrency control.

use chrono::{DateTime, Utc};
use percent_encoding::utf8_percent_encode;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Call, ElasticsearchStore, IdField, Operation, SEGMENT, decode_error, document_id, json_payload,
    status_error,
};
use crate::domain::PredictionKey;
use crate::store::{Lease, LeaseGrant, LeaseOutcome, LeaseVersion, StoreError};

/// The lease requests, built once like the others; every one goes through
/// `ElasticsearchStore::call`, so it is a database client span and a measurement.
pub(super) struct LeaseOperations {
    /// `PUT /<leases>`: the index, at start-up.
    create_index: Operation,
    /// `PUT /<leases>/_create/<id>`: create if absent (`op_type=create`).
    create: Operation,
    /// `GET /<leases>/_doc/<id>`: a realtime read, with `_seq_no` and `_primary_term`.
    get: Operation,
    /// `PUT /<leases>/_doc/<id>?if_seq_no=..&if_primary_term=..`: a take-over.
    index: Operation,
    /// `DELETE /<leases>/_doc/<id>?if_seq_no=..&if_primary_term=..`: a release.
    delete: Operation,
}

impl LeaseOperations {
    /// The operations on `index`, made by `new()`'s `operation` constructor.
    pub(super) fn new(
        index: &str,
        operation: &impl Fn(&'static str, Option<&str>, String) -> Operation,
    ) -> Self {
        let path = format!("/{}", utf8_percent_encode(index, SEGMENT));
        let collection = Some(index);
        Self {
            create_index: operation("indices.create", collection, path.clone()),
            create: operation("create", collection, format!("{path}/_create")),
            get: operation("get", collection, format!("{path}/_doc")),
            index: operation("index", collection, format!("{path}/_doc")),
            delete: operation("delete", collection, format!("{path}/_doc")),
        }
    }
}

/// Whether `status` is a version conflict on a conditional write: another replica holds
/// or took over the lease, an expected answer rather than an error. Only lease requests
/// are conditional (`_create`, `if_seq_no`), so a 409 on `create`, `index` or `delete`
/// is one.
pub(super) fn is_conflict(op: &Operation, status: u16) -> bool {
    status == 409 && matches!(op.name, "create" | "index" | "delete")
}

/// The stored lease document; the mapping is [`lease_mapping`].
#[derive(Debug, Serialize, Deserialize)]
struct LeaseDocument {
    holder: String,
    expires_at: DateTime<Utc>,
    trace: IdField,
}

/// The version a write answers with (`_create`, index).
#[derive(Debug, Deserialize)]
struct Written {
    #[serde(rename = "_seq_no")]
    seq_no: u64,
    #[serde(rename = "_primary_term")]
    primary_term: u64,
}

/// A lease `GET` answer.
#[derive(Debug, Deserialize)]
struct LeaseGetResponse {
    found: bool,
    #[serde(rename = "_seq_no")]
    seq_no: Option<u64>,
    #[serde(rename = "_primary_term")]
    primary_term: Option<u64>,
    #[serde(rename = "_source")]
    source: Option<LeaseDocument>,
}

/// The explicit mapping of the lease index: `holder` and `trace.id` keywords (Kibana can
/// jump from a lease to the computing trace), `expires_at` a date; nothing else indexed.
pub(super) fn lease_mapping() -> serde_json::Value {
    json!({
        "dynamic": false,
        "properties": {
            "holder": {"type": "keyword"},
            "expires_at": {"type": "date"},
            "trace": {"properties": {"id": {"type": "keyword"}}}
        }
    })
}

impl LeaseDocument {
    fn of(lease: &Lease) -> Self {
        Self {
            holder: lease.holder.clone(),
            expires_at: lease.expires_at,
            trace: IdField {
                id: lease.trace_id.clone(),
            },
        }
    }
}

impl From<Written> for LeaseVersion {
    fn from(written: Written) -> Self {
        Self {
            seq_no: written.seq_no,
            primary_term: written.primary_term,
        }
    }
}

impl ElasticsearchStore {
    /// Creates the lease index with [`lease_mapping`] unless it exists (one shard: a few
    /// short-lived documents).
    pub(super) async fn ensure_lease_index(&self) -> Result<(), StoreError> {
        let body = json!({
            "settings": {"number_of_shards": 1},
            "mappings": lease_mapping()
        });
        self.create_index_unless_exists(&self.operations.leases.create_index, &body)
            .await
    }

    /// `PUT /<leases>/_create/<id>`: 201 is the caller's lease, 409 another's
    /// (Elasticsearch docs, index API, `op_type=create`).
    pub(super) async fn create_lease(
        &self,
        key: &PredictionKey,
        grant: &LeaseGrant,
    ) -> Result<LeaseOutcome, StoreError> {
        let id = document_id(key);
        let op = &self.operations.leases.create;
        let mut lease = Lease::granted(key, grant, LeaseVersion::default());
        let answer = self
            .call(op, lease_call(Method::PUT, &id, None, Some(&lease))?)
            .await?;
        match answer.status {
            200 | 201 => {
                let written: Written =
                    serde_json::from_slice(&answer.body).map_err(decode_error)?;
                lease.version = written.into();
                Ok(LeaseOutcome::Acquired(lease))
            }
            409 => Ok(LeaseOutcome::HeldElsewhere),
            status => Err(status_error(status, &answer.body)),
        }
    }

    /// `GET /<leases>/_doc/<id>`, realtime: the lease and its version, `None` if there is
    /// none; a missing index is an error.
    pub(super) async fn read_lease(
        &self,
        key: &PredictionKey,
    ) -> Result<Option<Lease>, StoreError> {
        let id = document_id(key);
        let op = &self.operations.leases.get;
        let answer = self
            .call(op, lease_call(Method::GET, &id, None, None)?)
            .await?;
        if !matches!(answer.status, 200 | 404) {
            return Err(status_error(answer.status, &answer.body));
        }
        let response = match serde_json::from_slice::<LeaseGetResponse>(&answer.body) {
            Ok(response) => response,
            // 404 without `found: false`: the index is missing.
            Err(_) if answer.status == 404 => return Err(status_error(404, &answer.body)),
            Err(error) => return Err(decode_error(error)),
        };
        let (true, Some(seq_no), Some(primary_term), Some(document)) = (
            response.found,
            response.seq_no,
            response.primary_term,
            response.source,
        ) else {
            return Ok(None);
        };
        Ok(Some(Lease {
            key: key.clone(),
            holder: document.holder,
            expires_at: document.expires_at,
            trace_id: document.trace.id,
            version: LeaseVersion {
                seq_no,
                primary_term,
            },
        }))
    }

    /// `PUT /<leases>/_doc/<id>?if_seq_no=..&if_primary_term=..` with `grant`'s lease on
    /// `expired`'s key: the new lease, or `None` on 409 (someone changed or deleted it
    /// since it was read; Elasticsearch docs, optimistic concurrency control).
    pub(super) async fn replace_lease(
        &self,
        expired: &Lease,
        grant: &LeaseGrant,
    ) -> Result<Option<Lease>, StoreError> {
        let id = document_id(&expired.key);
        let op = &self.operations.leases.index;
        let mut lease = Lease::granted(&expired.key, grant, LeaseVersion::default());
        let call = lease_call(Method::PUT, &id, Some(expired.version), Some(&lease))?;
        let answer = self.call(op, call).await?;
        match answer.status {
            200 | 201 => {
                let written: Written =
                    serde_json::from_slice(&answer.body).map_err(decode_error)?;
                lease.version = written.into();
                Ok(Some(lease))
            }
            409 => Ok(None),
            status => Err(status_error(status, &answer.body)),
        }
    }

    /// `DELETE /<leases>/_doc/<id>?if_seq_no=..&if_primary_term=..`: a lease already gone
    /// (404) or taken over (409) is left alone and not an error.
    pub(super) async fn delete_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let id = document_id(&lease.key);
        let op = &self.operations.leases.delete;
        let call = lease_call(Method::DELETE, &id, Some(lease.version), None)?;
        let answer = self.call(op, call).await?;
        match answer.status {
            200..=299 | 404 | 409 => Ok(()),
            status => Err(status_error(status, &answer.body)),
        }
    }
}

/// One lease request on document `id`, conditional on `version` when given, with
/// `lease` as its body when given.
fn lease_call<'a>(
    method: Method,
    id: &'a str,
    version: Option<LeaseVersion>,
    lease: Option<&Lease>,
) -> Result<Call<'a>, StoreError> {
    Ok(Call {
        method,
        body: lease
            .map(|lease| json_payload(&LeaseDocument::of(lease)))
            .transpose()?,
        document: Some(id),
        batch_size: None,
        query: version.map(|version| {
            format!(
                "if_seq_no={}&if_primary_term={}",
                version.seq_no, version.primary_term
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::{body_partial_json, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::domain::DataId;
    use crate::store::PredictionStore;

    fn key() -> PredictionKey {
        PredictionKey {
            model_name: "iris".into(),
            model_version: "3".into(),
            run_id: "run-a".into(),
            data_id: DataId::parse("cust-1").unwrap(),
        }
    }

    fn grant() -> LeaseGrant {
        LeaseGrant {
            holder: "holder-a".into(),
            ttl: Duration::from_secs(10),
            trace_id: "ab".repeat(16),
        }
    }

    async fn store() -> (MockServer, ElasticsearchStore) {
        let server = MockServer::start().await;
        let store = super::super::store_at(&server.uri());
        (server, store)
    }

    fn doc_path() -> String {
        format!("/ml-predictions-leases/_doc/{}", document_id(&key()))
    }

    #[tokio::test]
    async fn a_created_lease_is_acquired_with_the_version_the_store_answered() {
        let (server, store) = store().await;
        Mock::given(method("PUT"))
            .and(path(format!(
                "/ml-predictions-leases/_create/{}",
                document_id(&key())
            )))
            .and(body_partial_json(
                json!({"holder": "holder-a", "trace": {"id": "ab".repeat(16)}}),
            ))
            .respond_with(ResponseTemplate::new(201).set_body_json(
                json!({"_id": document_id(&key()), "result": "created", "_seq_no": 5, "_primary_term": 2}),
            ))
            .expect(1)
            .mount(&server)
            .await;

        let outcome = store.acquire_lease(&key(), &grant()).await.unwrap();

        let LeaseOutcome::Acquired(lease) = outcome else {
            panic!("not acquired: {outcome:?}");
        };
        assert_eq!(
            lease.version,
            LeaseVersion {
                seq_no: 5,
                primary_term: 2
            }
        );
        assert!(!lease.is_expired());
        let sent: serde_json::Value = server.received_requests().await.unwrap()[0]
            .body_json()
            .unwrap();
        let expires_at: DateTime<Utc> = sent["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires_at, lease.expires_at, "now + the TTL, as sent");
    }

    #[tokio::test]
    async fn a_create_answered_409_is_a_lease_held_elsewhere() {
        let (server, store) = store().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(409).set_body_json(
                json!({"error": {"type": "version_conflict_engine_exception"}, "status": 409}),
            ))
            .mount(&server)
            .await;

        let outcome = store.acquire_lease(&key(), &grant()).await.unwrap();

        assert_eq!(outcome, LeaseOutcome::HeldElsewhere);
    }

    #[tokio::test]
    async fn a_lease_is_read_with_its_version_and_a_missing_one_is_none() {
        let (server, store) = store().await;
        Mock::given(method("GET"))
            .and(path(doc_path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "_id": document_id(&key()), "found": true, "_seq_no": 7, "_primary_term": 1,
                "_source": {"holder": "holder-b", "expires_at": "2030-01-01T00:00:00Z",
                            "trace": {"id": "cd".repeat(16)}}
            })))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(doc_path()))
            .respond_with(
                ResponseTemplate::new(404).set_body_json(json!({"_id": "x", "found": false})),
            )
            .mount(&server)
            .await;

        let held = store.lease(&key()).await.unwrap();
        let gone = store.lease(&key()).await.unwrap();

        let held = held.expect("a lease is stored");
        assert_eq!(held.holder, "holder-b");
        assert_eq!(held.trace_id, "cd".repeat(16));
        assert_eq!(
            held.version,
            LeaseVersion {
                seq_no: 7,
                primary_term: 1
            }
        );
        assert_eq!(gone, None);
    }

    #[tokio::test]
    async fn a_missing_lease_index_is_an_error_not_a_missing_lease() {
        let (server, store) = store().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "error": {"type": "index_not_found_exception"}, "status": 404
            })))
            .mount(&server)
            .await;

        let result = store.lease(&key()).await;

        assert!(
            matches!(result, Err(StoreError::Status { status: 404, .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_take_over_is_conditional_on_the_version_read() {
        let (server, store) = store().await;
        let expired = Lease {
            key: key(),
            holder: "dead".into(),
            expires_at: Utc::now() - chrono::Duration::seconds(1),
            trace_id: "cd".repeat(16),
            version: LeaseVersion {
                seq_no: 7,
                primary_term: 3,
            },
        };
        Mock::given(method("PUT"))
            .and(path(doc_path()))
            .and(query_param("if_seq_no", "7"))
            .and(query_param("if_primary_term", "3"))
            .and(body_partial_json(json!({"holder": "holder-a"})))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"result": "updated", "_seq_no": 8, "_primary_term": 3})),
            )
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path(doc_path()))
            .respond_with(ResponseTemplate::new(409))
            .mount(&server)
            .await;

        let taken = store.take_over_lease(&expired, &grant()).await;
        let lost = store.take_over_lease(&expired, &grant()).await;

        let taken = taken.unwrap().expect("the version matched");
        assert_eq!(taken.version.seq_no, 8);
        assert_eq!(taken.holder, "holder-a");
        assert_eq!(
            lost.unwrap(),
            None,
            "409: another replica took it over first"
        );
    }

    #[tokio::test]
    async fn a_release_deletes_only_the_version_held_and_a_conflict_is_no_error() {
        let (server, store) = store().await;
        let lease = Lease::granted(
            &key(),
            &grant(),
            LeaseVersion {
                seq_no: 9,
                primary_term: 1,
            },
        );
        // (answer, whether the release succeeds, description)
        let cases = [
            (200, true, "deleted"),
            (409, true, "taken over since: left alone"),
            (404, true, "already gone"),
            (503, false, "the store failed"),
        ];
        for (status, ok, description) in cases {
            server.reset().await;
            Mock::given(method("DELETE"))
                .and(path(doc_path()))
                .and(query_param("if_seq_no", "9"))
                .and(query_param("if_primary_term", "1"))
                .respond_with(ResponseTemplate::new(status).set_body_json(json!({})))
                .expect(1)
                .mount(&server)
                .await;

            let result = store.release_lease(&lease).await;

            assert_eq!(result.is_ok(), ok, "{description}: {result:?}");
            server.verify().await;
        }
    }

    #[tokio::test]
    async fn start_up_creates_the_lease_index_with_its_mapping_unless_it_exists() {
        let (server, store) = store().await;
        Mock::given(method("GET"))
            .and(path("/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"cluster_name": "c"})))
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path("/ml-predictions-v1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path("/ml-predictions-leases"))
            .and(body_partial_json(json!({"mappings": lease_mapping()})))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": {"type": "resource_already_exists_exception"}, "status": 400
            })))
            .expect(1)
            .mount(&server)
            .await;

        store.ensure_index().await.unwrap();
    }

    #[test]
    fn lease_conflicts_are_not_errors_on_spans_but_other_conflicts_are() {
        let store = super::super::store_at("http://127.0.0.1:9200");
        let leases = &store.operations.leases;
        assert!(!super::super::is_error(&leases.create, 409));
        assert!(!super::super::is_error(&leases.delete, 409));
        assert!(super::super::is_error(&leases.create, 503));
        assert!(super::super::is_error(&store.operations.bulk, 409));
        assert_eq!(leases.create.span_name, "create ml-predictions-leases");
    }
}
