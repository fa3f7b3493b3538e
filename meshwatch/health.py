"""A worker's own small HTTP endpoint (``meshwatch run --metrics-port``): Prometheus metrics and
liveness/readiness for orchestrators, with no authentication and no access to data.

Stage workers serve no API, so without this they could be neither scraped nor probed. Liveness
means the consume loop is turning (a stuck loop is restarted; a Kafka or ClickHouse outage is
not a reason to restart, the worker waits it out); readiness means it has started consuming.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from meshwatch.telemetry import get_telemetry


class HealthServer:
    """Serves /metrics, /livez and /readyz from a daemon thread."""

    def __init__(self, host: str, port: int, live: Callable[[], bool],
                 ready: Callable[[], bool]) -> None:
        checks = {"/livez": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(HTTPStatus.OK, get_telemetry().prometheus_text(),
                               CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok = checks[path]()
                    self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                               b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would flood the log."""

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="health",
                                       daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
