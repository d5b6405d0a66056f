//! Test-bed smoke test: the `elasticsearch` crate the gateway uses creates an
//! index with an explicit mapping on the bed's search node, writes a document
//! and reads it back. Needs a running node, so it is ignored by a plain
//! `cargo test`; the cross-service suite (`tests/e2e/test_bed_smoke.py`) starts
//! the node and runs it with `TESTBED_SEARCH_URL` set.

use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{IndicesCreateParts, IndicesGetMappingParts};
use elasticsearch::{Elasticsearch, GetParts, IndexParts};
use serde_json::{Value, json};

fn client() -> Elasticsearch {
    let url = std::env::var("TESTBED_SEARCH_URL")
        .expect("TESTBED_SEARCH_URL must name the bed's search node (run through `make test`)");
    Elasticsearch::new(Transport::single_node(&url).expect("a valid search node URL"))
}

#[tokio::test]
#[ignore = "needs the bed's search node; run by tests/e2e/test_bed_smoke.py"]
async fn the_rust_client_creates_a_mapped_index_writes_a_document_and_reads_it_back() {
    // Arrange
    let client = client();
    let index = format!("bed-smoke-{}", std::process::id());
    let created = client
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .body(json!({
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "data_id": { "type": "keyword" },
                    "score": { "type": "double" },
                    "created_at": { "type": "date" }
                }
            }
        }))
        .send()
        .await
        .expect("create index request");
    assert!(
        created.status_code().is_success(),
        "create index answered {}",
        created.status_code()
    );

    // Act
    let written = client
        .index(IndexParts::IndexId(&index, "row-42"))
        .body(json!({ "data_id": "row-42", "score": 0.875, "created_at": "2026-11-23T12:00:00Z" }))
        .refresh(elasticsearch::params::Refresh::True)
        .send()
        .await
        .expect("index request");
    let read: Value = client
        .get(GetParts::IndexId(&index, "row-42"))
        .send()
        .await
        .expect("get request")
        .json()
        .await
        .expect("get response body");
    let mapping: Value = client
        .indices()
        .get_mapping(IndicesGetMappingParts::Index(&[&index]))
        .send()
        .await
        .expect("get mapping request")
        .json()
        .await
        .expect("mapping body");

    // Assert
    assert_eq!(written.status_code().as_u16(), 201);
    assert_eq!(read["found"], json!(true));
    assert_eq!(
        read["_source"],
        json!({ "data_id": "row-42", "score": 0.875, "created_at": "2026-11-23T12:00:00Z" })
    );
    let properties = &mapping[&index]["mappings"]["properties"];
    assert_eq!(properties["data_id"]["type"], json!("keyword"));
    assert_eq!(properties["score"]["type"], json!("double"));
    assert_eq!(properties["created_at"]["type"], json!("date"));
}
