"""The runbook's traffic: cache misses and hits through the gateway, then one controlled
failure through the model service's fault injection, written down as a run record."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

# The model service's dataset has 120,000 rows, `cust-000000` .. `cust-119999`
# (model-service/model_service/dataset.py): ids drawn at random from it are almost
# never in the prediction store yet, so the first request for each is a miss.
DEFAULT_ID_SPACE = 120_000
# Per HTTP call: the gateway's own total deadline is shorter, so a hung call is a bug, not a slow model.
_HTTP_TIMEOUT_SECONDS = 30
# A failure request that happened to hit the cache never reached the model; try a few fresh ids.
_FAILURE_ATTEMPTS = 5


class TrafficError(Exception):
    """The services could not be driven (down, not ready, or answering outside the contract)."""


@dataclass(frozen=True)
class RequestRecord:
    """One prediction request the runbook sent and what the gateway answered."""

    data_id: str
    status: int
    trace_id: str
    cache: str | None


@dataclass(frozen=True)
class RunRecord:
    """What the checks look for: the run's time window and the traces it produced."""

    started_at_ms: int
    finished_at_ms: int
    requests: list[RequestRecord] = field(default_factory=list)
    # The trace of the request failed on purpose (the model answered 500, the gateway 502).
    error_trace_id: str = ""
    # name, version, run_id of the model that served the run, as the gateway reported it.
    model: dict[str, str] = field(default_factory=dict)

    def succeeded(self) -> list[RequestRecord]:
        return [request for request in self.requests if request.status == 200]

    def trace_ids(self) -> list[str]:
        """Every trace the run produced, the failure's included."""
        ids = [request.trace_id for request in self.requests if request.trace_id]
        return sorted({*ids, *([self.error_trace_id] if self.error_trace_id else [])})

    def trace_ids_with_cache(self, cache: str) -> list[str]:
        return sorted({request.trace_id for request in self.succeeded() if request.cache == cache})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        raw = json.loads(text)
        raw["requests"] = [RequestRecord(**request) for request in raw.get("requests", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())


def run_traffic(
    gateway_url: str,
    model_service_url: str,
    distinct_ids: int,
    admin_token: str,
    id_space: int = DEFAULT_ID_SPACE,
    rng: random.Random | None = None,
) -> RunRecord:
    """Send each of `distinct_ids` fresh ids twice (a miss, then a hit), then one request
    while the model service fails every prediction (set through its /admin routes, which
    take `admin_token`); the record of all of it."""
    rng = rng or random.Random()
    session = requests.Session()
    _require_ready(session, gateway_url, model_service_url)
    # Our clock and the services' are the same host's (or the compose VM's); a little
    # slack keeps a span that starts with our first request inside the window.
    started_at_ms = int(time.time() * 1000) - 5_000
    ids = [f"cust-{index:06d}" for index in rng.sample(range(id_space), distinct_ids + _FAILURE_ATTEMPTS)]
    traffic_ids, failure_ids = ids[:distinct_ids], ids[distinct_ids:]

    records: list[RequestRecord] = []
    for data_id in traffic_ids:
        for _ in ("miss", "hit"):
            record = _predict(session, gateway_url, data_id)
            if record.status != 200:
                raise TrafficError(f"POST /v1/predict {data_id} answered {record.status}; the stack is not healthy")
            records.append(record)

    error_trace_id = _controlled_failure(session, gateway_url, model_service_url, admin_token, failure_ids, records)
    served = _served_model(session, gateway_url, traffic_ids[0])
    return RunRecord(
        started_at_ms=started_at_ms,
        finished_at_ms=int(time.time() * 1000),
        requests=records,
        error_trace_id=error_trace_id,
        model=served,
    )


def _require_ready(session: requests.Session, gateway_url: str, model_service_url: str) -> None:
    for what, url in (("gateway", f"{gateway_url}/readyz"), ("model service", f"{model_service_url}/health")):
        try:
            response = session.get(url, timeout=_HTTP_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise TrafficError(f"{what} not reachable at {url}: {error}") from error
        if response.status_code != 200:
            raise TrafficError(f"{what} not ready: GET {url} answered {response.status_code} {response.text[:300]}")


def _predict(session: requests.Session, gateway_url: str, data_id: str) -> RequestRecord:
    try:
        response = session.post(f"{gateway_url}/v1/predict", json={"data_id": data_id}, timeout=_HTTP_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        raise TrafficError(f"POST {gateway_url}/v1/predict failed: {error}") from error
    body = _json_or_empty(response)
    if response.status_code == 200:
        return RequestRecord(data_id, 200, body.get("trace_id", ""), body.get("cache"))
    # Error bodies carry the trace id too: {"error": {"code", "message", "trace_id"}}.
    return RequestRecord(data_id, response.status_code, (body.get("error") or {}).get("trace_id") or "", None)


def _controlled_failure(
    session: requests.Session,
    gateway_url: str,
    model_service_url: str,
    admin_token: str,
    failure_ids: list[str],
    records: list[RequestRecord],
) -> str:
    """Every prediction fails in the model service while one fresh id is requested; the
    previous fault settings come back whatever happens."""
    faults_url = f"{model_service_url}/admin/faults"
    # Only on the admin requests: the gateway has no business seeing the model service's token.
    admin = {"Authorization": f"Bearer {admin_token}"}
    previous = session.get(faults_url, headers=admin, timeout=_HTTP_TIMEOUT_SECONDS)
    if previous.status_code in (401, 403):
        raise TrafficError(
            f"GET {faults_url} answered {previous.status_code}: the admin token is wrong or the service has none "
            f"({_json_or_empty(previous).get('error', {}).get('message', previous.text[:300])})"
        )
    if previous.status_code != 200:
        raise TrafficError(f"GET {faults_url} answered {previous.status_code}: no fault injection to drive")
    response = session.put(
        faults_url, json={"latency_ms": 0, "error_rate": 1.0}, headers=admin, timeout=_HTTP_TIMEOUT_SECONDS
    )
    if response.status_code != 200:
        raise TrafficError(f"PUT {faults_url} answered {response.status_code}: {response.text[:300]}")
    try:
        for data_id in failure_ids:
            record = _predict(session, gateway_url, data_id)
            records.append(record)
            if record.status == 200 and record.cache == "hit":
                continue  # served from the store: the model was never asked
            if record.status != 502 or not record.trace_id:
                raise TrafficError(
                    f"with every model prediction failing, POST /v1/predict {data_id} answered {record.status} "
                    f"(trace {record.trace_id or 'none'}); the contract says 502 with the trace id"
                )
            return record.trace_id
        raise TrafficError(f"all {len(failure_ids)} ids of the controlled failure were cache hits")
    finally:
        session.put(faults_url, json=previous.json(), headers=admin, timeout=_HTTP_TIMEOUT_SECONDS)


def _served_model(session: requests.Session, gateway_url: str, data_id: str) -> dict[str, str]:
    stored = session.get(f"{gateway_url}/v1/predictions/{data_id}", timeout=_HTTP_TIMEOUT_SECONDS)
    model = _json_or_empty(stored).get("model") or {}
    return {key: str(model[key]) for key in ("name", "version", "run_id") if key in model}


def _json_or_empty(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
