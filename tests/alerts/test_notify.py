"""The notifier wired into the pipeline: records in, webhook POST out; silences; the edge's
recent series in evidence; quiet periods from config; MITRE mapping; `meshwatch run` restarts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import detectors.catalog  # noqa: F401
from alerts import mitre, runbooks
from alerts.matchers import SILENCED_BY
from alerts.notify import Notifier
from alerts.series import EdgeSeries
from alerts.silences import SilenceStore
from detectors.base import DETECTORS
from meshwatch.pipeline import Pipeline
from meshwatch.records import Endpoint, Finding, parse_ts
from meshwatch.settings import ConfigError, load_settings
from meshwatch.store import Store
from tests.alerts.factories import access_log, raw
from tests.alerts.receivers import Receiver

REPO = Path(__file__).resolve().parents[2]


def routed_settings(path: Path, receiver: Receiver, **alerts):
    return load_settings(overrides={"store": {"path": str(path)}, "alerts": {
        "public_url": "http://feed.test",
        "routing": {"route": {"receiver": "hooks", "group_by": ["..."], "group_wait": "0s"},
                    "receivers": [{"name": "hooks",
                                   "webhook_configs": [{"url": receiver.url()}]}]},
        **alerts}})


def test_records_in_webhook_out(tmp_path, receiver):
    settings = routed_settings(tmp_path / "store", receiver)
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    try:
        pipeline = Pipeline(settings, store, notifier=notifier)
        notifier.start()
        pipeline.process([raw(access_log(i), i) for i in range(3)])
        (written,) = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
        (request,) = receiver.wait_for(1, timeout=10)
        body = request.json()
        (sent,) = [a for a in body["alerts"] if a["detector"] == "plaintext_edge"]
        assert sent["id"] == written.id and sent["status"] == "open"
        assert sent["destination"]["namespace"] == "pay"
        assert sent["runbook_url"] == "http://feed.test/runbooks/plaintext_edge"
        assert sent["mitre"] == ["TA0006", "T1040", "TA0008", "T1557"]
        assert sent["evidence"][0]["request_id"] == "req-0"
        assert request.headers["idempotency-key"] == body["id"]
        assert store.get_alert(written.id).status == "open"
    finally:
        notifier.stop()
        store.close()


def test_silenced_alerts_are_stored_suppressed_through_the_pipeline(tmp_path, receiver):
    settings = routed_settings(tmp_path / "store", receiver)
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    try:
        silence = SilenceStore(store).create(["dst_namespace=pay"], created_by="ana",
                                             comment="maintenance", duration=3600)
        pipeline = Pipeline(settings, store, notifier=notifier)
        pipeline.process([raw(access_log(i), i) for i in range(3)])
        written = pipeline.flush()
        assert written and all(a.status == "suppressed" for a in written)
        for alert in written:
            stored = store.get_alert(alert.id)
            assert stored.status == "suppressed" and stored.labels[SILENCED_BY] == silence.id
            assert pipeline.alert_book.get(alert.fingerprint).status == "suppressed"
        # Repeats of the silenced edge stay suppressed and are never sent.
        pipeline.process([raw(access_log(i), i) for i in range(3, 6)])
        assert all(a.status == "suppressed" for a in pipeline.flush())
        assert notifier.drain(timeout=5) and receiver.requests == []
    finally:
        notifier.stop()
        store.close()


def test_new_alerts_carry_the_recent_series_of_their_edge(tmp_path):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")}})
    store = Store.open(settings.store)
    try:
        pipeline = Pipeline(settings, store)
        assert isinstance(pipeline.alert_book.series, EdgeSeries)
        lines = [access_log(m * 10 + i, ts=f"2026-03-01T10:{m:02d}:{i:02d}.000Z")
                 for m in range(4) for i in range(m + 1)]  # 1, 2, 3, 4 calls per minute
        pipeline.process([raw(line, n) for n, line in enumerate(lines)])
        pipeline.finish()
        (alert,) = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
        assert not any(e.get("kind") == "edge_series" for e in alert.evidence)  # no history yet
        edge = store.query("SELECT DISTINCT edge_src, edge_dst FROM {db}.edge_windows")[0]
        finding = Finding("traffic_anomaly", f"{edge['edge_src']}->{edge['edge_dst']}",
                          parse_ts("2026-03-01T10:05:00Z"), 1.0, "medium", "t", "s",
                          Endpoint(), Endpoint())
        series = EdgeSeries(store, windows=3, window_seconds=60)(finding)
        assert series["kind"] == "edge_series" and series["window_seconds"] == 60
        assert [w["requests"] for w in series["windows"]] == [2, 3, 4]  # the last 3, oldest first
        assert [w["mtls_false"] for w in series["windows"]] == [2, 3, 4]
        assert series["windows"][0]["window_start"] == "2026-03-01T10:01:00.000Z"
        opened = pipeline.alert_book.apply(finding).alert  # stored with the alert it opens
        recent = opened.evidence[-1]
        assert recent["kind"] == "edge_series" and len(recent["windows"]) == 4  # up to 12
        assert recent["windows"][-3:] == series["windows"]
    finally:
        store.close()


def test_quiet_periods_come_from_config_and_are_validated(tmp_path):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")},
                                        "alerts": {"quiet_periods": {"plaintext_edge": "2m"},
                                                   "quiet_period": "1d"}})
    store = Store.open(settings.store)
    try:
        with pytest.raises(ConfigError, match=r"alerts.quiet_periods.plaintext_egde: unknown"):
            Pipeline(load_settings(overrides={"alerts": {"quiet_periods": {
                "plaintext_egde": "1h"}}}), store)
        pipeline = Pipeline(settings, store)
        assert pipeline.alert_book.quiet_periods == {"plaintext_edge": 120.0}
        assert pipeline.alert_book.default_quiet_period == 86400.0
        pipeline.process([raw(access_log(0), 0)])
        (alert,) = [a for a in pipeline.flush() if a.detector == "plaintext_edge"]
        # Only mTLS traffic for 3 minutes: the plaintext alert's quiet period passes.
        pipeline.process([raw(access_log(1, mtls=True, ts="2026-03-01T10:03:00.000Z"), 1)])
        resolved = {a.id: a.status for a in pipeline.flush()}
        assert resolved[alert.id] == "resolved"
        assert store.get_alert(alert.id).status == "resolved"
    finally:
        store.close()
    with pytest.raises(ConfigError, match="alerts.quiet_periods"):
        load_settings(overrides={"alerts": {"quiet_periods": {"plaintext_edge": "0s"}}})


PIPELINE_DETECTORS = [n for n, cls in DETECTORS.items() if cls.consumes in ("events", "windows")]


@pytest.mark.parametrize("name", PIPELINE_DETECTORS)
def test_every_pipeline_detector_maps_to_mitre_attack(name):
    ids = DETECTORS.get(name).mitre
    assert ids, f"{name}: set the `mitre` class attribute (ATT&CK tactic and technique ids)"
    for uid in ids:
        assert re.fullmatch(r"TA\d{4}|T\d{4}(\.\d{3})?", uid), f"{name}: bad ATT&CK id {uid}"
        assert mitre.name(uid), f"{name}: add {uid} to alerts/mitre.py"
    assert any(t for _, t in mitre.pairs(ids)), f"{name}: map at least one technique"
    assert runbooks.markdown(name) is not None


def test_alertmanager_detector_has_a_runbook():
    text = runbooks.markdown("alertmanager")
    assert text and all(s in text for s in ("## What fired", "## Verify", "## Contain",
                                            "## Close or suppress"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHWATCH_")}
    return subprocess.run([sys.executable, "-m", "meshwatch.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.timeout(240)
def test_meshwatch_run_leaves_undelivered_notifications_for_the_next_run(tmp_path):
    """A finite run delivers what it can; a later run (a new process) delivers the rest."""
    receiver = Receiver()  # down during the first run
    config = tmp_path / "meshwatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")}, "alerts": {
        "routing": {"route": {"receiver": "hooks", "group_wait": "0s"},
                    "receivers": [{"name": "hooks",
                                   "webhook_configs": [{"url": receiver.url()}]}]},
        "delivery": {"drain_timeout": "1s", "retry_initial": "100ms", "retry_max": "200ms"}}}))
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join(access_log(i) for i in range(5)) + b"\n")
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    first = run_cli("run", "--input", str(log), "--format", "envoy-json", "-c", str(config),
                    "--quiet")
    assert first.returncode == 0, first.stderr
    assert "0 delivered this run, 1 pending in the outbox" in " ".join(first.stdout.split())
    receiver.start()
    try:
        second = run_cli("run", "--input", str(empty), "-c", str(config), "--quiet")
    finally:
        receiver.stop()
    assert second.returncode == 0, second.stderr
    assert "1 delivered this run, 0 pending in the outbox" in " ".join(second.stdout.split())
    (request,) = receiver.requests
    assert {a["detector"] for a in request.json()["alerts"]} == {"plaintext_edge"}
