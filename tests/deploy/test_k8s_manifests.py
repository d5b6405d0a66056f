"""deploy/k8s: every manifest parses and passes the Kubernetes schema (offline,
kubernetes-validate's bundled schemas), and the gateway is set up to run as
several replicas: autoscaler, disruption budget, probes, requests and limits."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from .conftest import DEPLOY_DIR, load_yaml_documents

K8S_DIR = DEPLOY_DIR / "k8s"
# The Kubernetes release the manifests are checked against; they need 1.30+ (the
# preStop `sleep` action).
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in load_yaml_documents(path)]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in resources() if doc["kind"] == kind}


def pod_containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize(
    "resource",
    [pytest.param(doc, id=f"{doc['kind']}/{doc['metadata']['name']}") for doc in resources()],
)
def test_manifest_passes_the_kubernetes_schema(resource: dict) -> None:
    # strict: unknown fields are errors, as `kubectl apply --validate=strict` makes them.
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml_documents(K8S_DIR / "kustomization.yaml")[0]

    assert sorted(kustomization["resources"]) == sorted(path.name for path in MANIFESTS)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomization_builds_offline() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert "kind: HorizontalPodAutoscaler" in result.stdout


def test_gateway_runs_several_replicas_with_autoscaling_and_a_disruption_budget() -> None:
    gateway = by_kind("Deployment")["gateway"]
    hpa = by_kind("HorizontalPodAutoscaler")["gateway"]
    pdb = by_kind("PodDisruptionBudget")["gateway"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]

    assert gateway["spec"]["replicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) >= 1
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"] == ["cpu"]


def generated_config_maps() -> dict[str, dict[str, str]]:
    """The ConfigMaps kustomization.yaml generates from literals: name -> {key: value}."""
    kustomization = load_yaml_documents(K8S_DIR / "kustomization.yaml")[0]
    return {
        generator["name"]: dict(literal.split("=", 1) for literal in generator.get("literals", []))
        for generator in kustomization.get("configMapGenerator", [])
    }


def test_the_gateway_is_given_every_node_of_the_elasticsearch_cluster() -> None:
    [container] = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    [store_url] = [var for var in container["env"] if var["name"] == "GATEWAY__STORE__URL"]
    reference = store_url["valueFrom"]["configMapKeyRef"]

    urls = [url.strip() for url in generated_config_maps()[reference["name"]][reference["key"]].split(",")]

    assert len(urls) >= 2, f"one node only: {urls}"
    assert len(set(urls)) == len(urls), f"a node listed twice: {urls}"
    for url in urls:
        parts = urlsplit(url)
        # TLS to every node: the API key travels with each request.
        assert parts.scheme == "https", url
        assert parts.hostname, url
        assert parts.port, url


def test_gateway_probes_use_its_health_routes() -> None:
    (container,) = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", sorted(by_kind("Deployment")))
def test_every_container_has_requests_limits_and_runs_non_root(name: str) -> None:
    workload = by_kind("Deployment")[name]
    pod = workload["spec"]["template"]["spec"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod_containers(workload):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}/{container['name']}: {kind}"
        # What the namespace's Pod Security level `restricted` admits.
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image} moves"
    for container in pod["containers"]:
        assert "readinessProbe" in container, f"{name}/{container['name']}: no readiness probe"
        assert "livenessProbe" in container, f"{name}/{container['name']}: no liveness probe"


def test_services_select_their_pods() -> None:
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        matches = [
            d for d in deployments.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matches, f"Service {name} selects no pods"
        ports = {p["name"] for d in matches for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port {port['targetPort']}"


def test_workloads_reach_each_other_by_service_name() -> None:
    services = set(by_kind("Service"))
    env = {
        (deployment, var["name"]): var.get("value", "")
        for deployment, workload in by_kind("Deployment").items()
        for container in pod_containers(workload)
        for var in container.get("env", [])
    }

    assert env[("gateway", "GATEWAY__MODEL__URL")] == "http://model-service:8001"
    for (deployment, variable), value in env.items():
        if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
            assert value == "http://otel-collector:4317", deployment
    assert {"gateway", "model-service", "otel-collector"} <= services


def test_elastic_collector_version_matches_the_compose_stack(compose_model: dict) -> None:
    (container,) = by_kind("Deployment")["otel-collector"]["spec"]["template"]["spec"]["containers"]

    assert container["image"] == compose_model["services"]["collector"]["image"]


def test_the_gateway_drains_itself_inside_the_termination_grace_period() -> None:
    gateway = by_kind("Deployment")["gateway"]
    spec = gateway["spec"]["template"]["spec"]
    [container] = [c for c in spec["containers"] if c["name"] == "gateway"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    drain_ms = int(env["GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS"])
    grace_ms = int(env["GATEWAY__SERVER__SHUTDOWN_GRACE_MS"])
    # Drain delay + grace + the write-behind drain (5 s) + the telemetry flush (5 s).
    needed_seconds = (drain_ms + grace_ms) / 1000 + 10
    assert spec["terminationGracePeriodSeconds"] >= needed_seconds
    assert "preStop" not in container.get("lifecycle", {}), "the gateway's drain delay replaces it"


def test_the_purge_runs_as_a_scheduled_job_of_the_gateway_image_against_the_gateways_store_and_model() -> None:
    cronjob = by_kind("CronJob")["gateway-purge"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    [gateway] = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    gateway_env = {item["name"]: item for item in gateway["env"]}

    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["image"] == gateway["image"]
    assert container["args"][:2] == ["purge", "--keep"]
    assert int(container["args"][2]) >= 0
    for name in ("GATEWAY__STORE__URL", "GATEWAY__STORE__API_KEY_FILE", "GATEWAY__MODEL__URL"):
        assert env[name] == gateway_env[name], name
    assert container["volumeMounts"] == gateway["volumeMounts"]
    assert pod["volumes"] == by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["volumes"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
