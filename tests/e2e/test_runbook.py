"""The validation runbook (`make verify`, deploy/verify/runbook.py) passes on the test bed,
and fails, naming the check, when the documents lack what it checks.

The bed: the real model service (after a traced training run) and gateway export to the
bed's collector running the compose stack's own collector config (minus Elastic's two
elasticapm components, as tests/deploy does); its elasticsearch exporter writes through
`exporter_shim` into the bed's OpenSearch node, whose index templates stand in for
Elasticsearch's built-in `*-*.otel-*` ones. The runbook then runs as a command against
those processes, exactly the code `make verify` runs against the compose stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from deploy.collector_configs import COMPOSE_CONFIG, strip_edot_only, with_local_endpoints
from exporter_shim import ExporterShim, strip_bulk_actions

from harness.collector import Collector
from harness.gateway import Gateway
from harness.model_service import start_model_service, train_another_version
from harness.polling import poll_until
from harness.process import ManagedProcess
from harness.provisioning import REPO_ROOT, provisioned
from harness.search_node import SearchNode

RUNBOOK = REPO_ROOT / "deploy" / "verify" / "runbook.py"
SIGNALS = ("traces", "logs", "metrics")
# Credentials of the caller's environment must not leak into a run against the bed's node.
_CREDENTIAL_VARIABLES = (
    "ELASTIC_PASSWORD",
    "ELASTIC_PASSWORD_FILE",
    "ELASTICSEARCH_API_KEY",
    "ELASTICSEARCH_URL",
    "MODEL_SERVICE__ADMIN_TOKEN_FILE",
)


def otel_index_template(signal: str) -> dict:
    """What Elasticsearch's built-in `<signal>-*.otel-*` templates give the exporter and
    OpenSearch lacks: a data stream per name, strings as keywords (indexed up to 1,024
    characters, as there), `@timestamp` with nanoseconds (the exporter writes spans' and
    logs' as "millis.nanos" strings, metrics' as epoch millis)."""
    return {
        "index_patterns": [f"{signal}-*.otel-*"],
        "data_stream": {},
        "priority": 500,
        "template": {
            "settings": {"number_of_replicas": 0},
            "mappings": {
                "dynamic_templates": [
                    {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}
                ],
                "properties": {
                    "@timestamp": {"type": "date_nanos", "format": "strict_date_optional_time||epoch_millis"}
                },
            },
        },
    }


@dataclass(frozen=True)
class RunbookBed:
    gateway_url: str
    model_service_url: str
    model_service_admin_token: str
    search_url: str
    shim: ExporterShim
    work_dir: Path


@dataclass(frozen=True)
class RunbookRun:
    returncode: int
    output: str


def run_runbook(bed: RunbookBed, *args: str) -> RunbookRun:
    env = {key: value for key, value in os.environ.items() if key not in _CREDENTIAL_VARIABLES}
    env["MODEL_SERVICE__ADMIN_TOKEN"] = bed.model_service_admin_token
    completed = subprocess.run(
        [
            sys.executable,
            RUNBOOK,
            "--gateway-url",
            bed.gateway_url,
            "--model-service-url",
            bed.model_service_url,
            "--elasticsearch-url",
            bed.search_url,
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return RunbookRun(completed.returncode, completed.stdout + completed.stderr)


def start_exporting_collector(elasticsearch_url: str, work_dir: Path) -> Collector:
    """The compose stack's collector config on the bed, its exporter aimed at `elasticsearch_url`."""
    config, _ = strip_edot_only(yaml.safe_load(COMPOSE_CONFIG.read_text()))
    config, health_port, environment = with_local_endpoints(config)
    environment["ELASTICSEARCH_URL"] = elasticsearch_url
    config_path = work_dir / "collector-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))
    process = ManagedProcess(
        "collector-elasticsearch",
        [provisioned("provision-collector.sh"), "--config", config_path],
        env=environment,
        log_dir=work_dir / "logs",
    ).start()

    process.wait_until_ready(
        lambda: requests.get(f"http://127.0.0.1:{health_port}/", timeout=2).status_code == 200,
        "the exporting collector's health check to answer 200",
        timeout=60,
    )
    protocols = config["receivers"]["otlp"]["protocols"]
    port_of = {name: int(protocol["endpoint"].rsplit(":", 1)[1]) for name, protocol in protocols.items()}
    return Collector(process, port_of["grpc"], port_of["http"], work_dir)


@pytest.fixture(scope="module")
def runbook_bed(search_node: SearchNode, bed_dir: Path) -> Iterator[RunbookBed]:
    work_dir = bed_dir / "runbook"
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    for signal in SIGNALS:
        response = requests.put(
            f"{search_node.url}/_index_template/runbook-{signal}-otel", json=otel_index_template(signal), timeout=30
        )
        assert response.status_code == 200, response.text
    shim = ExporterShim(search_node.url).start()
    collector = start_exporting_collector(shim.url, work_dir)
    venv_bin = Path(sys.executable).parent
    model_service = gateway = None
    try:
        # A traced training run: the runbook's training check and its load_data/train_model p95.
        train_another_version(venv_bin, work_dir, collector)
        model_service = start_model_service(venv_bin, work_dir, collector=collector)
        gateway = Gateway.start(
            work_dir,
            model_url=model_service.url,
            store_url=search_node.url,
            collector=collector,
            index_alias="runbook-predictions",
        )
        poll_until(gateway.ready, "the gateway to report ready", timeout=60)
        yield RunbookBed(gateway.url, model_service.url, model_service.admin_token, search_node.url, shim, work_dir)
    finally:
        for process in (gateway, model_service, collector):
            if process is not None:
                process.stop()
        shim.stop()


@pytest.fixture(scope="module")
def passed_run(runbook_bed: RunbookBed) -> tuple[RunbookRun, Path]:
    record = runbook_bed.work_dir / "run-record.json"
    run = run_runbook(runbook_bed, "--requests", "10", "--wait", "120", "--record-out", str(record))
    print(run.output)
    return run, record


def test_the_runbook_passes_on_the_test_bed(passed_run: tuple[RunbookRun, Path], runbook_bed: RunbookBed) -> None:
    run, _ = passed_run
    # Everything the exporter wrote was accepted by the node, so the checks saw all of it.
    assert runbook_bed.shim.rejected == [], runbook_bed.shim.rejected[:5]
    assert runbook_bed.shim.documents_accepted > 0
    assert run.returncode == 0, run.output
    assert "runbook passed" in run.output
    for check in ("traces of both services", "logs of both services", "metrics of both services"):
        assert f"[PASS] {check}" in run.output
    assert "[PASS] custom attributes" in run.output
    assert "[PASS] error trace with exception and stack" in run.output
    # p95 printed for every stage, from spans that exist.
    table = run.output.split("p95 per stage", 1)[1]
    for stage in (
        "load_data",
        "train_model",
        "load_features",
        "predict",
        "POST /v1/predict (miss)",
        "POST /v1/predict (hit)",
    ):
        row = next(line for line in table.splitlines() if line.startswith(f"{stage} "))
        assert not row.rstrip().endswith("-"), f"no p95 for {stage}: {row}"


def _drop_exception_events(document: dict, signal: str) -> dict | None:
    return None if signal == "logs" and document.get("event_name") == "exception" else document


def _drop_stacktraces(document: dict, signal: str) -> dict | None:
    (document.get("attributes") or {}).pop("exception.stacktrace", None)
    return document


def _drop_ml_span_attributes(document: dict, signal: str) -> dict | None:
    if signal == "traces":
        document["attributes"] = {
            k: v for k, v in (document.get("attributes") or {}).items() if not k.startswith("ml.")
        }
    return document


def _service_dropper(service: str, dropped_signal: str) -> Callable[[dict, str], dict | None]:
    def drop(document: dict, signal: str) -> dict | None:
        of_service = (document.get("resource") or {}).get("attributes", {}).get("service.name") == service
        return None if signal == dropped_signal and of_service else document

    return drop


@pytest.mark.parametrize(
    ("namespace", "transform", "failing_check"),
    [
        pytest.param(
            "no_exception_event", _drop_exception_events, "error trace with exception and stack", id="no-exception"
        ),
        pytest.param("no_stack", _drop_stacktraces, "error trace with exception and stack", id="exception-no-stack"),
        pytest.param("no_ml", _drop_ml_span_attributes, "custom attributes", id="spans-without-ml-attributes"),
        pytest.param(
            "no_model_spans",
            _service_dropper("model-service", "traces"),
            "traces of both services",
            id="no-model-service-spans",
        ),
        pytest.param(
            "no_gateway_logs",
            _service_dropper("inference-gateway", "logs"),
            "logs of both services",
            id="no-gateway-logs",
        ),
        pytest.param(
            "no_model_metrics",
            _service_dropper("model-service", "metrics"),
            "metrics of both services",
            id="no-model-service-metrics",
        ),
    ],
)
def test_the_runbook_fails_when_the_documents_lack_what_it_checks(
    passed_run: tuple[RunbookRun, Path],
    runbook_bed: RunbookBed,
    namespace: str,
    transform: Callable[[dict, str], dict | None],
    failing_check: str,
) -> None:
    # Arrange: the exporter's documents of the passing run, one thing taken away, in
    # data streams of their own namespace.
    run, record = passed_run
    assert run.returncode == 0, "the passing run is the baseline"
    for signal in SIGNALS:
        copy_documents(runbook_bed.search_url, signal, namespace, transform)

    # Act: check the same run record against the copies.
    broken = run_runbook(
        runbook_bed,
        "--check-only",
        str(record),
        "--wait",
        "0",
        *[arg for signal in SIGNALS for arg in (f"--{signal}-index", f"{signal}-*.otel-{namespace}")],
    )

    # Assert
    assert broken.returncode == 1, broken.output
    assert f"[FAIL] {failing_check}" in broken.output, broken.output
    assert "runbook FAILED" in broken.output


def copy_documents(search_url: str, signal: str, namespace: str, transform: Callable[[dict, str], dict | None]) -> None:
    """Every document of `<signal>-*.otel-default`, through `transform` (None drops it), into
    the same data stream names with `namespace`."""
    hits = requests.post(
        f"{search_url}/{signal}-*.otel-default/_search",
        # The newest first: the metrics of the passing run, if the session wrote more than fit.
        json={"size": 10_000, "query": {"match_all": {}}, "sort": [{"@timestamp": {"order": "desc"}}]},
        timeout=60,
    ).json()["hits"]["hits"]
    lines = []
    for hit in hits:
        document = transform(hit["_source"], signal)
        if document is None:
            continue
        stream = document["data_stream"] = {**document["data_stream"], "namespace": namespace}
        lines.append(json.dumps({"create": {"_index": f"{stream['type']}-{stream['dataset']}-{namespace}"}}))
        lines.append(json.dumps(document))
    if not lines:
        return
    answer = requests.post(
        f"{search_url}/_bulk",
        params={"refresh": "true"},
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=120,
    ).json()
    assert not answer["errors"], [item for item in answer["items"] if "error" in next(iter(item.values()))][:3]


def test_the_shim_removes_only_the_elasticsearch_only_action_parameters() -> None:
    document = b'{"@timestamp":"1795464965931.136343","name":"span","attributes":{"require_data_stream":"kept"}}'
    body = (
        b'{"create":{"_index":"traces-generic.otel-default","require_data_stream":true}}\n'
        + document
        + b'\n{"create":{"_index":"metrics-generic.otel-default","dynamic_templates":{"metrics.x":"histogram"}}}\n'
        + b'{"metrics":{"x":1}}\n'
    )
    stripped = strip_bulk_actions(body).split(b"\n")
    assert stripped[0] == b'{"create":{"_index":"traces-generic.otel-default"}}'
    assert stripped[1] == document, "a document's bytes are never changed"
    assert stripped[2] == b'{"create":{"_index":"metrics-generic.otel-default"}}'
    assert stripped[3] == b'{"metrics":{"x":1}}'
