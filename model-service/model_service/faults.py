"""Injected latency and errors for the runbook's controlled failure; off unless configured."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace

from model_service.spans import start_span

tracer = trace.get_tracer("model_service.faults")


class InjectedFaultError(Exception):
    """A prediction request failed on purpose, as the fault settings asked."""


@dataclass(frozen=True)
class FaultSettings:
    """Added latency per prediction request and the share of those requests that fail."""

    latency_ms: int = 0
    error_rate: float = 0.0

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.error_rate > 0.0


class FaultInjector:
    """Applies the current fault settings to a request; settings can change while serving."""

    def __init__(self, settings: FaultSettings, draw: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._draw = draw
        self._lock = threading.Lock()

    def current(self) -> FaultSettings:
        return self._settings

    def update(self, settings: FaultSettings) -> FaultSettings:
        with self._lock:
            self._settings = settings
        return settings

    def apply(self) -> None:
        """Sleep and/or fail as configured, inside an `inject_fault` span so a trace shows the cause."""
        settings = self._settings
        if not settings.active:
            return
        attributes = {"fault.latency_ms": settings.latency_ms, "fault.error_rate": settings.error_rate}
        with start_span(tracer, "inject_fault", attributes):
            if settings.latency_ms > 0:
                time.sleep(settings.latency_ms / 1000)
            if self._draw() < settings.error_rate:
                raise InjectedFaultError(f"injected fault (error rate {settings.error_rate})")
