"""The collector configurations of the deploy side (compose and Kubernetes) use
only components the test bed's collector builds, apart from Elastic's two
elasticapm components, and the test collector starts with the compose config."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from harness.process import ManagedProcess

from .collector_configs import COMPOSE_CONFIG, EDOT_ONLY, component_type, strip_edot_only, with_local_endpoints
from .conftest import DEPLOY_DIR, load_yaml_documents

K8S_COLLECTOR = DEPLOY_DIR / "k8s" / "collector.yaml"

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")


def k8s_collector_config() -> dict:
    config_map = next(doc for doc in load_yaml_documents(K8S_COLLECTOR) if doc["kind"] == "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])


CONFIGS = {
    "compose": lambda: yaml.safe_load(COMPOSE_CONFIG.read_text()),
    "kubernetes": k8s_collector_config,
}


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
        process.wait_until_ready(
            lambda: requests.get(f"http://127.0.0.1:{health_port}/", timeout=2).status_code == 200,
            f"test collector with the {which} config to report healthy",
            timeout=30,
        )
        # Deprecated or ignored settings show up as warnings at start-up.
        complaints = re.findall(r"^\S+\t(?:warn|error)\t.*$", process.log_text(), flags=re.MULTILINE)
        assert not complaints, "\n".join(complaints)
    finally:
        process.stop()
