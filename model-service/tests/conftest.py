"""Shared fixtures: in-memory OpenTelemetry exporters, trained models in temporary folders, a test client."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticotel.sdk.sampler import DefaultSampler
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from model_service.core.config import Settings
from model_service.core.telemetry import configure_telemetry
from model_service.main import create_app
from model_service.train import Hyperparameters, TrainingResult, run_training

# Small enough to train in about a second; the shipped size is trained once per session.
SMALL_ROWS = 5_000
# The admin token of the test apps; `client_for` sends it with every request.
ADMIN_TOKEN = "test-admin-token-4f9c2b"


@dataclass
class Telemetry:
    """What the code under test sent to OpenTelemetry, kept in memory."""

    span_exporter: InMemorySpanExporter
    log_exporter: InMemoryLogRecordExporter
    tracer_provider: TracerProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def logs(self) -> list[ReadableLogRecord]:
        return list(self.log_exporter.get_finished_logs())

    def clear(self) -> None:
        self.span_exporter.clear()
        self.log_exporter.clear()


@pytest.fixture(scope="session")
def session_telemetry() -> Telemetry:
    """Global providers as `opentelemetry-instrument` would install them, exporting to memory.

    OpenTelemetry lets a process set its global providers once, so this is session-wide;
    the `telemetry` fixture clears what was recorded before each test.
    """
    # The HTTP semantic conventions the deployment opts into (README, "Telemetry").
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    span_exporter = InMemorySpanExporter()
    # EDOT's default sampler, the harder case: it drops attributes given at span start (see spans.py).
    tracer_provider = TracerProvider(sampler=DefaultSampler("1.0"))
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    set_logger_provider(logger_provider)
    logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))
    # What `opentelemetry-instrument` does next (instrument FastAPI), then what the entry points do.
    FastAPIInstrumentor().instrument(tracer_provider=tracer_provider)
    configure_telemetry(Settings())
    logging.getLogger("model_service").setLevel(logging.INFO)
    return Telemetry(span_exporter, log_exporter, tracer_provider)


@pytest.fixture
def telemetry(session_telemetry: Telemetry) -> Telemetry:
    session_telemetry.clear()
    return session_telemetry


def settings_for(root: Path, **overrides: object) -> Settings:
    """Settings serving from `root`, with the test admin token unless `overrides` say otherwise."""
    return Settings(
        **{"model_dir": root / "models", "data_dir": root / "data", "admin_token": ADMIN_TOKEN, **overrides}
    )


@pytest.fixture(scope="session")
def shipped_model(tmp_path_factory: pytest.TempPathFactory, session_telemetry: Telemetry) -> TrainingResult:
    """The shipped configuration (full dataset, default hyper-parameters), trained once."""
    return run_training(settings_for(tmp_path_factory.mktemp("shipped")), Hyperparameters())


@pytest.fixture(scope="session")
def shipped_settings(shipped_model: TrainingResult) -> Settings:
    return settings_for(shipped_model.path.parent.parent)


@pytest.fixture
def small_settings(tmp_path: Path, session_telemetry: Telemetry) -> Settings:
    """A fresh, empty model folder over a small dataset."""
    return settings_for(tmp_path, dataset_rows=SMALL_ROWS)


@pytest.fixture
def small_hyperparameters() -> Hyperparameters:
    return Hyperparameters(max_iter=20)


@pytest.fixture
def client_for(telemetry: Telemetry) -> Iterator[Callable[[Settings], TestClient]]:
    """Builds a test client of an app with the given settings, traced as in production (`session_telemetry`);
    server errors come back as responses.

    The client sends `Authorization: Bearer <the settings' admin token>` when there is one.
    """
    clients: list[TestClient] = []

    def build(settings: Settings) -> TestClient:
        app = create_app(settings)
        token = settings.admin_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else None
        clients.append(TestClient(app, raise_server_exceptions=False, headers=headers).__enter__())
        return clients[-1]

    yield build
    for test_client in clients:
        test_client.__exit__(None, None, None)


@pytest.fixture
def client(shipped_settings: Settings, client_for: Callable[[Settings], TestClient]) -> TestClient:
    """A client of the app serving the shipped model."""
    return client_for(shipped_settings)
