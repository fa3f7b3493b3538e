"""Silences: model and store, suppress-and-store (never drop), API and CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alerts.api import create_app
from alerts.lifecycle import AlertBook
from alerts.matchers import SILENCED_BY
from alerts.notify import Notifier
from alerts.persist import AlertWriter
from alerts.runbooks import RunbookLinks
from alerts.silences import SilenceStore, apply_silences
from meshwatch.settings import load_settings
from tests.alerts.api_client import bearer
from tests.alerts.factories import T0, alert, change
from tests.alerts.receivers import Receiver


def test_create_list_expire(store):
    silences = SilenceStore(store)
    s = silences.create(["detector=plaintext_edge", 'dst_namespace=~"pay.*"'],
                        created_by="ana", comment="CHG-1234 db migration", duration=7200)
    later = silences.create(["severity=low"], created_by="bo", comment="noise",
                            duration=600, starts_at=silences.clock() + timedelta(hours=1))
    assert [x.id for x in silences.list("active")] == [s.id]
    assert [x.id for x in silences.list("pending")] == [later.id]
    assert [str(m) for m in silences.get(s.id).matchers] == [
        'detector="plaintext_edge"', 'dst_namespace=~"pay.*"']
    assert silences.get(s.id).ends_at - silences.get(s.id).starts_at == timedelta(hours=2)
    assert [x.id for x in silences.active()] == [s.id]
    expired = silences.expire(s.id)
    assert expired.state(silences.clock()) == "expired" and silences.active() == []
    assert silences.get(s.id).state(silences.clock()) == "expired"  # kept, for the record
    assert silences.expire("sil-nope") is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"matchers": []}, "at least one matcher"),
    ({"matchers": ["team=~.*"]}, "would mute every alert"),
    ({"matchers": ["team=x", "bad"]}, "matchers[1]: invalid matcher"),
    ({"comment": " "}, "comment: required"),
    ({"created_by": ""}, "created_by: required"),
    ({"duration": None}, "duration"),
    ({"duration": -5}, "duration"),
])
def test_invalid_silences_are_refused(store, kwargs, message):
    args = {"matchers": ["detector=x"], "created_by": "ana", "comment": "c", "duration": 60,
            **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        SilenceStore(store).create(**args)


def test_apply_silences_leaves_analyst_state_alone():
    from alerts.matchers import Matcher
    from alerts.silences import Silence

    s = Silence("sil-1", (Matcher.parse("detector=plaintext_edge"),), T0,
                T0 + timedelta(hours=1), "ana", "c", T0)
    assert apply_silences(alert(status="acknowledged"), [s]).status == "acknowledged"
    by_hand = alert(status="suppressed")
    assert apply_silences(by_hand, []) is by_hand  # no silenced_by: an analyst's choice
    assert apply_silences(alert(status="resolved"), [s]).status == "resolved"
    muted = apply_silences(alert(), [s])
    assert muted.status == "suppressed" and muted.labels[SILENCED_BY] == "sil-1"


def test_silenced_alerts_are_stored_suppressed_and_not_notified(tmp_path, store):
    receiver = Receiver().start()
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")}, "alerts": {
        "routing": {"route": {"receiver": "hooks", "group_wait": "0s", "group_by": ["..."]},
                    "receivers": [{"name": "hooks",
                                   "webhook_configs": [{"url": receiver.url()}]}]}}})
    notifier = Notifier(settings, store)
    book = AlertBook(RunbookLinks("http://feed.test"))
    writer = AlertWriter(store, book)
    silences = SilenceStore(store)
    try:
        silence = silences.create(["dst_namespace=pay"], created_by="ana", comment="maint",
                                  duration=3600)
        quiet, loud = alert(), alert("x/y->z:1", dst_namespace="shop")
        written = {a.id: a for a in writer.write([change(quiet), change(loud)],
                                                  review=notifier.submit)}
        assert written[quiet.id].status == "suppressed"
        assert written[quiet.id].labels[SILENCED_BY] == silence.id
        assert store.get_alert(quiet.id).status == "suppressed"  # stored, not dropped
        assert written[loud.id].status == "open"
        assert notifier.drain(timeout=10)
        assert [a["id"] for r in receiver.requests for a in r.json()["alerts"]] == [loud.id]
        # The silence ends: the next finding opens the alert again, and it notifies.
        silences.expire(silence.id)
        assert store.get_alert(quiet.id).status == "open"  # released right away in the store
        again = writer.write([change(alert(count=2), "updated")], review=notifier.submit)
        assert again[0].status == "open" and SILENCED_BY not in again[0].labels
        assert notifier.drain(timeout=10)
        notified = [a["id"] for r in receiver.requests for a in r.json()["alerts"]]
        assert notified == [loud.id, quiet.id]
    finally:
        notifier.stop()
        receiver.stop()


def test_a_new_silence_suppresses_matching_stored_alerts(store):
    store.upsert_alerts([alert(), alert("x/y->z:1", dst_namespace="shop")])
    SilenceStore(store).create(["dst_namespace=pay"], created_by="ana", comment="c",
                               duration=60)
    statuses = sorted((a.destination.namespace, a.status) for a in store.list_alerts())
    assert statuses == [("pay", "suppressed"), ("shop", "open")]


@pytest.fixture
def client(tmp_path, store):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")}})
    with TestClient(create_app(store, settings), headers=bearer(store, "admin")) as c:
        yield c


def test_silences_api(client, store):
    store.upsert_alerts([alert()])
    created = client.post("/api/v1/silences", json={
        "matchers": ["detector=plaintext_edge",
                     {"name": "dst_namespace", "value": "pay.*", "isRegex": True}],
        "created_by": "ana", "comment": "CHG-1234", "duration": "2h"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "active" and body["created_by"] == "ana"
    assert body["matchers"] == ['detector="plaintext_edge"', 'dst_namespace=~"pay.*"']
    assert client.get("/api/v1/alerts").json()["items"][0]["status"] == "suppressed"
    sid = body["id"]
    assert [s["id"] for s in client.get("/api/v1/silences",
                                        params={"state": "active"}).json()["items"]] == [sid]
    assert client.get(f"/api/v1/silences/{sid}").json()["comment"] == "CHG-1234"
    expired = client.delete(f"/api/v1/silences/{sid}")
    assert expired.status_code == 200 and expired.json()["state"] == "expired"
    assert client.get("/api/v1/silences", params={"state": "active"}).json()["items"] == []
    assert client.get("/api/v1/alerts").json()["items"][0]["status"] == "open"
    assert client.delete("/api/v1/silences/sil-nope").status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    ({"matchers": ["sev~high"]}, "invalid matcher"),
    ({"matchers": [{"name": "1x", "value": "a"}]}, "matchers[0]: invalid label name"),
    ({"duration": "soon"}, "not a duration"),
    ({"comment": ""}, "comment"),
    ({"matchers": []}, "matchers"),
    ({"color": "red"}, "color"),
    ({"duration": None, "ends_at": "2020-01-01T00:00:00Z"}, "ends_at: must be after"),
])
def test_silences_api_rejects_bad_input_with_422(client, body, message):
    payload = {"matchers": ["detector=x"], "created_by": "ana", "comment": "c",
               "duration": "1h", **body}
    response = client.post("/api/v1/silences", json=payload)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_silence_cli(tmp_path):
    from meshwatch.cli.main import app

    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    created = runner.invoke(app, ["silence", "create", "-m", "detector=plaintext_edge",
                                  "--matcher", "dst_namespace=~pay.*", "--duration", "2h",
                                  "--comment", "CHG-1", "--creator", "ana", "--json", *store])
    assert created.exit_code == 0, created.output
    (silence,) = json.loads(created.output)
    assert silence["matchers"] == ['detector="plaintext_edge"', 'dst_namespace=~"pay.*"']
    listed = runner.invoke(app, ["silence", "list", "--state", "active", "--json", *store])
    assert [s["id"] for s in json.loads(listed.output)] == [silence["id"]]
    table = runner.invoke(app, ["silence", "list", *store])
    assert silence["id"][:8] in table.output
    expired = runner.invoke(app, ["silence", "expire", silence["id"], "--json", *store])
    assert json.loads(expired.output)[0]["state"] == "expired"
    bad = runner.invoke(app, ["silence", "create", "-m", "oops", "--duration", "1h",
                              "--comment", "c", "--creator", "a", *store])
    assert bad.exit_code == 2 and "invalid matcher 'oops'" in bad.output
    missing = runner.invoke(app, ["silence", "expire", "sil-nope", *store])
    assert missing.exit_code == 2 and "no silence" in missing.output
    assert "Alertmanager syntax" in runner.invoke(app, ["silence", "--help"]).output
