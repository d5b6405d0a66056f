"""GET /model: the served model version and its training metrics."""

from __future__ import annotations

from fastapi import APIRouter

from model_service.api.dependencies import PredictionServiceDep
from model_service.schemas import ErrorResponse, ModelInfo

router = APIRouter(tags=["model"])


@router.get("/model", responses={503: {"model": ErrorResponse}})
def get_model(service: PredictionServiceDep) -> ModelInfo:
    """Name, version, run id, training time, metrics, hyper-parameters and feature schema."""
    return ModelInfo.of(service.served().model.metadata)
