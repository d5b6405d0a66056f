"""The collector configurations of the deploy side, as the tests use them: the compose
config, the components only Elastic's distribution has, and the rewrites that let the
test bed's collector run it (those components stripped, endpoints on free loopback ports)."""

from __future__ import annotations

import copy

from harness.ports import free_port

from .conftest import DEPLOY_DIR

COMPOSE_CONFIG = DEPLOY_DIR / "collector" / "compose-config.yaml"

# Components of Elastic's distribution that the test collector cannot build (the
# module proxy refuses their zips): the only ones allowed outside the builder
# manifest, and exactly what is stripped before the test collector starts.
# deploy/README.md ("The elasticapm components") says what they do.
EDOT_ONLY = {("processors", "elasticapm"), ("connectors", "elasticapm")}


def component_type(component_id: str) -> str:
    """`elasticsearch/otel` -> `elasticsearch`."""
    return component_id.split("/", 1)[0]


def strip_edot_only(config: dict) -> tuple[dict, set[tuple[str, str]]]:
    """The config without the EDOT-only components; also what was removed."""
    stripped = copy.deepcopy(config)
    removed = set()
    for section, kind in EDOT_ONLY:
        for name in list(stripped.get(section) or {}):
            if component_type(name) == kind:
                del stripped[section][name]
                removed.add((section, kind))
    gone = {name for name in (config.get("connectors") or {}) if name not in (stripped.get("connectors") or {})}
    gone_processors = {
        name for name in (config.get("processors") or {}) if name not in (stripped.get("processors") or {})
    }
    pipelines = stripped["service"]["pipelines"]
    for pipeline_id in list(pipelines):
        pipeline = pipelines[pipeline_id]
        pipeline["receivers"] = [name for name in pipeline.get("receivers") or [] if name not in gone]
        pipeline["exporters"] = [name for name in pipeline.get("exporters") or [] if name not in gone]
        pipeline["processors"] = [name for name in pipeline.get("processors") or [] if name not in gone_processors]
        # A pipeline fed only by a removed connector has nothing left to carry.
        if not pipeline["receivers"]:
            del pipelines[pipeline_id]
    return stripped, removed


def with_local_endpoints(config: dict) -> tuple[dict, int, dict[str, str]]:
    """Swap every listening endpoint to a free loopback port and Elasticsearch to a
    closed local port; returns the config, the health port and the environment the
    config reads."""
    local = copy.deepcopy(config)
    health_port = free_port()
    local["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{health_port}"
    for protocol in local["receivers"]["otlp"]["protocols"].values():
        protocol["endpoint"] = f"127.0.0.1:{free_port()}"
    # The collector's own metrics would listen on the fixed port 8888.
    local["service"]["telemetry"] = {"metrics": {"level": "none"}}
    environment = {
        # Nothing listens there: the exporter connects lazily, so the collector starts.
        "ELASTICSEARCH_URL": f"http://127.0.0.1:{free_port()}",
        "ELASTICSEARCH_API_KEY": "dGVzdDp0ZXN0",
    }
    return local, health_port, environment
