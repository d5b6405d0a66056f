"""Distribution drift between a reference sample and a comparison sample: the population stability index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Keeps empty bins from making the logarithm infinite.
_SMALLEST_SHARE = 1e-4


def population_stability_index(reference: np.ndarray, comparison: np.ndarray, bins: int = 10) -> float:
    """PSI of one feature: sum over bins of (c - r) * ln(c / r), bins being the reference's deciles.

    Rule of thumb used by credit-risk teams: below 0.1 stable, 0.1-0.2 some shift,
    above 0.2 a shift worth acting on. Repeated values (counts) collapse to fewer bins.
    """
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    reference_share = _bin_shares(reference, edges)
    comparison_share = _bin_shares(comparison, edges)
    return float(np.sum((comparison_share - reference_share) * np.log(comparison_share / reference_share)))


def feature_drift(reference: np.ndarray, comparison: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """PSI of each column, by feature name."""
    return {
        name: population_stability_index(reference[:, column], comparison[:, column])
        for column, name in enumerate(names)
    }


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return np.maximum(counts / max(len(values), 1), _SMALLEST_SHARE)
