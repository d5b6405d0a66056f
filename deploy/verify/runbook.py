"""`make verify`: the validation runbook as one command, exit 0 when every check passes.

It sends traffic through the gateway (cache misses and hits), fails one request on
purpose through the model service's fault injection, then waits until Elasticsearch
shows traces, logs and metrics of both services, the `ml.*` attributes, a traced
training run and the failed request's exception with its stack; it prints p95 per
stage. Defaults target the docker-compose stack; every URL and credential can be
overridden by a flag or the environment (`--help`). deploy/README.md, "Validation runbook".

Exit codes: 0 all checks passed, 1 a check failed, 2 the runbook could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from runbook_checks import (
    CheckResult,
    Indices,
    SearchClient,
    SearchError,
    format_latencies,
    run_checks,
    stage_latencies,
)
from runbook_traffic import RunRecord, TrafficError, run_traffic

EXIT_PASSED, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
# Between two looks at Elasticsearch while data is still arriving.
_POLL_INTERVAL_SECONDS = 3.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway-url", default=env("RUNBOOK_GATEWAY_URL", "http://127.0.0.1:8080"), help="env RUNBOOK_GATEWAY_URL"
    )
    parser.add_argument(
        "--model-service-url",
        default=env("RUNBOOK_MODEL_SERVICE_URL", "http://127.0.0.1:8001"),
        help="env RUNBOOK_MODEL_SERVICE_URL; its /admin/faults drives the controlled failure, with the "
        "service's admin token from MODEL_SERVICE__ADMIN_TOKEN or the file MODEL_SERVICE__ADMIN_TOKEN_FILE names",
    )
    parser.add_argument(
        "--elasticsearch-url",
        default=env("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
        help="env ELASTICSEARCH_URL; credentials: ELASTICSEARCH_API_KEY, or ELASTIC_PASSWORD(_FILE) for the user",
    )
    parser.add_argument(
        "--elasticsearch-user", default=env("ELASTICSEARCH_USERNAME", "elastic"), help="with ELASTIC_PASSWORD(_FILE)"
    )
    parser.add_argument(
        "--requests", type=int, default=int(env("RUNBOOK_REQUESTS", "20")), help="distinct ids, each sent twice"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=float(env("RUNBOOK_WAIT_SECONDS", "180")),
        help="seconds to wait for the data in Elasticsearch (the SDKs export metrics every 60 s by default)",
    )
    parser.add_argument("--traces-index", default=env("RUNBOOK_TRACES_INDEX", Indices.traces))
    parser.add_argument("--logs-index", default=env("RUNBOOK_LOGS_INDEX", Indices.logs))
    parser.add_argument("--metrics-index", default=env("RUNBOOK_METRICS_INDEX", Indices.metrics))
    parser.add_argument(
        "--training-lookback",
        default=env("RUNBOOK_TRAINING_LOOKBACK", "7d"),
        help="how far back to look for a traced training run (the compose stack trains on every `up`)",
    )
    parser.add_argument("--skip-training", action="store_true", help="do not require a traced training run")
    parser.add_argument("--record-out", type=Path, help="write the run record (the traces it produced) here")
    parser.add_argument("--check-only", type=Path, metavar="RECORD", help="send nothing; check a saved run record")
    return parser.parse_args(argv)


def search_client(args: argparse.Namespace) -> SearchClient:
    """Credentials as the stack's other scripts take them: an API key, or the user's password."""
    api_key = os.environ.get("ELASTICSEARCH_API_KEY")
    password = os.environ.get("ELASTIC_PASSWORD")
    if not password and (password_file := os.environ.get("ELASTIC_PASSWORD_FILE")):
        password = Path(password_file).read_text().strip()
    # Neither: an endpoint without security (the test bed's search node).
    auth = (args.elasticsearch_user, password) if password else None
    return SearchClient(args.elasticsearch_url, auth=auth, api_key=api_key)


def model_service_admin_token() -> str:
    """The model service's admin token, taken as the service takes it (same variables).

    Raises ValueError naming where to find it when neither variable is set.
    """
    token = os.environ.get("MODEL_SERVICE__ADMIN_TOKEN", "")
    if not token and (token_file := os.environ.get("MODEL_SERVICE__ADMIN_TOKEN_FILE")):
        token = Path(token_file).read_text().strip()
    if not token:
        raise ValueError(
            "the controlled failure needs the model service's admin token: set MODEL_SERVICE__ADMIN_TOKEN or "
            "MODEL_SERVICE__ADMIN_TOKEN_FILE (compose stack: `docker compose run --rm --no-deps -T secrets "
            "python /deploy/elasticsearch/setup.py show model-service/admin.token`)"
        )
    return token


def wait_for_checks(
    client: SearchClient, indices: Indices, run: RunRecord, training_lookback: str | None, wait_seconds: float
) -> list[CheckResult]:
    """Run the checks until all pass or `wait_seconds` have passed; the last results."""
    deadline = time.monotonic() + wait_seconds
    while True:
        results = run_checks(client, indices, run, training_lookback)
        if all(result.passed for result in results) or time.monotonic() >= deadline:
            return results
        time.sleep(_POLL_INTERVAL_SECONDS)


def report(results: list[CheckResult]) -> str:
    return "\n".join(f"[{'PASS' if result.passed else 'FAIL'}] {result.name}: {result.detail}" for result in results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    indices = Indices(traces=args.traces_index, logs=args.logs_index, metrics=args.metrics_index)
    client = search_client(args)
    try:
        client.ping()
        if args.check_only:
            run = RunRecord.from_json(args.check_only.read_text())
            print(f"checking the run recorded in {args.check_only}")
        else:
            print(f"traffic: {args.requests} ids twice through {args.gateway_url}, then one controlled failure")
            run = run_traffic(args.gateway_url, args.model_service_url, args.requests, model_service_admin_token())
            print(
                f"sent {len(run.requests)} requests; failed on purpose: trace {run.error_trace_id}; model {run.model}"
            )
        if args.record_out:
            run.save(args.record_out)
        print(f"waiting up to {args.wait:.0f} s for the data in {args.elasticsearch_url} ...")
        training_lookback = None if args.skip_training else args.training_lookback
        results = wait_for_checks(client, indices, run, training_lookback, args.wait)
        latencies = stage_latencies(client, indices, run, args.training_lookback)
    except (TrafficError, SearchError, OSError, ValueError) as error:
        print(f"runbook could not run: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(report(results))
    print("\np95 per stage (span duration)")
    print(format_latencies(latencies))
    failed = [result.name for result in results if not result.passed]
    print(f"\nrunbook {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    return EXIT_FAILED if failed else EXIT_PASSED


if __name__ == "__main__":
    sys.exit(main())
