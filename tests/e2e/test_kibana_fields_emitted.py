"""Every field and value that the Kibana dashboard and alert rules of deploy/kibana
query is one the real services send: a traced training run, a cache miss and a
cache hit through the real gateway and model service, read back from the
collector and mapped to the document fields of the elasticsearch exporter."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy.kibana_objects import lens_uses, rule_uses

from deploy import emitted_fields
from harness.collector import Collector
from harness.gateway import Gateway
from harness.model_service import start_model_service, train_another_version
from harness.otlp_json import LogRecordView, SpanRecord

_TRAINING_SPANS = {"load_data", "train_model", "evaluate"}
_TRAINING_LOG_FIELDS = {"ml.training_accuracy", "ml.validation_accuracy", "ml.drift_detected"}


@dataclass(frozen=True)
class Captured:
    spans: list[SpanRecord]
    logs: list[LogRecordView]

    def document_fields(self, index: str) -> frozenset[str]:
        if index.startswith("traces-"):
            return emitted_fields.document_fields_of(self.spans, "traces")
        return emitted_fields.document_fields_of(self.logs, "logs")

    def values(self, document_field: str) -> set[str] | None:
        """Every value the field took in what was captured; None for a field the
        exporter derives itself (timestamps, durations), whose values we cannot see."""
        if document_field == "name":
            return {span.name for span in self.spans}
        if document_field == "status.code":
            # The exporter writes the OTLP status code by name: Unset, Ok, Error.
            return {span.status_code.capitalize() for span in self.spans}
        if not document_field.startswith(("attributes.", "resource.attributes.")):
            return None
        key = document_field.removeprefix("resource.attributes.").removeprefix("attributes.")
        sources = [source for record in [*self.spans, *self.logs] for source in (record.attributes, record.resource)]
        return {str(source[key]) for source in sources if key in source}


@pytest.fixture(scope="module")
def captured(collector: Collector, bed_dir: Path) -> Iterator[Captured]:
    venv_bin = Path(sys.executable).parent
    work_dir = bed_dir / "kibana-fields"
    # A traced training run: its spans and quality logs are what the dashboard's
    # training panels and the model-quality rules read.
    train_another_version(venv_bin, work_dir, collector)

    model_service = start_model_service(venv_bin, work_dir, collector=collector)
    gateway = Gateway.start(work_dir, model_url=model_service.url, collector=collector)
    try:
        miss = gateway.predict("cust-000314")
        hit = gateway.predict("cust-000314")
        assert (miss.json()["cache"], hit.json()["cache"]) == ("miss", "hit")
        # A failing prediction, for the error-rate rule: the model fails, the gateway answers 502.
        model_service.set_faults(error_rate=1.0)
        failed = gateway.predict("cust-000315")
        model_service.set_faults()
        assert failed.status_code == 502, failed.text

        def everything_arrived(spans: list[SpanRecord]) -> bool:
            cache_results = {span.attributes.get("ml.cache.result") for span in spans}
            quality_logged = any(log.attributes.keys() >= _TRAINING_LOG_FIELDS for log in collector.logs())
            trained = {span.name for span in spans} >= _TRAINING_SPANS
            failed = any(span.status_code == "error" and span.service_name == "inference-gateway" for span in spans)
            return trained and {"hit", "miss"} <= cache_results and quality_logged and failed

        spans = collector.wait_for_spans(everything_arrived, "training spans and logs, a traced miss, hit and failure")
        yield Captured(spans=spans, logs=collector.logs())
    finally:
        gateway.stop()
        model_service.stop()


@pytest.mark.parametrize(
    ("where", "index", "field", "values"),
    [pytest.param(*use, id=f"{use[0]}:{use[2]}") for use in lens_uses() + rule_uses()],
)
def test_a_field_the_kibana_objects_query_is_in_what_the_services_send(
    captured: Captured, where: str, index: str, field: str, values: list[str]
) -> None:
    assert field in captured.document_fields(index), f"{where}: nothing sent has {field} for {index}"
    seen = captured.values(field)
    for value in values:
        if field.endswith("ml.drift_detected"):
            # A healthy model never logs drift=true; the rule's value only needs the right type.
            assert value in ("true", "false"), f"{where}: {field} compared with {value!r}"
            continue
        if "*" in value or seen is None:
            continue
        assert value in seen, f"{where}: {field} never took {value!r} (seen: {sorted(seen)})"
