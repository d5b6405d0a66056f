"""Model versions on disk: choosing, loading and stable predictions."""

import numpy as np
import pytest

from model_service.features import FeatureStore
from model_service.model import ModelRegistry, NoModelAvailableError, UnknownModelVersionError

KNOWN_ID = "cust-000042"


def test_predictions_for_a_known_id_are_stable_for_one_version(shipped_settings):
    registry = ModelRegistry(shipped_settings.model_dir)
    store = FeatureStore.open(shipped_settings.data_dir, registry.load().metadata.dataset)
    lookup = store.lookup([KNOWN_ID])

    first = registry.load("v1").predict(lookup.features, lookup.found_ids)
    again = registry.load("v1").predict(lookup.features, lookup.found_ids)

    assert first == again
    assert set(first[0].probabilities) == {"no_default", "default"}
    assert sum(first[0].probabilities.values()) == pytest.approx(1.0)


def test_a_batch_predicts_each_row_as_alone(shipped_settings):
    model = ModelRegistry(shipped_settings.model_dir).load()
    store = FeatureStore.open(shipped_settings.data_dir, model.metadata.dataset)
    ids = [f"cust-{index:06d}" for index in range(50)]
    lookup = store.lookup(ids)

    together = model.predict(lookup.features, ids)
    alone = [model.predict(lookup.features[[row]], [ids[row]])[0] for row in range(len(ids))]

    assert [p.probabilities["default"] for p in together] == pytest.approx([p.probabilities["default"] for p in alone])


def test_a_prediction_is_traced_with_the_model_identity(shipped_settings, telemetry):
    model = ModelRegistry(shipped_settings.model_dir).load()

    model.predict(np.zeros((1, len(model.metadata.features)), dtype=np.float32), ["someone"])

    [span] = telemetry.spans_named("predict")
    assert span.attributes["ml.model.version"] == model.metadata.version
    assert span.attributes["ml.run_id"] == model.metadata.run_id
    assert span.attributes["ml.data_id"] == "someone"
    assert span.attributes["ml.prediction.label"] in model.metadata.classes


def test_an_empty_model_folder_has_no_model(tmp_path):
    with pytest.raises(NoModelAvailableError):
        ModelRegistry(tmp_path).load()


def test_an_unknown_version_is_refused_by_name(shipped_settings):
    with pytest.raises(UnknownModelVersionError):
        ModelRegistry(shipped_settings.model_dir).load("v999")


def test_versions_are_ordered_by_number_and_unfinished_ones_are_ignored(tmp_path):
    for version in ("v2", "v10", "v9"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "metadata.json").write_text("{}")
        (tmp_path / version / "model.joblib").write_bytes(b"")
    (tmp_path / "v11").mkdir()
    (tmp_path / "notes").mkdir()

    registry = ModelRegistry(tmp_path)

    assert registry.versions() == ["v2", "v9", "v10"]
    assert registry.reserve() == "v12"
