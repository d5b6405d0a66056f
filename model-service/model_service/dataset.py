"""Generates the credit-card default dataset deterministically from a fixed seed.

The problem is the one behind the UCI "Default of Credit Card Clients" data: given
a card holder's profile and recent repayment behaviour, will they miss next month's
payment? Nothing is downloaded; the same seed and size give the same rows, bit for
bit, with the pinned numpy.

Generative story, per card holder:
- A hidden financial-stress factor (standard normal) that no feature shows directly.
- Demographics: age, and an income that rises with age until the mid-forties
  (log-normal around that curve).
- The bank's decisions: a credit limit that scales with income, and a tenure
  (months on book) bounded by age.
- Behaviour driven by stress: utilisation of the limit, late payments in the last
  twelve months, recent credit inquiries, the share of the last statement that was
  repaid, and debt-to-income.
- The label: a logistic function of those features (late payments and high
  utilisation weigh most, with a penalty above 90% utilisation and for young,
  low-income holders) plus the part of the stress factor that the features miss,
  which is what keeps the problem from being perfectly separable.
- Time: an application month 0..23. In the last quarter (months 21-23) rates rose:
  utilisation and inquiries drift upwards while the rules linking features to
  default stay the same, a covariate shift that the training pipeline's drift
  check is there to notice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bump the suffix whenever the generative story changes: it names the store file.
DATASET_NAME = "credit-card-default-synthetic-v1"
DEFAULT_SEED = 20_050_401
DEFAULT_ROWS = 120_000
MONTHS = 24
RECENT_MONTHS = 3

CLASS_NAMES = ("no_default", "default")

FEATURES: tuple[tuple[str, str], ...] = (
    ("age", "age of the card holder in years"),
    ("annual_income", "declared yearly income in USD"),
    ("credit_limit", "credit limit granted on the card in USD"),
    ("utilization", "statement balance divided by the credit limit"),
    ("months_on_book", "months since the account was opened"),
    ("late_payments_12m", "number of late payments in the last twelve months"),
    ("recent_inquiries_6m", "credit inquiries by other lenders in the last six months"),
    ("payment_ratio", "share of the last statement balance that was repaid"),
    ("debt_to_income", "total monthly debt service divided by monthly income"),
    ("open_credit_lines", "number of open credit lines across lenders"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset: the generator's name, size and seed decide every row."""

    name: str = DATASET_NAME
    rows: int = DEFAULT_ROWS
    seed: int = DEFAULT_SEED

    @property
    def file_name(self) -> str:
        """The feature store file holding this dataset."""
        return f"{self.name}-{self.rows}-{self.seed}.npz"


@dataclass(frozen=True)
class Dataset:
    """Rows of the dataset: one data id, feature vector, label and month each."""

    data_ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    application_month: np.ndarray


def data_id(index: int) -> str:
    """The data id of row `index`: what clients send to ask for a prediction."""
    return f"cust-{index:06d}"


def generate(spec: DatasetSpec) -> Dataset:
    """Draw `spec.rows` card holders from the generative story above."""
    rows = spec.rows
    rng = np.random.default_rng(spec.seed)
    month = rng.integers(0, MONTHS, size=rows)
    recent = month >= MONTHS - RECENT_MONTHS
    stress = rng.standard_normal(rows)

    age = np.clip(rng.gamma(shape=9.0, scale=4.6, size=rows) + 18.0, 21.0, 80.0)
    income_curve = 10.2 + 0.045 * (age - 21.0) - 0.0006 * (age - 21.0) ** 2
    annual_income = np.exp(income_curve + 0.45 * rng.standard_normal(rows) - 0.12 * stress)
    credit_limit = np.round(0.25 * annual_income * np.exp(0.35 * rng.standard_normal(rows)), -2)
    months_on_book = np.minimum(rng.gamma(shape=2.0, scale=30.0, size=rows), (age - 18.0) * 12.0)

    utilization_logit = -0.6 + 0.9 * stress + 0.5 * rng.standard_normal(rows) + 0.6 * recent
    utilization = np.clip(1.15 / (1.0 + np.exp(-utilization_logit)), 0.0, 1.15)
    late_payments = rng.poisson(np.exp(-1.4 + 0.85 * stress))
    inquiries = rng.poisson(np.exp(-0.2 + 0.35 * stress + 0.4 * recent))
    payment_ratio = 1.0 / (1.0 + np.exp(-(0.8 - 1.1 * stress + 0.8 * rng.standard_normal(rows))))
    debt_to_income = np.clip(
        0.18 + 0.07 * stress + 0.04 * rng.standard_normal(rows) + 0.02 * credit_limit / annual_income,
        0.0,
        1.0,
    )
    open_lines = rng.poisson(3.0 + 0.02 * (age - 21.0) + 0.4 * np.maximum(stress, 0.0))

    default_logit = (
        -2.6
        + 0.55 * np.minimum(late_payments, 4)
        + 1.6 * utilization
        + 1.4 * (utilization > 0.9)
        - 1.3 * payment_ratio
        + 2.0 * debt_to_income
        + 0.12 * inquiries
        - 0.004 * months_on_book
        + 0.6 * ((age < 30.0) & (annual_income < 30_000.0))
        + 0.9 * stress
    )
    default = rng.random(rows) < 1.0 / (1.0 + np.exp(-default_logit))

    features = np.column_stack(
        [
            age,
            annual_income,
            credit_limit,
            utilization,
            months_on_book,
            late_payments,
            inquiries,
            payment_ratio,
            debt_to_income,
            open_lines,
        ]
    ).astype(np.float32)
    return Dataset(
        data_ids=np.array([data_id(index) for index in range(rows)]),
        features=features,
        labels=default.astype(np.int8),
        application_month=month.astype(np.int16),
    )
