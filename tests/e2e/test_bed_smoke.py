"""The test bed works: its search node speaks the Elasticsearch API to the gateway's
Rust client, and its collector receives OTLP and lets tests read spans back."""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import requests

from harness.collector import Collector
from harness.provisioning import REPO_ROOT
from harness.search_node import SearchNode


def test_the_rust_elasticsearch_client_writes_and_reads_a_mapped_document_on_the_search_node(
    search_node: SearchNode,
) -> None:
    result = subprocess.run(
        ["cargo", "test", "--quiet", "-p", "gateway", "--test", "search_node_smoke", "--", "--ignored"],
        cwd=REPO_ROOT,
        env={**os.environ, "TESTBED_SEARCH_URL": search_node.url},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout, result.stdout
    indices = requests.get(f"{search_node.url}/_cat/indices/bed-smoke-*", params={"format": "json"}, timeout=10).json()
    assert [index["docs.count"] for index in indices] == ["1"]


def test_a_span_sent_over_otlp_reaches_the_collector_with_its_attributes(collector: Collector) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    now = time.time_ns()
    export = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bed-smoke"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "bed-smoke"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "smoke span",
                                "kind": 2,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1_000_000),
                                "attributes": [
                                    {"key": "ml.data_id", "value": {"stringValue": "row-7"}},
                                    {"key": "http.response.status_code", "value": {"intValue": "200"}},
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }

    response = requests.post(f"{collector.otlp_http_endpoint}/v1/traces", json=export, timeout=10)

    assert response.status_code == 200, response.text
    spans = collector.wait_for_spans(
        lambda spans: any(span.trace_id == trace_id for span in spans), f"span of trace {trace_id}"
    )
    [span] = [span for span in spans if span.trace_id == trace_id]
    assert (span.span_id, span.name, span.kind, span.service_name) == (span_id, "smoke span", "server", "bed-smoke")
    assert span.attributes == {"ml.data_id": "row-7", "http.response.status_code": 200}
