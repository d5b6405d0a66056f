"""The shape of one prediction's trace, read back from what the real collector received:
client -> gateway server span -> Elasticsearch and model client spans -> the model
service's server span -> load_features and predict, one trace id, baggage on both sides,
and a cache hit linked to the trace that computed its prediction."""

from __future__ import annotations

import random
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import otlp_json
from harness.collector import Collector
from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service
from harness.otlp_json import SpanRecord
from harness.polling import poll_until
from harness.search_node import SearchNode

ALIAS = "gw-trace-shape"
GATEWAY_SERVICE = "inference-gateway"
MODEL_SERVICE = "model-service"
_ROWS = random.Random().sample(range(120_000), 20)


@dataclass
class Stack:
    model: RunningModelService
    gateway: Gateway


@pytest.fixture(scope="module")
def stack(bed_dir: Path, search_node: SearchNode, collector: Collector) -> Iterator[Stack]:
    work_dir = bed_dir / "gateway-trace-shape"
    model = start_model_service(Path(sys.executable).parent, work_dir, collector=collector)
    gateway = Gateway.start(work_dir, model.url, store_url=search_node.url, collector=collector, index_alias=ALIAS)
    poll_until(gateway.ready, "gateway readiness")
    yield Stack(model, gateway)
    gateway.stop()
    model.stop()


def traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id and `traceparent` header."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


MISS_SPANS = {
    (GATEWAY_SERVICE, "POST /v1/predict"),
    (GATEWAY_SERVICE, f"get {ALIAS}"),
    (GATEWAY_SERVICE, "POST"),
    (GATEWAY_SERVICE, f"index {ALIAS}"),
    (MODEL_SERVICE, "POST /predict"),
    (MODEL_SERVICE, "load_features"),
    (MODEL_SERVICE, "predict"),
}
HIT_SPANS = {(GATEWAY_SERVICE, "POST /v1/predict"), (GATEWAY_SERVICE, f"get {ALIAS}")}


def trace_spans(collector: Collector, trace_id: str, required: set[tuple[str, str]]) -> list[SpanRecord]:
    """The spans of `trace_id`, once every (service, span name) of `required` arrived."""

    def of_trace(spans: list[SpanRecord]) -> list[SpanRecord]:
        return [span for span in spans if span.trace_id == trace_id]

    spans = collector.wait_for_spans(
        lambda spans: required <= {(span.service_name, span.name) for span in of_trace(spans)},
        f"spans {sorted(required)} of trace {trace_id}",
    )
    return of_trace(spans)


def one(spans: list[SpanRecord], service: str, name: str) -> SpanRecord:
    matching = [span for span in spans if span.service_name == service and span.name == name]
    assert len(matching) == 1, f"expected one {service} span {name!r}, got {tree(spans)}"
    return matching[0]


def tree(spans: list[SpanRecord]) -> str:
    """The spans as an indented tree (service, kind, name), for failure messages and the report."""
    children: dict[str, list[SpanRecord]] = {}
    ids = {span.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = span.parent_span_id if span.parent_span_id in ids else ""
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            link = f"  links->{[link['trace_id'] for link in span.links]}" if span.links else ""
            lines.append(f"{'  ' * depth}{span.service_name}: {span.kind} {span.name!r} [{span.span_id}]{link}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n" + "\n".join(lines)


def test_a_miss_is_one_trace_from_the_caller_through_both_services(stack: Stack, collector: Collector) -> None:
    trace_id, caller_span_id, header = traceparent()
    experiment = f"exp-{secrets.token_hex(3)}"
    data_id = f"cust-{_ROWS.pop():06d}"

    response = stack.gateway.predict(data_id, headers={"traceparent": header, "baggage": f"ml.experiment={experiment}"})

    assert response.status_code == 200, response.text
    assert response.json()["cache"] == "miss"
    assert response.json()["trace_id"] == trace_id
    spans = trace_spans(collector, trace_id, MISS_SPANS)
    print("span tree of a miss:", tree(spans))
    server = one(spans, GATEWAY_SERVICE, "POST /v1/predict")
    lookup = one(spans, GATEWAY_SERVICE, f"get {ALIAS}")
    write = one(spans, GATEWAY_SERVICE, f"index {ALIAS}")
    model_call = one(spans, GATEWAY_SERVICE, "POST")
    model_server = one(spans, MODEL_SERVICE, "POST /predict")
    load_features = one(spans, MODEL_SERVICE, "load_features")
    predict = one(spans, MODEL_SERVICE, "predict")

    # Parent -> child edges, as the expectation table of the trace.
    edges = [
        (server, caller_span_id),
        (lookup, server.span_id),
        (model_call, server.span_id),
        (write, server.span_id),
        (model_server, model_call.span_id),
        (load_features, model_server.span_id),
        (predict, model_server.span_id),
    ]
    for span, parent in edges:
        assert span.parent_span_id == parent, f"{span.name} is not where expected in {tree(spans)}"
    assert (server.kind, lookup.kind, write.kind, model_call.kind, model_server.kind) == (
        "server",
        "client",
        "client",
        "client",
        "server",
    )
    # Semantic conventions of each kind of span.
    assert server.attributes["http.route"] == "/v1/predict"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.request.method"] == "POST"
    for span, operation in ((lookup, "get"), (write, "index")):
        assert span.attributes["db.system.name"] == "elasticsearch"
        assert span.attributes["db.operation.name"] == operation
        assert span.attributes["db.collection.name"] == ALIAS
        assert span.attributes["server.address"] == "127.0.0.1"
    assert model_call.attributes["url.full"] == f"{stack.model.url}/predict"
    assert model_call.attributes["http.response.status_code"] == 200
    # ml.* on the gateway's span; the client's baggage on both services' spans.
    model = response.json()["model"]
    assert server.attributes["ml.data_id"] == data_id
    assert server.attributes["ml.model.version"] == model["version"]
    assert server.attributes["ml.run_id"] == model["run_id"]
    assert server.attributes["ml.cache.result"] == "miss"
    for span in (server, lookup, model_call, write, model_server, predict):
        assert span.attributes.get("ml.experiment") == experiment, f"{span.service_name} {span.name}"


def test_a_hit_carries_a_link_to_the_trace_that_computed_the_prediction(stack: Stack, collector: Collector) -> None:
    data_id = f"cust-{_ROWS.pop():06d}"
    miss_trace, _, miss_header = traceparent()
    hit_trace, hit_caller, hit_header = traceparent()
    stack.gateway.predict(data_id, headers={"traceparent": miss_header})
    miss_server = one(trace_spans(collector, miss_trace, MISS_SPANS), GATEWAY_SERVICE, "POST /v1/predict")

    response = stack.gateway.predict(data_id, headers={"traceparent": hit_header})

    assert response.json()["cache"] == "hit", response.text
    spans = trace_spans(collector, hit_trace, HIT_SPANS)
    print("span tree of a hit:", tree(spans))
    server = one(spans, GATEWAY_SERVICE, "POST /v1/predict")
    lookup = one(spans, GATEWAY_SERVICE, f"get {ALIAS}")
    assert server.parent_span_id == hit_caller
    assert lookup.parent_span_id == server.span_id
    assert server.attributes["ml.cache.result"] == "hit"
    assert [(link["trace_id"], link["span_id"]) for link in server.links] == [(miss_trace, miss_server.span_id)]
    assert not [span for span in spans if span.service_name == MODEL_SERVICE], "a hit never calls the model"


def test_the_gateways_logs_and_metrics_reach_the_collector_with_trace_context(
    stack: Stack, collector: Collector
) -> None:
    trace_id, _, header = traceparent()
    data_id = f"cust-{_ROWS.pop():06d}"

    response = stack.gateway.predict(data_id, headers={"traceparent": header})

    assert response.status_code == 200, response.text
    server = one(trace_spans(collector, trace_id, MISS_SPANS), GATEWAY_SERVICE, "POST /v1/predict")
    [record] = poll_until(
        lambda: [
            log for log in collector.logs() if log.trace_id == trace_id and log.body == "prediction computed and stored"
        ],
        "the gateway's log of the computed prediction",
    )
    assert record.service_name == GATEWAY_SERVICE
    assert record.span_id == server.span_id

    def gateway_metrics() -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for metric in collector.metrics():
            if metric.service_name == GATEWAY_SERVICE:
                found.setdefault(metric.name, []).extend(
                    otlp_json.attributes(point.get("attributes", [])) for point in metric.data_points
                )
        return found

    expected = {
        "http.server.request.duration",
        "http.server.active_requests",
        "http.client.request.duration",
        "db.client.operation.duration",
        "ml.cache.results",
    }

    def exported_this_miss(m: dict[str, list[dict]]) -> bool:
        # Each instrument has one point per attribute set (other routes and statuses too): look for ours.
        return (
            expected <= m.keys()
            and any(point.get("http.route") == "/v1/predict" for point in m["http.server.request.duration"])
            and any(point.get("ml.cache.result") == "miss" for point in m["ml.cache.results"])
        )

    metrics = poll_until(lambda: (m := gateway_metrics()) and exported_this_miss(m) and m, "the gateway's metrics")
    for name in expected:
        for point in metrics[name]:
            assert "ml.data_id" not in point, f"{name} must not carry ids"
