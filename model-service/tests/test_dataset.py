"""The generated dataset: deterministic, large enough, and shaped like a credit-default problem."""

import numpy as np

from model_service.dataset import DEFAULT_ROWS, FEATURE_NAMES, DatasetSpec, data_id, generate


def test_the_same_spec_generates_the_same_rows():
    first = generate(DatasetSpec(rows=2_000))
    second = generate(DatasetSpec(rows=2_000))

    assert np.array_equal(first.features, second.features)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.data_ids, second.data_ids)


def test_another_seed_generates_other_rows():
    first = generate(DatasetSpec(rows=2_000, seed=1))
    second = generate(DatasetSpec(rows=2_000, seed=2))

    assert not np.array_equal(first.features, second.features)


def test_the_shipped_dataset_has_at_least_100_000_distinct_string_ids():
    dataset = generate(DatasetSpec())

    assert DEFAULT_ROWS >= 100_000
    assert len(set(dataset.data_ids.tolist())) == DEFAULT_ROWS
    assert dataset.data_ids[42] == data_id(42) == "cust-000042"
    assert dataset.features.shape == (DEFAULT_ROWS, len(FEATURE_NAMES))


def test_the_default_rate_and_feature_ranges_are_those_of_a_card_portfolio():
    dataset = generate(DatasetSpec(rows=20_000))
    column = {name: dataset.features[:, index] for index, name in enumerate(FEATURE_NAMES)}

    assert 0.12 < dataset.labels.mean() < 0.3
    assert column["age"].min() >= 21
    assert column["age"].max() <= 80
    assert column["utilization"].min() >= 0
    assert column["utilization"].max() <= 1.15
    assert np.all(column["late_payments_12m"] == np.round(column["late_payments_12m"]))
    assert np.corrcoef(column["utilization"], dataset.labels)[0, 1] > 0.2
    assert np.corrcoef(column["payment_ratio"], dataset.labels)[0, 1] < -0.1
