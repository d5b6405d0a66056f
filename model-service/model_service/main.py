"""create_app: builds the FastAPI application from settings (no port; of telemetry only the HTTP instrumentation)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from model_service.api.admin_auth import AdminToken
from model_service.api.errors import install_error_handlers
from model_service.api.routes import admin, health, model_info, predict
from model_service.core.config import Settings
from model_service.core.telemetry import instrument_http
from model_service.faults import FaultInjector, FaultSettings
from model_service.model import ModelRegistry, NoModelAvailableError
from model_service.prediction_service import PredictionService

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The application serving `settings.model_version` (or the newest version) from `settings.model_dir`.

    With no trained version yet, the app still starts: /health answers 503 until a
    version is trained and loaded with POST /admin/model. A requested version that
    does not exist raises UnknownModelVersionError: the operator asked for it by name.
    Unusable admin token settings raise AdminTokenSettingsError.
    """
    admin_token = AdminToken.from_settings(settings)
    if not admin_token.enabled:
        logger.warning("admin endpoints disabled: no MODEL_SERVICE__ADMIN_TOKEN or MODEL_SERVICE__ADMIN_TOKEN_FILE")
    faults = FaultInjector(FaultSettings(settings.fault_latency_ms, settings.fault_error_rate))
    service = PredictionService(ModelRegistry(settings.model_dir), settings.data_dir, faults, settings.max_batch_size)
    try:
        service.switch_model(settings.model_version)
    except NoModelAvailableError as error:
        logger.warning("starting without a model: %s", error)
    if faults.current().active:
        logger.warning(
            "fault injection is on",
            extra={
                "fault.latency_ms": settings.fault_latency_ms,
                "fault.error_rate": settings.fault_error_rate,
            },
        )

    app = FastAPI(title="model-service", description="Credit-default predictions for data ids")
    app.state.prediction_service = service
    app.state.admin_token = admin_token
    instrument_http(app)
    install_error_handlers(app)
    for routes in (predict, model_info, health, admin):
        app.include_router(routes.router)
    return app
