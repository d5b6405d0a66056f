"""The collector configurations of the deploy side (compose and Kubernetes) use
only components the test bed's collector builds, apart from Elastic's two
elasticapm components, and the test collector starts with the compose config."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from harness.polling import poll_until
from harness.ports import free_port
from harness.process import ManagedProcess

from .conftest import DEPLOY_DIR, load_yaml_documents

COMPOSE_CONFIG = DEPLOY_DIR / "collector" / "compose-config.yaml"
K8S_COLLECTOR = DEPLOY_DIR / "k8s" / "collector.yaml"

# Components of Elastic's distribution that the test collector cannot build (the
# module proxy refuses their zips): the only ones allowed outside the builder
# manifest, and exactly what is stripped before the test collector starts.
# deploy/README.md ("The elasticapm components") says what they do.
EDOT_ONLY = {("processors", "elasticapm"), ("connectors", "elasticapm")}

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")


def k8s_collector_config() -> dict:
    config_map = next(doc for doc in load_yaml_documents(K8S_COLLECTOR) if doc["kind"] == "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])


CONFIGS = {
    "compose": lambda: yaml.safe_load(COMPOSE_CONFIG.read_text()),
    "kubernetes": k8s_collector_config,
}


def component_type(component_id: str) -> str:
    """`elasticsearch/otel` -> `elasticsearch`."""
    return component_id.split("/", 1)[0]


def referenced_components(config: dict) -> set[tuple[str, str]]:
    """(section, type) of every component the config defines or a pipeline uses."""
    found = {(section, component_type(name)) for section in SECTIONS for name in config.get(section) or {}}
    service = config.get("service") or {}
    found |= {("extensions", component_type(name)) for name in service.get("extensions") or []}
    for pipeline in (service.get("pipelines") or {}).values():
        for role, section in (("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")):
            for name in pipeline.get(role) or []:
                kind = "connectors" if name in (config.get("connectors") or {}) else section
                found.add((kind, component_type(name)))
    return found


def built_components(binary: Path) -> set[tuple[str, str]]:
    """What the test collector was built with (`components`, from its builder manifest)."""
    listing = yaml.safe_load(subprocess.run([binary, "components"], check=True, capture_output=True).stdout)
    return {(section, item["name"]) for section in SECTIONS for item in listing.get(section) or []}


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


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_collector_config_uses_only_components_the_test_collector_builds(which: str, collector_binary: Path) -> None:
    config = CONFIGS[which]()

    outside = referenced_components(config) - built_components(collector_binary)

    assert outside == EDOT_ONLY, (
        f"{which}: components outside the builder manifest must be exactly the documented "
        f"EDOT-only ones {sorted(EDOT_ONLY)}; found {sorted(outside)}"
    )


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_collector_config_has_the_pipelines_kibana_apm_needs(which: str) -> None:
    config = CONFIGS[which]()
    pipelines = config["service"]["pipelines"]

    for signal in ("traces", "logs"):
        assert "elasticapm" in pipelines[signal]["processors"], f"{signal}: spans/logs are not enriched"
        assert "elasticapm" in pipelines[signal]["exporters"], f"{signal}: no APM aggregated metrics"
    aggregated = [p for p in pipelines.values() if p.get("receivers") == ["elasticapm"]]
    assert aggregated, "no pipeline carries the connector's aggregated metrics"
    assert all(any(e.startswith("elasticsearch") for e in p["exporters"]) for p in aggregated)
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers"), name
        if name.split("/")[0] in ("traces", "logs", "metrics") and "otlp" in pipeline["receivers"]:
            assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
    exporter = config["exporters"]["elasticsearch/otel"]
    assert exporter["sending_queue"]["batch"]["flush_timeout"] == "1s"


def test_strip_removes_exactly_the_edot_only_components() -> None:
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())

    stripped, removed = strip_edot_only(config)

    assert removed == EDOT_ONLY
    assert "metrics/aggregated-otel-metrics" not in stripped["service"]["pipelines"]
    assert {"traces", "logs", "metrics"} <= set(stripped["service"]["pipelines"])
    assert stripped["exporters"] == config["exporters"]
    assert stripped["receivers"] == config["receivers"]


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_test_collector_starts_with_the_deploy_config(which: str, collector_binary: Path, tmp_path: Path) -> None:
    stripped, _ = strip_edot_only(CONFIGS[which]())
    config, health_port, environment = with_local_endpoints(stripped)
    config_path = tmp_path / "collector.yaml"
    # JSON is YAML: the collector's file provider reads it as is.
    config_path.write_text(json.dumps(config, indent=2))

    validation = subprocess.run(
        [collector_binary, "validate", "--config", config_path],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
    )
    assert validation.returncode == 0, f"validate:\n{validation.stderr}"

    process = ManagedProcess(
        f"collector-{which}-config", [collector_binary, "--config", config_path], env=environment, log_dir=tmp_path
    ).start()
    try:

        def healthy() -> bool:
            if not process.is_running():
                raise AssertionError(f"collector exited:\n{process.log_text()[-4000:]}")
            return requests.get(f"http://127.0.0.1:{health_port}/", timeout=2).status_code == 200

        poll_until(healthy, f"test collector with the {which} config to report healthy", timeout=30)
        # Deprecated or ignored settings show up as warnings at start-up.
        complaints = re.findall(r"^\S+\t(?:warn|error)\t.*$", process.log_text(), flags=re.MULTILINE)
        assert not complaints, "\n".join(complaints)
    finally:
        process.stop()
