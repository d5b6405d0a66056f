"""docker-compose.yml: accepted by `docker compose config`, started in the right
order by health checks, pinned images, loopback-only ports, no committed secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import COMPOSE_FILE, ENV_EXAMPLE, ComposeCli

# Jobs that run to completion (restart "no") and are waited for with
# `service_completed_successfully`, so a health check would have nothing to say.
ONE_SHOT_JOBS = {
    "secrets": "writes the passwords and keys before anything else starts",
    "setup": "kibana_system password, roles and API keys, once Elasticsearch answers",
    "kibana-objects": "loads the index template, dashboard and rules, then exits",
    "model-trainer": "trains one model version before the model service starts",
}
ELASTIC_IMAGES = (
    "docker.elastic.co/elasticsearch/elasticsearch",
    "docker.elastic.co/kibana/kibana",
    "docker.elastic.co/elastic-agent/elastic-otel-collector",
)
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly", "current"}
SECRET_VARIABLE = re.compile(r"PASSWORD|API_KEY|SECRET|TOKEN|ENCRYPTIONKEY|_KEY$")


@pytest.mark.parametrize(
    ("description", "env_file", "profiles"),
    [
        ("the values of .env.example", ENV_EXAMPLE, ()),
        ("a fresh clone without .env", Path("/dev/null"), ()),
        ("the load generator profile on", ENV_EXAMPLE, ("loadgen",)),
    ],
)
def test_compose_config_accepts_the_file(compose_cli: ComposeCli, description: str, env_file: Path, profiles) -> None:
    result = compose_cli.config(env_file, profiles=profiles, output="quiet")

    assert result.returncode == 0, f"{compose_cli.name} config with {description}:\n{result.stderr}"


def test_every_long_running_service_has_a_health_check(compose_model: dict) -> None:
    services = compose_model["services"]

    missing = [
        name
        for name, service in services.items()
        if name not in ONE_SHOT_JOBS and not (service.get("healthcheck") or {}).get("test")
    ]
    disabled = [name for name, service in services.items() if (service.get("healthcheck") or {}).get("disable")]

    assert not missing, f"services without a health check: {missing}"
    assert not disabled, f"services with the health check disabled: {disabled}"


def test_one_shot_jobs_do_not_restart_and_are_waited_for(compose_model: dict) -> None:
    services = compose_model["services"]
    waited_for = {
        dependency
        for service in services.values()
        for dependency, spec in (service.get("depends_on") or {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }

    assert set(ONE_SHOT_JOBS) <= set(services), "a one-shot job listed here is gone from the compose file"
    for name in ONE_SHOT_JOBS:
        assert services[name].get("restart", "no") == "no", f"{name} must run once, not restart"
    # The loader is the last step; everything else is a prerequisite of something.
    assert set(ONE_SHOT_JOBS) - {"kibana-objects"} <= waited_for


def test_dependencies_wait_for_health_or_completion(compose_model: dict) -> None:
    services = compose_model["services"]

    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT_JOBS else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dependency}: {spec.get('condition')}"


def test_the_request_path_starts_in_order(compose_model: dict) -> None:
    # Each service waits for the ones it calls at start-up.
    expected_edges = {
        ("gateway", "elasticsearch"),
        ("gateway", "model-service"),
        ("gateway", "collector"),
        ("gateway", "setup"),
        ("model-service", "model-trainer"),
        ("model-trainer", "collector"),
        ("collector", "setup"),
        ("kibana", "setup"),
        ("setup", "elasticsearch"),
        ("elasticsearch", "secrets"),
        ("kibana-objects", "kibana"),
        ("loadgen", "gateway"),
    }
    edges = {
        (name, dependency)
        for name, service in compose_model["services"].items()
        for dependency in (service.get("depends_on") or {})
    }

    assert expected_edges <= edges, f"missing: {sorted(expected_edges - edges)}"


def test_every_image_tag_is_pinned(compose_model: dict) -> None:
    for name, service in compose_model["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")

        assert tag, f"{name}: image {image!r} has no tag"
        assert tag not in FLOATING_TAGS, f"{name}: tag {tag!r} moves"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} is not a version"
        if "build" in service:
            # Built here: pinned by the Dockerfile's base images (test_dockerfiles).
            continue
        assert "@" in image or re.fullmatch(r"\d+\.\d+(\.\d+)?([-.][\w.-]+)?", tag), f"{name}: {image}"


def test_elastic_images_share_one_pinned_9x_version(compose_model: dict) -> None:
    images = [service["image"] for service in compose_model["services"].values() if "image" in service]
    versions = {image.rpartition(":")[2] for image in images if image.startswith(ELASTIC_IMAGES)}
    present = {prefix for prefix in ELASTIC_IMAGES if any(image.startswith(prefix + ":") for image in images)}

    assert present == set(ELASTIC_IMAGES), f"missing: {set(ELASTIC_IMAGES) - present}"
    assert len(versions) == 1, f"one version for Elasticsearch, Kibana and the collector: {versions}"
    assert re.fullmatch(r"9\.\d+\.\d+", versions.pop())


def test_published_ports_bind_to_loopback_only(compose_model: dict) -> None:
    for name, service in compose_model["services"].items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_no_secret_value_is_written_in_the_compose_file(compose_model: dict) -> None:
    # With .env.example (empty secrets), every secret-looking variable resolves to
    # nothing, or is a *_FILE path into the secrets volume.
    for name, service in compose_model["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE") or not SECRET_VARIABLE.search(variable):
                continue
            assert not value, f"{name}: {variable} has a committed value"


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    compose_text = COMPOSE_FILE.read_text()
    # `$$` escapes a literal dollar (evaluated in the container), not interpolation.
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose_text))
    documented = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }

    assert referenced - documented == set(), f"not in .env.example: {sorted(referenced - documented)}"
    assert documented - referenced == set(), f"in .env.example but unused: {sorted(documented - referenced)}"


def test_env_example_commits_no_secret_value() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        variable, value = line.split("=", 1)
        if SECRET_VARIABLE.search(variable):
            assert value.strip() == "", f".env.example sets {variable}"
