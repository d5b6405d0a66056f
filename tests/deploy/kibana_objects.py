"""What the Kibana objects of deploy/kibana name: the saved objects and alert
rules as data, and every (object, index, field, values) they query. Read by the
static deploy tests and by the end-to-end test that checks those fields against
what the services really send."""

from __future__ import annotations

import json
import re

from .conftest import DEPLOY_DIR

KIBANA_DIR = DEPLOY_DIR / "kibana"
SAVED_OBJECTS = KIBANA_DIR / "saved-objects.ndjson"
RULE_FILES = sorted((KIBANA_DIR / "rules").glob("*.json"))
INDEX_TEMPLATE = DEPLOY_DIR / "elasticsearch" / "ml-predictions.index-template.json"

# KQL `field : value`, `field : (a or b)`, `field : *`.
KQL_CLAUSE = re.compile(r'([@\w][\w.@]*)\s*:\s*(\*|"[^"]*"|\([^)]*\)|[\w.]+)')
# ES|QL identifiers that name document fields (dotted paths of the otel mapping).
ESQL_FIELD = re.compile(r"\b((?:resource\.)?attributes\.[\w.]+|status\.code|duration|name|kind|@timestamp)\b")
ESQL_STRING_COMPARISON = re.compile(r'([\w.@]+)\s*(==|LIKE)\s*"([^"]*)"')


def saved_objects() -> list[dict]:
    return [json.loads(line) for line in SAVED_OBJECTS.read_text().splitlines() if line.strip()]


def objects_by_id() -> dict[str, dict]:
    return {obj["id"]: obj for obj in saved_objects()}


def rules() -> list[dict]:
    return [json.loads(path.read_text()) for path in RULE_FILES]


def data_view_title(view_id: str) -> str:
    return objects_by_id()[view_id]["attributes"]["title"]


def kql_terms(query: str) -> list[tuple[str, list[str]]]:
    """(field, values) of each clause; values are [] for `field : *`."""
    found = []
    for field, raw in KQL_CLAUSE.findall(query):
        if raw == "*":
            found.append((field, []))
        elif raw.startswith("("):
            found.append((field, re.findall(r'"([^"]*)"', raw)))
        else:
            found.append((field, [raw.strip('"')]))
    return found


def lens_uses() -> list[tuple[str, str, str, list[str]]]:
    """(lens id, index title, field, values) for every field a Lens panel names."""
    uses = []
    for obj in saved_objects():
        if obj["type"] != "lens":
            continue
        state = obj["attributes"]["state"]
        refs = {ref["name"]: ref["id"] for ref in obj["references"]}
        for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
            index = data_view_title(refs[f"indexpattern-datasource-layer-{layer_id}"])
            for column in layer["columns"].values():
                if column.get("sourceField") not in (None, "___records___"):
                    uses.append((obj["id"], index, column["sourceField"], []))
            for field, values in kql_terms(state["query"]["query"]):
                uses.append((obj["id"], index, field, values))
    return uses


def rule_uses() -> list[tuple[str, str, str, list[str]]]:
    """(rule id, index, field, values) for every field a rule's query names."""
    uses = []
    for rule in rules():
        params = rule["params"]
        if params["searchType"] == "esqlQuery":
            esql = params["esqlQuery"]["esql"]
            index = re.match(r"\s*FROM\s+([\w.*,-]+)", esql, flags=re.IGNORECASE).group(1)
            # Names the query assigns itself (STATS x = ..., EVAL y = ...) are not fields.
            own = set(re.findall(r"\b(\w+)\s*=(?!=)", esql))
            for field in set(ESQL_FIELD.findall(esql)) - own:
                uses.append((rule["id"], index, field, []))
            for field, _, value in ESQL_STRING_COMPARISON.findall(esql):
                uses.append((rule["id"], index, field, [value]))
        else:
            query = json.loads(params["esQuery"])
            for index in params["index"]:
                for clause in query["query"]["bool"]["filter"]:
                    ((kind, body),) = clause.items()
                    ((field, value),) = body.items()
                    values = [str(value).lower() if isinstance(value, bool) else str(value)] if kind == "term" else []
                    uses.append((rule["id"], index, field, values))
        uses.append((rule["id"], index, params["timeField"], []))
    return uses
