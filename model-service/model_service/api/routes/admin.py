"""Operator endpoints under /admin: switch the served version, set injected faults, read counters.

Every route needs the admin bearer token (api/admin_auth.py); without a configured token they are refused.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from model_service.api.admin_auth import require_admin_token
from model_service.api.dependencies import PredictionServiceDep
from model_service.schemas import (
    ErrorResponse,
    FaultSettingsBody,
    ModelInfo,
    StatsResponse,
    SwitchModelRequest,
)

logger = logging.getLogger(__name__)
router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin_token)],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.post("/model", responses={404: {"model": ErrorResponse}})
def switch_model(request: SwitchModelRequest, service: PredictionServiceDep) -> ModelInfo:
    """Serve the given version (or the newest) from now on."""
    return ModelInfo.of(service.switch_model(request.version))


@router.get("/faults")
def get_faults(service: PredictionServiceDep) -> FaultSettingsBody:
    """The fault settings in force."""
    return FaultSettingsBody.of(service.faults.current())


@router.put("/faults")
def set_faults(request: FaultSettingsBody, service: PredictionServiceDep) -> FaultSettingsBody:
    """Replace the fault settings; `{"latency_ms": 0, "error_rate": 0}` turns injection off."""
    settings = service.faults.update(request.to_settings())
    logger.warning(
        "fault injection changed",
        extra={"fault.latency_ms": settings.latency_ms, "fault.error_rate": settings.error_rate},
    )
    return FaultSettingsBody.of(settings)


@router.get("/stats")
def get_stats(service: PredictionServiceDep) -> StatsResponse:
    """Requests and predicted ids counted since start."""
    return StatsResponse.of(service.stats())
