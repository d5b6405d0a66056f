"""GET /health: liveness and readiness in one (ready means a model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from model_service.api.dependencies import PredictionServiceDep
from model_service.model import NoModelAvailableError
from model_service.schemas import HealthResponse, ModelRef

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"model": HealthResponse}})
def health(service: PredictionServiceDep, response: Response) -> HealthResponse:
    """200 with the served model while one is loaded; 503 while none is."""
    try:
        metadata = service.served().model.metadata
    except NoModelAvailableError:
        response.status_code = 503
        return HealthResponse(status="unavailable", model=None)
    return HealthResponse(status="ok", model=ModelRef.of(metadata))
