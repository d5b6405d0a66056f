"""Every way the model service is run sets what its telemetry and its /admin routes need:
a sampler that keeps the caller's `tracestate`, a deployment environment and a service
version on the resource, and an admin token from a secret (or, for `make run`, a fresh file).
Run paths: the compose stack, the Kubernetes manifests, `make run` (scripts/run.sh) and the
test bed's harness (tests/harness/model_service.py)."""

from __future__ import annotations

import re

import pytest

from harness.model_service import SERVICE_OTEL_ENV

from .conftest import DEPLOY_DIR, REPO_ROOT, load_yaml_documents

RUN_SCRIPT = REPO_ROOT / "scripts" / "run.sh"
SAMPLER = "parentbased_always_on"
RESOURCE_KEYS = ("deployment.environment.name", "service.version")


def resource_keys(value: str) -> set[str]:
    return {pair.split("=", 1)[0].strip() for pair in value.split(",") if "=" in pair}


def model_service_deployment() -> dict:
    [deployment] = [
        doc
        for doc in load_yaml_documents(DEPLOY_DIR / "k8s" / "model-service.yaml")
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "model-service"
    ]
    return deployment


def serving_container() -> dict:
    [container] = model_service_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def run_script_assignments() -> dict[str, str]:
    """`NAME="value" \\` lines of the model service's command in scripts/run.sh."""
    text = RUN_SCRIPT.read_text()
    command = text[: text.index("-m model_service &")]
    return dict(re.findall(r'^([A-Z_]+)="([^"]*)" \\$', command, flags=re.MULTILINE))


def run_path_environments(compose_model: dict) -> dict[str, dict[str, str]]:
    compose = compose_model["services"]["model-service"]["environment"]
    k8s = {var["name"]: var.get("value", "") for var in serving_container()["env"]}
    return {"compose": compose, "k8s": k8s, "make run": run_script_assignments(), "harness": SERVICE_OTEL_ENV}


@pytest.mark.parametrize("path", ["compose", "k8s", "make run", "harness"])
def test_every_run_path_keeps_the_callers_tracestate(compose_model: dict, path: str) -> None:
    env = run_path_environments(compose_model)[path]

    assert SAMPLER in env.get("OTEL_TRACES_SAMPLER", ""), f"{path}: OTEL_TRACES_SAMPLER"


@pytest.mark.parametrize("path", ["compose", "k8s", "make run", "harness"])
def test_every_run_path_names_the_deployment_environment_and_the_service_version(
    compose_model: dict, path: str
) -> None:
    env = run_path_environments(compose_model)[path]

    assert set(RESOURCE_KEYS) <= resource_keys(env.get("OTEL_RESOURCE_ATTRIBUTES", "")), path


def test_the_k8s_service_version_is_the_image_tag() -> None:
    container = serving_container()
    attributes = next(var["value"] for var in container["env"] if var["name"] == "OTEL_RESOURCE_ATTRIBUTES")

    assert f"service.version={container['image'].rsplit(':', 1)[1]}" in attributes.split(",")


def test_compose_reads_the_admin_token_from_its_own_read_only_folder_of_the_secrets_volume(compose_model: dict) -> None:
    service = compose_model["services"]["model-service"]
    token_file = service["environment"]["MODEL_SERVICE__ADMIN_TOKEN_FILE"]
    [mount] = [volume for volume in service["volumes"] if volume.get("source") == "stack-secrets"]

    assert token_file == f"{mount['target']}/admin.token"
    assert mount["read_only"] is True
    assert mount["volume"]["subpath"] == "model-service"
    assert "MODEL_SERVICE__ADMIN_TOKEN" not in service["environment"], "the value itself stays out of the environment"
    assert service["depends_on"]["secrets"]["condition"] == "service_completed_successfully"


def test_the_secrets_step_writes_the_admin_token_for_the_model_services_user() -> None:
    setup = (DEPLOY_DIR / "elasticsearch" / "setup.py").read_text()
    dockerfile = (DEPLOY_DIR / "model-service.Dockerfile").read_text()
    uid = re.search(r"^USER (\d+):", dockerfile, flags=re.MULTILINE).group(1)

    assert '"model-service/admin.token": ("MODEL_SERVICE_ADMIN_TOKEN", 32)' in setup
    assert f'"model-service": {uid}' in setup


def test_k8s_mounts_the_admin_token_secret_where_the_service_reads_it() -> None:
    pod = model_service_deployment()["spec"]["template"]["spec"]
    container = serving_container()
    token_file = next(var["value"] for var in container["env"] if var["name"] == "MODEL_SERVICE__ADMIN_TOKEN_FILE")
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    [(name, volume)] = [(name, volume) for name, volume in volumes.items() if "secret" in volume]

    assert mounts[name]["readOnly"] is True
    directory, file_name = token_file.rsplit("/", 1)
    assert mounts[name]["mountPath"] == directory
    assert volume["secret"]["secretName"] == "model-service-admin"
    assert [item["path"] for item in volume["secret"]["items"]] == [file_name]
    # Readable by the pod's group (fsGroup), by nobody else.
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    assert volume["secret"]["defaultMode"] & 0o040
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    readme = (DEPLOY_DIR / "k8s" / "README.md").read_text()
    assert "create secret generic model-service-admin --from-literal=token=" in readme


def test_make_run_gives_the_service_a_token_file_only_its_user_can_read() -> None:
    text = RUN_SCRIPT.read_text()

    assert 'export MODEL_SERVICE__ADMIN_TOKEN_FILE="$run_dir/admin.token"' in text
    assert "umask 077" in text


def test_only_gateway_pods_reach_the_model_service() -> None:
    [policy] = load_yaml_documents(DEPLOY_DIR / "k8s" / "model-service-network-policy.yaml")
    model_labels = model_service_deployment()["metadata"]["labels"]
    [gateway] = [doc for doc in load_yaml_documents(DEPLOY_DIR / "k8s" / "gateway.yaml") if doc["kind"] == "Deployment"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    other_labels = {
        "app.kubernetes.io/name": "otel-collector",
        "app.kubernetes.io/part-of": "inference-gateway",
    }

    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= model_labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "no namespace or IP block widens the source"
    selector = source["podSelector"]["matchLabels"]
    assert selector.items() <= gateway_labels.items()
    assert not selector.items() <= other_labels.items(), "the selector must not match the collector's pods"
    ports = {port["name"] for port in serving_container()["ports"]}
    assert [port["port"] for port in rule["ports"]] == ["http"]
    assert "http" in ports
