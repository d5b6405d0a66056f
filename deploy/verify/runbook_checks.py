"""The runbook's checks of what reached Elasticsearch, in query DSL only, so that they run
unchanged on Elasticsearch 8/9 and on the test bed's OpenSearch 2.19 (which has no ES|QL).

They read the documents the collector's elasticsearch exporter writes in its default
`otel` mapping mode (contrib v0.156.0, the component set of EDOT collector 9.5.1), whose
shape is fixed by the exporter's serializer, `exporter/elasticsearchexporter/internal/
serializer/otelserializer/` in open-telemetry/opentelemetry-collector-contrib:

- a span (`traces.go`, `SerializeSpan`) goes to `traces-<dataset>.otel-<namespace>`
  (`data_stream_router.go`, `routeRecord`: dataset `generic`, namespace `default` unless
  `data_stream.*` attributes say otherwise) with `@timestamp`, `trace_id`, `span_id`,
  `parent_span_id`, `name`, `kind` (`Server`, `Client`, ...), `duration` in nanoseconds,
  `attributes.*`, `status.code` (`Ok`/`Error`, absent when unset), `links`,
  `resource.attributes.*` and `scope.*`. It has no `events` field;
- each span event is a document of its own (`exporter.go`, `pushTraceData` ->
  `pushSpanEvent`), routed like a log record to `logs-<dataset>.otel-<namespace>`
  (`data_stream_router.go`, `dynamicDocumentRouter.routeSpanEvent`) and written by
  `traces.go`, `SerializeSpanEvent`: the span's `trace_id` and `span_id`, `event_name`,
  and the event's attributes plus `attributes.event.name`. A recorded exception is
  therefore a log document with `event_name: exception` and `attributes.exception.type`,
  `.message` and `.stacktrace`;
- a log record (`logs.go`, `SerializeLog`): `observed_timestamp` (always), `severity_text`,
  `trace_id`, `span_id`, `event_name` (the record's event name, which the gateway's tracing
  appender always sets), `body.text` (or `body.structured`), `attributes.*`,
  `resource.attributes.*`;
- metric data points (`metrics.go`, `SerializeMetrics`) go to
  `metrics-<dataset>.otel-<namespace>`, one document per resource, scope, attributes and
  timestamp, each metric under `metrics.<name>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from runbook_traffic import RunRecord

GATEWAY = "inference-gateway"
MODEL_SERVICE = "model-service"
SERVICES = (GATEWAY, MODEL_SERVICE)
# The custom attributes of the telemetry contract (SPEC.md) on the spans that must carry them.
GATEWAY_SPAN_ATTRIBUTES = ("ml.data_id", "ml.model.name", "ml.model.version", "ml.run_id", "ml.cache.result")
MODEL_SPAN_ATTRIBUTES = ("ml.data_id", "ml.model.name", "ml.model.version", "ml.run_id")
TRAINING_STAGES = ("load_data", "train_model", "evaluate")
TRAINING_LOG_ATTRIBUTES = ("ml.training_accuracy", "ml.validation_accuracy", "ml.drift_detected")
GATEWAY_ROUTE = "POST /v1/predict"
# The server request-duration histogram both services record (semantic conventions).
REQUEST_DURATION = "http.server.request.duration"
# The EDOT collector's elasticapm connector writes aggregated APM metrics that carry the
# services' names too; they must not pass for the services' own metrics.
_CONNECTOR_SCOPE = "*elasticapm*"
_SERVICE = "resource.attributes.service.name"


class SearchError(Exception):
    """Elasticsearch did not answer a query (unreachable, refused credentials, bad request)."""


@dataclass(frozen=True)
class Indices:
    """Where the exporter writes each signal (index patterns)."""

    traces: str = "traces-*.otel-*"
    logs: str = "logs-*.otel-*"
    metrics: str = "metrics-*.otel-*"


@dataclass(frozen=True)
class CheckResult:
    """One named check: passed or not, and what was seen."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class StageLatency:
    """p95 of one stage's span durations."""

    stage: str
    scope: str
    count: int
    p95_ms: float | None


class SearchClient:
    """`_search` on one Elasticsearch (or OpenSearch) endpoint with one set of credentials."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        if api_key:
            self._session.headers["Authorization"] = f"ApiKey {api_key}"
        elif auth:
            self._session.auth = auth

    def ping(self) -> None:
        """Fail with a readable message unless the endpoint answers and accepts the credentials."""
        try:
            response = self._session.get(self.url, timeout=10)
        except requests.RequestException as error:
            raise SearchError(f"Elasticsearch not reachable at {self.url}: {error}") from error
        if response.status_code in (401, 403):
            raise SearchError(
                f"Elasticsearch at {self.url} refused the credentials ({response.status_code}); set "
                "ELASTIC_PASSWORD or ELASTIC_PASSWORD_FILE (user elastic) or ELASTICSEARCH_API_KEY"
            )
        if response.status_code != 200:
            raise SearchError(f"GET {self.url} answered {response.status_code}: {response.text[:300]}")

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._session.post(
                f"{self.url}/{index}/_search",
                json=body,
                # A pattern that matches nothing yet (no data arrived) is "no documents", not an error.
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
                timeout=30,
            )
        except requests.RequestException as error:
            raise SearchError(f"search on {index} failed: {error}") from error
        if response.status_code != 200:
            raise SearchError(f"search on {index} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def count(self, index: str, query: dict[str, Any]) -> int:
        body = {"size": 0, "track_total_hits": True, "query": query}
        return int(self.search(index, body)["hits"]["total"]["value"])

    def terms(self, index: str, query: dict[str, Any], field: str, size: int = 100) -> dict[str, int]:
        """Document count per value of `field` among the documents matching `query`."""
        body = {"size": 0, "query": query, "aggs": {"values": {"terms": {"field": field, "size": size}}}}
        buckets = self.search(index, body)["aggregations"]["values"]["buckets"]
        return {str(bucket["key"]): int(bucket["doc_count"]) for bucket in buckets}

    def sources(self, index: str, query: dict[str, Any], size: int = 10) -> list[dict[str, Any]]:
        body = {"size": size, "query": query, "sort": [{"@timestamp": {"order": "desc"}}]}
        return [hit["_source"] for hit in self.search(index, body)["hits"]["hits"]]


def _all(*clauses: dict[str, Any], must_not: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"bool": {"filter": list(clauses), "must_not": must_not or []}}


def _term(field: str, value: str) -> dict[str, Any]:
    return {"term": {field: value}}


def _traces(ids: list[str]) -> dict[str, Any]:
    return {"terms": {"trace_id": ids}}


def _since(epoch_ms: int) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": epoch_ms, "format": "epoch_millis"}}}


def _since_relative(lookback: str) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": f"now-{lookback}"}}}


def _exists(field: str) -> dict[str, Any]:
    return {"exists": {"field": field}}


def field_value(source: dict[str, Any], path: str) -> Any:
    """The value at a dotted path in a `_source`, whether the keys were sent flat
    (`{"attributes": {"exception.type": ...}}`, as the exporter writes them) or come
    back nested (synthetic `_source` may rebuild objects)."""
    if path in source:
        return source[path]
    parts = path.split(".")
    for cut in range(1, len(parts)):
        head, rest = ".".join(parts[:cut]), ".".join(parts[cut:])
        if isinstance(source.get(head), dict):
            found = field_value(source[head], rest)
            if found is not None:
                return found
    return None


def traces_of_both_services(client: SearchClient, indices: Indices, run: RunRecord) -> CheckResult:
    """Every miss (and the failure) is one trace holding spans of both services; every hit a gateway span."""
    expectations = {trace_id: set(SERVICES) for trace_id in run.trace_ids_with_cache("miss")}
    expectations.update({trace_id: {GATEWAY} for trace_id in run.trace_ids_with_cache("hit")})
    if run.error_trace_id:
        expectations[run.error_trace_id] = set(SERVICES)
    body = {
        "size": 0,
        "query": _traces(sorted(expectations)),
        "aggs": {
            "per_trace": {
                "terms": {"field": "trace_id", "size": len(expectations) or 1},
                "aggs": {"services": {"terms": {"field": _SERVICE, "size": 10}}},
            }
        },
    }
    buckets = client.search(indices.traces, body)["aggregations"]["per_trace"]["buckets"]
    seen = {bucket["key"]: {service["key"] for service in bucket["services"]["buckets"]} for bucket in buckets}
    incomplete = {trace_id: sorted(want - seen.get(trace_id, set())) for trace_id, want in expectations.items()}
    incomplete = {trace_id: missing for trace_id, missing in incomplete.items() if missing}
    if not expectations:
        return CheckResult("traces of both services", False, "the run produced no traces to look for")
    if incomplete:
        sample = ", ".join(f"{trace_id} lacks {missing}" for trace_id, missing in sorted(incomplete.items())[:3])
        return CheckResult(
            "traces of both services", False, f"{len(incomplete)}/{len(expectations)} traces incomplete: {sample}"
        )
    per_service = client.terms(indices.traces, _traces(sorted(expectations)), _SERVICE)
    return CheckResult(
        "traces of both services",
        True,
        f"{len(expectations)} traces complete; spans per service {dict(sorted(per_service.items()))}",
    )


def logs_of_both_services(client: SearchClient, indices: Indices, run: RunRecord) -> CheckResult:
    """Log records (span events excluded) of both services, correlated with the run's traces."""
    # A log record's document always has `observed_timestamp` (logs.go, SerializeLog); a span
    # event's never does (traces.go, SerializeSpanEvent). `event_name` cannot tell them apart:
    # the gateway's tracing appender names every log record's event too.
    query = _all(_traces(run.trace_ids()), _exists("observed_timestamp"))
    per_service = client.terms(indices.logs, query, _SERVICE)
    missing = [service for service in SERVICES if not per_service.get(service)]
    detail = f"log records with the run's trace ids per service {dict(sorted(per_service.items()))}"
    return CheckResult("logs of both services", not missing, detail + (f"; none from {missing}" if missing else ""))


def metrics_of_both_services(client: SearchClient, indices: Indices, run: RunRecord) -> CheckResult:
    """Metric documents of both services written since the run started (the SDKs' own, not the APM
    connector's), each service's request-duration histogram among them: the exporter drops
    cumulative histograms, so a service exporting them would still send other metrics."""
    query = _all(_since(run.started_at_ms), must_not=[{"wildcard": {"scope.name": _CONNECTOR_SCOPE}}])
    per_service = client.terms(indices.metrics, query, _SERVICE)
    with_histogram = client.terms(indices.metrics, _all(query, _exists(f"metrics.{REQUEST_DURATION}")), _SERVICE)
    missing = [service for service in SERVICES if not per_service.get(service) or not with_histogram.get(service)]
    names: dict[str, set[str]] = {}
    for service in SERVICES:
        for source in client.sources(indices.metrics, _all(query, _term(_SERVICE, service)), size=50):
            names.setdefault(service, set()).update((source.get("metrics") or {}).keys())
    shown = {service: sorted(found)[:6] for service, found in names.items()}
    detail = (
        f"metric documents since the run started per service {dict(sorted(per_service.items()))}, "
        f"with {REQUEST_DURATION} {dict(sorted(with_histogram.items()))}; e.g. {shown}"
    )
    missing_detail = f"; missing from {missing}" if missing else ""
    return CheckResult("metrics of both services", not missing, detail + missing_detail)


def custom_attributes(client: SearchClient, indices: Indices, run: RunRecord) -> CheckResult:
    """`ml.*` on every gateway request span and model `predict` span of the run, and the
    cache results on the spans equal to what the gateway answered."""
    ok_traces = sorted({request.trace_id for request in run.succeeded()})
    problems: list[str] = []
    gateway_spans = _all(
        _traces(ok_traces), _term(_SERVICE, GATEWAY), _term("name", GATEWAY_ROUTE), _term("kind", "Server")
    )
    predict_spans = _all(_traces(ok_traces), _term(_SERVICE, MODEL_SERVICE), _term("name", "predict"))
    counts = {}
    for label, query, attributes in (
        (f"gateway '{GATEWAY_ROUTE}'", gateway_spans, GATEWAY_SPAN_ATTRIBUTES),
        ("model-service 'predict'", predict_spans, MODEL_SPAN_ATTRIBUTES),
    ):
        total = client.count(indices.traces, query)
        counts[label] = total
        if total == 0:
            problems.append(f"no {label} spans in the run's traces")
            continue
        for attribute in attributes:
            without = client.count(indices.traces, _all(query, must_not=[_exists(f"attributes.{attribute}")]))
            if without:
                problems.append(f"{without}/{total} {label} spans without {attribute}")
    answered: dict[str, int] = {}
    for request in run.succeeded():
        answered[str(request.cache)] = answered.get(str(request.cache), 0) + 1
    on_spans = client.terms(indices.traces, gateway_spans, "attributes.ml.cache.result")
    if on_spans != answered:
        problems.append(f"ml.cache.result on the spans {on_spans} != the gateway's answers {answered}")
    if problems:
        return CheckResult("custom attributes", False, "; ".join(problems))
    gateway_count, predict_count = counts.values()
    return CheckResult(
        "custom attributes",
        True,
        f"{', '.join(GATEWAY_SPAN_ATTRIBUTES)} on all {gateway_count} gateway spans; "
        f"{', '.join(MODEL_SPAN_ATTRIBUTES)} on all {predict_count} predict spans; "
        f"cache results {dict(sorted(on_spans.items()))}",
    )


def error_trace(client: SearchClient, indices: Indices, run: RunRecord) -> CheckResult:
    """The failed request's trace: error spans in both services and the exception with its stack."""
    name = "error trace with exception and stack"
    if not run.error_trace_id:
        return CheckResult(name, False, "the run has no failed request to look for")
    in_trace = _traces([run.error_trace_id])
    problems = []
    for service in SERVICES:
        if not client.count(indices.traces, _all(in_trace, _term(_SERVICE, service), _term("status.code", "Error"))):
            problems.append(f"no {service} span with status Error")
    # Either field names the event (SerializeSpanEvent writes both).
    is_exception = {"bool": {"should": [_term("event_name", "exception"), _term("attributes.event.name", "exception")]}}
    events = client.sources(indices.logs, _all(in_trace, is_exception), size=20)
    # Read the stack from `_source`: a stack trace is longer than the 1,024 characters
    # up to which the otel templates index keyword values, so an `exists` query misses it.
    complete = [
        event
        for event in events
        if field_value(event, "attributes.exception.type")
        and field_value(event, "attributes.exception.message")
        and "\n" in str(field_value(event, "attributes.exception.stacktrace") or "")
    ]
    if not events:
        problems.append("no exception event document")
    elif not complete:
        problems.append(f"{len(events)} exception event(s), none with type, message and a multi-line stacktrace")
    if problems:
        return CheckResult(name, False, f"trace {run.error_trace_id}: " + "; ".join(problems))
    event = complete[0]
    stack = str(field_value(event, "attributes.exception.stacktrace")).strip().splitlines()
    return CheckResult(
        name,
        True,
        f"trace {run.error_trace_id}: Error spans in both services; {field_value(event, 'attributes.exception.type')}"
        f": {field_value(event, 'attributes.exception.message')} ({len(stack)}-line stack ending {stack[-1]!r})",
    )


def training_run(client: SearchClient, indices: Indices, lookback: str) -> CheckResult:
    """A traced training run within `lookback`: its stage spans with `ml.run_id`, and its quality log."""
    window = _since_relative(lookback)
    problems = []
    for stage in TRAINING_STAGES:
        query = _all(window, _term(_SERVICE, MODEL_SERVICE), _term("name", stage), _exists("attributes.ml.run_id"))
        if not client.count(indices.traces, query):
            problems.append(f"no '{stage}' span with ml.run_id")
    quality = client.sources(
        indices.logs, _all(window, _term(_SERVICE, MODEL_SERVICE), _exists("attributes.ml.validation_accuracy")), 1
    )
    if not quality:
        problems.append("no training log with ml.validation_accuracy")
    if problems:
        return CheckResult(f"training run (last {lookback})", False, "; ".join(problems))
    values = {key: field_value(quality[0], f"attributes.{key}") for key in TRAINING_LOG_ATTRIBUTES}
    return CheckResult(f"training run (last {lookback})", True, f"stages {', '.join(TRAINING_STAGES)}; latest {values}")


def stage_latencies(client: SearchClient, indices: Indices, run: RunRecord, lookback: str) -> list[StageLatency]:
    """p95 of span `duration` per stage: training stages over `lookback`, serving stages
    and the gateway's hit/miss over the run's own traces."""
    run_traces = _traces(run.trace_ids())
    training = _all(_since_relative(lookback), _term(_SERVICE, MODEL_SERVICE))
    rows: list[tuple[str, str, dict[str, Any]]] = [
        (stage, f"last {lookback}", _all(training, _term("name", stage))) for stage in TRAINING_STAGES
    ]
    for stage in ("load_features", "predict"):
        rows.append((stage, "this run", _all(run_traces, _term(_SERVICE, MODEL_SERVICE), _term("name", stage))))
    for cache in ("miss", "hit"):
        gateway = _all(
            run_traces,
            _term(_SERVICE, GATEWAY),
            _term("name", GATEWAY_ROUTE),
            _term("attributes.ml.cache.result", cache),
        )
        rows.append((f"{GATEWAY_ROUTE} ({cache})", "this run", gateway))
    return [_p95(client, indices, stage, scope, query) for stage, scope, query in rows]


def _p95(client: SearchClient, indices: Indices, stage: str, scope: str, query: dict[str, Any]) -> StageLatency:
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": query,
        "aggs": {"p95": {"percentiles": {"field": "duration", "percents": [95]}}},
    }
    answer = client.search(indices.traces, body)
    count = int(answer["hits"]["total"]["value"])
    values = answer["aggregations"]["p95"]["values"]
    nanoseconds = next(iter(values.values()), None) if count else None
    return StageLatency(stage, scope, count, None if nanoseconds is None else nanoseconds / 1e6)


def format_latencies(latencies: list[StageLatency]) -> str:
    lines = [f"{'stage':<28} {'over':<14} {'spans':>6} {'p95 ms':>10}"]
    for row in latencies:
        p95 = "-" if row.p95_ms is None else f"{row.p95_ms:.1f}"
        lines.append(f"{row.stage:<28} {row.scope:<14} {row.count:>6} {p95:>10}")
    return "\n".join(lines)


def run_checks(
    client: SearchClient, indices: Indices, run: RunRecord, training_lookback: str | None
) -> list[CheckResult]:
    """Every check of the runbook; the training one unless `training_lookback` is None."""
    checks: list[Callable[[], CheckResult]] = [
        lambda: traces_of_both_services(client, indices, run),
        lambda: logs_of_both_services(client, indices, run),
        lambda: metrics_of_both_services(client, indices, run),
        lambda: custom_attributes(client, indices, run),
        lambda: error_trace(client, indices, run),
    ]
    if training_lookback is not None:
        checks.append(lambda: training_run(client, indices, training_lookback))
    return [check() for check in checks]
