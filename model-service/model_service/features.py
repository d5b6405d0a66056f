"""The feature store: the dataset kept as one .npz file, read by data id inside a `load_features` span."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from opentelemetry import trace

from model_service.attributes import ML_DATA_ID, ML_DATA_IDS_MISSING, ML_DATA_IDS_REQUESTED, ML_DATASET
from model_service.dataset import FEATURE_NAMES, Dataset, DatasetSpec, generate
from model_service.spans import start_span

tracer = trace.get_tracer("model_service.features")


class FeatureStoreError(Exception):
    """The store file exists but does not hold the dataset it is named after."""


@dataclass(frozen=True)
class FeatureLookup:
    """The result of one lookup: feature rows for the ids found, in request order, and the ids not found."""

    found_ids: list[str]
    features: np.ndarray
    missing_ids: list[str]


class FeatureStore:
    """All rows of one dataset in memory, indexed by data id; read-only once opened."""

    def __init__(self, spec: DatasetSpec, dataset: Dataset) -> None:
        self.spec = spec
        self.dataset = dataset
        self._row_of_id = {data_id: row for row, data_id in enumerate(dataset.data_ids.tolist())}

    @classmethod
    def open(cls, data_dir: Path, spec: DatasetSpec) -> FeatureStore:
        """Open the store file for `spec` in `data_dir`, generating and writing it first if missing."""
        path = data_dir / spec.file_name
        if not path.exists():
            _write(path, generate(spec))
        with np.load(path) as stored:
            if tuple(stored["feature_names"].tolist()) != FEATURE_NAMES:
                raise FeatureStoreError(f"{path} holds other features than {FEATURE_NAMES}; delete it")
            dataset = Dataset(
                data_ids=stored["data_ids"],
                features=stored["features"],
                labels=stored["labels"],
                application_month=stored["application_month"],
            )
        return cls(spec, dataset)

    def lookup(self, data_ids: Sequence[str]) -> FeatureLookup:
        """The feature rows of `data_ids`; unknown ids are reported, not raised."""
        with start_span(tracer, "load_features", {ML_DATASET: self.spec.name}) as span:
            span.set_attribute(ML_DATA_IDS_REQUESTED, len(data_ids))
            if len(data_ids) == 1:
                span.set_attribute(ML_DATA_ID, data_ids[0])
            rows = [self._row_of_id.get(data_id) for data_id in data_ids]
            found_ids = [data_id for data_id, row in zip(data_ids, rows, strict=True) if row is not None]
            missing_ids = [data_id for data_id, row in zip(data_ids, rows, strict=True) if row is None]
            features = self.dataset.features[[row for row in rows if row is not None]]
            span.set_attribute(ML_DATA_IDS_MISSING, len(missing_ids))
            return FeatureLookup(found_ids=found_ids, features=features, missing_ids=missing_ids)


def _write(path: Path, dataset: Dataset) -> None:
    """Write atomically, so a reader (or a second writer) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as file:
        np.savez(
            file,
            data_ids=dataset.data_ids,
            features=dataset.features,
            labels=dataset.labels,
            application_month=dataset.application_month,
            feature_names=np.array(FEATURE_NAMES),
        )
    os.replace(partial, path)
