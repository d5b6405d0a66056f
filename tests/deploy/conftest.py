"""Fixtures of the deploy checks: the repository's deploy files, the Compose model
as `docker compose config` resolves it, and the test bed's collector binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DEPLOY_DIR = REPO_ROOT / "deploy"


def last_line_of(command: list[str]) -> Path:
    """Run a provisioning script (idempotent, cached) and return the path it prints last."""
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return Path(output.strip().splitlines()[-1])


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


class ComposeCli:
    """`docker compose config` where the Compose plugin exists; elsewhere the same
    loader (compose-go, the version Docker Compose v5.6.0 uses) built from
    deploy/tools/compose-config."""

    def __init__(self) -> None:
        if _docker_compose_available():
            self.name = "docker compose"
            self._prefix = ["docker", "compose"]
            self._plugin = True
        else:
            self.name = "compose-config (compose-go)"
            self._prefix = [str(last_line_of(["bash", str(DEPLOY_DIR / "tools" / "compose-config" / "build.sh")]))]
            self._plugin = False

    def config(
        self, env_file: Path, profiles: tuple[str, ...] = (), output: str = "json"
    ) -> subprocess.CompletedProcess:
        """Resolve the Compose file with only `env_file` for interpolation (no outer environment)."""
        selection = ["-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
        for profile in profiles:
            selection += ["--profile", profile]
        tail = ["-q"] if output == "quiet" else ["--format", output]
        argv = [*self._prefix, *selection, "config", *tail] if self._plugin else [*self._prefix, *selection, *tail]
        # A clean environment: variables of the developer's shell must not decide the result.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
        return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="session")
def compose_cli() -> ComposeCli:
    return ComposeCli()


@pytest.fixture(scope="session")
def compose_model(compose_cli: ComposeCli) -> dict:
    """The resolved model with every profile on and the values of .env.example."""
    result = compose_cli.config(ENV_EXAMPLE, profiles=("loadgen",))
    assert result.returncode == 0, f"{compose_cli.name} config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    return last_line_of(["bash", str(REPO_ROOT / "scripts" / "provision-collector.sh")])


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
