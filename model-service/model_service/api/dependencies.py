"""FastAPI dependencies: how a route reaches the application's PredictionService."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from model_service.prediction_service import PredictionService


def get_prediction_service(request: Request) -> PredictionService:
    return request.app.state.prediction_service


PredictionServiceDep = Annotated[PredictionService, Depends(get_prediction_service)]
