"""The deploy side sets only settings the services read: every GATEWAY__* and
MODEL_SERVICE__* variable in the compose file and the Kubernetes manifests is one
the gateway's configuration loader or the model service's settings know."""

from __future__ import annotations

import re

import pytest

from .conftest import DEPLOY_DIR, REPO_ROOT, load_yaml_documents

GATEWAY_CONFIGURATION = REPO_ROOT / "gateway" / "src" / "configuration.rs"
MODEL_SERVICE_SETTINGS = REPO_ROOT / "model-service" / "model_service" / "core" / "config.py"


def gateway_variables() -> set[str]:
    """`GATEWAY__<SECTION>__<KEY>` for each field of the settings structs `Settings` declares
    (`pub server: ServerSettings` -> `GATEWAY__SERVER__*`; KEY is the field's serde rename or its
    name); a secret field also takes `..._FILE`."""
    text = GATEWAY_CONFIGURATION.read_text()
    names = set()
    for section, struct in re.findall(r"^    pub (\w+): (\w+Settings),", text, flags=re.MULTILINE):
        body = re.search(rf"^pub struct {struct} \{{(.*?)^\}}", text, flags=re.MULTILINE | re.DOTALL)
        fields = re.findall(
            r"((?:^    #\[(?:[^\]]|\n)*\]\n)*)^    pub (\w+): ([^\n]+),$", body.group(1), flags=re.MULTILINE
        )
        for attributes, field, kind in fields:
            # A typed field keeps its variable's name through `#[serde(rename = "TIMEOUT_MS")]`.
            renamed = re.search(r'rename = "(\w+)"', attributes)
            name = f"GATEWAY__{section.upper()}__{renamed.group(1) if renamed else field.upper()}"
            names.add(name)
            if "SecretString" in kind:
                names.add(f"{name}_FILE")
    return names


def model_service_variables() -> set[str]:
    """`MODEL_SERVICE__<FIELD>` for each field of the pydantic Settings class."""
    fields = re.findall(r"^    (\w+): [^=]+=", MODEL_SERVICE_SETTINGS.read_text(), flags=re.MULTILINE)
    return {f"MODEL_SERVICE__{field.upper()}" for field in fields if field != "model_config"}


def deploy_variables(compose_model: dict) -> set[tuple[str, str]]:
    """(where, variable) for every service variable the deploy side sets."""
    found = {
        (f"compose {name}", variable)
        for name, service in compose_model["services"].items()
        for variable in service.get("environment") or {}
    }
    for path in sorted((DEPLOY_DIR / "k8s").glob("*.yaml")):
        for doc in load_yaml_documents(path):
            if doc.get("kind") != "Deployment":
                continue
            spec = doc["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                found |= {(f"k8s {container['name']}", var["name"]) for var in container.get("env", [])}
    dockerfiles = {"gateway.Dockerfile": "GATEWAY__", "model-service.Dockerfile": "MODEL_SERVICE__"}
    for dockerfile, prefix in dockerfiles.items():
        text = (DEPLOY_DIR / dockerfile).read_text()
        found |= {(dockerfile, variable) for variable in re.findall(rf"\b({prefix}[A-Z_]+)=", text)}
    return found


@pytest.mark.skipif(
    not (GATEWAY_CONFIGURATION.exists() and MODEL_SERVICE_SETTINGS.exists()), reason="service sources missing"
)
def test_every_service_variable_set_by_the_deploy_side_is_read_by_the_service(compose_model: dict) -> None:
    known = gateway_variables() | model_service_variables()
    assert len(gateway_variables()) > 5, "the gateway's variable names could not be read"
    assert len(model_service_variables()) > 5, "the model service's settings could not be read"

    unknown = sorted(
        (where, variable)
        for where, variable in deploy_variables(compose_model)
        if variable.startswith(("GATEWAY__", "MODEL_SERVICE__")) and variable not in known
    )

    assert not unknown, f"set but never read: {unknown}"
