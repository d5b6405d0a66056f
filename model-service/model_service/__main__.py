"""Runs the model service: settings, telemetry, bind, serve until SIGTERM, flush telemetry.

Start it as `opentelemetry-instrument python -m model_service` so EDOT Python
traces it and ships its logs; plain `python -m model_service` runs untraced.
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from pydantic import ValidationError

from model_service.api.admin_auth import AdminTokenSettingsError
from model_service.core.config import Settings
from model_service.core.telemetry import configure_telemetry, restart_without_empty_otel_variables
from model_service.main import create_app
from model_service.model import UnknownModelVersionError

logger = logging.getLogger("model_service")

# Connections the kernel queues while the server is busy, as uvicorn's default.
_LISTEN_BACKLOG = 2048
# Seconds in-flight requests get to finish after SIGTERM.
_GRACEFUL_SHUTDOWN_SECONDS = 10


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`.

    Created with the explicit IPPROTO_TCP protocol: asyncio turns on TCP_NODELAY only
    for sockets that say so, and without it every kept-alive response waits ~40 ms
    for the client's delayed ACK (Nagle's algorithm).
    """
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(_LISTEN_BACKLOG)
    return listener


def main() -> int:
    """Serve until SIGTERM/SIGINT; 2 for settings that cannot work."""
    restart_without_empty_otel_variables()
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"invalid MODEL_SERVICE__* settings: {error}", file=sys.stderr)
        return 2
    guard = configure_telemetry(settings)
    try:
        app = create_app(settings)
    except (UnknownModelVersionError, AdminTokenSettingsError) as error:
        logger.error("cannot start: %s", error)
        guard.flush()
        return 2
    # Bind before serving, so the real port (also for port 0) is known and logged.
    listener = bind(settings.host, settings.port)
    host, port = listener.getsockname()[:2]
    logger.info("model service listening", extra={"url": f"http://{host}:{port}"})
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,  # our handlers on the root logger: JSON on stdout and OTLP
            access_log=False,  # the HTTP server spans record every request
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    try:
        server.run(sockets=[listener])
    finally:
        guard.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
