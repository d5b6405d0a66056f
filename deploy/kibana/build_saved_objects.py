"""Writes saved-objects.ndjson: the data views, Lens panels and dashboard that show
the inference path in Kibana. The NDJSON is committed (it is what the loader
imports); edit this file and run it again, a test checks that the two agree.

    python deploy/kibana/build_saved_objects.py

Field names are those of the elasticsearch exporter's `otel` mapping mode: span
and log attributes under `attributes.*`, resource attributes under
`resource.attributes.*`, span duration in nanoseconds in `duration`.
"""

from __future__ import annotations

import json
from pathlib import Path

OUTPUT = Path(__file__).with_name("saved-objects.ndjson")

TRACES_VIEW = "inference-gateway-traces"
LOGS_VIEW = "inference-gateway-logs"
PREDICTIONS_VIEW = "inference-gateway-predictions"

# The object versions these objects are written against: Kibana migrates them
# forward on import, so one file serves every 9.x.
LENS_VERSION = {"coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.9.0"}

GATEWAY_PREDICT = 'resource.attributes.service.name : "inference-gateway" and name : "POST /v1/predict"'
STAGES = ("load_data", "train_model", "predict")

# Durations are nanoseconds in the otel mapping; shown as milliseconds.
NANOS_AS_MS = {"id": "duration", "params": {"decimals": 1, "fromUnit": "nanoseconds", "toUnit": "asMilliseconds"}}


def data_view(view_id: str, title: str, name: str, time_field: str) -> dict:
    return {
        "id": view_id,
        "type": "index-pattern",
        "attributes": {"title": title, "name": name, "timeFieldName": time_field, "allowNoIndex": True},
        "references": [],
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
    }


def date_histogram(field: str = "@timestamp") -> dict:
    return {
        "label": "Time",
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": field,
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


def terms(field: str, label: str, order_by: str, size: int = 5) -> dict:
    return {
        "label": label,
        "dataType": "string",
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": False,
            "missingBucket": False,
        },
    }


def p95(field: str, label: str) -> dict:
    return {
        "label": label,
        "dataType": "number",
        "operationType": "percentile",
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio",
        "params": {"percentile": 95, "format": NANOS_AS_MS},
    }


def metric(operation: str, field: str, label: str) -> dict:
    column = {
        "label": label,
        "dataType": "number",
        "operationType": operation,
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio",
    }
    if operation == "count":
        column["params"] = {"emptyAsNull": False}
    return column


def lens(
    lens_id: str,
    title: str,
    description: str,
    view_id: str,
    query: str,
    columns: dict[str, dict],
    series_type: str,
    x: str,
    ys: list[str],
    split: str | None = None,
) -> dict:
    for column in columns.values():
        # Keep our labels instead of Lens' generated ones ("95th percentile of duration").
        column["customLabel"] = True
    layer = {"layerId": "layer1", "layerType": "data", "seriesType": series_type, "xAccessor": x, "accessors": ys}
    if split:
        layer["splitAccessor"] = split
    return {
        "id": lens_id,
        "type": "lens",
        "attributes": {
            "title": title,
            "description": description,
            "visualizationType": "lnsXY",
            "state": {
                "datasourceStates": {
                    "formBased": {
                        "layers": {
                            "layer1": {
                                "columns": columns,
                                "columnOrder": list(columns),
                                "incompleteColumns": {},
                            }
                        }
                    }
                },
                "visualization": {
                    "legend": {"isVisible": True, "position": "right"},
                    "valueLabels": "hide",
                    "preferredSeriesType": series_type,
                    "layers": [layer],
                },
                "query": {"query": query, "language": "kuery"},
                "filters": [],
                "adHocDataViews": {},
                "internalReferences": [],
            },
        },
        "references": [{"type": "index-pattern", "id": view_id, "name": "indexpattern-datasource-layer-layer1"}],
        **LENS_VERSION,
    }


def panels() -> list[dict]:
    stages_query = "name : (" + " or ".join(f'"{stage}"' for stage in STAGES) + ")"
    return [
        lens(
            "inference-gateway-stage-p95",
            "p95 latency per stage: load_data, train_model, predict",
            "95th percentile span duration of the training stages and of model inference.",
            TRACES_VIEW,
            stages_query,
            {"stage": terms("name", "Stage", "p95"), "p95": p95("duration", "p95 duration")},
            "bar_horizontal",
            "stage",
            ["p95"],
        ),
        lens(
            "inference-gateway-latency-by-cache",
            "Gateway latency (p95): cache hit vs miss",
            "POST /v1/predict server spans of the gateway, split by ml.cache.result.",
            TRACES_VIEW,
            GATEWAY_PREDICT,
            {
                "time": date_histogram(),
                "p95": p95("duration", "p95 duration"),
                "cache": terms("attributes.ml.cache.result", "Cache result", "p95", size=3),
            },
            "line",
            "time",
            ["p95"],
            "cache",
        ),
        lens(
            "inference-gateway-cache-ratio",
            "Cache hit ratio",
            "Share of predict requests answered from the store (hit), computed (miss) or without the store (bypass).",
            TRACES_VIEW,
            GATEWAY_PREDICT + " and attributes.ml.cache.result : *",
            {
                "time": date_histogram(),
                "requests": metric("count", "___records___", "Requests"),
                "cache": terms("attributes.ml.cache.result", "Cache result", "requests", size=3),
            },
            "bar_percentage_stacked",
            "time",
            ["requests"],
            "cache",
        ),
        lens(
            "inference-gateway-model-accuracy",
            "Model accuracy per training run",
            "ml.validation_accuracy (alert below 0.8) and ml.training_accuracy from the training logs.",
            LOGS_VIEW,
            "attributes.ml.validation_accuracy : *",
            {
                "time": date_histogram(),
                "validation": metric("max", "attributes.ml.validation_accuracy", "Validation accuracy"),
                "training": metric("max", "attributes.ml.training_accuracy", "Training accuracy"),
            },
            "line",
            "time",
            ["validation", "training"],
        ),
        lens(
            "inference-gateway-drift",
            "Training runs with drift detected",
            "Training logs whose ml.drift_detected is true.",
            LOGS_VIEW,
            "attributes.ml.drift_detected : true",
            {"time": date_histogram(), "runs": metric("count", "___records___", "Runs with drift")},
            "bar",
            "time",
            ["runs"],
        ),
    ]


def dashboard(lenses: list[dict]) -> dict:
    layout = [(0, 0, 24, 15), (24, 0, 24, 15), (0, 15, 24, 15), (24, 15, 12, 15), (36, 15, 12, 15)]
    panel_list, references = [], []
    for number, (item, (x, y, w, h)) in enumerate(zip(lenses, layout, strict=True), start=1):
        index = f"p{number}"
        panel_list.append(
            {
                "type": "lens",
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": index},
                "panelIndex": index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{index}",
            }
        )
        references.append({"type": "lens", "id": item["id"], "name": f"{index}:panel_{index}"})
    return {
        "id": "inference-gateway-overview",
        "type": "dashboard",
        "attributes": {
            "title": "Inference gateway: latency, cache and model quality",
            "description": "Stage latency, gateway hit/miss latency, cache hit ratio and model quality over time.",
            "panelsJSON": json.dumps(panel_list, separators=(",", ":")),
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-1h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 30000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
            },
        },
        "references": references,
        **LENS_VERSION,
    }


def saved_objects() -> list[dict]:
    lenses = panels()
    return [
        data_view(TRACES_VIEW, "traces-*.otel-*", "Traces (OTel-native)", "@timestamp"),
        data_view(LOGS_VIEW, "logs-*.otel-*", "Logs (OTel-native)", "@timestamp"),
        data_view(PREDICTIONS_VIEW, "ml-predictions", "Stored predictions", "created_at"),
        *lenses,
        dashboard(lenses),
    ]


def render() -> str:
    return "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in saved_objects())


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
