"""Silences: mute alerts that match a set of label matchers for a while (Alertmanager).

A silence has matchers (`alerts.matchers`), a start and an end, who created it and why. While
it is active, the alerts it matches are stored with status ``suppressed`` and the label
``silenced_by=<silence id>`` (never dropped: the feed still shows them) and are not notified.
When it ends (expiry, or ``meshwatch silence expire``), the alerts it suppressed are open again
and notify as usual. A suppression set by an analyst by hand (no ``silenced_by`` label) is not
touched by silences.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from alerts.matchers import SILENCED_BY, Matcher, alert_labels, parse_matchers
from alerts.versioning import next_version
from meshwatch.records import Alert
from meshwatch.store import Store
from meshwatch.store.store import ch_ts

SilenceState = Literal["pending", "active", "expired"]
MAX_COMMENT = 2000


def _ch_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Silence:
    """One silence; `state` is derived from the clock, never stored.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = Silence("s1", (Matcher.parse("detector=plaintext_edge"),), t, t + timedelta(hours=2),
    ...             "ana", "maintenance", t)
    >>> s.state(t + timedelta(hours=1)), s.state(t + timedelta(hours=3))
    ('active', 'expired')
    >>> s.matches({"detector": "plaintext_edge"}), s.matches({"detector": "other"})
    (True, False)
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime

    def state(self, now: datetime) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        from meshwatch.records import format_ts

        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": format_ts(self.starts_at),
            "ends_at": format_ts(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": format_ts(self.created_at),
            "state": self.state(now or datetime.now(UTC)),
        }


def validate(matchers: Sequence[Matcher], starts_at: datetime, ends_at: datetime,
             created_by: str, comment: str) -> None:
    """Refuse silences that are empty, match everything, or end before they start."""
    if not matchers:
        raise ValueError("matchers: at least one matcher is required")
    if all(m.matches({}) for m in matchers):
        raise ValueError("matchers: at least one matcher must not match an empty label "
                         "(this silence would mute every alert)")
    if ends_at <= starts_at:
        raise ValueError("ends_at: must be after starts_at")
    if not created_by.strip():
        raise ValueError("created_by: required (who is silencing)")
    if not comment.strip():
        raise ValueError("comment: required (why: a ticket, a maintenance window ...)")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment: at most {MAX_COMMENT} characters")


class SilenceStore:
    """Silences kept in the store (the `silences` table), shared by API, CLI and notifier."""

    def __init__(self, store: Store,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    def _write(self, silence: Silence) -> None:
        self.store.insert_rows("silences", [{
            "id": silence.id,
            "matchers": [str(m) for m in silence.matchers],
            "starts_at": ch_ts(silence.starts_at),
            "ends_at": ch_ts(silence.ends_at),
            "created_by": silence.created_by,
            "comment": silence.comment,
            "created_at": ch_ts(silence.created_at),
            "updated_at": ch_ts(self.clock()),
            "version": next_version(),
        }])

    def create(self, matchers: Iterable[str | Matcher], created_by: str, comment: str,
               ends_at: datetime | None = None, duration: float | None = None,
               starts_at: datetime | None = None) -> Silence:
        """Create a silence (``ends_at`` or ``duration`` seconds from the start).

        Raises ValueError naming the field for bad input. Alerts already stored that it
        matches are suppressed right away.
        """
        try:
            parsed = parse_matchers(str(m) if isinstance(m, Matcher) else m for m in matchers)
        except ValueError as exc:
            raise ValueError(f"matchers{exc}") from None
        now = self.clock()
        start = starts_at or now
        if ends_at is None:
            if duration is None or duration <= 0:
                raise ValueError("duration: a positive duration or an end time is required")
            ends_at = start + timedelta(seconds=duration)
        validate(parsed, start, ends_at, created_by, comment)
        silence = Silence(f"sil-{uuid.uuid4().hex[:16]}", parsed, start, ends_at,
                          created_by.strip(), comment.strip(), now)
        self._write(silence)
        if silence.state(now) == "active":
            self.suppress_stored(silence)
        return silence

    def _rows(self, where: str = "", params: dict[str, Any] | None = None) -> list[Silence]:
        # ``where`` is one of this class's fixed clauses; values are bound parameters.
        sql = ("SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at "
               "FROM {db}.silences FINAL " + where + " ORDER BY created_at DESC, id")
        rows = self.store.query(sql, params)
        return [Silence(r["id"], tuple(Matcher.parse(m) for m in r["matchers"]),
                        _ch_time(r["starts_at"]), _ch_time(r["ends_at"]), r["created_by"],
                        r["comment"], _ch_time(r["created_at"])) for r in rows]

    def get(self, silence_id: str) -> Silence | None:
        found = self._rows("WHERE id = {id:String}", {"id": silence_id})
        return found[0] if found else None

    def list(self, state: SilenceState | None = None) -> list[Silence]:
        now = self.clock()
        return [s for s in self._rows() if state is None or s.state(now) == state]

    def active(self) -> list[Silence]:
        """Silences in force now, oldest first (so the same alert picks the same silence)."""
        params = {"now": ch_ts(self.clock())}
        return sorted(self._rows("WHERE starts_at <= {now:DateTime64(3, 'UTC')} AND "
                                 "ends_at > {now:DateTime64(3, 'UTC')}", params),
                      key=lambda s: (s.created_at, s.id))

    def expire(self, silence_id: str) -> Silence | None:
        """End a silence now (a no-op for one already over); None if there is no such id."""
        silence = self.get(silence_id)
        if silence is None:
            return None
        now = self.clock()
        if silence.state(now) == "expired":
            return silence
        ended = dataclasses.replace(silence, ends_at=max(now, silence.starts_at
                                                         + timedelta(milliseconds=1)))
        self._write(ended)
        self.release_stored(ended)
        return ended

    # -- effect on alerts already stored ---------------------------------------------------

    def suppress_stored(self, silence: Silence, limit: int = 10_000) -> int:
        """Mark stored open alerts that the new silence matches as suppressed."""
        changed = [dataclasses.replace(a, status="suppressed",
                                       labels={**a.labels, SILENCED_BY: silence.id})
                   for a in self.store.list_alerts(limit=limit, status=["open"])
                   if silence.matches(alert_labels(a))]
        self.store.upsert_alerts(changed, version=next_version())
        return len(changed)

    def release_stored(self, silence: Silence, limit: int = 10_000) -> int:
        """Reopen stored alerts the ended silence suppressed, unless another one still does."""
        others = [s for s in self.active() if s.id != silence.id]
        changed = []
        for alert in self.store.list_alerts(limit=limit, status=["suppressed"]):
            if alert.labels.get(SILENCED_BY) != silence.id:
                continue
            updated = apply_silences(alert, others)
            if updated is alert:  # still suppressed by nothing else: reopen
                updated = _release(alert)
            changed.append(updated)
        self.store.upsert_alerts(changed, version=next_version())
        return len(changed)


def _release(alert: Alert) -> Alert:
    labels = {k: v for k, v in alert.labels.items() if k != SILENCED_BY}
    status = "open" if alert.status == "suppressed" else alert.status
    return dataclasses.replace(alert, status=status, labels=labels)  # type: ignore[arg-type]


def matching(alert: Alert, silences: Sequence[Silence]) -> Silence | None:
    if not silences:
        return None
    labels = alert_labels(alert)
    return next((s for s in silences if s.matches(labels)), None)


def apply_silences(alert: Alert, silences: Sequence[Silence]) -> Alert:
    """The alert as silences leave it; the same object when nothing changes.

    Open alerts a silence matches become ``suppressed`` with ``silenced_by``; alerts a silence
    suppressed whose silences all ended are open again. Resolved, acknowledged and hand-
    suppressed alerts keep their status (acknowledged ones are still muted when notifying).

    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp", "plaintext_edge", "high", "t", "s", Endpoint(), Endpoint(),
    ...           t, t, 1, 1.0, (), "u", (), "open", {})
    >>> s = Silence("sil-1", (Matcher.parse("detector=plaintext_edge"),), t,
    ...             t + timedelta(hours=1), "ana", "maintenance", t)
    >>> b = apply_silences(a, [s]); b.status, b.labels
    ('suppressed', {'silenced_by': 'sil-1'})
    >>> c = apply_silences(b, []); c.status, c.labels
    ('open', {})
    """
    ours = SILENCED_BY in alert.labels
    if alert.status not in ("open", "suppressed") or (alert.status == "suppressed" and not ours):
        return alert
    hit = matching(alert, silences)
    if hit is not None:
        if alert.status == "suppressed" and alert.labels.get(SILENCED_BY) == hit.id:
            return alert
        return dataclasses.replace(alert, status="suppressed",
                                   labels={**alert.labels, SILENCED_BY: hit.id})
    return _release(alert) if ours else alert
