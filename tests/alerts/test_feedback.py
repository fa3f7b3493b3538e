"""The feedback loop through the real pipeline: a benign pattern pages before a false-positive
verdict and not after (same pattern, later time, also after a restart), until the rule is
expired; per-detector precision from verdicts; rule expiry and partial down-scoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.feedback import FeedbackRule, FeedbackRules
from alerts.notify import Notifier
from meshwatch.pipeline import Pipeline
from meshwatch.records import Endpoint, Finding
from meshwatch.settings import load_settings
from tests.alerts.api_client import client
from tests.alerts.factories import access_log, alert, raw

BENIGN = "10.244.7.7"  # a monitoring probe that calls the ledger without mTLS, by design
OTHER = "10.244.8.8"


def _settings(path, receiver):
    return load_settings(overrides={"store": {"path": str(path)}, "alerts": {
        "public_url": "http://feed.test",
        "routing": {"route": {"receiver": "hooks", "group_by": ["..."], "group_wait": "0s"},
                    "receivers": [{"name": "hooks",
                                   "webhook_configs": [{"url": receiver.url()}]}]}}})


def _traffic(minute: int, offset: int) -> list:
    ts = f"2026-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:00.000Z"
    return [raw(access_log(offset + i, src_ip=ip, ts=ts), offset + i)
            for i, ip in enumerate((BENIGN, OTHER))]


def _paged(receiver) -> dict[str, set[str]]:
    """Source address -> ids of open alerts sent to the on-call webhook."""
    out: dict[str, set[str]] = {}
    for request in receiver.requests:
        for a in request.json()["alerts"]:
            if a["status"] == "open" and a["detector"] == "plaintext_edge":
                out.setdefault(a["source"]["address"], set()).add(a["id"])
    return out


def _run(pipeline, notifier, minute: int, offset: int) -> dict[str, str]:
    pipeline.process(_traffic(minute, offset))
    written = pipeline.checkpoint()
    assert notifier.drain(timeout=10)
    return {a.source.address: a.id for a in written if a.detector == "plaintext_edge"
            and a.status == "open"}


def test_a_benign_pattern_pages_before_feedback_and_not_after(tmp_path, store, receiver):
    settings = _settings(tmp_path / "unused", receiver)
    notifier = Notifier(settings, store)
    notifier.start()
    try:
        pipeline = Pipeline(settings, store, notifier=notifier)
        # Before feedback: both patterns page.
        opened = _run(pipeline, notifier, 0, 0)
        assert set(opened) == {BENIGN, OTHER}
        assert _paged(receiver) == {BENIGN: {opened[BENIGN]}, OTHER: {opened[OTHER]}}

        with client(store, role="analyst", pipeline=pipeline) as c:
            fp = c.post(f"/api/v1/alerts/{opened[BENIGN]}/feedback", json={
                "verdict": "false_positive", "comment": "uptime probe, plaintext by design"})
            assert fp.status_code == 200, fp.text
            rule = fp.json()["rule"]
            assert rule["source"] == BENIGN and rule["state"] == "active"
            assert rule["destination"] == "ledger.pay.svc.cluster.local:8080"
            assert fp.json()["alert"]["status"] == "resolved"
            # The other alert is resolved without a verdict: its pattern may page again.
            c.post(f"/api/v1/alerts/{opened[OTHER]}/resolve", json={"comment": "fixed?"})

            # The same patterns, later: only the one without feedback pages again.
            again = _run(pipeline, notifier, 30, 10)
            assert set(again) == {OTHER} and again[OTHER] != opened[OTHER]
            assert _paged(receiver)[BENIGN] == {opened[BENIGN]}
            assert pipeline.feedback_rules.dropped["plaintext_edge"] >= 1

            # The rule is visible over the API (and survives a restart: a new pipeline loads
            # it from the store).
            rules = c.get("/api/v1/feedback/rules", params={"state": "active"}).json()["items"]
            assert [r["id"] for r in rules] == [rule["id"]]
        restarted = Pipeline(settings, store, notifier=notifier)
        restarted.restore()
        c2 = client(store, role="analyst", pipeline=restarted)
        with c2:
            c2.post(f"/api/v1/alerts/{again[OTHER]}/resolve", json={})
            after_restart = _run(restarted, notifier, 60, 20)
            assert set(after_restart) == {OTHER}
            # Expire the rule: the benign pattern pages again.
            expired = c2.delete(f"/api/v1/feedback/rules/{rule['id']}")
            assert expired.json()["state"] == "expired"
            c2.post(f"/api/v1/alerts/{after_restart[OTHER]}/resolve", json={})
            back = _run(restarted, notifier, 90, 30)
            assert set(back) == {BENIGN, OTHER}
            assert len(_paged(receiver)[BENIGN]) == 2
            assert c2.delete("/api/v1/feedback/rules/fr-0000000000000000").status_code == 404
    finally:
        notifier.stop()


def test_precision_per_detector_from_verdicts(store):
    alerts = [alert(entity=f"shop/web{i}->db.pay:5432", minutes=i) for i in range(4)]
    alerts.append(alert(entity="shop/x->db.pay:5432", detector="first_seen_edge"))
    store.upsert_alerts(alerts)
    with client(store, role="analyst") as c:
        verdicts = ["true_positive", "true_positive", "true_positive", "false_positive",
                    "benign_by_design"]
        for a, verdict in zip(alerts, verdicts, strict=True):
            r = c.post(f"/api/v1/alerts/{a.id}/feedback", json={"verdict": verdict})
            assert r.status_code == 200
            assert (r.json()["rule"] is None) == (verdict == "true_positive")
        # A changed verdict replaces the earlier one (one label per alert).
        c.post(f"/api/v1/alerts/{alerts[2].id}/feedback", json={"verdict": "false_positive"})
        rows = {r["detector"]: r for r in c.get("/api/v1/detectors/precision").json()["items"]}
        assert rows["plaintext_edge"]["true_positive"] == 2
        assert rows["plaintext_edge"]["false_positive"] == 2
        assert rows["plaintext_edge"]["precision"] == 0.5
        assert rows["first_seen_edge"]["benign_by_design"] == 1
        assert rows["first_seen_edge"]["precision"] == 0.0
        detail = c.get(f"/api/v1/alerts/{alerts[2].id}").json()
        assert detail["feedback"]["verdict"] == "false_positive"
        assert [e["verdict"] for e in detail["audit"]] == ["true_positive", "false_positive"]


def _finding(score: float = 1.0) -> Finding:
    return Finding("plaintext_edge", "e", datetime(2026, 3, 1, tzinfo=UTC), score, "high", "t",
                   "s", Endpoint(address=BENIGN), Endpoint(service="ledger:8080"))


def test_rules_expire_and_can_lower_a_score_without_dropping():
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    rules = FeedbackRules(thresholds={"plaintext_edge": 0.5}, clock=lambda: now[0])
    rule = FeedbackRule("fr-1", "plaintext_edge", BENIGN, "ledger:8080", 0.0, "false_positive",
                        "al-1", "ana", "", now[0], now[0] + timedelta(days=30))
    rules.add(rule)
    assert rules.apply([_finding()]) == []
    other = Finding("plaintext_edge", "e", now[0], 1.0, "high", "t", "s",
                    Endpoint(address=OTHER), Endpoint(service="ledger:8080"))
    assert rules.apply([other]) == [other]
    now[0] += timedelta(days=31)
    assert rules.apply([_finding()]) == [_finding()]
    # A softer rule: the score drops but stays above the threshold: it still alerts, marked.
    rules.add(FeedbackRule("fr-1", "plaintext_edge", BENIGN, "", 0.6, "benign_by_design",
                           "al-1", "ana", "", now[0], now[0] + timedelta(days=1)))
    (kept,) = rules.apply([_finding()])
    assert kept.score == 0.6 and kept.labels["feedback_rule"] == "fr-1"
    assert rules.apply([_finding(score=0.8)]) == []  # 0.48 < 0.5
