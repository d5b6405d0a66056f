"""The population stability index that the training pipeline reports as drift."""

import numpy as np
import pytest

from model_service.drift import feature_drift, population_stability_index


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_samples_of_one_distribution_show_no_drift(rng):
    psi = population_stability_index(rng.normal(size=50_000), rng.normal(size=20_000))

    assert psi < 0.01


def test_a_half_standard_deviation_shift_is_reported_as_drift(rng):
    psi = population_stability_index(rng.normal(size=50_000), rng.normal(0.5, size=20_000))

    assert psi > 0.2


def test_the_index_grows_with_the_shift(rng):
    reference = rng.normal(size=50_000)
    shifts = [population_stability_index(reference, rng.normal(mean, size=20_000)) for mean in (0.1, 0.3, 0.6)]

    assert shifts == sorted(shifts)


def test_a_count_feature_with_repeated_values_is_measured(rng):
    psi = population_stability_index(rng.poisson(0.3, 50_000), rng.poisson(0.9, 20_000))

    assert np.isfinite(psi)
    assert psi > 0.2


def test_every_feature_is_measured_by_name(rng):
    reference = np.column_stack([rng.normal(size=10_000), rng.normal(size=10_000)])
    comparison = np.column_stack([rng.normal(size=10_000), rng.normal(1.0, size=10_000)])

    drift = feature_drift(reference, comparison, ["stable", "shifted"])

    assert drift["stable"] < 0.05 < 0.2 < drift["shifted"]
