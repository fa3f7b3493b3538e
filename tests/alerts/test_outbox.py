"""The durable outbox: retries with backoff and Retry-After, permanent failures listed in the
API, restarts while the receiver is down (exactly once per notification), slow sinks."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.notify import Notifier
from alerts.outbox import OutboxItem, RetryPolicy
from meshwatch.settings import load_settings
from meshwatch.store import Store
from tests.alerts.api_client import bearer
from tests.alerts.factories import alert, change
from tests.alerts.receivers import Receiver


class Clock:
    """A settable clock near real time (stored timestamps stay plausible)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(path, *receivers: tuple[str, Receiver], group_by=("...",), **delivery):
    routing = {
        "route": {"receiver": receivers[0][0], "group_by": list(group_by), "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "4h",
                  "routes": [{"matchers": ["detector=~.+"], "receiver": name, "continue": True}
                             for name, _ in receivers]},
        "receivers": [{"name": name, "webhook_configs": [{"url": r.url()}]}
                      for name, r in receivers],
    }
    return load_settings(overrides={"store": {"path": str(path)}, "alerts": {
        "public_url": "http://feed.test", "routing": routing,
        "delivery": {"retry_initial": "50ms", "retry_max": "200ms", "timeout": "5s",
                     **delivery}}})


def test_retry_policy_backs_off_exponentially_and_honours_retry_after():
    policy = RetryPolicy(initial=1.0, maximum=30.0)
    delays = [policy.delay(n, None) for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        base = min(2 ** (n - 1), 30.0)
        assert base <= d <= min(base + 1.0, 30.0)
    assert policy.delay(1, retry_after=45.0) == 45.0
    assert policy.delay(1, retry_after=10**7) == policy.max_retry_after
    assert len({round(policy.delay(3, None), 6) for _ in range(20)}) > 1  # jittered


def test_retries_until_delivered_with_the_same_idempotency_key(tmp_path, receiver):
    clock = Clock()
    store = Store.open(settings_for(tmp_path / "s", ("hooks", receiver)).store)
    try:
        notifier = Notifier(settings_for(tmp_path / "s", ("hooks", receiver)), store,
                            clock=clock)
        receiver.script = [500, 503]
        notifier.submit([change(alert())])
        (item,) = notifier.tick()
        assert notifier.deliver_now() == 1 and notifier.deliver_now() == 0  # backing off
        clock.advance(1)
        assert notifier.deliver_now() == 1
        clock.advance(1)
        assert notifier.deliver_now() == 1
        keys = [r.headers["idempotency-key"] for r in receiver.wait_for(3)]
        assert keys == [item.id] * 3
        stored = notifier.outbox.get(item.id)
        assert stored.state == "delivered" and stored.attempts == 3
        outcomes = [a["outcome"] for a in notifier.outbox.attempts(item.id)]
        assert outcomes == ["retry", "retry", "delivered"]
        assert "HTTP 500" in notifier.outbox.attempts(item.id)[0]["error"]
    finally:
        store.close()


def test_retry_after_is_honoured(tmp_path, receiver):
    clock = Clock()
    settings = settings_for(tmp_path / "s", ("hooks", receiver))
    store = Store.open(settings.store)
    try:
        notifier = Notifier(settings, store, clock=clock)
        receiver.script, receiver.retry_after = [429], "120"
        notifier.submit([change(alert())])
        notifier.tick()
        assert notifier.deliver_now() == 1
        clock.advance(60)
        assert notifier.deliver_now() == 0  # the receiver asked for two minutes
        clock.advance(61)
        assert notifier.deliver_now() == 1
        assert len(receiver.requests) == 2
    finally:
        store.close()


def test_permanent_failure_is_listed_and_can_be_retried_through_the_api(tmp_path, receiver):
    settings = settings_for(tmp_path / "s", ("hooks", receiver))
    store = Store.open(settings.store)
    try:
        notifier = Notifier(settings, store, rescan_interval=0.0)
        receiver.status = 400
        receiver.reply = b'{"error":"unknown channel"}'
        notifier.submit([change(alert())])
        (item,) = notifier.tick()
        notifier.deliver_now()
        with TestClient(create_app(store, settings), headers=bearer(store, "admin")) as client:
            failed = client.get("/api/v1/deliveries/failed").json()["items"]
            assert [f["notification_id"] for f in failed] == [item.id]
            assert failed[0]["last_status"] == 400 and failed[0]["receiver"] == "hooks"
            assert "unknown channel" in failed[0]["last_error"]
            assert failed[0]["alert_ids"] == [alert().id]
            detail = client.get(f"/api/v1/deliveries/{item.id}").json()
            assert [h["outcome"] for h in detail["history"]] == ["failed"]
            assert client.get("/api/v1/deliveries/nt-nope").status_code == 404
            receiver.status = 200
            retried = client.post(f"/api/v1/deliveries/{item.id}/retry")
            assert retried.status_code == 200 and retried.json()["state"] == "pending"
            assert client.post(f"/api/v1/deliveries/{item.id}/retry").status_code == 409
            notifier.deliver_now()  # the worker's rescan picks the re-queued row up
            assert client.get("/api/v1/deliveries/failed").json()["items"] == []
            states = client.get("/api/v1/deliveries").json()["items"]
            assert [s["state"] for s in states] == ["delivered"]
        assert len(receiver.requests) == 2
    finally:
        store.close()


def test_gives_up_after_the_configured_time(tmp_path):
    clock = Clock()
    down = Receiver()  # never started: connections are refused
    settings = settings_for(tmp_path / "s", ("hooks", down), give_up_after="10s")
    store = Store.open(settings.store)
    try:
        notifier = Notifier(settings, store, clock=clock)
        notifier.submit([change(alert())])
        (item,) = notifier.tick()
        for _ in range(4):  # attempts at 0, 4, 8 s retry; the one at 12 s is past 10 s
            notifier.deliver_now()
            clock.advance(4)
        stored = notifier.outbox.get(item.id)
        assert stored.state == "failed" and stored.last_error.startswith("gave up after 4")
        assert "ConnectError" in stored.last_error
    finally:
        store.close()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_restart_while_the_receiver_is_down_delivers_every_notification_once(tmp_path):
    receiver = Receiver()  # down until phase 3
    path = tmp_path / "s"
    settings = settings_for(path, ("hooks", receiver))
    a, b, c = alert("shop/web->db.pay:5432"), alert("shop/cart->db.pay:5432"), alert("x/y->z:1")

    def attempts(store: Store) -> int:
        return store.count("notify_attempts", final=False)

    # Phase 1: two alerts; every attempt fails; the process goes away.
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    notifier.start()
    notifier.submit([change(a), change(b)])
    wait_until(lambda: attempts(store) >= 4)
    notifier.stop()
    store.close()
    # Phase 2: restarted while still down; a repeat of a and a new alert c arrive.
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    notifier.start()
    notifier.submit([change(alert("shop/web->db.pay:5432", count=2), "updated"), change(c)])
    wait_until(lambda: attempts(store) >= 8)
    assert notifier.outbox.counts()["pending"] == 3
    notifier.stop()
    store.close()
    # Phase 3: the receiver is back; restart again and drain.
    receiver.start()
    try:
        store = Store.open(settings.store)
        notifier = Notifier(settings, store)
        assert notifier.drain(timeout=15) is True
        assert notifier.tick(force=True) == []  # nothing new to say: no second send
        counts = notifier.outbox.counts()
        notifier.stop()
        store.close()
    finally:
        receiver.stop()
    ids = [r.headers["idempotency-key"] for r in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 3
    notified = sorted(x["id"] for r in receiver.requests for x in r.json()["alerts"])
    assert notified == sorted([a.id, b.id, c.id])
    assert counts == {"pending": 0, "delivered": 3, "failed": 0}


def test_a_flush_replayed_after_a_crash_is_not_queued_twice(tmp_path, receiver):
    settings = settings_for(tmp_path / "s", ("hooks", receiver))
    store = Store.open(settings.store)
    try:
        first = Notifier(settings, store)
        first.submit([change(alert())])
        # Crash right after the outbox write, before the notification log was written.
        result = first.dispatcher.flush(time.time())
        (integration, n), = result.notifications
        first.outbox.add([OutboxItem(n, integration.sink_name, time.time(), time.time())])
        again = Notifier(settings, store)
        assert again.tick(force=True) == []  # same id rebuilt, refused by the outbox
        assert again.drain(timeout=10) is True
        again.stop()
        assert [r.headers["idempotency-key"] for r in receiver.requests] == [n.id]
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_a_slow_receiver_blocks_neither_submit_nor_other_receivers(tmp_path):
    slow, fast = Receiver(delay=3.0).start(), Receiver().start()
    settings = settings_for(tmp_path / "s", ("slow", slow), ("fast", fast))
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    try:
        notifier.start()
        notifier.submit([change(alert("a/b->c:1"))])
        slow.wait_for(1, timeout=5)  # the slow receiver is now holding its worker
        started = time.monotonic()
        notifier.submit([change(alert("d/e->f:1"))])
        assert time.monotonic() - started < 1.0
        fast.wait_for(2, timeout=2)  # the other receiver got both, while slow still sleeps
        assert len(slow.requests) == 1
    finally:
        notifier.stop()
        store.close()
        slow.stop()
        fast.stop()


def test_secrets_never_reach_logs_errors_or_settings_repr(tmp_path, receiver, caplog):
    token = "T000/B000/SuPeRsEcReTtOkEn"
    routing = {"route": {"receiver": "chat", "group_wait": "0s"},
               "receivers": [{"name": "chat", "slack_configs": [
                   {"url": {"secret": "slack_url"}}]}]}
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "s")}, "alerts": {
        "routing": routing, "secrets": {"slack_url": receiver.url(f"/services/{token}")}}})
    assert "SuPeRsEcReT" not in repr(settings) and "SuPeRsEcReT" not in str(settings)
    store = Store.open(settings.store)
    try:
        notifier = Notifier(settings, store)
        receiver.status, receiver.reply = 404, f"no_service for /services/{token}".encode()
        notifier.submit([change(alert())])
        (item,) = notifier.tick()
        with caplog.at_level("DEBUG"):
            notifier.deliver_now()
        failed = notifier.outbox.get(item.id)
        assert failed.state == "failed" and "HTTP 404" in failed.last_error
        assert "SuPeRsEcReT" not in failed.last_error and "***" in failed.last_error
        assert "SuPeRsEcReT" not in caplog.text and "HTTP 404" in caplog.text
        assert receiver.requests[0].path == f"/services/{token}"  # it was used, not leaked
    finally:
        store.close()
