"""The Kibana and Elasticsearch objects of deploy/: every file parses, the saved
objects reference each other correctly, and every field and value the dashboard
and the rules name is one the services emit (emitted_fields)."""

from __future__ import annotations

import importlib.util
import json
import re
from types import SimpleNamespace

import pytest

from . import emitted_fields
from .kibana_objects import (
    INDEX_TEMPLATE,
    KIBANA_DIR,
    SAVED_OBJECTS,
    lens_uses,
    objects_by_id,
    rule_uses,
    rules,
    saved_objects,
)

# Data view title -> the fields its documents have.
FIELDS_BY_INDEX = {
    "traces-*.otel-*": emitted_fields.span_document_fields,
    "traces-generic.otel-default": emitted_fields.span_document_fields,
    "logs-*.otel-*": emitted_fields.log_document_fields,
    "logs-generic.otel-default": emitted_fields.log_document_fields,
}
PREDICTION_FIELDS = {"data_id", "model.name", "model.version", "model.run_id", "created_at", "trace.id", "span.id"}


def assert_values_known(field: str, values: list[str], where: str) -> None:
    known = emitted_fields.known_values(field)
    if known is None:
        return
    for value in values:
        if value in ("true", "false"):
            continue
        pattern = re.compile(re.escape(value).replace(r"\*", ".*") + r"\Z")
        assert any(pattern.match(item) for item in known), f"{where}: {field} never takes the value {value!r}"


def test_every_saved_object_line_parses_with_a_unique_id() -> None:
    objects = saved_objects()
    ids = [obj["id"] for obj in objects]

    assert len(ids) == len(set(ids))
    assert {obj["type"] for obj in objects} == {"index-pattern", "lens", "dashboard"}


def test_saved_object_references_resolve() -> None:
    by_id = objects_by_id()

    for obj in by_id.values():
        for ref in obj["references"]:
            assert ref["id"] in by_id, f"{obj['id']} references missing {ref['type']} {ref['id']}"
            assert by_id[ref["id"]]["type"] == ref["type"]


def test_dashboard_panels_match_its_references() -> None:
    dashboard = next(obj for obj in saved_objects() if obj["type"] == "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    references = {ref["name"] for ref in dashboard["references"]}

    assert len(panels) == len(references) == 5
    for panel in panels:
        assert f"{panel['panelIndex']}:{panel['panelRefName']}" in references


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    lenses = [obj for obj in saved_objects() if obj["type"] == "lens"]
    queries = " | ".join(obj["attributes"]["state"]["query"]["query"] for obj in lenses)
    fields = {field for _, _, field, _ in lens_uses()}

    for stage in ("load_data", "train_model", "predict"):
        assert f'"{stage}"' in queries, f"no p95 for stage {stage}"
    assert "attributes.ml.cache.result" in fields
    assert {"attributes.ml.validation_accuracy", "attributes.ml.drift_detected"} <= fields
    percentiles = [
        column
        for obj in lenses
        for layer in obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
        for column in layer["columns"].values()
        if column["operationType"] == "percentile"
    ]
    assert percentiles, "no percentile panel"
    assert all(column["params"]["percentile"] == 95 for column in percentiles)


def test_saved_objects_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("build_saved_objects", KIBANA_DIR / "build_saved_objects.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)

    assert SAVED_OBJECTS.read_text() == generator.render(), "run deploy/kibana/build_saved_objects.py"


@pytest.mark.parametrize(
    ("where", "index", "field", "values"),
    [
        pytest.param(*use, id=f"{use[0]}:{use[2]}{'=' + '|'.join(use[3]) if use[3] else ''}")
        for use in lens_uses() + rule_uses()
    ],
)
def test_every_field_named_is_one_the_services_emit(where: str, index: str, field: str, values: list[str]) -> None:
    assert index in FIELDS_BY_INDEX, f"{where}: unknown index {index}"
    emitted = FIELDS_BY_INDEX[index]()

    assert field in emitted, f"{where}: {field} is not emitted into {index}"
    assert_values_known(field, values, where)


def test_predictions_data_view_names_fields_of_the_index_template() -> None:
    view = objects_by_id()["inference-gateway-predictions"]["attributes"]
    template = json.loads(INDEX_TEMPLATE.read_text())
    properties = template["template"]["mappings"]["properties"]

    def paths(props: dict, prefix: str = "") -> set[str]:
        found = set()
        for name, spec in props.items():
            found.add(prefix + name)
            found |= paths(spec.get("properties", {}), f"{prefix}{name}.")
        return found

    assert view["title"] == "ml-predictions"
    assert view["timeFieldName"] in paths(properties)
    assert paths(properties) >= PREDICTION_FIELDS


def test_index_template_covers_the_gateways_index_and_alias() -> None:
    template = json.loads(INDEX_TEMPLATE.read_text())

    assert template["index_patterns"] == ["ml-predictions-v*"]
    mappings = template["template"]["mappings"]
    assert mappings["dynamic"] is True
    assert mappings["properties"]["created_at"]["type"] == "date"
    for keyword in ("data_id",):
        assert mappings["properties"][keyword]["type"] == "keyword"
    for keyword in ("name", "version", "run_id"):
        assert mappings["properties"]["model"]["properties"][keyword]["type"] == "keyword"


def test_there_are_the_four_alert_rules() -> None:
    loaded = rules()
    by_id = {rule["id"]: rule for rule in loaded}

    assert len(by_id) == len(loaded) == 4
    assert set(by_id) == {
        "inference-gateway-error-rate",
        "inference-gateway-latency-spike",
        "inference-gateway-validation-accuracy",
        "inference-gateway-drift-detected",
    }
    for rule in loaded:
        assert rule["rule_type_id"] == ".es-query"
        assert rule["consumer"], rule["id"]
        assert rule["schedule"]["interval"], rule["id"]
        params = rule["params"]
        for key in ("timeField", "timeWindowSize", "timeWindowUnit", "threshold", "thresholdComparator", "size"):
            assert key in params, f"{rule['id']}: params.{key}"
    accuracy = json.loads(by_id["inference-gateway-validation-accuracy"]["params"]["esQuery"])
    ranges = [c["range"] for c in accuracy["query"]["bool"]["filter"] if "range" in c]
    assert ranges == [{"attributes.ml.validation_accuracy": {"lt": 0.8}}]
    drift = json.loads(by_id["inference-gateway-drift-detected"]["params"]["esQuery"])
    assert {"term": {"attributes.ml.drift_detected": True}} in drift["query"]["bool"]["filter"]


def test_captured_records_map_to_otel_document_fields() -> None:
    span = SimpleNamespace(attributes={"ml.cache.result": "hit"}, resource={"service.name": "inference-gateway"})
    log = SimpleNamespace(attributes={"ml.drift_detected": False}, resource={"service.name": "model-service"})

    span_fields = emitted_fields.document_fields_of([span], "traces")
    log_fields = emitted_fields.document_fields_of([log], "logs")

    assert {"attributes.ml.cache.result", "resource.attributes.service.name", "duration", "name"} <= span_fields
    assert {"attributes.ml.drift_detected", "resource.attributes.service.name", "@timestamp"} <= log_fields
    assert "duration" not in log_fields
