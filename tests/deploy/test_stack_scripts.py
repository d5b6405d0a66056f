"""The compose stack's one-shot scripts are idempotent: run twice against a fake
Elasticsearch + Kibana that keeps state, the second run updates in place and
creates nothing new (deploy/kibana/load_objects.py, deploy/elasticsearch/setup.py)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import DEPLOY_DIR

PASSWORD = "test-password"
BASIC = "Basic " + base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
RULE_CREATE_ONLY = {"rule_type_id", "consumer", "enabled", "id"}


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeStack:
    """The few Elasticsearch and Kibana endpoints the scripts call, with state."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.templates: dict[str, dict] = {}
        self.indices: dict[str, dict] = {}
        self.saved_objects: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.roles: dict[str, dict] = {}
        self.api_keys: list[str] = []
        self.kibana_system_password: str | None = None

    def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, object]:
        self.calls.append((method, path))
        headers = {name.lower(): value for name, value in headers.items()}
        auth = headers.get("authorization", "")
        if path == "/_security/_authenticate":
            key = auth.removeprefix("ApiKey ")
            return (200, {"username": "key"}) if key in self.api_keys else (401, {"error": "bad key"})
        if auth != BASIC:
            return 401, {"error": "missing authentication credentials"}
        if method != "GET" and method != "HEAD" and path.startswith("/api/") and "kbn-xsrf" not in headers:
            return 400, {"message": "Request must contain a kbn-xsrf header."}
        route = (method, re.sub(r"\?.*", "", path))
        match route:
            case ("GET", "/_cluster/health"):
                return 200, {"status": "yellow"}
            case ("GET", "/api/status"):
                return 200, {"status": {"overall": {"level": "available"}}}
            case ("PUT", p) if p.startswith("/_index_template/"):
                self.templates[p.rsplit("/", 1)[1]] = json.loads(body)
                return 200, {"acknowledged": True}
            case ("HEAD", p) if p.startswith("/_alias/"):
                alias = p.rsplit("/", 1)[1]
                return (200 if any(alias in i.get("aliases", {}) for i in self.indices.values()) else 404), {}
            case ("PUT", p) if p.startswith("/ml-predictions-"):
                name = p[1:]
                if name in self.indices:
                    return 400, {"error": {"type": "resource_already_exists_exception"}}
                self.indices[name] = json.loads(body)
                return 200, {"acknowledged": True}
            case ("POST", "/api/saved_objects/_import"):
                if "overwrite=true" not in path:
                    return 409, {"error": "conflict"}
                ndjson = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
                objects = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
                for obj in objects:
                    self.saved_objects[obj["id"]] = obj
                return 200, {"success": True, "successCount": len(objects)}
            case ("GET", p) if p.startswith("/api/alerting/rule/"):
                rule_id = p.rsplit("/", 1)[1]
                return (200, self.rules[rule_id]) if rule_id in self.rules else (404, {"message": "not found"})
            case ("POST", p) if p.startswith("/api/alerting/rule/"):
                rule_id = p.rsplit("/", 1)[1]
                if rule_id in self.rules:
                    return 409, {"message": "already exists"}
                self.rules[rule_id] = json.loads(body)
                return 200, {"id": rule_id}
            case ("PUT", p) if p.startswith("/api/alerting/rule/"):
                rule_id = p.rsplit("/", 1)[1]
                update = json.loads(body)
                if rule_id not in self.rules:
                    return 404, {"message": "not found"}
                if RULE_CREATE_ONLY & set(update):
                    return 400, {"message": f"cannot update {sorted(RULE_CREATE_ONLY & set(update))}"}
                self.rules[rule_id].update(update)
                return 200, {"id": rule_id}
            case ("POST", "/_security/user/kibana_system/_password"):
                self.kibana_system_password = json.loads(body)["password"]
                return 200, {}
            case ("PUT", p) if p.startswith("/_security/role/"):
                self.roles[p.rsplit("/", 1)[1]] = json.loads(body)
                return 200, {"role": {"created": True}}
            case ("POST", "/_security/api_key"):
                key = f"key-{len(self.api_keys) + 1}"
                self.api_keys.append(key)
                return 200, {"encoded": key}
        return 404, {"error": f"no route {method} {path}"}


@pytest.fixture
def fake_stack() -> Iterator[tuple[FakeStack, str]]:
    stack = FakeStack()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            status, answer = stack.handle(self.command, self.path, dict(self.headers), body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stack, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_loader_run_twice_updates_in_place(fake_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, url = fake_stack
    loader = load_script(DEPLOY_DIR / "kibana" / "load_objects.py")
    monkeypatch.setenv("ELASTIC_PASSWORD", PASSWORD)
    argv = ["--elasticsearch-url", url, "--kibana-url", url, "--wait", "10"]

    assert loader.main(argv) == 0
    first = (dict(stack.templates), dict(stack.indices), dict(stack.saved_objects), json.dumps(stack.rules))
    calls_before = len(stack.calls)
    assert loader.main(argv) == 0
    second_run = stack.calls[calls_before:]

    assert set(stack.templates) == {"ml-predictions"}
    assert set(stack.indices) == {"ml-predictions-v1"}
    assert stack.indices["ml-predictions-v1"]["aliases"] == {"ml-predictions": {"is_write_index": True}}
    assert len(stack.saved_objects) == len(first[2]) == 9
    assert len(stack.rules) == 4
    assert json.dumps(stack.rules) == first[3], "a second run must leave the rules as they were"
    assert not [c for c in second_run if c[0] == "POST" and c[1].startswith("/api/alerting/rule/")]
    assert len([c for c in second_run if c[0] == "PUT" and c[1].startswith("/api/alerting/rule/")]) == 4
    assert not [c for c in second_run if c == ("PUT", "/ml-predictions-v1")], "the index exists: no create"
    assert all(not key.startswith("_") for rule in stack.rules.values() for key in rule)


def test_loader_accepts_an_index_the_gateway_created_first(fake_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, url = fake_stack
    # The gateway made the index, but without the alias the loader looks for.
    stack.indices["ml-predictions-v1"] = {"aliases": {}}
    loader = load_script(DEPLOY_DIR / "kibana" / "load_objects.py")
    monkeypatch.setenv("ELASTIC_PASSWORD", PASSWORD)

    assert loader.main(["--elasticsearch-url", url, "--kibana-url", url, "--wait", "10"]) == 0


def test_loader_fails_without_credentials(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    loader = load_script(DEPLOY_DIR / "kibana" / "load_objects.py")
    for variable in ("ELASTIC_PASSWORD", "ELASTIC_PASSWORD_FILE", "LOADER_API_KEY"):
        monkeypatch.delenv(variable, raising=False)

    assert loader.main(["--wait", "0"]) == 1
    assert "ELASTIC_PASSWORD" in capsys.readouterr().err


def test_setup_run_twice_keeps_secrets_and_api_keys(
    fake_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, url = fake_stack
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ELASTICSEARCH_URL", url)
    monkeypatch.setenv("ELASTIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("KIBANA_SYSTEM_PASSWORD", raising=False)
    setup = load_script(DEPLOY_DIR / "elasticsearch" / "setup.py")

    assert setup.main(["setup.py", "secrets"]) == 0
    generated = setup.read_secret("kibana/kibana_system.password")
    assert setup.main(["setup.py", "security"]) == 0
    keys = {name: setup.read_secret(name) for name in setup.API_KEYS}
    assert setup.main(["setup.py", "secrets"]) == 0
    assert setup.main(["setup.py", "security"]) == 0

    assert setup.read_secret("elastic/elastic.password") == PASSWORD
    assert setup.read_secret("kibana/kibana_system.password") == generated
    assert stack.kibana_system_password == generated
    assert len(setup.read_secret("kibana/saved-objects.key")) >= 32
    assert stack.api_keys == ["key-1", "key-2"], "the second run must keep the still-valid keys"
    assert {name: setup.read_secret(name) for name in setup.API_KEYS} == keys
    assert set(stack.roles) == {"otel_collector_writer", "inference_gateway_store"}
    for name in [*setup.GENERATED, *setup.API_KEYS]:
        assert (tmp_path / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
