"""Versioned model artifacts on disk (estimator plus metadata) and inference inside a `predict` span.

Imports no web framework: the API layer and the training pipeline both use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from opentelemetry import trace
from sklearn.base import ClassifierMixin
from threadpoolctl import ThreadpoolController

from model_service.attributes import (
    ML_BATCH_SIZE,
    ML_DATA_ID,
    ML_MODEL_NAME,
    ML_MODEL_VERSION,
    ML_PREDICTION_LABEL,
    ML_PREDICTION_SCORE,
    ML_RUN_ID,
)
from model_service.dataset import DatasetSpec
from model_service.spans import start_span

MODEL_NAME = "credit-default"
ESTIMATOR_FILE = "model.joblib"
# Written last: a version folder without it is a training run still in progress (or one that died).
METADATA_FILE = "metadata.json"
_VERSION_FOLDER = re.compile(r"^v(\d+)$")

tracer = trace.get_tracer("model_service.model")


class UnknownModelVersionError(Exception):
    """The requested version has no complete artifact in the model folder."""


class NoModelAvailableError(Exception):
    """The model folder holds no complete version yet: train one first."""


@dataclass(frozen=True)
class ModelMetadata:
    """What a version is: identity, the data and settings it was trained with, and how well it did."""

    name: str
    version: str
    run_id: str
    trained_at: str
    dataset: DatasetSpec
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    features: list[dict[str, str]]
    classes: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetadata:
        return cls(**{**data, "dataset": DatasetSpec(**data["dataset"])})


@dataclass(frozen=True)
class Prediction:
    """One row's outcome: the most probable class, every class's probability, and the score
    (the probability of the last class, the positive one: default)."""

    label: str
    probabilities: dict[str, float]
    score: float


class LoadedModel:
    """One version in memory, ready to predict; immutable, so threads share it freely."""

    def __init__(self, metadata: ModelMetadata, estimator: ClassifierMixin) -> None:
        self.metadata = metadata
        self._estimator = estimator
        # Requests run in parallel on the server's threads; OpenMP threads on top of them only
        # contend for the same cores: one row took ~23 ms with them and ~3.5 ms without on two cores.
        self._threadpools = ThreadpoolController()

    def warm_up(self, feature_count: int) -> None:
        """Run one throw-away prediction, untraced, so the first request does not pay for thread start-up."""
        with self._threadpools.limit(limits=1, user_api="openmp"):
            self._estimator.predict_proba(np.zeros((1, feature_count), dtype=np.float32))

    def span_attributes(self) -> dict[str, str]:
        """The `ml.*` attributes that identify this model on every span it touches."""
        return {
            ML_MODEL_NAME: self.metadata.name,
            ML_MODEL_VERSION: self.metadata.version,
            ML_RUN_ID: self.metadata.run_id,
        }

    def predict(self, features: np.ndarray, data_ids: Sequence[str]) -> list[Prediction]:
        """Predict every row of `features` (one row per id in `data_ids`)."""
        with start_span(tracer, "predict", self.span_attributes()) as span:
            span.set_attribute(ML_BATCH_SIZE, len(data_ids))
            if len(data_ids) == 1:
                span.set_attribute(ML_DATA_ID, data_ids[0])
            if len(data_ids) == 0:
                return []
            with self._threadpools.limit(limits=1, user_api="openmp"):
                probabilities = self._estimator.predict_proba(features)
            classes = self.metadata.classes
            predictions = [
                Prediction(
                    label=classes[int(np.argmax(row))],
                    probabilities={name: float(p) for name, p in zip(classes, row, strict=True)},
                    score=float(row[-1]),
                )
                for row in probabilities
            ]
            if len(predictions) == 1:
                span.set_attribute(ML_PREDICTION_LABEL, predictions[0].label)
                span.set_attribute(ML_PREDICTION_SCORE, predictions[0].score)
            return predictions


class ModelRegistry:
    """The model folder: one sub-folder `v<N>` per trained version, the highest N the newest."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return [
            path.name
            for path in self._version_folders()
            if (path / METADATA_FILE).exists() and (path / ESTIMATOR_FILE).exists()
        ]

    def load(self, version: str | None = None) -> LoadedModel:
        """Load `version`, or the newest complete one when None."""
        if version is None:
            complete = self.versions()
            if not complete:
                raise NoModelAvailableError(f"no trained model in {self.model_dir}")
            version = complete[-1]
        elif version not in self.versions():
            raise UnknownModelVersionError(f"model version {version!r} not found in {self.model_dir}")
        folder = self.model_dir / version
        metadata = ModelMetadata.from_json(json.loads((folder / METADATA_FILE).read_text()))
        return LoadedModel(metadata, joblib.load(folder / ESTIMATOR_FILE))

    def reserve(self) -> str:
        """Claim the next version number by creating its folder (atomic, so two runs never share one)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [int(_VERSION_FOLDER.match(path.name).group(1)) for path in self._version_folders()]
            version = f"v{max(numbers, default=0) + 1}"
            try:
                (self.model_dir / version).mkdir()
            except FileExistsError:
                continue
            return version

    def save(self, metadata: ModelMetadata, estimator: ClassifierMixin) -> Path:
        """Write a reserved version: the estimator first, then the metadata that marks it complete."""
        folder = self.model_dir / metadata.version
        joblib.dump(estimator, folder / ESTIMATOR_FILE)
        partial = folder / f".{METADATA_FILE}.partial"
        partial.write_text(json.dumps(metadata.to_json(), indent=2, sort_keys=True))
        os.replace(partial, folder / METADATA_FILE)
        return folder

    def discard(self, version: str) -> None:
        """Remove a reserved version whose training failed."""
        shutil.rmtree(self.model_dir / version, ignore_errors=True)

    def _version_folders(self) -> list[Path]:
        if not self.model_dir.is_dir():
            return []
        folders = [path for path in self.model_dir.iterdir() if _VERSION_FOLDER.match(path.name)]
        return sorted(folders, key=lambda path: int(_VERSION_FOLDER.match(path.name).group(1)))
