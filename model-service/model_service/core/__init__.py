"""Settings and telemetry, used by the entry points (`__main__`, `train`) and tests."""
