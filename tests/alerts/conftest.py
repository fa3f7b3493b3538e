"""Fixtures for the alerting tests: a fresh embedded store, loopback receivers, Alertmanager."""

from __future__ import annotations

import pytest

from meshwatch.settings import StoreSettings
from meshwatch.store import Store
from tests.alerts.receivers import Receiver, alertmanager


@pytest.fixture
def store(tmp_path):
    """A fresh embedded store (closed afterwards: chdb allows one open path per process)."""
    s = Store.open(StoreSettings(path=tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def am(tmp_path):
    """A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port."""
    with alertmanager(tmp_path) as instance:
        yield instance
