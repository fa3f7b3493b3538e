"""A live meshwatch app (uvicorn on a free loopback port) over a store with real pipeline data,
and a real headless Chromium (Debian's `chromium`) driven by Playwright."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.pipeline import Pipeline
from meshwatch.settings import load_settings
from meshwatch.store import Store
from tests.alerts.factories import access_log, raw
from tests.alerts.receivers import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class LiveApp:
    url: str
    store: Store
    app: Any
    token: str


def _mesh_records() -> list[Any]:
    """Plaintext and mTLS calls into a few services over ~3 minutes (real parser input)."""
    records = []
    i = 0
    for minute in range(3):
        for second in range(0, 60, 6):
            ts = f"2026-03-01T10:{minute:02d}:{second:02d}.000Z"
            for service, ns, mtls, ip in (("ledger", "pay", False, "10.244.3.77"),
                                          ("cart", "shop", True, "10.244.1.5"),
                                          ("search", "shop", True, "10.244.1.6"),
                                          ("vault", "sec", False, "10.244.9.9")):
                records.append(raw(access_log(i, src_ip=ip, namespace=ns, service=service,
                                              ts=ts, mtls=mtls), i))
                i += 1
    return records


@pytest.fixture(scope="module")
def live_app(tmp_path_factory) -> Iterator[LiveApp]:
    path = tmp_path_factory.mktemp("web-store")
    settings = load_settings(overrides={
        "store": {"path": str(path)},
        "api": {"stream_poll_interval": "0.5s", "stream_keepalive": "2s"},
        "alerts": {"public_url": "http://127.0.0.1"}})
    store = Store.open(settings.store)
    pipeline = Pipeline(settings, store)
    pipeline.process(_mesh_records())
    pipeline.finish()
    pipeline.checkpoint()
    pipeline.close()
    _, token = TokenStore(store).create("ana", "analyst")
    app = create_app(store, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not come up")
        time.sleep(0.1)
    try:
        yield LiveApp(url, store, app, token)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_messages.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        context.close()
