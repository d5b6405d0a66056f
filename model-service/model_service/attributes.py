"""The `ml.*` attribute names the service sets itself, listed once: spans and logs use these
constants, and caller baggage may never set any of them (core/telemetry.py)."""

from __future__ import annotations

ML_DATA_ID = "ml.data_id"
ML_MODEL_NAME = "ml.model.name"
ML_MODEL_VERSION = "ml.model.version"
ML_RUN_ID = "ml.run_id"
ML_PREDICTION_LABEL = "ml.prediction.label"
# The probability of the positive class (default).
ML_PREDICTION_SCORE = "ml.prediction.score"
ML_BATCH_SIZE = "ml.batch.size"
ML_BATCH_NOT_FOUND = "ml.batch.not_found"
ML_DATASET = "ml.dataset"
ML_DATA_IDS_REQUESTED = "ml.data_ids.requested"
ML_DATA_IDS_MISSING = "ml.data_ids.missing"
# The training pipeline's name for the version it writes (the spec's name).
ML_TRAINING_MODEL_VERSION = "ml.model_version"
# Set by the gateway on its spans; on this service's spans it could only be a caller's claim.
ML_CACHE_RESULT = "ml.cache.result"

SERVICE_OWNED = frozenset(
    {
        ML_DATA_ID,
        ML_MODEL_NAME,
        ML_MODEL_VERSION,
        ML_RUN_ID,
        ML_PREDICTION_LABEL,
        ML_PREDICTION_SCORE,
        ML_BATCH_SIZE,
        ML_BATCH_NOT_FOUND,
        ML_DATASET,
        ML_DATA_IDS_REQUESTED,
        ML_DATA_IDS_MISSING,
        ML_TRAINING_MODEL_VERSION,
        ML_CACHE_RESULT,
    }
)
