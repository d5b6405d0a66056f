"""A steady mixed load (stored ids and new ones) through the gateway on a few client
threads, bounded in count and in time, recording every answer with when it was sent;
and the latency figures the fault tests print (never assert: the bed is noisy)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import requests

HIT = "hit"
MISS = "miss"


@dataclass(frozen=True)
class Answer:
    """One request of the load and what came back (`status` None: no HTTP answer at all)."""

    data_id: str
    expected: str  # HIT (a stored id) or MISS (a new id)
    sent: float  # time.monotonic() when sent
    done: float  # time.monotonic() when answered or failed
    status: int | None
    error: str | None = None
    cache: str | None = None
    code: str | None = None
    retry_after: str | None = None
    connection: str | None = None
    created_at: str | None = None
    trace_id: str | None = None

    @property
    def seconds(self) -> float:
        return self.done - self.sent

    def brief(self) -> str:
        what = self.status if self.status is not None else self.error
        return f"{self.expected} {self.data_id} -> {what} {self.code or self.cache or ''} after {self.seconds:.3f}s"


def post_predict(session: requests.Session, url: str, data_id: str, expected: str, timeout: float) -> Answer:
    """One `POST /v1/predict`, recorded."""
    sent = time.monotonic()
    try:
        response = session.post(f"{url}/v1/predict", json={"data_id": data_id}, timeout=timeout)
    except requests.RequestException as error:
        return Answer(data_id, expected, sent, time.monotonic(), None, error=type(error).__name__)
    done = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    return Answer(
        data_id,
        expected,
        sent,
        done,
        response.status_code,
        cache=body.get("cache") if isinstance(body, dict) else None,
        code=error.get("code") if isinstance(error, dict) else None,
        retry_after=response.headers.get("retry-after"),
        connection=response.headers.get("connection"),
        created_at=body.get("created_at") if isinstance(body, dict) else None,
        trace_id=body.get("trace_id") if isinstance(body, dict) else None,
    )


class MixedLoad:
    """`threads` clients, each on its own kept-alive session, alternating at random between
    stored ids (`hit_ids`) and new ones (drawn once each from `new_ids`), pausing `pause`
    seconds between requests; stops at `max_requests` answers, after `max_seconds`, or on
    `stop()`. Given several gateway URLs (replicas), client n sends to URL n modulo their
    number, as a load balancer with sticky connections would. Use as a context manager so
    the threads end also when a test fails."""

    def __init__(
        self,
        url: str | Sequence[str],
        hit_ids: list[str],
        new_ids: Iterable[str],
        threads: int = 4,
        hit_share: float = 0.5,
        pause: float = 0.05,
        max_requests: int = 1500,
        max_seconds: float = 90.0,
        request_timeout: float = 15.0,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]
        self._hit_ids = hit_ids
        self._new_ids: Iterator[str] = iter(new_ids)
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(threads)]
        self._hit_share = hit_share
        self._pause = pause
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._stopping = threading.Event()
        self.started = 0.0

    def __enter__(self) -> MixedLoad:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        """Stop sending, wait for the requests in flight; every answer, in the order received."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self._request_timeout + 5)
        return self.answers()

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def count(self, condition: Callable[[Answer], bool] = lambda a: True) -> int:
        with self._lock:
            return sum(1 for answer in self._answers if condition(answer))

    def wait_for(self, count: int, condition: Callable[[Answer], bool], description: str, timeout: float) -> None:
        """Block until `count` answers meet `condition` (the load keeps running)."""
        deadline = time.monotonic() + timeout
        while self.count(condition) < count:
            if time.monotonic() > deadline or self._stopping.is_set():
                raise TimeoutError(f"{self.count(condition)} of {count} answers {description} within {timeout:.0f}s")
            time.sleep(0.05)

    def _next(self, rng: random.Random) -> tuple[str, str] | None:
        if rng.random() < self._hit_share:
            return rng.choice(self._hit_ids), HIT
        with self._lock:
            data_id = next(self._new_ids, None)
        return (data_id, MISS) if data_id is not None else None

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        deadline = self.started + self._max_seconds
        with requests.Session() as session:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self._answers) >= self._max_requests:
                        return
                chosen = self._next(rng)
                if chosen is None:
                    return
                url = self.urls[number % len(self.urls)]
                answer = post_predict(session, url, *chosen, timeout=self._request_timeout)
                with self._lock:
                    self._answers.append(answer)
                self._stopping.wait(self._pause)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def latency_line(label: str, seconds: list[float]) -> str:
    """`label: n=…, p50=… ms, p95=… ms, max=… ms`, the form the closing note quotes."""
    if not seconds:
        return f"{label}: n=0"
    ms = [s * 1000 for s in seconds]
    return (
        f"{label}: n={len(ms)}, p50={percentile(ms, 0.5):.1f} ms, "
        f"p95={percentile(ms, 0.95):.1f} ms, max={max(ms):.1f} ms"
    )
