"""The notifier: the chain of stages between the alert lifecycle and the sinks.

    changes -> silences -> routing tree -> notification groups -> outbox -> retry -> sinks
               (suppress)  (receivers)     (wait/interval/repeat) (durable) (backoff)

`Notifier.submit` is what the pipeline calls at each flush. It applies silences (and returns
the alerts whose status that changed, so they are stored that way), routes the rest into
notification groups, and writes the group membership to the store before it returns: from
then on nothing is lost, whatever happens to the process. It never sends anything itself.

A scheduler thread flushes due groups into the outbox; one delivery thread per integration
sends (`alerts.outbox`). `drain` is for finite runs: flush every group now, deliver what can
be delivered within the time-out, and leave the rest in the outbox for the next run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from alerts.grouping import Dispatcher, FlushResult, LogEntry, Member
from alerts.matchers import SILENCED_BY
from alerts.outbox import DeliveryWorker, Outbox, OutboxItem, RetryPolicy
from alerts.routing import RoutingConfig
from alerts.silences import Silence, SilenceStore, apply_silences
from alerts.sinks.base import SinkContext, deny_networks
from alerts.versioning import next_version
from meshwatch.records import Alert
from meshwatch.store import Store, StoreError
from meshwatch.store.store import ch_ts

if TYPE_CHECKING:
    from alerts.lifecycle import AlertChange
    from meshwatch.settings import Settings

log = logging.getLogger("meshwatch.alerts.notify")

SILENCE_CACHE_SECONDS = 1.0


def sink_context(settings: Settings) -> SinkContext:
    a = settings.alerts
    return SinkContext(
        secrets={k: v.get_secret_value() for k, v in a.secrets.items()},
        deny_networks=deny_networks(a.deny_private_webhooks, a.webhook_deny_networks),
        timeout=a.delivery.timeout,
        feed_url=a.public_url,
    )


def load_routing(settings: Settings) -> RoutingConfig | None:
    """The configured routing tree, validated (raises `ConfigError` naming the key)."""
    if settings.alerts.routing is None:
        return None
    where = "alerts.routing_file" if settings.alerts.routing_file else "alerts.routing"
    return RoutingConfig.parse(settings.alerts.routing, sink_context(settings), where=where)


def _ts(seconds: float) -> str:
    return ch_ts(datetime.fromtimestamp(seconds, UTC))


class Notifier:
    """Silences, routing, grouping and durable delivery of alert changes.

    ``clock`` (seconds, like `time.time`) drives grouping and retry timing; tests pass their
    own and call `tick` / `deliver_now` instead of `start`.
    """

    def __init__(self, settings: Settings, store: Store,
                 clock: Callable[[], float] = time.time,
                 routing: RoutingConfig | None = None,
                 rescan_interval: float = 5.0) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.routing = routing if routing is not None else load_routing(settings)
        self.silences = SilenceStore(store, clock=lambda: datetime.fromtimestamp(clock(), UTC))
        self.outbox = Outbox(store, clock)
        d = settings.alerts.delivery
        self.policy = RetryPolicy(d.retry_initial, d.retry_max, d.give_up_after)
        self.dispatcher = Dispatcher(self.routing, settings.alerts.public_url,
                                     is_muted=self._is_muted) if self.routing else None
        self.workers: dict[str, DeliveryWorker] = {
            i.id: DeliveryWorker(i, self.outbox, self.policy, clock, rescan_interval)
            for i in (self.routing.integrations() if self.routing else [])
        }
        self._lock = threading.RLock()  # guards the dispatcher
        self._tick_lock = threading.Lock()  # one flush at a time (scheduler thread or drain)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._restored = False
        self._backlog: list[FlushResult] = []
        self._unsaved: list[Member] = []
        self._silence_cache: tuple[float, list[Silence]] = (float("-inf"), [])

    # -- silences --------------------------------------------------------------------------

    def _active_silences(self, refresh: bool = False) -> list[Silence]:
        stamp, cached = self._silence_cache
        if refresh or time.monotonic() - stamp > SILENCE_CACHE_SECONDS:
            cached = self.silences.active()
            self._silence_cache = (time.monotonic(), cached)
        return cached

    def _is_muted(self, labels: Mapping[str, str]) -> bool:
        try:
            silences = self._active_silences()
        except StoreError:
            silences = self._silence_cache[1]
        return any(s.matches(dict(labels)) for s in silences)

    # -- restore ---------------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild notification groups from the store (idempotent; done before first use)."""
        with self._lock:
            if self._restored or self.dispatcher is None:
                self._restored = True
                return
            rows = self.store.query(
                "SELECT group_key, alert_id, route_path, receiver, group_labels, alert "
                "FROM {db}.notify_groups FINAL WHERE removed = 0")
            members = [Member(r["group_key"], r["route_path"], r["receiver"],
                              json.loads(r["group_labels"]),
                              Alert.from_dict(json.loads(r["alert"]))) for r in rows]
            logs = [(r["group_key"], r["integration"],
                     LogEntry(frozenset(r["firing"]), frozenset(r["resolved"]),
                              datetime.fromisoformat(r["sent_at"]).replace(tzinfo=UTC).timestamp(),
                              int(r["seq"])))
                    for r in self.store.query(
                        "SELECT group_key, integration, firing, resolved, sent_at, seq "
                        "FROM {db}.notify_log FINAL")]
            stale = self.dispatcher.restore(members, logs, self.clock())
            self._persist_members(stale)
            self._restored = True
            if members:
                log.info("restored %d alert(s) in %d notification group(s)", len(members),
                         len(self.dispatcher.groups))

    # -- the pipeline's entry point --------------------------------------------------------

    def submit(self, changes: Sequence[AlertChange]) -> list[Alert]:
        """Apply silences and queue notifications durably; returns alerts whose status changed.

        The returned alerts (newly suppressed by a silence, or open again because their
        silence ended) are what the caller must store instead of the submitted versions.
        """
        if not changes:
            return []
        self.restore()
        silences = self._active_silences(refresh=True)
        now = self.clock()
        changed: list[Alert] = []
        members: list[Member] = []
        with self._lock:
            for change in changes:
                alert = apply_silences(change.alert, silences)
                if alert is not change.alert:
                    changed.append(alert)
                if self.dispatcher is None:
                    continue
                if alert.status == "suppressed":
                    members.extend(self.dispatcher.remove(alert))
                else:
                    members.extend(self.dispatcher.add(alert, now))
        # Membership that could not be written last time goes first; on a store error it is
        # kept for the next call (the caller's flush fails and is retried meanwhile).
        members = self._unsaved + members
        try:
            self._persist_members(members)
        except StoreError:
            self._unsaved = members
            raise
        self._unsaved = []
        if members:
            with self._wake:
                self._wake.notify_all()
        return changed

    def _persist_members(self, members: Sequence[Member]) -> None:
        if not members:
            return
        now = _ts(self.clock())
        self.store.insert_rows("notify_groups", [{
            "group_key": m.group_key, "alert_id": m.alert.id, "route_path": m.route_path,
            "receiver": m.receiver, "group_labels": json.dumps(m.group_labels, sort_keys=True),
            "alert": json.dumps(m.alert.to_dict(), default=str), "removed": int(m.removed),
            "updated_at": now, "version": next_version(),
        } for m in members])

    # -- flushing groups into the outbox ---------------------------------------------------

    def tick(self, now: float | None = None, force: bool = False) -> list[OutboxItem]:
        """Flush due groups (all with ``force``) into the outbox; returns the items added."""
        if self.dispatcher is None:
            return []
        self.restore()
        with self._tick_lock:
            now = self.clock() if now is None else now
            with self._lock:
                result = self.dispatcher.flush(now, force=force)
            if result.notifications or result.logs or result.members:
                self._backlog.append(result)
            added: list[OutboxItem] = []
            while self._backlog:
                try:
                    added.extend(self._persist_flush(self._backlog[0], now))
                except StoreError as exc:  # kept in the backlog; the next tick retries
                    log.error("cannot write notifications to the outbox: %s", exc)
                    break
                self._backlog.pop(0)
        for item in added:
            worker = self.workers.get(item.integration)
            if worker is not None:
                worker.submit(item)
        return added

    def _persist_flush(self, result: FlushResult, now: float) -> list[OutboxItem]:
        # Order matters for crash safety: outbox rows, then the log, then member removals.
        # Replaying a flush whose later writes were lost rebuilds the same notification ids,
        # which `Outbox.add` skips.
        items = [OutboxItem(notification=n, sink=integration.sink_name, created_at=now,
                            next_attempt_at=now) for integration, n in result.notifications]
        added = self.outbox.add(items)
        if result.logs:
            self.store.insert_rows("notify_log", [{
                "group_key": key, "integration": integration, "firing": sorted(e.firing),
                "resolved": sorted(e.resolved), "sent_at": _ts(e.sent_at), "seq": e.seq,
                "version": next_version(),
            } for key, integration, e in result.logs])
        self._persist_members(result.members)
        return added

    # -- threads ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler and the delivery threads (loading what earlier runs left)."""
        if self._scheduler is not None:
            return
        self.restore()
        self._stop.clear()
        for worker in self.workers.values():
            worker.start()
        if self.dispatcher is not None:
            self._scheduler = threading.Thread(target=self._schedule_loop, daemon=True,
                                               name="notify-scheduler")
            self._scheduler.start()
        self._report_orphans()

    def _report_orphans(self) -> None:
        try:
            rows = self.store.query(
                "SELECT integration, count() AS n FROM {db}.notify_outbox FINAL "
                "WHERE state = 'pending' GROUP BY integration")
        except StoreError:
            return
        for row in rows:
            if row["integration"] not in self.workers:
                log.warning("%s pending notification(s) for integration %s, which is no longer "
                            "configured: they stay in the outbox", row["n"], row["integration"])

    def _schedule_loop(self) -> None:
        assert self.dispatcher is not None
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("notification scheduler")
            with self._lock:
                due = self.dispatcher.next_due()
            wait = 1.0 if due is None else min(1.0, max(0.0, due - self.clock()))
            if wait > 0:
                with self._wake:
                    self._wake.wait(wait)

    def deliver_now(self) -> int:
        """One synchronous delivery pass over every integration (tests, tools)."""
        return sum(worker.run_once() for worker in self.workers.values())

    def pending(self) -> int:
        """Notifications queued in this process and not yet delivered or failed."""
        return sum(worker.pending() for worker in self.workers.values())

    def drain(self, timeout: float) -> bool:
        """Flush all groups now and deliver until done or ``timeout`` seconds passed.

        Returns True when nothing is left pending; whatever is left stays in the outbox and is
        delivered by the next run.
        """
        if self.dispatcher is None:
            return True
        self.start()
        deadline = time.monotonic() + timeout
        self.tick(force=True)
        for worker in self.workers.values():  # hand over the rows of earlier runs too
            worker.rescan()
        while time.monotonic() < deadline:
            horizon = self.clock() + (deadline - time.monotonic())
            if not any(w.has_work_before(horizon) for w in self.workers.values()):
                break
            time.sleep(0.02)
        return self.pending() == 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads (an in-flight request finishes within the sink time-out)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._scheduler is not None:
            self._scheduler.join(timeout)
            self._scheduler = None
        for worker in self.workers.values():
            worker.stop(timeout)
        if self.routing is not None:
            self.routing.close()

    def summary(self) -> dict[str, Any]:
        """Delivery counts of this run and what the outbox holds."""
        out: dict[str, Any] = {
            "delivered": sum(w.stats.delivered for w in self.workers.values()),
            "failed": sum(w.stats.failed for w in self.workers.values()),
            "retries": sum(w.stats.retries for w in self.workers.values()),
        }
        try:
            out["outbox"] = self.outbox.counts()
        except StoreError:
            out["outbox"] = None
        return out


__all__ = ["SILENCED_BY", "Notifier", "load_routing", "sink_context"]
