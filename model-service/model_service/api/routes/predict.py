"""POST /predict and POST /predict/batch: predictions for data ids."""

from __future__ import annotations

from fastapi import APIRouter

from model_service.api.dependencies import PredictionServiceDep
from model_service.schemas import (
    BatchItem,
    ErrorResponse,
    ModelRef,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictionBody,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def predict(request: PredictRequest, service: PredictionServiceDep) -> PredictResponse:
    """Load the row's features, run the model, return the prediction and the model that made it."""
    result = service.predict(request.data_id)
    return PredictResponse(
        data_id=result.data_id,
        prediction=PredictionBody.of(result.prediction),
        model=ModelRef.of(result.model),
    )


@router.post(
    "/predict/batch",
    responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def predict_batch(request: PredictBatchRequest, service: PredictionServiceDep) -> PredictBatchResponse:
    """The same for many ids in one vectorised call; unknown ids are listed in `not_found`."""
    result = service.predict_batch(request.data_ids)
    return PredictBatchResponse(
        model=ModelRef.of(result.model),
        predictions=[
            BatchItem(data_id=data_id, prediction=PredictionBody.of(prediction))
            for data_id, prediction in result.predictions
        ],
        not_found=result.not_found,
    )
