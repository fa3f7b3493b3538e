"""The feed API over a real embedded store: list/filter/get alerts, runbooks, health, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.tokens import TokenStore
from meshwatch.records import ALERT_FIELDS, Alert, Endpoint
from meshwatch.settings import load_settings
from meshwatch.store import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _alert(i: int, detector: str, status: str = "open", severity: str = "high") -> Alert:
    return Alert(id=f"al-{i}", fingerprint=f"fp{i}", detector=detector, severity=severity,
                 title=f"alert {i}", summary="s", source=Endpoint(address=f"10.0.0.{i}"),
                 destination=Endpoint(service="db:5432"), first_seen=T0, last_seen=T0, count=1,
                 score=1.0, mitre=("T1040",), runbook_url=f"http://x/runbooks/{detector}",
                 evidence=({"request_id": f"r{i}"},), status=status, labels={})


@pytest.fixture
def client(tmp_path):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "d")}})
    store = Store.open(settings.store)
    store.upsert_alerts([_alert(1, "plaintext_edge"), _alert(2, "first_seen_edge", "resolved"),
                         _alert(3, "plaintext_edge", severity="low")])
    _, token = TokenStore(store).create("tester", "viewer")
    with TestClient(create_app(store, settings),
                    headers={"Authorization": f"Bearer {token}"}) as c:
        yield c
    store.close()


def test_list_and_filter(client):
    body = client.get("/api/v1/alerts").json()
    assert {a["id"] for a in body["items"]} == {"al-1", "al-2", "al-3"}
    assert all(set(a) == set(ALERT_FIELDS) for a in body["items"])
    only = client.get("/api/v1/alerts", params={"detector": "plaintext_edge",
                                                "severity": "high"}).json()
    assert [a["id"] for a in only["items"]] == ["al-1"]
    resolved = client.get("/api/v1/alerts", params={"status": "resolved"}).json()
    assert [a["id"] for a in resolved["items"]] == ["al-2"]


def test_get_one_and_missing(client):
    assert client.get("/api/v1/alerts/al-1").json()["evidence"] == [{"request_id": "r1"}]
    missing = client.get("/api/v1/alerts/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_bad_input_is_a_4xx_with_a_message(client):
    r = client.get("/api/v1/alerts", params={"status": "bogus"})
    assert r.status_code == 422 and "status" in r.json()["detail"]
    r = client.get("/api/v1/alerts", params={"limit": 0})
    assert r.status_code == 422
    r = client.get("/api/v1/alerts/" + "x" * 100)
    assert r.status_code == 422


def test_runbooks_and_health(client):
    page = client.get("/runbooks/plaintext_edge")
    assert page.status_code == 200 and "<h1>" in page.text and "kubectl" in page.text
    assert client.get("/runbooks/nope").status_code == 404
    assert "plaintext_edge" in client.get("/runbooks").json()["runbooks"]
    assert client.get("/healthz").json()["status"] == "ok"
