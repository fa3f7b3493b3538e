"""Live alert changes for the SSE stream: pushed in-process, or polled from the store.

Two sources feed one fan-out, so the stream works in both deployments:

* in-process `publish`: analyst actions, and a pipeline running in this process (embedded
  mode: ``meshwatch run --serve``), announce the alerts they wrote at once;
* a poller thread (while anyone listens) asks the store every ``poll_interval`` seconds for
  alerts whose ``version`` is newer than the last one seen: writes by other processes (a
  pipeline next to a ClickHouse server, the CLI, another API replica) arrive that way.

An alert is announced only when its state (status, count, last_seen, severity, labels...)
differs from the last announced one, so the two sources never double an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from meshwatch.records import Alert
from meshwatch.store import Store, StoreError
from meshwatch.store.store import row_alert

log = logging.getLogger("meshwatch.alerts.live")

EventKind = Literal["opened", "updated", "status"]
LOOKBACK_US = 10_000_000  # re-read 10 s of versions: writers' clocks and inserts interleave


def _signature(alert: Alert) -> str:
    body = json.dumps([alert.status, alert.count, alert.severity, str(alert.last_seen),
                       alert.score, sorted(alert.labels.items())], default=str)
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


@dataclass
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    dropped: int = 0
    reset: bool = field(default=False)


class AlertFeed:
    """Fan-out of alert changes to subscribers (each an asyncio queue on its own loop)."""

    def __init__(self, store: Store | None, poll_interval: float = 1.0,
                 max_subscribers: int = 100, queue_size: int = 1000,
                 remember: int = 100_000) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self.remember = remember
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._known: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (status, sig)
        self._since: int | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.published = 0

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self) -> Subscriber | None:
        """A new subscriber on the running loop, or None when the feed is full."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._subscribers) >= self.max_subscribers:
                return None
            sub = Subscriber(loop, asyncio.Queue(self.queue_size))
            self._subscribers.append(sub)
            start = self.store is not None and (self._poller is None
                                                or not self._poller.is_alive())
        if start:
            self._start_poller()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, alerts: Iterable[Alert]) -> int:
        """Announce alerts whose state changed since last announced; thread-safe."""
        events = []
        with self._lock:
            for alert in alerts:
                sig = _signature(alert)
                before = self._known.get(alert.id)
                if before is not None and before[1] == sig:
                    continue
                kind: EventKind
                if before is None:
                    kind = "opened" if alert.count <= 1 and alert.status == "open" else "updated"
                else:
                    kind = "status" if before[0] != alert.status else "updated"
                self._known[alert.id] = (alert.status, sig)
                self._known.move_to_end(alert.id)
                while len(self._known) > self.remember:
                    self._known.popitem(last=False)
                events.append({"kind": kind, "alert": alert.to_dict()})
            subscribers = list(self._subscribers)
        for event in events:
            for sub in subscribers:
                sub.loop.call_soon_threadsafe(self._offer, sub, event)
        self.published += len(events)
        return len(events)

    @staticmethod
    def _offer(sub: Subscriber, event: dict[str, Any]) -> None:
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A slow reader: drop what it has and tell it to reload the list instead.
            sub.dropped += 1
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait({"kind": "reset", "alert": None})

    # -- polling the store -----------------------------------------------------------------

    def _start_poller(self) -> None:
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll_loop, name="alert-feed-poller",
                                        daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if not self._subscribers:
                # Idle: stop; the next subscriber starts a new poller.
                with self._lock:
                    if not self._subscribers:
                        self._poller = None
                        return
            try:
                self.poll_once()
            except StoreError as exc:
                log.warning("alert feed poll failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def poll_once(self) -> int:
        """Read alerts written since the last poll and publish the changed ones."""
        assert self.store is not None
        if self._since is None:
            rows = self.store.query("SELECT max(version) AS v FROM {db}.alerts "
                                    "SETTINGS output_format_json_quote_64bit_integers = 0")
            self._since = int(rows[0]["v"] or 0) if rows else 0
            return 0
        since = max(self._since - LOOKBACK_US, 0)
        changed = self.store.query(
            "SELECT id, max(version) AS v FROM {db}.alerts WHERE version > {since:UInt64} "
            "GROUP BY id ORDER BY v LIMIT 1000 "
            "SETTINGS output_format_json_quote_64bit_integers = 0", {"since": since})
        if not changed:
            return 0
        self._since = max(self._since, max(int(r["v"]) for r in changed))
        rows = self.store.query(
            "SELECT * FROM {db}.alerts FINAL WHERE id IN {ids:Array(String)}",
            {"ids": [r["id"] for r in changed]})
        return self.publish(row_alert(r) for r in rows)


def sse_event(event: dict[str, Any]) -> bytes:
    """One SSE message (``event: alert``, JSON data on one line)."""
    data = json.dumps(event, separators=(",", ":"), default=str)
    name = "reset" if event.get("kind") == "reset" else "alert"
    return f"event: {name}\ndata: {data}\n\n".encode()


def keepalive() -> bytes:
    return f": keep-alive {int(time.time())}\n\n".encode()
