"""The real model service on the test bed: a model trained once per session and copied into
each work folder, served by `opentelemetry-instrument python -m model_service` on port 0 (it
logs the address it bound)."""

from __future__ import annotations

import atexit
import functools
import json
import secrets
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import requests

from harness.collector import NO_TELEMETRY_ENV, Collector, otel_env
from harness.process import ManagedProcess

# Generating the 120,000-row feature store and training take ~5 s on the bed's two cores.
_TRAINING_TIMEOUT_SECONDS = 300
# Telemetry settings every run path of the service sets (model-service/README.md, "Telemetry"):
# current HTTP semantic conventions, no spans for the health checks that the harness polls, a
# sampler that keeps the caller's `tracestate` (EDOT's default drops it), and the resource's
# environment and version (tests/deploy/test_model_service_run_paths.py checks them all).
SERVICE_OTEL_ENV = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "health",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name=test-bed,service.version={version('model-service')}",
}


class RunningModelService:
    """A started model service; `url` is its base URL, `model_dir`/`data_dir` what it serves from,
    `admin_token` the bearer token its /admin routes take (a fresh random one per start)."""

    def __init__(self, process: ManagedProcess, url: str, model_dir: Path, data_dir: Path, admin_token: str) -> None:
        self.process = process
        self.url = url
        self.model_dir = model_dir
        self.data_dir = data_dir
        self.admin_token = admin_token

    def admin_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <admin_token>`, for any /admin request a test sends itself."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def predict(self, data_id: str, headers: dict[str, str] | None = None) -> requests.Response:
        """`POST /predict`."""
        return requests.post(f"{self.url}/predict", json={"data_id": data_id}, headers=headers, timeout=30)

    def model(self) -> dict:
        """`GET /model`: the served version and its metrics."""
        return requests.get(f"{self.url}/model", timeout=10).json()

    def set_faults(self, latency_ms: int = 0, error_rate: float = 0.0) -> dict:
        """`PUT /admin/faults`; the defaults turn injection off."""
        response = requests.put(
            f"{self.url}/admin/faults",
            json={"latency_ms": latency_ms, "error_rate": error_rate},
            headers=self.admin_headers(),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        """`GET /admin/stats`: requests and predicted ids counted by the service."""
        response = requests.get(f"{self.url}/admin/stats", headers=self.admin_headers(), timeout=10)
        response.raise_for_status()
        return response.json()

    def switch_model(self, version: str | None = None) -> dict:
        """`POST /admin/model`: serve `version` (the newest when None) from now on; the model info."""
        body = {} if version is None else {"version": version}
        response = requests.post(f"{self.url}/admin/model", json=body, headers=self.admin_headers(), timeout=60)
        response.raise_for_status()
        return response.json()

    def stop(self) -> int | None:
        return self.process.stop()


def train_model(venv_bin: Path, work_dir: Path) -> Path:
    """A trained model folder in `work_dir/model-service` (kept if there is one); the model folder.

    The session trains once (`python -m model_service.train`, telemetry off) and gives
    every work folder its own copy, so a test that trains or switches versions in its
    folder leaves the others alone.
    """
    model_dir, _ = _service_dirs(work_dir)
    if not _has_version(model_dir):
        shutil.copytree(_trained_template(venv_bin) / "model-service", work_dir / "model-service", dirs_exist_ok=True)
    return model_dir


def train_another_version(venv_bin: Path, work_dir: Path, collector: Collector | None = None) -> Path:
    """One more training run in `work_dir`'s model folder (a new version); the model folder.

    With `collector` the run is traced as the deployments train (`opentelemetry-instrument`)
    and exports there: its `load_data`/`train_model`/`evaluate` spans and quality logs are
    what the dashboard's training panels, the model-quality rules and the runbook read.
    """
    model_dir = train_model(venv_bin, work_dir)
    python = [venv_bin / "python", "-m", "model_service.train"]
    if collector is None:
        _run_training("model-training-another", python, work_dir, NO_TELEMETRY_ENV)
    else:
        traced = [venv_bin / "opentelemetry-instrument", *python]
        _run_training("model-training-traced", traced, work_dir, otel_env(collector, "model-service"))
    return model_dir


def start_model_service(
    venv_bin: Path,
    work_dir: Path,
    collector: Collector | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "model-service",
    timeout: float = 60.0,
) -> RunningModelService:
    """Start the service on a trained model (`train_model`) and return once `GET /health` answers 200.

    `venv_bin` is the provisioned venv's bin folder (`Path(sys.executable).parent` under
    its pytest). Without `collector` the service exports no telemetry. `extra_env`
    overrides anything, e.g. `MODEL_SERVICE__FAULT_ERROR_RATE` or `OTEL_SERVICE_NAME`.
    """
    model_dir = train_model(venv_bin, work_dir)
    _, data_dir = _service_dirs(work_dir)
    # Random per start, so no test can pass by a token it did not get from this object.
    admin_token = secrets.token_urlsafe(24)
    env = {
        "MODEL_SERVICE__HOST": "127.0.0.1",
        # The kernel picks the port; the service logs what it bound.
        "MODEL_SERVICE__PORT": "0",
        "MODEL_SERVICE__MODEL_DIR": str(model_dir),
        "MODEL_SERVICE__DATA_DIR": str(data_dir),
        "MODEL_SERVICE__ADMIN_TOKEN": admin_token,
        **SERVICE_OTEL_ENV,
        **(otel_env(collector, "model-service") if collector is not None else NO_TELEMETRY_ENV),
        **(extra_env or {}),
    }
    process = ManagedProcess(
        name,
        [venv_bin / "opentelemetry-instrument", venv_bin / "python", "-m", "model_service"],
        env=env,
        log_dir=work_dir / "logs",
    ).start()
    url = process.wait_for_line(_listening_url, f"{name} to log the address it listens on", timeout=timeout)
    # The same command started again (faults/fault_bed.py's `start_again`, a restart after a
    # kill) must come back at this address, which the gateways under test were given.
    process.env["MODEL_SERVICE__PORT"] = url.rsplit(":", 1)[1]
    process.wait_until_ready(
        lambda: requests.get(f"{url}/health", timeout=2).status_code == 200,
        f"{name} at {url} to answer /health with 200",
        timeout=timeout,
    )
    return RunningModelService(process, url, model_dir, data_dir, admin_token)


@functools.cache
def _trained_template(venv_bin: Path) -> Path:
    template = Path(tempfile.mkdtemp(prefix="model-service-template-"))
    atexit.register(shutil.rmtree, template, ignore_errors=True)
    _run_training("model-training", [venv_bin / "python", "-m", "model_service.train"], template, NO_TELEMETRY_ENV)
    return template


def _run_training(name: str, argv: list[Path | str], work_dir: Path, telemetry_env: dict[str, str]) -> None:
    """One training run into `work_dir`'s model folder; RuntimeError with its log if it fails."""
    model_dir, data_dir = _service_dirs(work_dir)
    training = ManagedProcess(
        name,
        argv,
        env={"MODEL_SERVICE__MODEL_DIR": str(model_dir), "MODEL_SERVICE__DATA_DIR": str(data_dir), **telemetry_env},
        log_dir=work_dir / "logs",
    ).start()
    try:
        exit_code = training.wait(timeout=_TRAINING_TIMEOUT_SECONDS)
    finally:
        training.stop()
    if exit_code != 0:
        raise RuntimeError(f"{name} failed ({exit_code}):\n{training.log_text()[-4000:]}")


def _listening_url(line: str) -> str | None:
    """The `url` of the service's JSON log record "model service listening" (`__main__.py`)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None  # not every line of the output is a log record (a warning, a traceback)
    if isinstance(record, dict) and record.get("message") == "model service listening":
        return record["url"]
    return None


def _has_version(model_dir: Path) -> bool:
    return any((version / "metadata.json").exists() for version in model_dir.glob("v*"))


def _service_dirs(work_dir: Path) -> tuple[Path, Path]:
    root = work_dir / "model-service"
    return root / "models", root / "data"
