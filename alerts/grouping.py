"""Notification groups: Alertmanager's dispatcher and notification log, with time passed in.

Each route an alert matches puts it in that route's group for its ``group_by`` label values.
A new group waits ``group_wait`` before its first notification (to collect the alerts of one
incident into one page); after that, a change (a new firing alert, a resolution) is sent at most
once per ``group_interval``; an unchanged group that still fires is re-sent every
``repeat_interval``. Whether a flush sends anything is decided per integration against what that
integration was last sent (the notification log), exactly like Alertmanager's dedup stage:

* something fires that was not in the last notification: send;
* nothing fires any more but the last notification had firing alerts: send (the resolution);
* an alert resolved that the integration saw firing, and it wants resolutions: send;
* otherwise only when ``repeat_interval`` has passed since the last notification.

Resolved alerts leave the group once flushed. Time is a float (``time.time()`` by default in
`alerts.notify`); the dispatcher never reads a clock, so tests drive it with any timeline.

Notification ids are deterministic (`notification_id` over integration, group, alert ids and
the integration's sequence number in that group): rebuilding the same state after a restart
rebuilds the same notification with the same id, which the outbox then refuses to add twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alerts.matchers import alert_labels
from alerts.routing import Integration, Route, RoutingConfig
from alerts.sinks.base import Notification, notification_id
from meshwatch.records import Alert


@dataclass(frozen=True)
class LogEntry:
    """What one integration was last sent for one group (Alertmanager's nflog entry)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    sent_at: float
    seq: int


@dataclass(frozen=True)
class Member:
    """An alert's place in a group: the durable record of a group waiting to be flushed."""

    group_key: str
    route_path: str
    receiver: str
    group_labels: dict[str, str]
    alert: Alert
    removed: bool = False


@dataclass
class Group:
    key: str
    route: Route
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    last_flush: float | None = None
    logs: dict[str, LogEntry] = field(default_factory=dict)


@dataclass
class FlushResult:
    """What a flush produced: notifications to enqueue, log entries and member removals."""

    notifications: list[tuple[Integration, Notification]] = field(default_factory=list)
    logs: list[tuple[str, str, LogEntry]] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)


def needs_update(log: LogEntry | None, firing: frozenset[str], resolved: frozenset[str],
                 send_resolved: bool, now: float, repeat_interval: float) -> bool:
    """Alertmanager's dedup decision for one integration and group.

    >>> e = LogEntry(frozenset({"a"}), frozenset(), sent_at=0.0, seq=0)
    >>> needs_update(None, frozenset({"a"}), frozenset(), True, 1.0, 10.0)
    True
    >>> needs_update(e, frozenset({"a"}), frozenset(), True, 5.0, 10.0)   # nothing new
    False
    >>> needs_update(e, frozenset({"a"}), frozenset(), True, 10.0, 10.0)  # repeat due
    True
    >>> needs_update(e, frozenset({"a", "b"}), frozenset(), True, 1.0, 10.0)
    True
    """
    if log is None:
        return bool(firing)
    if not firing <= log.firing:
        return True
    if not firing:
        return bool(log.firing)
    if send_resolved and not resolved <= log.resolved:
        return True
    return log.sent_at + repeat_interval <= now


class Dispatcher:
    """Groups alerts per route and decides when each group notifies which integration."""

    def __init__(self, routing: RoutingConfig, feed_url: str = "http://127.0.0.1:8080",
                 is_muted: Callable[[Mapping[str, str]], bool] | None = None) -> None:
        self.routing = routing
        self.feed_url = feed_url
        self.is_muted = is_muted or (lambda _labels: False)
        self.groups: dict[str, Group] = {}
        self._index: dict[str, set[str]] = {}  # alert id -> keys of the groups it is in
        self._routes = routing.routes()

    # -- membership ------------------------------------------------------------------------

    def add(self, alert: Alert, now: float) -> list[Member]:
        """Put a new or changed alert into its groups; returns membership changes to persist.

        A firing alert is routed (and joins any group it newly matches, e.g. after a severity
        escalation); a resolved one only updates the groups it is already in (a resolution
        of an alert nobody was told about is not news).
        """
        keys = self._index.setdefault(alert.id, set())
        members: list[Member] = []
        if alert.status != "resolved":
            labels = alert_labels(alert)
            for route in self.routing.match(labels):
                group_labels = route.group_labels(labels)
                key = route.group_key(group_labels)
                if key not in self.groups:
                    self.groups[key] = Group(key, route, group_labels, now + route.group_wait)
                keys.add(key)
        for key in sorted(keys):
            group = self.groups.get(key)
            if group is None:
                keys.discard(key)
                continue
            old = group.alerts.get(alert.id)
            group.alerts[alert.id] = alert
            if old is None or (old.status == "resolved") != (alert.status == "resolved"):
                self._schedule(group, now)
                members.append(Member(key, group.route.path, group.route.receiver,
                                      group.labels, alert))
        if not keys:
            del self._index[alert.id]
        return members

    def remove(self, alert: Alert) -> list[Member]:
        """Take an alert out of every group without notifying (it was silenced)."""
        members = []
        for key in sorted(self._index.pop(alert.id, set())):
            group = self.groups.get(key)
            if group is None or group.alerts.pop(alert.id, None) is None:
                continue
            members.append(Member(key, group.route.path, group.route.receiver, group.labels,
                                  alert, removed=True))
            if not group.alerts:
                del self.groups[key]
        return members

    def _schedule(self, group: Group, now: float) -> None:
        if group.last_flush is None:
            return  # still within group_wait: the first flush is already scheduled
        due = max(now, group.last_flush + group.route.group_interval)
        group.next_flush = min(group.next_flush, due)

    def restore(self, members: Iterable[Member], logs: Iterable[tuple[str, str, LogEntry]],
                now: float) -> list[Member]:
        """Rebuild groups after a restart; returns members whose route no longer exists."""
        stale = []
        for member in members:
            route = self._routes.get(member.route_path)
            if route is None or route.receiver != member.receiver:
                stale.append(Member(member.group_key, member.route_path, member.receiver,
                                    member.group_labels, member.alert, removed=True))
                continue
            group = self.groups.get(member.group_key)
            if group is None:
                group = self.groups[member.group_key] = Group(
                    member.group_key, route, dict(member.group_labels), now + route.group_wait)
            group.alerts[member.alert.id] = member.alert
            self._index.setdefault(member.alert.id, set()).add(member.group_key)
        for key, integration, entry in logs:
            group = self.groups.get(key)
            if group is not None:
                group.logs[integration] = entry
                group.last_flush = max(group.last_flush or entry.sent_at, entry.sent_at)
        return stale

    # -- flushing --------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return min((g.next_flush for g in self.groups.values()), default=None)

    def flush(self, now: float, force: bool = False) -> FlushResult:
        """Flush every group that is due (all of them with ``force``, e.g. at end of input)."""
        result = FlushResult()
        for group in list(self.groups.values()):
            if force or group.next_flush <= now:
                self._flush(group, now, result)
        return result

    def _flush(self, group: Group, now: float, result: FlushResult) -> None:
        route = group.route
        active = [a for a in group.alerts.values() if a.status != "resolved"]
        firing = sorted((a for a in active if not self.is_muted(alert_labels(a))),
                        key=lambda a: (a.first_seen, a.id))
        # Muted (silenced) alerts stay in the group: look again soon, the silence may end.
        muted = len(firing) < len(active)
        resolved = sorted((a for a in group.alerts.values() if a.status == "resolved"),
                          key=lambda a: (a.first_seen, a.id))
        firing_ids = frozenset(a.id for a in firing)
        receiver = self.routing.receivers[route.receiver]
        for integration in receiver.integrations:
            log = group.logs.get(integration.id)
            seen = log.firing if log else frozenset()
            sent_resolved = [a for a in resolved if a.id in seen] \
                if integration.send_resolved else []
            resolved_ids = frozenset(a.id for a in sent_resolved)
            if not needs_update(log, firing_ids, resolved_ids, integration.send_resolved, now,
                                route.repeat_interval):
                continue
            alerts = tuple(firing) + tuple(sent_resolved)
            if not alerts:  # e.g. all resolved and this integration skips resolutions
                entry = LogEntry(firing_ids, resolved_ids, now, log.seq if log else -1)
            else:
                seq = log.seq + 1 if log else 0
                entry = LogEntry(firing_ids, resolved_ids, now, seq)
                nid = notification_id(integration.id, group.key, firing_ids, resolved_ids, seq)
                result.notifications.append((integration, Notification(
                    id=nid, receiver=receiver.name, integration=integration.id,
                    group_key=group.key, group_labels=dict(group.labels), alerts=alerts,
                    created_at=datetime.fromtimestamp(now, UTC), feed_url=self.feed_url)))
            group.logs[integration.id] = entry
            result.logs.append((group.key, integration.id, entry))
        for alert in resolved:
            del group.alerts[alert.id]
            keys = self._index.get(alert.id)
            if keys is not None:
                keys.discard(group.key)
                if not keys:
                    del self._index[alert.id]
            result.members.append(Member(group.key, route.path, route.receiver, group.labels,
                                         alert, removed=True))
        group.last_flush = now
        if not group.alerts:
            del self.groups[group.key]
            return
        if muted:
            group.next_flush = now + route.group_interval
        else:  # next look: when the oldest notification of the group is due for a repeat
            oldest = min((e.sent_at for e in group.logs.values()), default=now)
            group.next_flush = max(oldest + route.repeat_interval, now + 0.001)
