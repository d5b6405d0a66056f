"""Serving without HTTP: the served model version, feature lookup, inference, injected faults and counters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace

from model_service.attributes import (
    ML_BATCH_NOT_FOUND,
    ML_BATCH_SIZE,
    ML_DATA_ID,
    ML_PREDICTION_LABEL,
    ML_PREDICTION_SCORE,
)
from model_service.dataset import DatasetSpec
from model_service.faults import FaultInjector
from model_service.features import FeatureStore
from model_service.model import LoadedModel, ModelMetadata, ModelRegistry, NoModelAvailableError, Prediction

logger = logging.getLogger(__name__)


class UnknownDataIdError(Exception):
    """The feature store has no row for this data id."""

    def __init__(self, data_id: str) -> None:
        super().__init__(f"unknown data id {data_id!r}")
        self.data_id = data_id


class BatchTooLargeError(Exception):
    """A batch asked for more ids than the service takes in one request."""


@dataclass(frozen=True)
class ServedModel:
    """A model version together with the feature store of the dataset it was trained on."""

    model: LoadedModel
    store: FeatureStore


@dataclass(frozen=True)
class SinglePrediction:
    data_id: str
    prediction: Prediction
    model: ModelMetadata


@dataclass(frozen=True)
class BatchPrediction:
    """Predictions in request order (each id once) and the ids the store does not know."""

    model: ModelMetadata
    predictions: list[tuple[str, Prediction]]
    not_found: list[str]


@dataclass(frozen=True)
class ServingStats:
    """Requests received and ids predicted since start; the gateway's coalescing test reads them."""

    predict_requests: int
    batch_requests: int
    predicted_ids: int


class PredictionService:
    """Everything a prediction request needs; safe to call from many threads at once."""

    def __init__(self, registry: ModelRegistry, data_dir: Path, faults: FaultInjector, max_batch_size: int) -> None:
        self.registry = registry
        self.faults = faults
        self.max_batch_size = max_batch_size
        self._data_dir = data_dir
        self._served: ServedModel | None = None
        self._stores: dict[DatasetSpec, FeatureStore] = {}
        self._lock = threading.Lock()
        self._predict_requests = 0
        self._batch_requests = 0
        self._predicted_ids = 0

    def switch_model(self, version: str | None) -> ModelMetadata:
        """Serve `version` (the newest when None) from now on; in-flight requests finish on the old one."""
        model = self.registry.load(version)
        store = self._store_for(model.metadata.dataset)
        model.warm_up(store.dataset.features.shape[1])
        with self._lock:
            self._served = ServedModel(model=model, store=store)
        logger.info("serving model", extra=model.span_attributes())
        return model.metadata

    def served(self) -> ServedModel:
        served = self._served
        if served is None:
            raise NoModelAvailableError(f"no model loaded from {self.registry.model_dir}")
        return served

    def predict(self, data_id: str) -> SinglePrediction:
        """Predict one id: `inject_fault` (when on), `load_features`, `predict`."""
        self._count(predict_requests=1)
        served = self.served()
        trace.get_current_span().set_attributes({**served.model.span_attributes(), ML_DATA_ID: data_id})
        self.faults.apply()
        lookup = served.store.lookup([data_id])
        if lookup.missing_ids:
            raise UnknownDataIdError(data_id)
        [prediction] = served.model.predict(lookup.features, lookup.found_ids)
        self._count(predicted_ids=1)
        logger.info(
            "prediction made",
            extra={
                **served.model.span_attributes(),
                ML_DATA_ID: data_id,
                ML_PREDICTION_LABEL: prediction.label,
                ML_PREDICTION_SCORE: prediction.score,
            },
        )
        return SinglePrediction(data_id=data_id, prediction=prediction, model=served.model.metadata)

    def predict_batch(self, data_ids: Sequence[str]) -> BatchPrediction:
        """Predict many ids in one vectorised call; duplicates are predicted once."""
        self._count(batch_requests=1)
        if len(data_ids) > self.max_batch_size:
            raise BatchTooLargeError(f"{len(data_ids)} ids in one batch; at most {self.max_batch_size}")
        served = self.served()
        unique_ids = list(dict.fromkeys(data_ids))
        trace.get_current_span().set_attributes({**served.model.span_attributes(), ML_BATCH_SIZE: len(unique_ids)})
        self.faults.apply()
        lookup = served.store.lookup(unique_ids)
        trace.get_current_span().set_attribute(ML_BATCH_NOT_FOUND, len(lookup.missing_ids))
        predictions = served.model.predict(lookup.features, lookup.found_ids)
        self._count(predicted_ids=len(predictions))
        logger.info(
            "batch prediction made",
            extra={
                **served.model.span_attributes(),
                ML_BATCH_SIZE: len(unique_ids),
                ML_BATCH_NOT_FOUND: len(lookup.missing_ids),
            },
        )
        return BatchPrediction(
            model=served.model.metadata,
            predictions=list(zip(lookup.found_ids, predictions, strict=True)),
            not_found=lookup.missing_ids,
        )

    def stats(self) -> ServingStats:
        with self._lock:
            return ServingStats(self._predict_requests, self._batch_requests, self._predicted_ids)

    def _store_for(self, spec: DatasetSpec) -> FeatureStore:
        with self._lock:
            store = self._stores.get(spec)
        if store is None:
            store = FeatureStore.open(self._data_dir, spec)
            with self._lock:
                store = self._stores.setdefault(spec, store)
        return store

    def _count(self, predict_requests: int = 0, batch_requests: int = 0, predicted_ids: int = 0) -> None:
        with self._lock:
            self._predict_requests += predict_requests
            self._batch_requests += batch_requests
            self._predicted_ids += predicted_ids
