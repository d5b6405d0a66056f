"""Secrets and security bootstrap of the compose stack, in two one-shot steps; both
are safe to run on every `up` (each step is create-or-keep).

`secrets` (before Elasticsearch starts): writes the passwords and keys the stack
needs into the secrets volume, one folder per consumer, each readable only by
the uid that consumes it. A value set in the environment (`.env`) wins; a value
already in the volume is kept; anything else is generated at random.

`security` (once Elasticsearch answers): sets the `kibana_system` password,
creates the least-privilege roles of the collector and the gateway, and one API
key for each, unless the key already in the volume still authenticates.

`show NAME` prints one secret (e.g. `elastic/elastic.password`, to log into Kibana).

Standard library only, so it runs in a plain Python image. Secrets are never printed
by the bootstrap steps.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SECRETS_DIR = Path(os.environ.get("SECRETS_DIR", "/run/stack-secrets"))

# Folder -> uid of the containers that mount it (Elastic's images run as 1000,
# the gateway and the model service as 10001: deploy/*.Dockerfile).
OWNERS = {"elastic": 1000, "kibana": 1000, "collector": 1000, "gateway": 10001, "model-service": 10001}

# Secret file -> (variable that may set it in .env, bytes of randomness if generated).
GENERATED = {
    "elastic/elastic.password": ("ELASTIC_PASSWORD", 24),
    "kibana/kibana_system.password": ("KIBANA_SYSTEM_PASSWORD", 24),
    # Kibana refuses keys shorter than 32 characters. Saved-object encryption is
    # what alerting needs; sessions and reporting get keys of their own.
    "kibana/saved-objects.key": ("KIBANA_SAVED_OBJECTS_KEY", 32),
    "kibana/security.key": ("KIBANA_SECURITY_KEY", 32),
    "kibana/reporting.key": ("KIBANA_REPORTING_KEY", 32),
    # The bearer token of the model service's /admin routes (runbook: `show model-service/admin.token`).
    "model-service/admin.token": ("MODEL_SERVICE_ADMIN_TOKEN", 32),
}

# What each client may do, and nothing more.
ROLES: dict[str, dict] = {
    # Writes OTel-native data streams (traces-*, logs-*, metrics-*.otel-* and the
    # APM aggregated metrics), as Elastic documents for the elasticsearch exporter.
    "otel_collector_writer": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["traces-*", "logs-*", "metrics-*"],
                "privileges": ["auto_configure", "create_doc"],
            }
        ],
    },
    # Creates its versioned predictions index with the alias, reads and writes
    # documents through the alias; `monitor` for its readiness probe.
    "inference_gateway_store": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["ml-predictions*"],
                "privileges": ["create_index", "read", "write", "view_index_metadata", "manage"],
            }
        ],
    },
}

# API key file -> role it is limited to.
API_KEYS = {"collector/api.key": "otel_collector_writer", "gateway/api.key": "inference_gateway_store"}


def write_secret(name: str, value: str) -> None:
    """Write atomically, readable only by the folder's owner."""
    path = SECRETS_DIR / name
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value)
    tmp.chmod(0o400)
    tmp.replace(path)
    if (owner := OWNERS.get(folder.name)) is not None and os.geteuid() == 0:
        for item in (folder, path):
            os.chown(item, owner, owner)
        folder.chmod(0o700)


def read_secret(name: str) -> str:
    return (SECRETS_DIR / name).read_text().strip()


def ensure_folders() -> None:
    """Every consumer's folder, owned by it: compose mounts each one (volume subpath)."""
    for folder, owner in OWNERS.items():
        path = SECRETS_DIR / folder
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(path, owner, owner)
        path.chmod(0o700)


def ensure_secrets() -> None:
    ensure_folders()
    for name, (variable, size) in GENERATED.items():
        given = os.environ.get(variable, "").strip()
        existing = (SECRETS_DIR / name).is_file()
        if given:
            write_secret(name, given)
            print(f"secrets: {name} from {variable}")
        elif existing:
            write_secret(name, read_secret(name))  # re-applies owner and mode
            print(f"secrets: {name} kept")
        else:
            write_secret(name, secrets.token_urlsafe(size))
            print(f"secrets: {name} generated")


class Elasticsearch:
    """Just enough of the REST API, authenticated as the `elastic` superuser."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"elastic:{password}".encode()).decode()

    def request(self, method: str, path: str, body: dict | None = None, auth: str | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", auth or self.auth)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw or b"{}")
            except ValueError:
                return err.code, {"raw": raw.decode(errors="replace")[:500]}

    def ensure(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise SystemExit(f"setup: {method} {path} answered {status}: {answer.get('error', answer)}")
        return answer


def wait_until_up(es: Elasticsearch, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, answer = es.request("GET", "/_cluster/health?wait_for_status=yellow&timeout=5s")
            if status == 200:
                return
            last = f"{status} {answer.get('error', '')}"
        except OSError as err:
            last = str(err)
        time.sleep(2)
    raise SystemExit(f"setup: Elasticsearch not ready within {timeout:.0f}s ({last})")


def api_key_valid(es: Elasticsearch, name: str) -> bool:
    path = SECRETS_DIR / name
    if not path.is_file() or not read_secret(name):
        return False
    status, _ = es.request("GET", "/_security/_authenticate", auth=f"ApiKey {read_secret(name)}")
    return status == 200


def ensure_security() -> None:
    url = os.environ.get("ELASTICSEARCH_URL", "http://elasticsearch:9200")
    es = Elasticsearch(url, read_secret("elastic/elastic.password"))
    wait_until_up(es)

    es.ensure(
        "POST", "/_security/user/kibana_system/_password", {"password": read_secret("kibana/kibana_system.password")}
    )
    print("setup: kibana_system password set")

    for role, body in ROLES.items():
        es.ensure("PUT", f"/_security/role/{role}", body)
        print(f"setup: role {role} in place")

    for name, role in API_KEYS.items():
        if api_key_valid(es, name):
            print(f"setup: {name} still valid, kept")
            continue
        answer = es.ensure(
            "POST",
            "/_security/api_key",
            {
                "name": f"compose-{name.split('/')[0]}",
                "role_descriptors": {role: ROLES[role]},
                "metadata": {"created_by": "deploy/elasticsearch/setup.py"},
            },
        )
        write_secret(name, answer["encoded"])
        print(f"setup: {name} created")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "secrets":
        ensure_secrets()
    elif command == "security":
        ensure_security()
    elif command == "show" and len(argv) == 3:
        print(read_secret(argv[2]))
    else:
        print("usage: setup.py secrets | security | show FOLDER/FILE", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
