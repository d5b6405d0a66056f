"""Loads the Elasticsearch and Kibana objects of deploy/ into a running stack;
idempotent: a second run leaves the same objects, updated in place, never duplicated.

1. the predictions index template (`PUT _index_template`, create-or-replace) and,
   if the alias does not exist yet, the versioned index behind it with the alias;
2. the data views, Lens panels and dashboard (`saved_objects/_import` with
   `overwrite=true`: fixed ids, replaced in place);
3. the alert rules (fixed ids: `POST /api/alerting/rule/{id}` when missing,
   `PUT` with the updatable fields when present).

Runs as the compose one-shot `kibana-objects`; by hand:

    ELASTIC_PASSWORD=... python deploy/kibana/load_objects.py \
        --elasticsearch-url http://127.0.0.1:9200 --kibana-url http://127.0.0.1:5601

Standard library only. Credentials: the `elastic` user (ELASTIC_PASSWORD, or
ELASTIC_PASSWORD_FILE), or an API key with the needed privileges (LOADER_API_KEY).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent.parent
INDEX_TEMPLATE = DEPLOY_DIR / "elasticsearch" / "ml-predictions.index-template.json"
SAVED_OBJECTS = DEPLOY_DIR / "kibana" / "saved-objects.ndjson"
RULES_DIR = DEPLOY_DIR / "kibana" / "rules"

TEMPLATE_NAME = "ml-predictions"
ALIAS = "ml-predictions"
# The gateway's versioned index (StoreSettings::index_name: `<alias>-v1`).
INDEX = "ml-predictions-v1"

# Fields a rule update (PUT) accepts; the rest are fixed at creation.
RULE_UPDATE_FIELDS = ("name", "tags", "schedule", "params", "actions", "throttle", "notify_when")


class LoadError(RuntimeError):
    """A request the loader cannot continue without failed."""


class Client:
    """JSON over HTTP to one base URL with one Authorization header."""

    def __init__(self, base_url: str, authorization: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.authorization = authorization
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: object = None, raw: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", self.authorization)
        # Kibana refuses state-changing calls without it (CSRF guard); Elasticsearch ignores it.
        req.add_header("kbn-xsrf", "inference-gateway-loader")
        if data is not None:
            req.add_header("Content-Type", content_type or "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read())

    def ensure(self, method: str, path: str, body: object = None, **kwargs: object) -> object:
        status, answer = self.request(method, path, body, **kwargs)
        if status >= 300:
            raise LoadError(f"{method} {path} answered {status}: {answer}")
        return answer


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"raw": raw.decode(errors="replace")[:500]}


def wait_for(description: str, check: callable, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while time.monotonic() < deadline:
        try:
            ok, last = check()
            if ok:
                return
        except OSError as err:
            last = err
        time.sleep(2)
    raise LoadError(f"{description} not ready after {timeout:.0f}s: {last}")


def load_index_template(es: Client) -> None:
    es.ensure("PUT", f"/_index_template/{TEMPLATE_NAME}", json.loads(INDEX_TEMPLATE.read_text()))
    status, _ = es.request("HEAD", f"/_alias/{ALIAS}")
    if status == 200:
        print(f"loader: index template {TEMPLATE_NAME} updated; alias {ALIAS} exists")
        return
    status, answer = es.request("PUT", f"/{INDEX}", {"aliases": {ALIAS: {"is_write_index": True}}})
    # The gateway creates the same index at start-up; whoever is second is fine.
    if status >= 300 and "resource_already_exists_exception" not in json.dumps(answer):
        raise LoadError(f"PUT /{INDEX} answered {status}: {answer}")
    print(f"loader: index template {TEMPLATE_NAME} updated; {INDEX} with alias {ALIAS} in place")


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/ndjson\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def load_saved_objects(kibana: Client) -> None:
    body, content_type = multipart("file", SAVED_OBJECTS.name, SAVED_OBJECTS.read_bytes())
    answer = kibana.ensure("POST", "/api/saved_objects/_import?overwrite=true", raw=body, content_type=content_type)
    if not answer.get("success"):
        raise LoadError(f"saved objects import reported errors: {answer.get('errors')}")
    print(f"loader: {answer.get('successCount')} saved objects imported (overwrite)")


def rule_definitions() -> list[dict]:
    """The rule files, without their comment keys (leading underscore)."""
    rules = []
    for path in sorted(RULES_DIR.glob("*.json")):
        rule = json.loads(path.read_text())
        rules.append({key: value for key, value in rule.items() if not key.startswith("_")})
    return rules


def load_rules(kibana: Client) -> None:
    for rule in rule_definitions():
        rule_id = rule.pop("id")
        path = f"/api/alerting/rule/{rule_id}"
        status, _ = kibana.request("GET", path)
        if status == 404:
            kibana.ensure("POST", path, rule)
            print(f"loader: rule {rule_id} created")
        elif status == 200:
            kibana.ensure("PUT", path, {key: rule[key] for key in RULE_UPDATE_FIELDS if key in rule})
            print(f"loader: rule {rule_id} updated")
        else:
            raise LoadError(f"GET {path} answered {status}")


def authorization() -> str:
    if api_key := os.environ.get("LOADER_API_KEY"):
        return f"ApiKey {api_key}"
    password = os.environ.get("ELASTIC_PASSWORD")
    if not password and (password_file := os.environ.get("ELASTIC_PASSWORD_FILE")):
        password = Path(password_file).read_text().strip()
    if not password:
        raise LoadError("set ELASTIC_PASSWORD or ELASTIC_PASSWORD_FILE (user elastic), or LOADER_API_KEY")
    return "Basic " + base64.b64encode(f"elastic:{password}".encode()).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elasticsearch-url", default=os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--kibana-url", default=os.environ.get("KIBANA_URL", "http://127.0.0.1:5601"))
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for both to answer")
    args = parser.parse_args(argv)
    try:
        auth = authorization()
        es = Client(args.elasticsearch_url, auth)
        kibana = Client(args.kibana_url, auth)
        wait_for("Elasticsearch", lambda: _ready(es.request("GET", "/_cluster/health")), args.wait)
        wait_for("Kibana", lambda: _kibana_available(kibana.request("GET", "/api/status")), args.wait)
        load_index_template(es)
        load_saved_objects(kibana)
        load_rules(kibana)
    except LoadError as err:
        print(f"loader: {err}", file=sys.stderr)
        return 1
    print("loader: done")
    return 0


def _ready(answer: tuple[int, object]) -> tuple[bool, object]:
    return answer[0] == 200, answer


def _kibana_available(answer: tuple[int, object]) -> tuple[bool, object]:
    status, body = answer
    level = body.get("status", {}).get("overall", {}).get("level") if isinstance(body, dict) else None
    return status == 200 and level == "available", (status, level)


if __name__ == "__main__":
    sys.exit(main())
