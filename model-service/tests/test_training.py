"""The training pipeline: accuracy above the floor, versions, metadata, spans and logs."""

import logging

import pytest

from model_service import train
from model_service.dataset import FEATURE_NAMES
from model_service.model import ModelRegistry
from model_service.train import Hyperparameters, run_training

# The floor the shipped model must clear on the validation split (the alert rule fires below 0.8),
# and the margin by which it must beat always answering "no_default".
ACCURACY_FLOOR = 0.85
MARGIN_OVER_MAJORITY = 0.04
ROC_AUC_FLOOR = 0.85


def test_the_shipped_model_is_more_accurate_than_the_floor(shipped_model):
    metrics = shipped_model.metadata.metrics

    assert metrics["validation_accuracy"] >= ACCURACY_FLOOR
    assert metrics["validation_accuracy"] >= metrics["validation_majority_accuracy"] + MARGIN_OVER_MAJORITY
    assert metrics["validation_roc_auc"] >= ROC_AUC_FLOOR
    assert metrics["training_accuracy"] - metrics["validation_accuracy"] < 0.03, "over-fitted"


def test_the_last_quarter_rate_rise_is_detected_as_drift_in_utilization(shipped_model):
    metrics = shipped_model.metadata.metrics

    assert metrics["drift_detected"] is True
    assert metrics["drift_feature"] == "utilization"
    assert metrics["drift_psi.age"] < 0.05, "features the story leaves alone must not drift"


def test_the_metadata_describes_the_version(shipped_model):
    metadata = shipped_model.metadata

    assert metadata.version == "v1"
    assert len(metadata.run_id) == 32
    assert metadata.trained_at.endswith("+00:00")
    assert [feature["name"] for feature in metadata.features] == list(FEATURE_NAMES)
    assert metadata.hyperparameters["learning_rate"] == Hyperparameters().learning_rate
    assert metadata.classes == ["no_default", "default"]


def test_training_twice_writes_two_versions_and_the_newest_is_loaded(small_settings, small_hyperparameters):
    first = run_training(small_settings, small_hyperparameters)
    second = run_training(small_settings, small_hyperparameters)
    registry = ModelRegistry(small_settings.model_dir)

    assert (first.metadata.version, second.metadata.version) == ("v1", "v2")
    assert first.metadata.run_id != second.metadata.run_id
    assert registry.versions() == ["v1", "v2"]
    assert registry.load().metadata.run_id == second.metadata.run_id


def test_training_is_traced_as_load_data_train_model_evaluate_with_ml_attributes(
    small_settings, small_hyperparameters, telemetry
):
    result = run_training(small_settings, small_hyperparameters)

    [run] = telemetry.spans_named("training_run")
    for name in ("load_data", "train_model", "evaluate"):
        [span] = telemetry.spans_named(name)
        assert span.parent.span_id == run.context.span_id, name
        assert span.attributes["ml.run_id"] == result.metadata.run_id
        assert span.attributes["ml.model_version"] == result.metadata.version
        assert span.attributes["ml.model.version"] == result.metadata.version
        assert span.attributes["ml.dataset"] == result.metadata.dataset.name
        assert span.attributes["ml.learning_rate"] == small_hyperparameters.learning_rate
        assert span.attributes["ml.max_iter"] == small_hyperparameters.max_iter
        assert span.attributes["ml.max_leaf_nodes"] == small_hyperparameters.max_leaf_nodes
    [evaluate] = telemetry.spans_named("evaluate")
    assert evaluate.attributes["ml.validation_accuracy"] == result.metadata.metrics["validation_accuracy"]
    assert isinstance(evaluate.attributes["ml.drift_detected"], bool)


def test_training_logs_accuracy_and_drift_with_the_trace_id(small_settings, small_hyperparameters, telemetry):
    result = run_training(small_settings, small_hyperparameters)

    [record] = [log.log_record for log in telemetry.logs() if log.log_record.body == "model evaluated"]
    [evaluate] = telemetry.spans_named("evaluate")
    metrics = result.metadata.metrics
    assert record.attributes["ml.training_accuracy"] == metrics["training_accuracy"]
    assert record.attributes["ml.validation_accuracy"] == metrics["validation_accuracy"]
    assert record.attributes["ml.drift_detected"] == metrics["drift_detected"]
    assert record.attributes["ml.drift_psi_max"] == metrics["drift_psi_max"]
    assert record.trace_id == evaluate.context.trace_id
    assert record.span_id == evaluate.context.span_id


def test_a_failed_run_leaves_no_version_behind(small_settings, small_hyperparameters, monkeypatch):
    def fail(*_):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "_train_model", fail)

    with pytest.raises(RuntimeError):
        run_training(small_settings, small_hyperparameters)

    assert ModelRegistry(small_settings.model_dir).versions() == []
    assert list(small_settings.model_dir.iterdir()) == []


def test_the_command_line_takes_hyper_parameters_and_settings_from_the_environment(small_settings, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE__MODEL_DIR", str(small_settings.model_dir))
    monkeypatch.setenv("MODEL_SERVICE__DATA_DIR", str(small_settings.data_dir))
    monkeypatch.setenv("MODEL_SERVICE__DATASET_ROWS", str(small_settings.dataset_rows))
    handlers = list(logging.getLogger().handlers)

    try:
        exit_code = train.main(["--learning-rate", "0.2", "--max-iter", "5"])
    finally:
        logging.getLogger().handlers[:] = handlers

    assert exit_code == 0
    metadata = ModelRegistry(small_settings.model_dir).load().metadata
    assert metadata.hyperparameters["learning_rate"] == 0.2
    assert metadata.hyperparameters["max_iter"] == 5
