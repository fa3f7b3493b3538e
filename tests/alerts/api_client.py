"""Clients for the feed API in tests: an app over a store, and tokens of each role."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.settings import Settings, load_settings
from meshwatch.store import Store


def bearer(store: Store, role: str = "admin", name: str | None = None) -> dict[str, str]:
    """An ``Authorization`` header with a fresh token of ``role``."""
    _, secret = TokenStore(store).create(name or f"test-{role}", role)
    return {"Authorization": f"Bearer {secret}"}


def client(store: Store, role: str | None = "admin", settings: Settings | None = None,
           pipeline: Any = None, **kwargs: Any) -> TestClient:
    """A TestClient over the app (use as a context manager); ``role`` None: no token."""
    settings = settings or load_settings()
    test_client = TestClient(create_app(store, settings, pipeline=pipeline), **kwargs)
    if role is not None:
        test_client.headers.update(bearer(store, role))
    return test_client
