"""Real HTTP receivers on loopback for sink tests, and a real Alertmanager.

`Receiver` records every request (method, path, headers, body, arrival time) and can be
switched to answer with any status (with ``Retry-After``), to answer slowly, or to go down
(stop listening) and come back on the same port.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A threaded HTTP server that records requests and answers as told."""

    port: int = field(default_factory=free_port)
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    reply: bytes = b'{"status":"ok"}'
    #: Statuses to answer first, one per request, before falling back to ``status``.
    script: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._cond = threading.Condition()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._cond:
                    status = receiver.script.pop(0) if receiver.script else receiver.status
                    receiver.requests.append(Request(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        body, time.time()))
                    receiver._cond.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if receiver.retry_after is not None and status in (429, 503):
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: connections are refused until `start` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} request(s), got {len(self.requests)}")
                self._cond.wait(left)
            return list(self.requests)


@dataclass
class Alertmanager:
    url: str
    process: subprocess.Popen[bytes]

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5).json()


@contextlib.contextmanager
def alertmanager(workdir: Path, webhook_url: str | None = None,
                 webhook_token: str | None = None) -> Iterator[Alertmanager]:
    """A real Alertmanager on a free loopback port with a temp config and storage path."""
    port = free_port()
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    route: dict[str, Any] = {"receiver": "null", "group_wait": "0s", "group_interval": "1s",
                             "repeat_interval": "1h", "group_by": ["alertname"]}
    if webhook_url:
        hook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
        if webhook_token:  # meshwatch's API wants a token (role integration)
            hook["http_config"] = {"authorization": {"type": "Bearer",
                                                     "credentials": webhook_token}}
        receivers.append({"name": "meshwatch", "webhook_configs": [hook]})
        route["receiver"] = "meshwatch"
    config = workdir / f"alertmanager-{port}.yml"
    config.write_text(yaml.safe_dump({"route": route, "receivers": receivers}))
    log = workdir / f"alertmanager-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}",
             f"--storage.path={workdir / f'am-data-{port}'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT)
    am = Alertmanager(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{am.url}/-/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("alertmanager did not become ready within 30 s")
            time.sleep(0.1)
        yield am
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
