"""`GET /api/v1/alerts/stream` over real HTTP (uvicorn): authenticated, keep-alives, events
from in-process actions and from other writers (store polling), and the end of a stream when
its token is revoked."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.settings import load_settings
from tests.alerts.factories import alert
from tests.alerts.receivers import free_port


@pytest.fixture
def server(store) -> Iterator[str]:
    settings = load_settings(overrides={"api": {"stream_keepalive": "0.5s",
                                                "stream_poll_interval": "0.2s"}})
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(store, settings), host="127.0.0.1",
                                        port=port, log_level="warning",
                                        timeout_graceful_shutdown=1))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(10)


def _reader(url: str, headers: dict[str, str], out: queue.Queue) -> threading.Thread:
    """Read the stream in a thread: each SSE message (or comment) goes to ``out``."""

    def run() -> None:
        try:
            with httpx.stream("GET", f"{url}/api/v1/alerts/stream", headers=headers,
                              timeout=httpx.Timeout(10, read=10)) as response:
                out.put(("status", response.status_code, response.headers.get("content-type")))
                block: list[str] = []
                for line in response.iter_lines():
                    if line == "":
                        if block:
                            out.put(("message", "\n".join(block)))
                        block = []
                    else:
                        block.append(line)
            out.put(("closed",))
        except httpx.HTTPError as exc:
            out.put(("error", repr(exc)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _events(out: queue.Queue, until, timeout: float = 10.0) -> list[tuple]:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = out.get(timeout=0.2)
        except queue.Empty:
            continue
        got.append(item)
        if until(item, got):
            return got
    raise AssertionError(f"stream did not deliver in time: {got}")


def _alert_event(item: tuple) -> dict | None:
    if item[0] != "message" or not item[1].startswith("event: alert"):
        return None
    return json.loads(item[1].split("data: ", 1)[1])


def test_stream_needs_auth_and_never_takes_a_token_in_the_url(server, store):
    _, secret = TokenStore(store).create("ana", "viewer")
    assert httpx.get(f"{server}/api/v1/alerts/stream", timeout=5).status_code == 401
    assert httpx.get(f"{server}/api/v1/alerts/stream", params={"token": secret},
                     timeout=5).status_code == 401
    assert httpx.get(f"{server}/api/v1/alerts/stream", params={"access_token": secret},
                     timeout=5).status_code == 401


def test_stream_delivers_actions_and_other_writers_changes(server, store):
    first = alert(entity="shop/a->db.pay:5432")
    store.upsert_alerts([first])
    _, secret = TokenStore(store).create("ana", "analyst")
    headers = {"Authorization": f"Bearer {secret}"}
    out: queue.Queue = queue.Queue()
    _reader(server, headers, out)
    head = _events(out, lambda item, _: item[0] == "message")
    assert head[0] == ("status", 200, "text/event-stream; charset=utf-8")
    assert ": connected" in head[1][1]
    # A keep-alive comment arrives while nothing happens.
    _events(out, lambda item, _: item[0] == "message" and ": keep-alive" in item[1])

    # An analyst action in this process: announced at once, as a status change.
    r = httpx.post(f"{server}/api/v1/alerts/{first.id}/acknowledge", json={}, headers=headers)
    assert r.status_code == 200
    got = _events(out, lambda item, _: (_alert_event(item) or {}).get("kind") == "status")
    event = _alert_event(got[-1])
    assert event["alert"]["id"] == first.id and event["alert"]["status"] == "acknowledged"

    # Another writer (a pipeline in another process) stores a new alert: the feed polls it.
    second = alert(entity="shop/b->db.pay:5432", minutes=5)
    store.upsert_alerts([second])
    got = _events(out, lambda item, _: (_alert_event(item) or {}).get("alert", {}).get("id")
                  == second.id)
    event = _alert_event(got[-1])
    assert event["kind"] == "opened" and event["alert"]["title"] == second.title
    # Announced once: the same state polled again is not repeated.
    time.sleep(1.0)
    repeats = []
    while not out.empty():
        item = out.get()
        if (_alert_event(item) or {}).get("alert", {}).get("id") == second.id:
            repeats.append(item)
    assert repeats == []


def test_a_revoked_token_ends_its_stream(server, store):
    tokens = TokenStore(store)
    token, secret = tokens.create("ana", "viewer")
    out: queue.Queue = queue.Queue()
    _reader(server, {"Authorization": f"Bearer {secret}"}, out)
    _events(out, lambda item, _: item[0] == "message")
    tokens.revoke(token.id, by="admin")
    _events(out, lambda item, _: item[0] == "closed", timeout=15)


def test_a_session_cookie_authenticates_the_stream(server, store):
    _, secret = TokenStore(store).create("ana", "viewer")
    with httpx.Client(base_url=server, timeout=5) as c:
        assert c.post("/api/v1/session", json={"token": secret}).status_code == 200
        cookie = c.cookies.get("mw_session")
    out: queue.Queue = queue.Queue()
    _reader(server, {"Cookie": f"mw_session={cookie}"}, out)
    head = _events(out, lambda item, _: item[0] == "message")
    assert head[0][1] == 200
