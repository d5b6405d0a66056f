"""The model service: a credit-default classifier, its training pipeline and its traced HTTP API.

Layout:
- `dataset`: the deterministic data generator (the source dataset).
- `features`: the feature store file and the `load_features` span.
- `drift`: the population stability index used by training.
- `model`: versioned artifacts on disk and the `predict` span (no web framework).
- `train`: the training pipeline (`python -m model_service.train`).
- `faults`: injected latency and errors for the runbook's controlled failure.
- `attributes`: the `ml.*` names the service sets itself; `spans`: custom spans, exceptions recorded once.
- `prediction_service`: feature lookup, inference, faults and counters, without HTTP.
- `api`: FastAPI routes, the admin token check and the error -> HTTP mapping; `main.create_app` wires it.
- `core`: settings, telemetry and W3C propagation; `__main__` runs the server; `bench` measures it.
"""
