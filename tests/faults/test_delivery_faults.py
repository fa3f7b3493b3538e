"""Webhook receivers that are down, slow, failing or rate-limiting: the outbox holds, retries
and delivers later, and a slow receiver never stalls consumption.

One receiver with four webhook integrations, each in front of a real loopback HTTP server with
its own fault: down for the whole first run (and up for the next, a new process), slower than
the sink time-out, 500 three times, 429 with ``Retry-After: 2``. The simulated mesh raises the
alerts; every notification must reach every receiver under exactly one idempotency key (a
time-out may resend, always with the same key), and the pipeline must keep processing while a
delivery hangs.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from alerts.notify import Notifier
from ingest.sources.files import read_records
from meshwatch.pipeline import Pipeline
from meshwatch.settings import StoreSettings, load_settings
from meshwatch.store import Store
from tests.alerts.receivers import Receiver
from tests.faults.conftest import Recorder
from tests.faults.helpers import cli

SLOW_DELAY = 2.5
TIMEOUT = 1.0
RETRY_AFTER = 2.0


def _keys(receiver: Receiver) -> Counter[str]:
    return Counter(r.headers["idempotency-key"] for r in receiver.requests)


@pytest.mark.slow
def test_down_slow_500_and_429_receivers_get_everything_once(sim: Path, tmp_path: Path,
                                                             measured: Recorder) -> None:
    down, slow = Receiver(), Receiver(delay=SLOW_DELAY).start()
    failing = Receiver(script=[500, 500, 500]).start()
    limited = Receiver(script=[429], retry_after=f"{RETRY_AFTER:g}").start()
    receivers = {"down": down, "slow": slow, "failing": failing, "limited": limited}
    names = list(receivers)
    config = tmp_path / "meshwatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")}, "alerts": {
        "routing": {
            "route": {"receiver": "oncall", "group_by": ["..."], "group_wait": "0s",
                      "group_interval": "1h", "repeat_interval": "24h"},
            "receivers": [{"name": "oncall", "webhook_configs": [
                {"url": receivers[n].url(f"/{n}")} for n in names]}]},
        "delivery": {"timeout": f"{TIMEOUT:g}s", "retry_initial": "200ms", "retry_max": "1s",
                     "drain_timeout": "20s"}}}))
    try:
        # Run 1 (in this process, to watch it): the simulated mesh, batch by batch.
        settings = load_settings(config)
        store = Store.open(settings.store)
        notifier = Notifier(settings, store)
        notifier.start()
        pipeline = Pipeline(settings, store, notifier=notifier)
        done_at: list[tuple[float, int]] = []  # (when a batch was checkpointed, records)
        batch: list = []
        for record in read_records(sim / "envoy-json.log", "envoy-json"):
            batch.append(record)
            if len(batch) == 500:
                pipeline.process(batch)
                pipeline.checkpoint()
                done_at.append((time.time(), pipeline.stats.records))
                batch = []
        pipeline.process(batch)
        pipeline.finish()
        pipeline.checkpoint()
        records = pipeline.stats.records
        slow.delay = 0.0  # the slow receiver recovers; the down one stays down
        assert not notifier.drain(20.0), "the down receiver's notifications cannot be done"
        notifier.stop()
        pending = notifier.outbox.counts()
        alerts = len(store.list_alerts(limit=1000))
        pipeline.close()
        store.close()
        assert pending["failed"] == 0
        assert pending["pending"] > 0 and not down.requests

        # Run 2: a new process on the same store, the down receiver is back.
        down.start()
        empty = tmp_path / "empty.log"
        empty.write_bytes(b"")
        second = cli("run", "--input", str(empty), "-c", str(config), "--quiet")
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        for receiver in receivers.values():
            receiver.stop()

    store = Store.open(StoreSettings(path=tmp_path / "store"))
    try:
        rows = store.query("SELECT notification_id, integration, state, attempts "
                           "FROM {db}.notify_outbox FINAL")
    finally:
        store.close()
    assert rows and {r["state"] for r in rows} == {"delivered"}
    per_integration: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        per_integration[names[int(row["integration"].rsplit("/", 1)[1])]].add(
            row["notification_id"])
    expected = per_integration["down"]
    assert len(expected) == pending["pending"]
    for name, receiver in receivers.items():
        # Every notification arrived, each under one key; no key the outbox does not know.
        # (Ids differ per integration; every integration got the same number.)
        assert set(_keys(receiver)) == per_integration[name], name
        assert len(per_integration[name]) == len(expected), name
    assert max(_keys(down).values()) == 1  # it was never half-delivered
    assert sum(_keys(failing).values()) == len(expected) + 3  # exactly the three 500s retried
    # 429: the retry of that notification waited at least Retry-After.
    first = limited.requests[0]
    retry = next(r for r in limited.requests[1:]
                 if r.headers["idempotency-key"] == first.headers["idempotency-key"])
    assert retry.at - first.at >= RETRY_AFTER
    # Slow: time-outs resent with the same key; consumption went on meanwhile.
    timed_out = sum(_keys(slow).values()) - len(expected)
    assert timed_out >= 1
    stalls = [(r.at, r.at + SLOW_DELAY) for r in slow.requests[:timed_out]]
    during = [n for at, n in done_at if any(a < at < b for a, b in stalls)]
    assert len(during) >= 2, "no batch was processed while a delivery hung"
    assert "delivered this run, 0 pending in the outbox, 0 failed" in " ".join(
        second.stdout.split())
    delivered = sum(len(v) for v in per_integration.values())
    measured(
        scenario="webhooks: one down across a restart, one slower than the 1 s time-out, one "
                 "500 x3, one 429 Retry-After 2 s",
        records_in=records, alerts=alerts, notifications=delivered,
        notifications_delivered=delivered,
        detail=f"{len(expected)} notification(s) per receiver; {pending['pending']} held in the "
               f"outbox across the restart; {timed_out} time-out resend(s) with the same key; "
               f"{len(during)} batches processed while a delivery hung; 429 retry after "
               f"{retry.at - first.at:.1f} s",
        result="every notification delivered under one key per receiver; none failed")
