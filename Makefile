# One entry point for newcomers and CI: `make run` starts the main job, `make test`
# runs every test. Everything downloaded or built is cached outside the clone
# (scripts/cache-env.sh), so a second run reuses it.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CACHE_DIR := $(or $(GATEWAY_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/inference-gateway)
export GATEWAY_CACHE_DIR := $(CACHE_DIR)
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/cargo-target
# The venv's path, computed by the script that creates it (only when a recipe needs it).
VENV = $$(bash scripts/provision-python.sh | tail -n 1)

.PHONY: run test provision lint test-rust test-model-service test-e2e verify

## Start the model service and the gateway (embedded store) and print where to send a request.
run:
	bash scripts/run.sh

## Every test: provisioning, lint, Rust tests, model service tests, cross-service tests on the bed.
test: provision lint test-rust test-model-service test-e2e

## Build or download the bed's parts once: collector, search node, Python environment,
## and the Compose file checker for machines without the Compose plugin.
provision:
	bash scripts/provision-collector.sh
	bash scripts/provision-search-node.sh
	bash scripts/provision-python.sh
	bash deploy/tools/compose-config/build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	venv=$(VENV); "$$venv/bin/ruff" check model-service tests deploy bench; "$$venv/bin/ruff" format --check model-service tests deploy bench

test-rust:
	cargo test --workspace --locked

test-model-service:
	venv=$(VENV); cd model-service && "$$venv/bin/pytest"

test-e2e:
	venv=$(VENV); cd tests && "$$venv/bin/pytest"

## The performance benchmark (bench/RESULTS.md): its own search node, model service and release
## gateways, driven by wrk, a few minutes; never part of `make test`. Extra flags: BENCH_ARGS
## (e.g. BENCH_ARGS="--seconds 10 --repeats 5").
.PHONY: bench
bench:
	bash bench/provision-wrk.sh
	venv=$(VENV); "$$venv/bin/python" bench/bench.py $(BENCH_ARGS)

## The validation runbook against the running compose stack: traffic, a controlled failure,
## then the checks in Elasticsearch and p95 per stage (deploy/README.md, "Validation runbook").
## The `elastic` password: ELASTIC_PASSWORD, else the one the stack keeps in its secrets volume;
## the model service's admin token likewise (MODEL_SERVICE__ADMIN_TOKEN).
## Extra flags: VERIFY_ARGS (e.g. VERIFY_ARGS=--help).
verify:
	venv=$(VENV); \
	if [ -z "$${ELASTIC_PASSWORD:-}$${ELASTIC_PASSWORD_FILE:-}$${ELASTICSEARCH_API_KEY:-}" ] && command -v docker >/dev/null; then \
		ELASTIC_PASSWORD="$$(docker compose run --rm --no-deps -T secrets python /deploy/elasticsearch/setup.py show elastic/elastic.password 2>/dev/null || true)"; \
		export ELASTIC_PASSWORD; \
	fi; \
	if [ -z "$${MODEL_SERVICE__ADMIN_TOKEN:-}$${MODEL_SERVICE__ADMIN_TOKEN_FILE:-}" ] && command -v docker >/dev/null; then \
		MODEL_SERVICE__ADMIN_TOKEN="$$(docker compose run --rm --no-deps -T secrets python /deploy/elasticsearch/setup.py show model-service/admin.token 2>/dev/null || true)"; \
		export MODEL_SERVICE__ADMIN_TOKEN; \
	fi; \
	"$$venv/bin/python" deploy/verify/runbook.py $(VERIFY_ARGS)
