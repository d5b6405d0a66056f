"""Single-request latency of a running model service: sequential POST /predict on one kept-alive connection.

Starts nothing: point it at a service, e.g. `python -m model_service.bench --url http://127.0.0.1:8001`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from model_service.dataset import data_id


def measure(url: str, requests: int, warmup: int) -> list[float]:
    """Milliseconds per request for `requests` known ids, after `warmup` unmeasured ones."""
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
    latencies = []
    try:
        for index in range(warmup + requests):
            body = json.dumps({"data_id": data_id(index)})
            started = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status} for {data_id(index)}")
            if index >= warmup:
                latencies.append(elapsed_ms)
    finally:
        connection.close()
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_service.bench", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="the running service")
    parser.add_argument("--requests", type=int, default=300, help="measured requests")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests first")
    args = parser.parse_args(argv)
    latencies = measure(args.url, args.requests, args.warmup)
    percentiles = statistics.quantiles(latencies, n=100)
    summary = {
        "requests": len(latencies),
        "median_ms": round(statistics.median(latencies), 3),
        "p90_ms": round(percentiles[89], 3),
        "p99_ms": round(percentiles[98], 3),
        "min_ms": round(min(latencies), 3),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
