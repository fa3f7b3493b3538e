"""Alert lifecycle: dedup by fingerprint, quiet resolution, analyst state kept, exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import detectors.catalog  # noqa: F401
from alerts import runbooks
from alerts.export import AlertFileExport
from alerts.lifecycle import AlertBook, alert_id
from alerts.persist import AlertWriter
from alerts.runbooks import RunbookLinks
from detectors.base import DETECTORS
from meshwatch.records import ALERT_FIELDS, Endpoint, Finding
from meshwatch.settings import StoreSettings
from meshwatch.store import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def finding(entity="a->b", minutes=0, severity="medium", detector="plaintext_edge", rid="r"):
    return Finding(detector, entity, T0 + timedelta(minutes=minutes), 1.0, severity,
                   f"title {entity}", "summary", Endpoint(address="10.0.0.1"),
                   Endpoint(service="b:80"), ("T1040",), ({"request_id": rid},))


def test_repeats_update_one_alert():
    book = AlertBook(RunbookLinks("http://feed:8080"), max_evidence=3)
    changes = [book.apply(finding(minutes=i, rid=f"r{i}")) for i in range(5)]
    assert [c.kind for c in changes] == ["opened"] + ["updated"] * 4
    alert = changes[-1].alert
    assert alert.count == 5 and alert.first_seen == T0
    assert alert.last_seen == T0 + timedelta(minutes=4)
    assert [e["request_id"] for e in alert.evidence] == ["r0", "r1", "r2"]
    assert alert.runbook_url == "http://feed:8080/runbooks/plaintext_edge"
    assert set(alert.to_dict()) == set(ALERT_FIELDS)


def test_severity_only_escalates_and_ids_are_deterministic():
    book = AlertBook(RunbookLinks("http://f"))
    first = book.apply(finding(severity="high")).alert
    assert book.apply(finding(severity="low")).alert.severity == "high"
    assert first.id == alert_id(first.fingerprint, T0)
    other = AlertBook(RunbookLinks("http://f")).apply(finding(severity="high")).alert
    assert other.id == first.id  # a replay produces the same id


def test_quiet_alerts_resolve_and_a_recurrence_opens_a_new_one():
    book = AlertBook(RunbookLinks("http://f"), quiet_periods={"plaintext_edge": 3600})
    first = book.apply(finding()).alert
    assert book.resolve_quiet(T0 + timedelta(minutes=30)) == []
    (resolved,) = book.resolve_quiet(T0 + timedelta(minutes=61))
    assert resolved.alert.status == "resolved" and resolved.alert.id == first.id
    again = book.apply(finding(minutes=90))
    assert again.kind == "opened" and again.alert.id != first.id


def test_external_runbook_base_overrides_link():
    book = AlertBook(RunbookLinks("http://f", external_base="https://wiki.corp/sec"))
    assert book.apply(finding()).alert.runbook_url == "https://wiki.corp/sec/plaintext_edge"


PIPELINE_DETECTORS = [n for n, cls in DETECTORS.items() if cls.consumes in ("events", "windows")]


@pytest.mark.parametrize("name", PIPELINE_DETECTORS)
def test_every_detector_has_a_runbook(name):
    text = runbooks.markdown(name)
    assert text is not None, f"alerts/runbooks/{name}.md is missing"
    for section in ("## What fired", "## Why it matters", "## Verify", "## Contain",
                    "## Close or suppress"):
        assert section in text, f"{name} runbook lacks {section!r}"
    assert "<h1>" in runbooks.html(name)


def test_runbook_html_escapes_raw_html():
    assert runbooks.html("../etc/passwd") is None
    assert "<script" not in runbooks.html("plaintext_edge")


def test_writer_keeps_analyst_status(tmp_path):
    store = Store.open(StoreSettings(path=tmp_path / "d"))
    try:
        book = AlertBook(RunbookLinks("http://f"))
        writer = AlertWriter(store, book)
        (alert,) = writer.write([book.apply(finding())])
        store.upsert_alerts([type(alert).from_dict({**alert.to_dict(),
                                                    "status": "acknowledged",
                                                    "labels": {"assignee": "ana"}})])
        (updated,) = writer.write([book.apply(finding(minutes=5))])
        assert updated.status == "acknowledged" and updated.count == 2
        stored = store.get_alert(alert.id)
        assert stored.status == "acknowledged" and stored.labels["assignee"] == "ana"
        assert stored.count == 2
    finally:
        store.close()


def test_file_export_one_line_per_alert_latest_state(tmp_path):
    out = tmp_path / "alerts.jsonl"
    export = AlertFileExport(out)
    book = AlertBook(RunbookLinks("http://f"))
    export.update([book.apply(finding()).alert])
    export.update([book.apply(finding("c->d")).alert])
    export.update([book.apply(finding(minutes=3)).alert])
    export.flush()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((a["title"], a["count"]) for a in lines) == [("title a->b", 2),
                                                               ("title c->d", 1)]
    assert all(set(a) == set(ALERT_FIELDS) for a in lines)
