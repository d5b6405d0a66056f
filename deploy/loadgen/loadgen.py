"""Steady prediction traffic against the gateway, for the compose profile `loadgen`:
enough requests, hits and misses for the dashboard and the service map to fill.

Bounded by design: a fixed rate, a fixed duration (default 10 minutes) and a fixed
set of ids; it stops by itself. Ids repeat (drawn with a skew towards the low ones),
so the cache warms up and both hits and misses show.

Settings (environment): GATEWAY_URL, LOADGEN_RATE (requests/s, default 20),
LOADGEN_DURATION_S (default 600), LOADGEN_ID_SPACE (distinct ids, default 5000),
LOADGEN_ID_FORMAT (default `cust-{:06d}`, the model service's ids),
LOADGEN_CONCURRENCY (default 8), LOADGEN_HEARTBEAT (file touched every second,
which the container's health check reads).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path


def main() -> int:
    url = os.environ.get("GATEWAY_URL", "http://gateway:8080").rstrip("/") + "/v1/predict"
    rate = float(os.environ.get("LOADGEN_RATE", "20"))
    duration = float(os.environ.get("LOADGEN_DURATION_S", "600"))
    id_space = int(os.environ.get("LOADGEN_ID_SPACE", "5000"))
    id_format = os.environ.get("LOADGEN_ID_FORMAT", "cust-{:06d}")
    workers = int(os.environ.get("LOADGEN_CONCURRENCY", "8"))
    heartbeat = Path(os.environ.get("LOADGEN_HEARTBEAT", "/tmp/loadgen.heartbeat"))

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    interval = workers / rate if rate > 0 else 1.0

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            # Pareto-skewed ids: a warm head that hits, a long tail that misses.
            index = min(int(rng.paretovariate(1.2)) - 1, id_space - 1)
            body = json.dumps({"data_id": id_format.format(index)}).encode()
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=15) as response:
                    cache = json.loads(response.read()).get("cache", "?")
                    outcome = f"200 {cache}"
            except urllib.error.HTTPError as err:
                outcome = str(err.code)
            except OSError as err:
                outcome = type(err).__name__
            with lock:
                outcomes[outcome] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=worker, args=(seed,), daemon=True) for seed in range(workers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        heartbeat.touch()
        time.sleep(1)
        with lock:
            total = sum(outcomes.values())
        if total and int(time.monotonic()) % 30 == 0:
            with lock:
                print(f"loadgen: {total} requests {dict(outcomes)}", flush=True)
    print(f"loadgen: done, {sum(outcomes.values())} requests {dict(outcomes)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
