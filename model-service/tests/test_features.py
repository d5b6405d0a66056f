"""The feature store file: created when missing, reused, looked up by id."""

import numpy as np
import pytest

from model_service.dataset import DatasetSpec, generate
from model_service.features import FeatureStore, FeatureStoreError

SPEC = DatasetSpec(rows=3_000)


def test_the_store_is_written_when_missing_and_reused_afterwards(tmp_path):
    FeatureStore.open(tmp_path, SPEC)
    path = tmp_path / SPEC.file_name
    written_at = path.stat().st_mtime_ns

    store = FeatureStore.open(tmp_path, SPEC)

    assert path.stat().st_mtime_ns == written_at
    assert np.array_equal(store.dataset.features, generate(SPEC).features)


def test_a_lookup_returns_rows_in_request_order_and_reports_unknown_ids(tmp_path):
    store = FeatureStore.open(tmp_path, SPEC)

    lookup = store.lookup(["cust-000007", "nobody", "cust-000002"])

    assert lookup.found_ids == ["cust-000007", "cust-000002"]
    assert lookup.missing_ids == ["nobody"]
    assert np.array_equal(lookup.features, store.dataset.features[[7, 2]])


def test_a_lookup_is_traced_as_load_features(tmp_path, telemetry):
    store = FeatureStore.open(tmp_path, SPEC)

    store.lookup(["cust-000001"])

    [span] = telemetry.spans_named("load_features")
    assert span.attributes["ml.data_id"] == "cust-000001"
    assert span.attributes["ml.dataset"] == SPEC.name
    assert span.attributes["ml.data_ids.missing"] == 0


def test_a_store_file_with_other_features_is_refused(tmp_path):
    np.savez(tmp_path / SPEC.file_name, feature_names=np.array(["something", "else"]))

    with pytest.raises(FeatureStoreError):
        FeatureStore.open(tmp_path, SPEC)
