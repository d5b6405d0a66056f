"""Telemetry conformance: every case of issue 9 (miss, hit, stored read, batch, 404, injected
model error, store bypass, unknown method, client traceparent/tracestate/baggage in repeated and
malformed forms, a training run) is driven once through both real services into a collector of
this module's own, then checked against a table of rules, one test per rule.

Each rule's check names in its docstring the Kibana view or convention it protects;
`deploy/README.md` ("What Kibana derives from which attribute") maps the attributes to the views."""

from __future__ import annotations

import http.client
import json
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.semconv._incubating.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv._incubating.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv._incubating.attributes.service_attributes import SERVICE_INSTANCE_ID
from opentelemetry.semconv._incubating.metrics.db_metrics import DB_CLIENT_OPERATION_DURATION
from opentelemetry.semconv._incubating.metrics.http_metrics import HTTP_SERVER_ACTIVE_REQUESTS
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.metrics.http_metrics import HTTP_CLIENT_REQUEST_DURATION, HTTP_SERVER_REQUEST_DURATION

from conformance import signals
from conformance.chaos_proxy import ChaosProxy
from harness.collector import Collector
from harness.gateway import Gateway
from harness.model_service import RunningModelService, start_model_service, train_another_version
from harness.otlp_json import SpanRecord
from harness.polling import poll_until
from harness.provisioning import provisioned
from harness.search_node import SearchNode

GATEWAY = "inference-gateway"
MODEL = "model-service"
# The span of one write-behind attempt (gateway/src/write_behind.rs).
WRITE_BEHIND_RETRY = "write-behind retry"
ALIAS = "gw-conformance"
# Credentials in the model URL: no signal may carry them (issue 9, item 13).
SECRET = "s3cr3t-conformance"
GATEWAY_VERSION = "9.9.9-conformance"
ENVIRONMENT = "conformance"
UNKNOWN_METHOD = "ZZMETHOD1"
KNOWN_METHODS = {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE", "_OTHER"}
# The gateway's default baggage caps (gateway/README.md, "Telemetry").
BAGGAGE_MAX_ENTRIES, BAGGAGE_MAX_BYTES = 16, 1024
# The project's own metric (README.md, "Telemetry").
ML_CACHE_RESULTS = "ml.cache.results"


@dataclass
class Case:
    """One request of the scenario and what came back."""

    status: int
    body: dict[str, Any]
    trace_id: str
    caller_span_id: str = ""


@dataclass
class Run:
    """The driven scenario and everything the collector received from it."""

    model: RunningModelService
    cases: dict[str, Case] = field(default_factory=dict)
    received: signals.Signals | None = None

    @property
    def got(self) -> signals.Signals:
        assert self.received is not None
        return self.received

    def spans(self, case: str, service: str | None = None) -> list[SpanRecord]:
        trace_id = self.cases[case].trace_id
        return [s for s in self.got.spans if s.trace_id == trace_id and service in (None, s.service_name)]

    def one(self, case: str, service: str, kind: str, name: str | None = None) -> SpanRecord:
        found = [s for s in self.spans(case, service) if s.kind == kind and name in (None, s.name)]
        assert len(found) == 1, f"{case}: expected one {service} {kind} span {name or ''}, got {tree(self.spans(case))}"
        return found[0]

    def server(self, case: str) -> SpanRecord:
        return self.one(case, GATEWAY, "server")


def tree(spans: list[SpanRecord]) -> str:
    """Spans as an indented tree, for failure messages and the report."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id if span.parent_span_id in ids else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            notes = [f"status={span.status_code}"] if span.status_code != "unset" else []
            notes += [f"event={e['name']}" for e in span.events]
            notes += ["link" for _ in span.links]
            lines.append(f"{'  ' * depth}{span.service_name}: {span.kind} {span.name!r} {' '.join(notes)}".rstrip())
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n" + "\n".join(lines)


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def send(url: str, method: str, path: str, body: dict | None, headers: list[tuple[str, str]]) -> Case:
    """One request with repeated header fields kept as sent (requests would merge them)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(method, path)
        payload = json.dumps(body).encode() if body is not None else b""
        for name, value in [*headers, ("content-type", "application/json"), ("content-length", str(len(payload)))]:
            connection.putheader(name, value)
        connection.endheaders(payload)
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    answer = json.loads(text) if text else {}
    trace_id = answer.get("trace_id") or answer.get("error", {}).get("trace_id", "")
    return Case(response.status, answer, trace_id)


def data_ids() -> Iterator[str]:
    start = secrets.randbelow(100_000)
    for offset in range(1_000):
        yield f"cust-{start + offset:06d}"


@pytest.fixture(scope="module")
def run(bed_dir: Path, search_node: SearchNode) -> Iterator[Run]:
    work_dir = bed_dir / "conformance"
    collector = Collector.start(provisioned("provision-collector.sh"), work_dir)
    node_host, node_port = search_node.url.removeprefix("http://").split(":")
    proxy = ChaosProxy(node_host, int(node_port))
    # Set but empty: must mean unset, i.e. delta histograms (issue 9, item 14).
    empty_temporality = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": ""}
    venv_bin = Path(sys.executable).parent
    model = start_model_service(venv_bin, work_dir, collector=collector, extra_env=empty_temporality)
    model_url = model.url.replace("http://", f"http://conformance:{SECRET}@")
    gateway = Gateway.start(
        work_dir,
        model_url,
        store_url=proxy.url,
        collector=collector,
        index_alias=ALIAS,
        extra_env={
            **empty_temporality,
            "OTEL_RESOURCE_ATTRIBUTES": (
                f"{SERVICE_VERSION}={GATEWAY_VERSION},{DEPLOYMENT_ENVIRONMENT_NAME}={ENVIRONMENT}"
            ),
        },
    )
    try:
        poll_until(gateway.ready, "gateway readiness")
        # Readiness does not wait for the new index's shards: until they serve, lookups
        # fail and the first miss would be a bypass. Not a case of the scenario.
        warm_up = f"cust-{secrets.randbelow(100_000):06d}"
        poll_until(lambda: gateway.predict(warm_up).json().get("cache") == "hit", "the store serving lookups")
        result = Run(model)
        drive(result, gateway, model, proxy)
        train_another_version(venv_bin, work_dir, collector)
        result.received = wait_for_everything(result, collector)
        print("span trees:", *(f"\n{case}:{tree(result.spans(case))}" for case in ("miss", "hit", "model_error")))
        yield result
    finally:
        gateway.stop()
        model.stop()
        proxy.close()
        collector.stop()


def drive(run: Run, gateway: Gateway, model: RunningModelService, proxy: ChaosProxy) -> None:
    ids = data_ids()
    url = gateway.url

    def case(name: str, method: str, path: str, body: dict | None, headers: list[tuple[str, str]] = ()) -> Case:
        trace_id, caller, header = traceparent()
        sent = send(url, method, path, body, [("traceparent", header), *headers])
        sent.caller_span_id = caller if sent.trace_id == trace_id else ""
        run.cases[name] = sent
        return sent

    miss_id = next(ids)
    case(
        "miss",
        "POST",
        "/v1/predict?sig=abc&debug=1",
        {"data_id": miss_id},
        [
            ("tracestate", "vendora=1"),
            ("tracestate", "vendorb=2"),
            ("baggage", "ml.experiment=exp-1,bad key=dropped"),
            ("baggage", "ml.second=two,ml.data_id=spoofed,ml.run_id=spoofed"),
        ],
    )
    case("hit", "POST", "/v1/predict", {"data_id": miss_id})
    case("stored", "GET", f"/v1/predictions/{miss_id}", None)
    case("batch", "POST", "/v1/predict/batch", {"data_ids": [miss_id, next(ids)]}, [("baggage", "ml.batch.size=9999")])
    case("unknown_id", "POST", "/v1/predict", {"data_id": "cust-999999"})
    case("unknown_method", UNKNOWN_METHOD, "/v1/predict", {"data_id": next(ids)})
    case("duplicate_tracestate_key", "POST", "/v1/predict", {"data_id": next(ids)}, [("tracestate", "k=1,k=2")])
    big = ",".join(f"ml.tag{i:02d}={'v' * 100}" for i in range(64))
    case("big_baggage", "POST", "/v1/predict", {"data_id": next(ids)}, [("baggage", big)])
    _, _, second = traceparent()
    run.cases["repeated_traceparent"] = send(
        url, "POST", "/v1/predict", {"data_id": next(ids)}, [("traceparent", traceparent()[2]), ("traceparent", second)]
    )
    run.cases["uppercase_traceparent"] = send(
        url, "POST", "/v1/predict", {"data_id": next(ids)}, [("traceparent", traceparent()[2].upper())]
    )
    model.set_faults(error_rate=1.0)
    try:
        case("model_error", "POST", "/v1/predict", {"data_id": next(ids)})
    finally:
        model.set_faults()
    proxy.break_()
    try:
        case("bypass", "POST", "/v1/predict", {"data_id": next(ids)})
    finally:
        proxy.restore()


def wait_for_everything(run: Run, collector: Collector) -> signals.Signals:
    """What the collector received, once every case's server span, the miss's model spans, the
    training spans and a metric export after the last request have arrived."""

    def complete() -> signals.Signals | None:
        got = signals.read(collector.output_dir)
        traces = {(s.trace_id, s.service_name, s.kind) for s in got.spans}
        servers = all((c.trace_id, GATEWAY, "server") in traces for c in run.cases.values())
        model_side = (run.cases["miss"].trace_id, MODEL, "server") in traces
        training = {"load_data", "train_model", "evaluate"} <= {s.name for s in got.spans}
        metrics = {(p.metric, p.attributes.get(HTTP_REQUEST_METHOD)) for p in got.points}
        errors = any(p.attributes.get(ERROR_TYPE) == "502" for p in got.points if p.service_name == GATEWAY)
        retried = any(s.name == WRITE_BEHIND_RETRY for s in got.spans)
        return (
            got
            if servers
            and model_side
            and training
            and (HTTP_SERVER_REQUEST_DURATION, "_OTHER") in metrics
            and errors
            and retried
            else None
        )

    return poll_until(complete, "every case's telemetry at the collector", timeout=60)


# --- the rules ----------------------------------------------------------------------------------


def span_names(run: Run) -> None:
    """server spans are `{method} {route}`, client spans `{method}`"""
    expected = {
        "miss": "POST /v1/predict",
        "stored": "GET /v1/predictions/{data_id}",
        "batch": "POST /v1/predict/batch",
        "unknown_method": "HTTP /v1/predict",
    }
    for case, name in expected.items():
        assert run.server(case).name == name, case
    assert run.one("miss", GATEWAY, "client", "POST").attributes[URL_FULL].endswith("/predict")
    assert {s.name for s in run.spans("miss", MODEL)} >= {"POST /predict", "load_features", "predict"}


def unknown_method(run: Run) -> None:
    """an unknown method is `_OTHER` with the original kept, named `HTTP {route}`, on span and both server metrics"""
    server = run.server("unknown_method")
    assert server.attributes[HTTP_REQUEST_METHOD] == "_OTHER"
    assert server.attributes[HTTP_REQUEST_METHOD_ORIGINAL] == UNKNOWN_METHOD
    server_metrics = (HTTP_SERVER_REQUEST_DURATION, HTTP_SERVER_ACTIVE_REQUESTS)
    for point in run.got.points:
        if point.service_name == GATEWAY and point.metric in server_metrics:
            assert point.attributes[HTTP_REQUEST_METHOD] in KNOWN_METHODS, point


def kinds_and_parentage(run: Run) -> None:
    """a miss is one trace: caller -> server -> store and model clients -> model server -> its spans"""
    miss = run.cases["miss"]
    server = run.server("miss")
    assert server.parent_span_id == miss.caller_span_id
    model_call = run.one("miss", GATEWAY, "client", "POST")
    store_calls = [s for s in run.spans("miss", GATEWAY) if s.kind == "client" and DB_SYSTEM_NAME in s.attributes]
    assert len(store_calls) >= 2, tree(run.spans("miss"))
    for child in (model_call, *store_calls):
        assert child.parent_span_id == server.span_id, tree(run.spans("miss"))
    model_server = run.one("miss", MODEL, "server")
    assert model_server.parent_span_id == model_call.span_id
    for name in ("load_features", "predict"):
        span = run.one("miss", MODEL, "internal", name)
        assert span.parent_span_id == model_server.span_id, tree(run.spans("miss"))


def status_by_class(run: Run) -> None:
    """5xx server spans and failed client spans are errors; a 4xx server span is not"""
    assert run.cases["model_error"].status == 502
    assert run.server("model_error").status_code == "error"
    assert run.one("model_error", GATEWAY, "client", "POST").status_code == "error"
    assert run.cases["unknown_id"].status == 404
    assert run.server("unknown_id").status_code == "unset", "a 4xx is the client's error, not the server's"
    assert run.server("miss").status_code == "unset"


def server_attributes(run: Run) -> None:
    """server spans carry the required and recommended HTTP attributes with their types; protocol `1.1`"""
    types = {
        HTTP_REQUEST_METHOD: str,
        URL_PATH: str,
        URL_SCHEME: str,
        HTTP_ROUTE: str,
        HTTP_RESPONSE_STATUS_CODE: int,
        NETWORK_PROTOCOL_VERSION: str,
        SERVER_ADDRESS: str,
        SERVER_PORT: int,
    }
    for case in ("miss", "hit", "batch", "model_error"):
        attributes = run.server(case).attributes
        for name, kind in types.items():
            assert isinstance(attributes.get(name), kind), f"{case}: {name}={attributes.get(name)!r}"
        assert attributes[NETWORK_PROTOCOL_VERSION] == "1.1"


def query(run: Run) -> None:
    """`url.query` when a query was sent, signed-URL parameters redacted"""
    assert run.server("miss").attributes[URL_QUERY] == "sig=REDACTED&debug=1"
    assert URL_QUERY not in run.server("hit").attributes


def peer(run: Run) -> None:
    """server spans carry `client.address` and `network.peer.*` [needs ConnectInfo in startup.rs: main]"""
    attributes = run.server("miss").attributes
    assert attributes.get(CLIENT_ADDRESS) == "127.0.0.1", attributes
    assert attributes.get(NETWORK_PEER_ADDRESS) == "127.0.0.1"
    assert isinstance(attributes.get(NETWORK_PEER_PORT), int)


def client_span(run: Run) -> None:
    """the model client span carries method, server address/port, status and `url.full`"""
    span = run.one("miss", GATEWAY, "client", "POST")
    assert span.attributes[HTTP_REQUEST_METHOD] == "POST"
    assert span.attributes[SERVER_ADDRESS] == "127.0.0.1"
    assert isinstance(span.attributes[SERVER_PORT], int)
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 200
    assert span.attributes[URL_FULL] == f"{run.model.url}/predict"


def client_error_agrees(run: Run) -> None:
    """a failed model call has the same `error.type` on its span and its duration point"""
    span = run.one("model_error", GATEWAY, "client", "POST")
    assert span.attributes[ERROR_TYPE] == str(span.attributes[HTTP_RESPONSE_STATUS_CODE])
    calls = [
        s
        for s in run.got.spans
        if s.service_name == GATEWAY and s.kind == "client" and DB_SYSTEM_NAME not in s.attributes
    ]
    span_errors = {s.attributes.get(ERROR_TYPE) for s in calls} - {None}
    points = [p for p in run.got.points if p.service_name == GATEWAY and p.metric == HTTP_CLIENT_REQUEST_DURATION]
    point_errors = {p.attributes.get(ERROR_TYPE) for p in points} - {None}
    assert span_errors == point_errors, "the same error.type values on model client spans and their points"
    assert "500" in point_errors


def store_spans(run: Run) -> None:
    """Elasticsearch spans of a miss (lookup, write, computation lease): `db.system.name`,
    `{db.operation.name} {db.collection.name}`, server address, `db.namespace`"""
    spans = [s for s in run.spans("miss", GATEWAY) if DB_SYSTEM_NAME in s.attributes]
    leases = f"{ALIAS}-leases"
    assert {s.name for s in spans} >= {f"get {ALIAS}", f"index {ALIAS}", f"create {leases}"}
    for span in spans:
        assert span.attributes[DB_SYSTEM_NAME] == "elasticsearch"
        assert span.attributes[DB_COLLECTION_NAME] in (ALIAS, leases), span.name
        assert span.name == f"{span.attributes[DB_OPERATION_NAME]} {span.attributes[DB_COLLECTION_NAME]}"
        assert span.attributes[SERVER_ADDRESS] == "127.0.0.1"
        assert isinstance(span.attributes.get(DB_NAMESPACE), str), f"{span.name}: db.namespace (the cluster name)"


def store_miss_not_an_error(run: Run) -> None:
    """a store lookup answered 404 (a cache miss) is not an error span"""
    lookups = [s for s in run.got.spans if s.attributes.get(DB_RESPONSE_STATUS_CODE) == "404"]
    assert lookups, "some lookup missed"
    for span in lookups:
        assert span.status_code == "unset", f"{span.name}: a 404 lookup is a cache miss, not a failure"


def ml_attributes(run: Run) -> None:
    """`ml.*` on server spans (batch's `ml.run_id`), the gateway's own values over baggage"""
    model = run.cases["miss"].body["model"]
    miss = run.server("miss").attributes
    assert miss["ml.data_id"] == run.cases["miss"].body["data_id"], "own attributes win over baggage"
    assert (miss["ml.run_id"], miss["ml.model.version"], miss["ml.cache.result"]) == (
        model["run_id"],
        model["version"],
        "miss",
    )
    assert run.server("hit").attributes["ml.cache.result"] == "hit"
    batch = run.server("batch").attributes
    assert batch["ml.run_id"] == model["run_id"]
    assert batch["ml.batch.size"] == 2, "the gateway's own count, not the baggage's 9999"


def stored_read_is_a_hit(run: Run) -> None:
    """`GET /v1/predictions` says `hit` on its span [main, item 18]"""
    assert run.cases["stored"].body["cache"] == "hit"
    assert run.server("stored").attributes.get("ml.cache.result") == "hit"


def hit_link(run: Run) -> None:
    """a hit links to the trace that computed its prediction and never calls the model"""
    miss_server = run.server("miss")
    assert [(link["trace_id"], link["span_id"]) for link in run.server("hit").links] == [
        (miss_server.trace_id, miss_server.span_id)
    ]
    assert not run.spans("hit", MODEL), "a hit never calls the model"


def no_duplicate_keys(run: Run) -> None:
    """no span of either service carries an attribute key twice"""
    for span in run.got.spans:
        repeated = {key for key in span.attribute_keys if span.attribute_keys.count(key) > 1}
        assert not repeated, f"{span.service_name} {span.name}: {repeated}"


def baggage_combined(run: Run) -> None:
    """repeated `baggage` fields are combined, in both services [model: wip-model]"""
    for span in (run.server("miss"), run.one("miss", MODEL, "server")):
        assert (span.attributes.get("ml.experiment"), span.attributes.get("ml.second")) == ("exp-1", "two"), (
            f"{span.service_name} {span.name}"
        )


def baggage_never_overrides(run: Run) -> None:
    """baggage never replaces a service's own `ml.*` attribute [model: wip-model]"""
    for span in run.spans("miss"):
        assert span.attributes.get("ml.data_id") != "spoofed", f"{span.service_name} {span.name}"
        assert span.attributes.get("ml.run_id") != "spoofed", f"{span.service_name} {span.name}"


def baggage_caps(run: Run) -> None:
    """baggage copied onto a gateway span is capped in entries and bytes"""
    spans = run.spans("big_baggage", GATEWAY)
    assert spans
    for span in spans:
        tags = {k: v for k, v in span.attributes.items() if k.startswith("ml.tag")}
        assert 0 < len(tags) <= BAGGAGE_MAX_ENTRIES, f"{span.name}: {len(tags)} baggage attributes"
        assert sum(len(k) + len(v) for k, v in tags.items()) <= BAGGAGE_MAX_BYTES


def tracestate_combined(run: Run) -> None:
    """repeated `tracestate` fields are combined and reach the model service [wip-model]"""
    assert run.server("miss").trace_state == "vendora=1,vendorb=2"
    assert run.one("miss", MODEL, "server").trace_state == "vendora=1,vendorb=2", "the model service keeps it"


def malformed_trace_context(run: Run) -> None:
    """a repeated or uppercase traceparent starts a new trace; a tracestate with a repeated key is dropped"""
    for case in ("repeated_traceparent", "uppercase_traceparent"):
        server = run.server(case)
        assert server.parent_span_id == "", f"{case}: a malformed traceparent starts a new trace"
    server = run.server("duplicate_tracestate_key")
    assert server.parent_span_id == run.cases["duplicate_tracestate_key"].caller_span_id
    assert server.trace_state == "", "a tracestate with a repeated key is discarded"


def one_exception(run: Run) -> None:
    """a gateway 5xx is one `exception` event on the server span with type, message and cause chain"""
    server = run.server("model_error")
    events = [(s, e) for s in run.spans("model_error", GATEWAY) for e in s.events if e["name"] == "exception"]
    assert len(events) == 1, tree(run.spans("model_error"))
    assert events[0][0] is server
    attributes = events[0][1]["attributes"]
    for name in (EXCEPTION_TYPE, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE):
        assert isinstance(attributes.get(name), str), name
        assert attributes[name], name
    assert "caused by: " in attributes[EXCEPTION_STACKTRACE]
    assert not [e for s in run.spans("unknown_id") for e in s.events if e["name"] == "exception"]


def model_exception_once(run: Run) -> None:
    """the model service records its failure once, `exception.escaped` boolean [wip-model]"""
    events = [e for s in run.spans("model_error", MODEL) for e in s.events if e["name"] == "exception"]
    assert len(events) == 1, tree(run.spans("model_error"))
    for span in run.got.spans:
        for event in span.events:
            if EXCEPTION_ESCAPED in event["attributes"]:
                assert isinstance(event["attributes"][EXCEPTION_ESCAPED], bool), event


def no_log_span_events(run: Run) -> None:
    """gateway logs are log records only, not also span events"""
    for span in run.got.spans:
        if span.service_name == GATEWAY:
            assert {e["name"] for e in span.events} <= {"exception"}, f"{span.name}: {span.events}"


def metric_names_units(run: Run) -> None:
    """the gateway's instruments by name, unit and type"""
    expected = {
        HTTP_SERVER_REQUEST_DURATION: ("s", "histogram"),
        HTTP_SERVER_ACTIVE_REQUESTS: ("{request}", "sum"),
        HTTP_CLIENT_REQUEST_DURATION: ("s", "histogram"),
        DB_CLIENT_OPERATION_DURATION: ("s", "histogram"),
        ML_CACHE_RESULTS: ("{prediction}", "sum"),
    }
    got = {(p.metric, p.unit, p.data_type) for p in run.got.points if p.service_name == GATEWAY}
    for name, (unit, data_type) in expected.items():
        assert (name, unit, data_type) in got, name


def delta_histograms(run: Run) -> None:
    """histograms of both services are delta with the temporality variable set but empty [model: wip-model]"""
    histograms = [p for p in run.got.points if p.data_type == "histogram"]
    assert {p.service_name for p in histograms} >= {GATEWAY, MODEL}
    for point in histograms:
        assert point.temporality == "delta", f"{point.service_name} {point.metric}"


def server_metric_attributes(run: Run) -> None:
    """server duration points: status, scheme, protocol; `error.type` exactly on 5xx"""
    points = [p for p in run.got.points if p.service_name == GATEWAY and p.metric == HTTP_SERVER_REQUEST_DURATION]
    for point in points:
        attributes = point.attributes
        assert isinstance(attributes[HTTP_RESPONSE_STATUS_CODE], int)
        assert attributes[URL_SCHEME] == "http"
        assert attributes[NETWORK_PROTOCOL_VERSION] == "1.1"
        assert (ERROR_TYPE in attributes) == (attributes[HTTP_RESPONSE_STATUS_CODE] >= 500), attributes
    assert any(p.attributes.get(ERROR_TYPE) == "502" for p in points)


def client_metric_attributes(run: Run) -> None:
    """client duration points: `server.address`, `server.port`, status"""
    points = [p for p in run.got.points if p.service_name == GATEWAY and p.metric == HTTP_CLIENT_REQUEST_DURATION]
    assert points
    for point in points:
        assert isinstance(point.attributes.get(SERVER_PORT), int), point
        assert isinstance(point.attributes.get(HTTP_RESPONSE_STATUS_CODE), int), point
        assert point.attributes[SERVER_ADDRESS] == "127.0.0.1"


def db_metric_attributes(run: Run) -> None:
    """store duration points: `server.address`, `server.port` [wip-bench]"""
    points = [p for p in run.got.points if p.service_name == GATEWAY and p.metric == DB_CLIENT_OPERATION_DURATION]
    assert points
    for point in points:
        assert point.attributes.get(SERVER_ADDRESS) == "127.0.0.1", point
        assert isinstance(point.attributes.get(SERVER_PORT), int), point


def no_ids_on_metrics(run: Run) -> None:
    """no ids, paths or URLs on metric attributes"""
    for point in run.got.points:
        assert not {"ml.data_id", URL_PATH, URL_FULL, URL_QUERY} & point.attributes.keys(), point


def cache_outcomes(run: Run) -> None:
    """a store outage is answered `bypass`; `ml.cache.results` counts hit, miss and bypass"""
    assert run.cases["bypass"].status == 200
    assert run.cases["bypass"].body["cache"] == "bypass"
    assert run.server("bypass").attributes["ml.cache.result"] == "bypass"
    outcomes = {p.attributes.get("ml.cache.result") for p in run.got.points if p.metric == ML_CACHE_RESULTS}
    assert outcomes >= {"hit", "miss", "bypass"}


def write_behind_retry(run: Run) -> None:
    """a write the store could not take is retried in a `write-behind retry` span of its own trace with
    `ml.data_id` and a link to the trace that computed the prediction; nothing is given up"""
    bypass = run.cases["bypass"]
    retries = [
        s
        for s in run.got.spans
        if s.service_name == GATEWAY
        and s.name == WRITE_BEHIND_RETRY
        and s.attributes.get("ml.data_id") == bypass.body["data_id"]
    ]
    assert retries, "the write refused during the outage is retried"
    for retry in retries:
        assert retry.trace_id != bypass.trace_id, "a retry is not part of the request's trace"
        assert bypass.trace_id in {link["trace_id"] for link in retry.links}, retry.links
    assert not [log for log in run.got.logs if log.service_name == GATEWAY and "gave up" in str(log.body)]
    assert not [p for p in run.got.points if p.metric == "gateway.write_behind.dropped"]


def log_correlation(run: Run) -> None:
    """the gateway's logs of a request carry its trace and span ids"""
    span_ids = {(s.trace_id, s.span_id) for s in run.got.spans}
    failure = run.cases["model_error"].trace_id
    logs = [log for log in run.got.logs if log.service_name == GATEWAY and log.trace_id == failure]
    assert logs, "the failure is logged"
    for log in logs:
        assert (log.trace_id, log.span_id) in span_ids, log


def no_event_names(run: Run) -> None:
    """no log record of either service has an event name [model: wip-model]"""
    for log in run.got.logs:
        assert not log.event_name, f"{log.service_name}: {log.event_name!r} on {log.body!r}"


def log_timestamps(run: Run) -> None:
    """every log record of either service has a timestamp"""
    for log in run.got.logs:
        assert log.time_unix_nano > 0, f"{log.service_name}: {log.body!r}"


def gateway_resource(run: Run) -> None:
    """gateway resource: name, `service.version` from the variable, instance id, environment"""
    resource = run.server("miss").resource
    assert resource[SERVICE_NAME] == GATEWAY
    assert resource[SERVICE_VERSION] == GATEWAY_VERSION, "OTEL_RESOURCE_ATTRIBUTES wins"
    assert resource[DEPLOYMENT_ENVIRONMENT_NAME] == ENVIRONMENT
    assert len(resource[SERVICE_INSTANCE_ID]) == 36
    assert resource["telemetry.sdk.language"] == "rust"


def model_resource(run: Run) -> None:
    """model service resource: name, version, environment [wip-model]"""
    resource = run.one("miss", MODEL, "server").resource
    assert resource[SERVICE_NAME] == MODEL
    assert resource.get(SERVICE_VERSION), "service.version"
    assert resource.get(DEPLOYMENT_ENVIRONMENT_NAME), "deployment.environment.name"


def no_credentials(run: Run) -> None:
    """the model URL's password appears in no span, log or metric"""
    assert run.got.raw_text, "the collector wrote nothing"
    assert SECRET not in run.got.raw_text


def training_run(run: Run) -> None:
    """a training run: `load_data`/`train_model`/`evaluate` with `ml.*`, quality logs"""
    spans = {
        s.name: s
        for s in run.got.spans
        if s.service_name == MODEL and s.name in ("load_data", "train_model", "evaluate")
    }
    assert spans.keys() == {"load_data", "train_model", "evaluate"}
    for span in spans.values():
        assert span.attributes.get("ml.run_id"), span.name
    assert {"ml.dataset", "ml.learning_rate"} <= spans["train_model"].attributes.keys() | spans[
        "load_data"
    ].attributes.keys()
    quality = {k for log in run.got.logs if log.service_name == MODEL for k in log.attributes}
    assert {"ml.training_accuracy", "ml.validation_accuracy", "ml.drift_detected"} <= quality


# The table: each rule's id (its test's id) and its check, in the order the tests run.
RULES = {
    "span-names": span_names,
    "unknown-method": unknown_method,
    "kinds-parentage": kinds_and_parentage,
    "status": status_by_class,
    "server-attributes": server_attributes,
    "url-query": query,
    "peer": peer,
    "client-span": client_span,
    "client-error-agrees": client_error_agrees,
    "store-spans": store_spans,
    "store-miss-not-error": store_miss_not_an_error,
    "ml-attributes": ml_attributes,
    "stored-read-hit": stored_read_is_a_hit,
    "hit-link": hit_link,
    "no-duplicate-keys": no_duplicate_keys,
    "baggage-combined": baggage_combined,
    "baggage-never-overrides": baggage_never_overrides,
    "baggage-caps": baggage_caps,
    "tracestate-combined": tracestate_combined,
    "malformed-trace-context": malformed_trace_context,
    "exception-once": one_exception,
    "model-exception-once": model_exception_once,
    "no-log-span-events": no_log_span_events,
    "metric-names-units": metric_names_units,
    "delta-histograms": delta_histograms,
    "server-metric-attributes": server_metric_attributes,
    "client-metric-attributes": client_metric_attributes,
    "db-metric-attributes": db_metric_attributes,
    "no-ids-on-metrics": no_ids_on_metrics,
    "cache-outcomes": cache_outcomes,
    "write-behind-retry": write_behind_retry,
    "log-correlation": log_correlation,
    "no-event-names": no_event_names,
    "log-timestamps": log_timestamps,
    "gateway-resource": gateway_resource,
    "model-resource": model_resource,
    "no-credentials": no_credentials,
    "training-run": training_run,
}


@pytest.mark.parametrize("check", RULES.values(), ids=RULES.keys())
def test_rule(check: Callable[[Run], None], run: Run) -> None:
    check(run)
