"""Typed settings of the model service: documented defaults, overridden by MODEL_SERVICE__* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_service.dataset import DEFAULT_ROWS


class Settings(BaseSettings):
    """Everything the service and the training pipeline read from the environment.

    Exporters, sampling and the service name are not here: they come from the
    standard OTEL_* variables, read by OpenTelemetry itself.
    """

    model_config = SettingsConfigDict(env_prefix="MODEL_SERVICE__", extra="ignore", protected_namespaces=())

    host: str = Field("127.0.0.1", description="address the HTTP server binds to")
    port: int = Field(8001, ge=0, le=65535, description="TCP port; 0 lets the kernel pick one")
    model_dir: Path = Field(Path("var/models"), description="model artifacts, one folder per version")
    data_dir: Path = Field(Path("var/data"), description="the feature store files, created when missing")
    model_version: str | None = Field(None, description="version to serve, e.g. v3; the newest when unset")
    fault_latency_ms: int = Field(0, ge=0, le=60_000, description="latency added to each prediction request")
    fault_error_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of prediction requests failed")
    max_batch_size: int = Field(
        1000, ge=1, description="most ids in one /predict/batch request, the gateway's batch limit"
    )
    dataset_rows: int = Field(DEFAULT_ROWS, ge=1000, description="rows the training pipeline generates")
    training_threads: int = Field(
        1,
        ge=1,
        description="OpenMP threads for training; more only pays on idle cores (see train.py)",
    )
    drift_psi_threshold: float = Field(
        0.2, gt=0.0, description="population stability index above which training reports drift"
    )
    log_level: str = Field("INFO", description="level of the service's own logs (stdout and OTLP)")
    admin_token: SecretStr | None = Field(
        None, description="bearer token the /admin routes require; empty counts as unset (api/admin_auth.py)"
    )
    admin_token_file: Path | None = Field(
        None, description="file holding that token (a mounted secret); its trailing line break is ignored"
    )
    baggage_max_entries: int = Field(
        16, ge=0, description="most caller `ml.*` baggage entries copied onto each span; 0 copies none"
    )
    baggage_max_bytes: int = Field(
        1024, ge=0, description="most bytes (names plus values, UTF-8) of baggage copied onto each span"
    )

    @field_validator("admin_token", "admin_token_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`VAR=` (a template that left the value out) means unset, as OpenTelemetry reads its variables."""
        return None if value == "" else value
