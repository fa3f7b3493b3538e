"""The durable outbox, the retry stage and the delivery workers.

A notification is written to ``notify_outbox`` (state ``pending``) before any attempt to send
it, and leaves that state only when a sink returns normally (a 2xx: ``delivered``) or raises
`PermanentDelivery` / runs out of time (``failed``, listed by the API). A restart loads the
pending rows and carries on, so a receiver that is down across restarts still gets every
notification once it is back. Notification ids are deterministic and `Outbox.add` refuses an
id it already has, so rebuilding a notification after a crash never queues it twice.

One `DeliveryWorker` thread per integration sends, so a slow or dead receiver delays only its
own queue, never the pipeline nor the other receivers. `RetryPolicy` is the one place that
owns backoff: exponential with jitter (tenacity's ``wait_exponential_jitter``), stretched to
a server's ``Retry-After`` when that is longer.

The only duplicate left is the unavoidable one at the sink boundary: a crash after the
receiver answered 2xx but before ``delivered`` was written resends that notification with the
same ``Idempotency-Key`` (PagerDuty's ``dedup_key``, OCSF ``metadata.uid``) for the receiver
to drop.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import tenacity

from alerts.routing import Integration
from alerts.sinks.base import Notification, PermanentDelivery, RetryableDelivery, redact
from alerts.sinks.http import one_line
from alerts.versioning import next_version
from meshwatch.store import Store, StoreError
from meshwatch.store.store import ch_ts
from meshwatch.telemetry import get_telemetry

log = logging.getLogger("meshwatch.alerts.outbox")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)

_SUMMARY = ("SELECT notification_id, receiver, integration, sink, group_key, alert_ids, state, "
            "attempts, created_at, next_attempt_at, last_status, last_error, updated_at "
            "FROM {db}.notify_outbox FINAL ")


def _ch_time(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def _ts(seconds: float) -> str:
    return ch_ts(datetime.fromtimestamp(seconds, UTC))


@dataclass
class OutboxItem:
    """A notification and its delivery state."""

    notification: Notification
    sink: str
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    state: str = PENDING
    last_error: str = ""
    last_status: int | None = None
    version: int = 0

    @property
    def id(self) -> str:
        return self.notification.id

    @property
    def integration(self) -> str:
        return self.notification.integration


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, honouring ``Retry-After``, with a give-up age.

    >>> p = RetryPolicy(initial=1.0, maximum=60.0)
    >>> 1.0 <= p.delay(1, None) <= 2.0, 8.0 <= p.delay(4, None) <= 9.0, p.delay(30, None) <= 60
    (True, True, True)
    >>> p.delay(1, retry_after=120.0)  # the server asked for two minutes
    120.0
    """

    initial: float = 1.0
    maximum: float = 300.0
    give_up_after: float = 24 * 3600.0
    #: A Retry-After longer than this is capped (a broken server must not park us for days).
    max_retry_after: float = 3600.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        wait = tenacity.wait_exponential_jitter(multiplier=self.initial, max=self.maximum,
                                                jitter=self.initial)
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        seconds = float(wait(state))
        if retry_after is not None:
            seconds = max(seconds, min(retry_after, self.max_retry_after))
        return seconds


class Outbox:
    """The ``notify_outbox`` table: add, update, list and re-queue notifications."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _row(self, item: OutboxItem) -> dict[str, Any]:
        n = item.notification
        return {
            "notification_id": n.id,
            "receiver": n.receiver,
            "integration": n.integration,
            "sink": item.sink,
            "group_key": n.group_key,
            "alert_ids": [a.id for a in n.alerts],
            "payload": json.dumps(n.to_dict(), separators=(",", ":"), default=str),
            "state": item.state,
            "attempts": item.attempts,
            "created_at": _ts(item.created_at),
            "next_attempt_at": _ts(item.next_attempt_at),
            "last_status": item.last_status,
            "last_error": item.last_error[:2000],
            "updated_at": _ts(self.clock()),
            "version": item.version,
        }

    def add(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Persist new notifications; ids already in the outbox (any state) are skipped."""
        if not items:
            return []
        ids = [i.id for i in items]
        existing = {r["notification_id"] for r in self.store.query(
            "SELECT notification_id FROM {db}.notify_outbox "
            "WHERE notification_id IN {ids:Array(String)}", {"ids": ids})}
        fresh = [i for i in items if i.id not in existing]
        for item in fresh:
            item.version = next_version()
        if fresh:
            self.store.insert_rows("notify_outbox", [self._row(i) for i in fresh])
        return fresh

    def save(self, item: OutboxItem) -> None:
        """Write the item's current state (a new version of its row)."""
        item.version = next_version()
        self.store.insert_rows("notify_outbox", [self._row(item)])

    def record_attempt(self, item: OutboxItem, outcome: str, status: int | None, error: str,
                       seconds: float) -> None:
        self.store.insert_rows("notify_attempts", [{
            "notification_id": item.id, "attempt": item.attempts,
            "integration": item.integration, "ts": _ts(self.clock()), "outcome": outcome,
            "status": status, "error": error[:2000], "duration_ms": round(seconds * 1000, 3),
        }])

    def _items(self, rows: list[dict[str, Any]]) -> list[OutboxItem]:
        return [OutboxItem(
            notification=Notification.from_dict(json.loads(r["payload"])), sink=r["sink"],
            created_at=_ch_time(r["created_at"]), next_attempt_at=_ch_time(r["next_attempt_at"]),
            attempts=int(r["attempts"]), state=r["state"], last_error=r["last_error"],
            last_status=r["last_status"], version=int(r["version"])) for r in rows]

    def pending(self, integration: str | None = None) -> list[OutboxItem]:
        if integration is None:
            rows = self.store.query(
                "SELECT * FROM {db}.notify_outbox FINAL WHERE state = {state:String} "
                "ORDER BY created_at, notification_id", {"state": PENDING})
        else:
            rows = self.store.query(
                "SELECT * FROM {db}.notify_outbox FINAL WHERE state = {state:String} AND "
                "integration = {integration:String} ORDER BY created_at, notification_id",
                {"state": PENDING, "integration": integration})
        return self._items(rows)

    def get(self, notification_id: str) -> OutboxItem | None:
        found = self._items(self.store.query(
            "SELECT * FROM {db}.notify_outbox FINAL WHERE notification_id = {id:String}",
            {"id": notification_id}))
        return found[0] if found else None

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Rows for the API (without the payload), most recently updated first."""
        params: dict[str, Any] = {"limit": limit}
        where = ""
        if state is not None:
            where = "WHERE state = {state:String} "
            params["state"] = state
        return self.store.query(
            _SUMMARY + where + "ORDER BY updated_at DESC, notification_id LIMIT {limit:UInt32}",
            params)

    def row(self, notification_id: str) -> dict[str, Any] | None:
        """One notification's row for the API (without the payload)."""
        found = self.store.query(_SUMMARY + "WHERE notification_id = {id:String}",
                                 {"id": notification_id})
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        rows = self.store.query(
            "SELECT state, count() AS n FROM {db}.notify_outbox FINAL GROUP BY state")
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: int(r["n"]) for r in rows})
        return out

    def attempts(self, notification_id: str) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT attempt, ts, outcome, status, error, duration_ms FROM {db}.notify_attempts "
            "FINAL WHERE notification_id = {id:String} ORDER BY attempt", {"id": notification_id})

    def retry(self, notification_id: str) -> OutboxItem | None:
        """Put a failed notification back in the queue (the delivery worker picks it up)."""
        item = self.get(notification_id)
        if item is None or item.state != FAILED:
            return item
        item.state = PENDING
        item.attempts = 0
        item.next_attempt_at = self.clock()
        item.created_at = self.clock()  # a fresh give-up window
        self.save(item)
        return item


@dataclass
class WorkerStats:
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    last_error: str = ""


@dataclass(order=True)
class _Slot:
    due: float
    seq: int
    item: OutboxItem = field(compare=False)


class DeliveryWorker:
    """Delivers one integration's notifications in its own thread.

    New notifications arrive through `submit` (thread-safe); the worker also rescans the
    outbox every ``rescan_interval`` for pending rows it does not hold (rows left by an
    earlier run, or re-queued through the API). `run_once` does one pass synchronously, which
    is what the thread loops over and what tests with an injected clock call directly.
    """

    def __init__(self, integration: Integration, outbox: Outbox, policy: RetryPolicy,
                 clock: Callable[[], float] = time.time, rescan_interval: float = 5.0) -> None:
        self.integration = integration
        self.outbox = outbox
        self.policy = policy
        self.clock = clock
        self.rescan_interval = rescan_interval
        self.stats = WorkerStats()
        self._inbox: queue.Queue[OutboxItem] = queue.Queue()
        self._heap: list[_Slot] = []
        self._held: dict[str, OutboxItem] = {}
        # id -> version of the row this worker wrote last when it finished with it: a rescan
        # that sees an older row is stale, a newer one (re-queued by the API) is new work.
        self._finished: OrderedDict[str, int] = OrderedDict()
        self._seq = 0
        self._last_scan = float("-inf")
        self._lock = threading.Lock()
        self._busy = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queue -----------------------------------------------------------------------------

    def submit(self, item: OutboxItem) -> None:
        self._inbox.put(item)

    def _take(self, item: OutboxItem) -> None:
        done = self._finished.get(item.id)
        if item.id in self._held or (done is not None and item.version <= done):
            return
        self._held[item.id] = item
        self._seq += 1
        heapq.heappush(self._heap, _Slot(item.next_attempt_at, self._seq, item))

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._take(item)

    def rescan(self) -> None:
        self._last_scan = time.monotonic()
        try:
            items = self.outbox.pending(self.integration.id)
        except StoreError as exc:
            log.warning("outbox rescan for %s failed: %s", self.integration.id, exc)
            return
        with self._lock:
            for item in items:
                self._take(item)

    def pending(self) -> int:
        """Notifications this worker holds or has been handed and not finished."""
        with self._lock:
            return len(self._held) + self._inbox.qsize()

    def has_work_before(self, when: float) -> bool:
        """Anything to send (or being sent) at or before ``when``?"""
        with self._lock:
            if self._busy or not self._inbox.empty():
                return True
            return bool(self._heap) and self._heap[0].due <= when

    # -- delivery --------------------------------------------------------------------------

    def run_once(self) -> int:
        """Send everything due now; returns the number of attempts made."""
        self._drain_inbox()
        if time.monotonic() - self._last_scan >= self.rescan_interval:
            self.rescan()
        attempts = 0
        while not self._stop.is_set():
            with self._lock:
                if not self._heap or self._heap[0].due > self.clock():
                    break
                slot = heapq.heappop(self._heap)
                self._busy = True
            try:
                self._attempt(slot.item)
            finally:
                with self._lock:
                    self._busy = False
            attempts += 1
            self._drain_inbox()
        return attempts

    def _attempt(self, item: OutboxItem) -> None:
        sink = self.integration.sink
        started = time.monotonic()
        item.attempts += 1
        status: int | None = None
        retry_after: float | None = None
        try:
            sink.send(item.notification)
            outcome, error = DELIVERED, ""
        except RetryableDelivery as exc:
            outcome, error, status, retry_after = "retry", str(exc), exc.status, exc.retry_after
        except PermanentDelivery as exc:
            outcome, error, status = FAILED, str(exc), exc.status
        except Exception as exc:  # a sink bug: keep the item, retry, and let it show
            outcome, error = "retry", f"{sink.describe()}: unexpected {type(exc).__name__}: {exc}"
            # Logged without a traceback: its frames may hold a secret (a Slack URL, a key).
            log.error("sink %s raised unexpectedly: %s", self.integration.id,
                      redact(error, sink.secrets()))
        error = one_line(redact(error, sink.secrets()))  # logged: never a forged line
        seconds = time.monotonic() - started
        get_telemetry().notifications.add(1, {"sink": self.integration.sink_name,
                                              "outcome": outcome})
        now = self.clock()
        item.last_status, item.last_error = status, error
        if outcome == "retry" and now - item.created_at >= self.policy.give_up_after:
            outcome = FAILED
            item.last_error = (f"gave up after {item.attempts} attempts over "
                               f"{now - item.created_at:.0f} s; last error: {error}")
        if outcome == "retry":
            item.next_attempt_at = now + self.policy.delay(item.attempts, retry_after)
            self.stats.retries += 1
            self.stats.last_error = error
            log.warning("delivery %s to %s failed (attempt %d), retrying in %.1f s: %s",
                        item.id, self.integration.id, item.attempts,
                        item.next_attempt_at - now, error)
        else:
            item.state = outcome
            if outcome == DELIVERED:
                self.stats.delivered += 1
            else:
                self.stats.failed += 1
                self.stats.last_error = item.last_error
                log.error("delivery %s to %s failed permanently: %s", item.id,
                          self.integration.id, item.last_error)
        try:
            self.outbox.save(item)
            self.outbox.record_attempt(item, outcome, status, error, seconds)
        except StoreError as exc:  # state not persisted: a restart may resend (same id)
            log.error("cannot record delivery state of %s: %s", item.id, exc)
        with self._lock:
            if outcome == "retry":
                self._seq += 1
                heapq.heappush(self._heap, _Slot(item.next_attempt_at, self._seq, item))
            else:
                self._held.pop(item.id, None)
                self._finished[item.id] = item.version
                while len(self._finished) > 10_000:
                    self._finished.popitem(last=False)

    # -- thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"deliver:{self.integration.id}")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never let the thread die: log and keep going
                log.exception("delivery worker %s", self.integration.id)
            with self._lock:
                wait = self._heap[0].due - self.clock() if self._heap else self.rescan_interval
            wait = max(0.005, min(wait, self.rescan_interval, 0.5))
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                continue
            with self._lock:
                self._take(item)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
