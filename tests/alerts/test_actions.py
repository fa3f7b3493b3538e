"""The feed API over a real store: filters, sorting, cursor pages (stable under inserts),
the alert detail in context, analyst actions with their audit trail, and the pipeline link."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from alerts.matchers import SILENCED_BY
from meshwatch.pipeline import Pipeline
from meshwatch.records import Endpoint
from meshwatch.settings import load_settings
from tests.alerts.api_client import client
from tests.alerts.factories import T0, access_log, alert, raw


def _many(n: int) -> list:
    out = []
    for i in range(n):
        a = alert(entity=f"shop/web{i}->db.pay:5432", minutes=i,
                  severity=("low", "medium", "high", "critical")[i % 4], count=i + 1)
        out.append(dataclasses.replace(
            a, source=Endpoint(workload=f"web{i}", namespace="shop" if i % 2 else "ops",
                               address=f"10.0.0.{i}"),
            score=(i * 37 % 11) / 10, title=f"alert {i} " + ("probe" if i % 5 == 0 else "")))
    return out


def _walk(c, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = c.get("/api/v1/alerts", params={**params, **({"cursor": cursor} if cursor
                                                             else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("sort", ["last_seen", "first_seen", "severity", "count", "score"])
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_cursor_pages_cover_every_alert_once_in_order(store, sort, order):
    alerts = _many(23)
    store.upsert_alerts(alerts)
    store.upsert_alerts([dataclasses.replace(alerts[3], count=100)])  # a newer version
    with client(store, role="viewer") as c:
        items = _walk(c, sort=sort, order=order, limit=5)
    assert sorted(a["id"] for a in items) == sorted(a.id for a in alerts)
    ranks = ["info", "low", "medium", "high", "critical"]
    key = {"last_seen": lambda a: (a["last_seen"], a["id"]),
           "first_seen": lambda a: (a["first_seen"], a["id"]),
           "severity": lambda a: (ranks.index(a["severity"]), a["last_seen"], a["id"]),
           "count": lambda a: (a["count"], a["id"]),
           "score": lambda a: (a["score"], a["id"])}[sort]
    assert items == sorted(items, key=key, reverse=order == "desc")
    assert next(a for a in items if a["id"] == alerts[3].id)["count"] == 100


def test_pages_are_stable_under_concurrent_inserts(store):
    old = _many(12)
    store.upsert_alerts(old)
    with client(store, role="viewer") as c:
        first = c.get("/api/v1/alerts", params={"limit": 5}).json()
        newer = [dataclasses.replace(a, id=f"al-new{i}", fingerprint=f"new{i}",
                                     last_seen=T0 + timedelta(hours=5, minutes=i))
                 for i, a in enumerate(old[:4])]
        store.upsert_alerts(newer)  # arrive between page 1 and page 2
        rest, cursor = [], first["next_cursor"]
        while cursor:
            body = c.get("/api/v1/alerts", params={"limit": 5, "cursor": cursor}).json()
            rest += body["items"]
            cursor = body["next_cursor"]
        seen = [a["id"] for a in first["items"] + rest]
        assert sorted(seen) == sorted(a.id for a in old)  # nothing skipped, nothing twice
        top = c.get("/api/v1/alerts", params={"limit": 4}).json()["items"]
        assert {a["id"] for a in top} == {a.id for a in newer}


def test_filters(store):
    store.upsert_alerts(_many(20))
    with client(store, role="viewer") as c:
        def ids(**params):
            body = c.get("/api/v1/alerts", params={"limit": 1000, **params})
            assert body.status_code == 200, body.text
            return {a["title"].split()[1] for a in body.json()["items"]}

        assert ids(severity="critical") == {str(i) for i in range(3, 20, 4)}
        assert ids(namespace="ops") == {str(i) for i in range(0, 20, 2)}
        assert ids(namespace="pay") == {str(i) for i in range(20)}  # destination namespace
        assert ids(source="web1") == {"1"} | {str(i) for i in range(10, 20)}
        assert ids(source="10.0.0.7") == {"7"}
        assert ids(destination="DB.PAY") == {str(i) for i in range(20)}
        assert ids(q="probe") == {"0", "5", "10", "15"}
        assert ids(since="2026-03-01T10:15:00Z") == {str(i) for i in range(15, 20)}
        assert ids(until="2026-03-01T10:02:00Z") == {"0", "1"}
        assert ids(severity=["medium", "low"], namespace="shop") == {"1", "5", "9", "13", "17"}
        first_id = c.get("/api/v1/alerts", params={"limit": 1}).json()["items"][0]["id"]
        assert ids(q=first_id) == {"19"}


@pytest.mark.parametrize("params, message", [
    ({"cursor": "garbage!"}, "cursor"),
    ({"cursor": "WzEsImNvdW50IiwiZGVzYyIsWzFdLCJ4Il0"}, "sort=count"),  # another sort's
    ({"sort": "title"}, "sort"),
    ({"since": "yesterday"}, "since"),
    ({"since": "-1h", "until": "-2h"}, "until"),
    ({"status": "bogus"}, "status"),
    ({"limit": 0}, "limit"),
    ({"q": "x" * 300}, "q"),
])
def test_bad_list_input_is_422_with_a_message(store, params, message):
    with client(store, role="viewer") as c:
        response = c.get("/api/v1/alerts", params=params)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_actions_update_the_alert_and_the_audit_trail(store):
    store.upsert_alerts([alert()])
    alert_id = store.list_alerts()[0].id
    with client(store, role="analyst") as c:
        base = f"/api/v1/alerts/{alert_id}"
        assert c.post(f"{base}/acknowledge", json={"comment": "looking"}).json()[
            "alert"]["status"] == "acknowledged"
        assigned = c.post(f"{base}/assign", json={"assignee": "bob", "comment": "yours"}).json()
        assert assigned["alert"]["labels"]["assignee"] == "bob"
        assert c.get("/api/v1/alerts", params={"assignee": "bob"}).json()["items"]
        assert c.post(f"{base}/resolve", json={}).json()["alert"]["status"] == "resolved"
        conflict = c.post(f"{base}/acknowledge", json={})
        assert conflict.status_code == 409 and "resolved" in conflict.json()["detail"]
        assert c.post(f"{base}/reopen", json={"comment": "not fixed"}).json()["alert"][
            "status"] == "open"
        suppressed = c.post(f"{base}/suppress", json={"duration": "2h", "comment": "CHG-1"})
        body = suppressed.json()
        assert body["alert"]["status"] == "suppressed"
        assert body["alert"]["labels"][SILENCED_BY] == body["silence_id"]
        silence = c.get(f"/api/v1/silences/{body['silence_id']}").json()
        assert silence["created_by"] == "test-analyst" and silence["state"] == "active"
        detail = c.get(base).json()
        trail = detail["audit"]
        assert [e["action"] for e in trail] == ["acknowledge", "assign", "resolve", "reopen",
                                                "suppress"]
        assert all(e["actor"] == "test-analyst" and e["ts"] for e in trail)
        assert trail[0]["comment"] == "looking" and trail[0]["to_status"] == "acknowledged"
        assert trail[1]["assignee"] == "bob" and trail[3]["comment"] == "not fixed"
        assert detail["assignee"] == "bob"
        assert c.get(f"{base}/audit").json() == trail
    stored = store.get_alert(alert_id)
    assert stored.status == "suppressed" and stored.labels["assignee"] == "bob"


@pytest.mark.parametrize("path, body", [
    ("acknowledge", {"comment": "x" * 3000}),
    ("assign", {}),
    ("suppress", {"duration": "soon", "comment": "c"}),
    ("suppress", {"duration": "1h"}),
    ("feedback", {"verdict": "maybe"}),
    ("feedback", {"verdict": "false_positive", "score_factor": 2}),
    ("feedback", {"verdict": "false_positive", "expires_in": "-1d"}),
    ("acknowledge", {"unexpected": 1}),
])
def test_bad_action_input_is_422(store, path, body):
    store.upsert_alerts([alert()])
    alert_id = store.list_alerts()[0].id
    with client(store, role="analyst") as c:
        response = c.post(f"/api/v1/alerts/{alert_id}/{path}", json=body)
        assert response.status_code == 422, response.text
        assert isinstance(response.json()["detail"], str)
        assert c.post("/api/v1/alerts/al-missing/acknowledge", json={}).status_code == 404
        assert c.post("/api/v1/alerts/a%20b/acknowledge", json={}).status_code == 422


def test_bulk_acknowledge(store):
    alerts = _many(4)
    store.upsert_alerts(alerts)
    with client(store, role="analyst") as c:
        ids = [a.id for a in alerts[:3]] + ["al-missing"]
        body = c.post("/api/v1/alerts/bulk", json={"action": "acknowledge", "ids": ids}).json()
        assert sorted(body["done"]) == sorted(ids[:3]) and body["failed"] == {
            "al-missing": "no such alert"}
    assert [store.get_alert(a.id).status for a in alerts] == ["acknowledged"] * 3 + ["open"]


def test_detail_has_evidence_runbook_series_and_neighbourhood(store):
    settings = load_settings(overrides={"store": {"path": "unused"}})
    pipeline = Pipeline(settings, store)
    records = [raw(access_log(i, ts=f"2026-03-01T10:{i // 6:02d}:{i % 6 * 10:02d}.000Z"), i)
               for i in range(18)]
    records += [raw(access_log(100 + i, src_ip="10.244.3.1", service="cart", namespace="pay",
                               ts=f"2026-03-01T10:0{i}:05.000Z", mtls=True), 100 + i)
                for i in range(3)]
    pipeline.process(records)
    pipeline.finish()
    pipeline.checkpoint()
    (plain,) = store.list_alerts(detector=["plaintext_edge"])
    with client(store, role="viewer") as c:
        detail = c.get(f"/api/v1/alerts/{plain.id}").json()
    assert detail["runbook_url"].endswith("/runbooks/plaintext_edge")
    assert detail["evidence"][0]["request_id"] == "req-0"
    edge = detail["edge"]
    assert (edge["src"], edge["dst"]) == ("10.244.3.77", "ledger.pay.svc.cluster.local:8080")
    assert [p["requests"] for p in edge["points"]] == [6, 6, 6]
    assert all(p["mtls_false"] == 6 for p in edge["points"])
    hood = detail["neighbourhood"]
    alerting = [e for e in hood["edges"] if e["alerting"]]
    assert len(alerting) == 1 and alerting[0]["mtls_status"] == "plaintext"
    assert {n["id"] for n in hood["nodes"]} >= {"10.244.3.77",
                                                 "ledger.pay.svc.cluster.local:8080"}


def test_actions_reach_a_pipeline_in_the_same_process(store):
    """Acknowledged through the API, the pipeline's next finding does not reopen it; resolved,
    the next finding opens a new alert."""
    settings = load_settings(overrides={"store": {"path": "unused"}})
    pipeline = Pipeline(settings, store)
    pipeline.process([raw(access_log(i), i) for i in range(3)])
    (first,) = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
    with client(store, role="analyst", pipeline=pipeline) as c:
        c.post(f"/api/v1/alerts/{first.id}/acknowledge", json={})
        pipeline.process([raw(access_log(i), i) for i in range(3, 6)])
        again = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
        assert [(a.id, a.status) for a in again] == [(first.id, "acknowledged")]
        assert pipeline.alert_book.get(first.fingerprint).status == "acknowledged"
        c.post(f"/api/v1/alerts/{first.id}/resolve", json={})
        pipeline.process([raw(access_log(i, ts="2026-03-01T10:05:00.000Z"), i)
                          for i in range(6, 9)])
        new = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
        assert len(new) == 1 and new[0].id != first.id and new[0].status == "open"
    assert store.get_alert(first.id).status == "resolved"
