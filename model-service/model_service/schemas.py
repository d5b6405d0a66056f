"""Request and response bodies of the HTTP API, validated at the edge by pydantic."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from model_service.faults import FaultSettings
from model_service.model import ModelMetadata, Prediction
from model_service.prediction_service import ServingStats

# Long enough for any id scheme a client may use, short enough to keep spans and logs bounded.
DataId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class PredictRequest(BaseModel):
    data_id: DataId


class PredictBatchRequest(BaseModel):
    data_ids: list[DataId]


class ModelRef(BaseModel):
    """Which model made a prediction."""

    name: str
    version: str
    run_id: str

    @classmethod
    def of(cls, metadata: ModelMetadata) -> ModelRef:
        return cls(name=metadata.name, version=metadata.version, run_id=metadata.run_id)


class PredictionBody(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="probability of each class")

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionBody:
        return cls(label=prediction.label, probabilities=prediction.probabilities)


class BatchItem(BaseModel):
    data_id: str
    prediction: PredictionBody


class PredictResponse(BatchItem):
    model: ModelRef


class PredictBatchResponse(BaseModel):
    model: ModelRef
    predictions: list[BatchItem]
    not_found: list[str]


class FeatureSpec(BaseModel):
    name: str
    type: str
    description: str


class ModelInfo(BaseModel):
    """The served version: identity, when it was trained, how well it did, on what."""

    name: str
    version: str
    run_id: str
    trained_at: str
    dataset: str
    metrics: dict[str, float | int | bool | str]
    hyperparameters: dict[str, float | int | str]
    features: list[FeatureSpec]
    classes: list[str]

    @classmethod
    def of(cls, metadata: ModelMetadata) -> ModelInfo:
        return cls(
            name=metadata.name,
            version=metadata.version,
            run_id=metadata.run_id,
            trained_at=metadata.trained_at,
            dataset=metadata.dataset.name,
            metrics=metadata.metrics,
            hyperparameters=metadata.hyperparameters,
            features=[FeatureSpec(**feature) for feature in metadata.features],
            classes=metadata.classes,
        )


class HealthResponse(BaseModel):
    status: str = Field(description="ok when a model is loaded, unavailable otherwise")
    model: ModelRef | None


class SwitchModelRequest(BaseModel):
    version: str | None = Field(None, description="version to serve; the newest when absent")


class FaultSettingsBody(BaseModel):
    latency_ms: int = Field(0, ge=0, le=60_000, description="added to each prediction request")
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of prediction requests that fail")

    @classmethod
    def of(cls, settings: FaultSettings) -> FaultSettingsBody:
        return cls.model_validate(settings, from_attributes=True)

    def to_settings(self) -> FaultSettings:
        return FaultSettings(latency_ms=self.latency_ms, error_rate=self.error_rate)


class StatsResponse(BaseModel):
    predict_requests: int
    batch_requests: int
    predicted_ids: int

    @classmethod
    def of(cls, stats: ServingStats) -> StatsResponse:
        return cls.model_validate(stats, from_attributes=True)


class ErrorDetail(BaseModel):
    code: str
    message: str
    trace_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
