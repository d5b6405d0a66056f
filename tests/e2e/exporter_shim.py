"""Lets the collector's elasticsearch exporter write into the bed's OpenSearch node: an HTTP
relay that removes the two Elasticsearch-only parts OpenSearch 2.19 refuses and passes
every document through byte for byte.

Tried first without it (the bed collector, contrib elasticsearch exporter v0.156.0,
endpoint = the OpenSearch 2.19.1 node), two things stop the exporter:

1. OpenSearch rejects its whole `_bulk` request, 400 `illegal_argument_exception`
   "Action/metadata line [1] contains an unknown parameter [require_data_stream]": the
   exporter puts `require_data_stream: true` on every `create` action (an Elasticsearch
   7.13+ bulk parameter) and `dynamic_templates` on metric actions;
2. with that removed, OpenSearch indexes the documents, but the exporter's client
   refuses any 2xx answer without `X-Elastic-Product: Elasticsearch` ("the client
   noticed that the server is not Elasticsearch and we do not support this unknown
   product", `esclient.go`, `genuineCheckHeader`) and retries, duplicating them.

So the relay drops those two action parameters (the documents' own lines are not
touched) and adds the product header to the answers. `dynamic_templates` only chose
Elasticsearch's metric field types; the bed's index templates map the fields instead.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# Bulk action parameters OpenSearch 2.19 does not know.
ELASTICSEARCH_ONLY_ACTION_PARAMETERS = ("require_data_stream", "dynamic_templates")
_ACTIONS_WITH_SOURCE = ("create", "index", "update")
_NOT_FORWARDED = {"host", "content-length", "content-encoding", "accept-encoding", "connection", "transfer-encoding"}


def strip_bulk_actions(ndjson: bytes) -> bytes:
    """The bulk body with the Elasticsearch-only parameters removed from every action line."""
    lines = ndjson.split(b"\n")
    out: list[bytes] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            out.append(line)
            continue
        action = json.loads(line)
        (kind, metadata), *_ = action.items()
        for parameter in ELASTICSEARCH_ONLY_ACTION_PARAMETERS:
            metadata.pop(parameter, None)
        out.append(json.dumps(action, separators=(",", ":")).encode())
        if kind in _ACTIONS_WITH_SOURCE and index < len(lines):
            out.append(lines[index])
            index += 1
    return b"\n".join(out)


class ExporterShim:
    """The relay, serving on a free loopback port in a thread of the test process."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")
        # Bulk items the node refused (index, status, reason): the test expects none.
        self.rejected: list[str] = []
        self.documents_accepted = 0
        self._lock = threading.Lock()
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                shim._relay(self)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per bulk request would drown the test's output

        # Bound before anyone learns the URL, so the collector never races the port.
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="exporter-shim", daemon=True)
        self._session = requests.Session()

    def start(self) -> ExporterShim:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if body and handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        is_bulk = handler.path.split("?", 1)[0].endswith("/_bulk")
        if is_bulk:
            body = strip_bulk_actions(body)
        headers = {key: value for key, value in handler.headers.items() if key.lower() not in _NOT_FORWARDED}
        answer = self._session.request(
            handler.command, self.target_url + handler.path, data=body or None, headers=headers, timeout=60
        )
        if is_bulk and answer.status_code == 200:
            self._count(answer.json())
        handler.send_response(answer.status_code)
        handler.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        handler.send_header("X-Elastic-Product", "Elasticsearch")
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)

    def _count(self, answer: dict) -> None:
        with self._lock:
            for item in answer.get("items", []):
                (_, result), *_ = item.items()
                if int(result.get("status", 0)) >= 300:
                    self.rejected.append(f"{result.get('_index')}: {result.get('status')} {result.get('error')}")
                else:
                    self.documents_accepted += 1
