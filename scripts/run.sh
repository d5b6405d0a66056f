#!/usr/bin/env bash
# `make run`: the model service and the gateway together on this machine, with the
# embedded in-memory store, telemetry to a collector only if OTEL_EXPORTER_OTLP_ENDPOINT
# is set. Trains a model first if the cache has none. Ctrl-C stops both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cache-env.sh
source "$here/scripts/cache-env.sh"

model_port="${MODEL_SERVICE__PORT:-8001}"
gateway_port="${GATEWAY__SERVER__PORT:-8080}"
run_dir="$CACHE_DIR/run"
export MODEL_SERVICE__MODEL_DIR="${MODEL_SERVICE__MODEL_DIR:-$run_dir/models}"
export MODEL_SERVICE__DATA_DIR="${MODEL_SERVICE__DATA_DIR:-$run_dir/data}"
mkdir -p "$MODEL_SERVICE__MODEL_DIR" "$MODEL_SERVICE__DATA_DIR"

if [[ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]]; then
  # No collector: keep tracing (trace ids in responses, propagation) but export nothing.
  export OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none
  telemetry="not exported (set OTEL_EXPORTER_OTLP_ENDPOINT to send it to a collector)"
else
  telemetry="exported over OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT"
fi

echo "run: preparing the Python environment" >&2
venv="$(bash "$here/scripts/provision-python.sh" | tail -n 1)"

if [[ -z "$(ls -A "$MODEL_SERVICE__MODEL_DIR")" ]]; then
  echo "run: no model in $MODEL_SERVICE__MODEL_DIR yet: training one (first run only)" >&2
  OTEL_SERVICE_NAME=model-training "$venv/bin/python" -m model_service.train
fi

# Release: load tests against the prediction endpoint are one of its uses, and a debug
# build is several times slower.
echo "run: building the gateway (release)" >&2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/cargo-target}"
cargo build --quiet --release -p gateway --manifest-path "$here/Cargo.toml"
gateway_bin="$CARGO_TARGET_DIR/release/gateway"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo >&2
  echo "run: stopping" >&2
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# The /admin routes need a bearer token (model-service/README.md): yours if you set one,
# else a fresh one per run, in a file only you can read.
if [[ -z "${MODEL_SERVICE__ADMIN_TOKEN:-}${MODEL_SERVICE__ADMIN_TOKEN_FILE:-}" ]]; then
  export MODEL_SERVICE__ADMIN_TOKEN_FILE="$run_dir/admin.token"
  (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$MODEL_SERVICE__ADMIN_TOKEN_FILE")
fi
# How to send it, for the summary below (expanded by the shell you paste it into).
if [[ -n "${MODEL_SERVICE__ADMIN_TOKEN_FILE:-}" ]]; then
  admin_header="Authorization: Bearer \$(cat $MODEL_SERVICE__ADMIN_TOKEN_FILE)"
else
  admin_header="Authorization: Bearer \$MODEL_SERVICE__ADMIN_TOKEN"
fi
model_version_label="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("model-service"))')"

# Read by the instrumentation before the service's code runs (model-service/README.md):
# current HTTP semantic conventions, no spans for health probes, a sampler that keeps the
# caller's tracestate, and the resource's environment and version (yours appended win).
OTEL_SERVICE_NAME="${MODEL_OTEL_SERVICE_NAME:-model-service}" \
OTEL_SEMCONV_STABILITY_OPT_IN="${OTEL_SEMCONV_STABILITY_OPT_IN:-http}" \
OTEL_PYTHON_FASTAPI_EXCLUDED_URLS="${OTEL_PYTHON_FASTAPI_EXCLUDED_URLS:-health}" \
OTEL_TRACES_SAMPLER="${OTEL_TRACES_SAMPLER:-parentbased_always_on}" \
OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=local,service.version=$model_version_label${OTEL_RESOURCE_ATTRIBUTES:+,$OTEL_RESOURCE_ATTRIBUTES}" \
MODEL_SERVICE__PORT="$model_port" \
  "$venv/bin/opentelemetry-instrument" "$venv/bin/python" -m model_service &
pids+=("$!")

OTEL_SERVICE_NAME="${GATEWAY_OTEL_SERVICE_NAME:-inference-gateway}" \
GATEWAY__SERVER__PORT="$gateway_port" \
GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS="${GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS:-0}" \
GATEWAY__MODEL__URL="${GATEWAY__MODEL__URL:-http://127.0.0.1:$model_port}" \
  "$gateway_bin" &
pids+=("$!")

# Polls a URL until it answers 200, while the process behind it is alive.
wait_for() {
  local url="$1" pid="$2" name="$3" deadline=$((SECONDS + 180))
  until "$venv/bin/python" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)" "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run: the $name exited before it was ready" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "run: the $name did not become ready at $url" >&2
      exit 1
    fi
    sleep 0.5
  done
}
wait_for "http://127.0.0.1:$model_port/health" "${pids[0]}" "model service"
wait_for "http://127.0.0.1:$gateway_port/readyz" "${pids[1]}" "gateway"

cat <<INFO

  model service  http://127.0.0.1:$model_port
  gateway        http://127.0.0.1:$gateway_port   (API description: /openapi.json)
  store          embedded in-memory store
  telemetry      $telemetry

  Ask for a prediction (run it twice: a miss, then a hit):

    curl -s -X POST http://127.0.0.1:$gateway_port/v1/predict -H 'content-type: application/json' -d '{"data_id": "cust-000042"}'

  Model service admin routes (fault injection, version switch) take a bearer token:

    curl -s -H "$admin_header" http://127.0.0.1:$model_port/admin/faults

  Ctrl-C stops both services.

INFO
status=0
wait -n "${pids[@]}" || status=$?
echo "run: a service exited (status $status); stopping the other" >&2
exit "$status"
