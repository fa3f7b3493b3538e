"""Alert lifecycle: findings become alerts, repeats update them, quiet ones resolve.

Fingerprint = detector + entity. A finding whose fingerprint has an active alert (open,
acknowledged or suppressed) updates that alert's count, last_seen, score and evidence instead of
creating a new one. An alert with no new finding for its detector's quiet period resolves; a
later finding opens a new alert. Alert ids are derived from fingerprint and first occurrence, so
replaying the same records after a crash produces the same ids (idempotent writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from alerts.runbooks import RunbookLinks
from meshwatch.bounded import BoundedMap
from meshwatch.records import SEVERITIES, Alert, Finding, format_ts

ACTIVE = ("open", "acknowledged", "suppressed")
DEFAULT_QUIET_PERIOD = 6 * 3600.0


def alert_id(fingerprint: str, first_seen: datetime) -> str:
    """Deterministic alert id: same fingerprint and first occurrence, same id."""
    digest = hashlib.sha256(f"{fingerprint}|{format_ts(first_seen)}".encode()).hexdigest()
    return f"al-{digest[:20]}"


@dataclass(frozen=True)
class AlertChange:
    """What happened to an alert: opened (new), updated (repeat) or resolved (quiet)."""

    kind: Literal["opened", "updated", "resolved"]
    alert: Alert


def _max_severity(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b  # type: ignore[arg-type]


class AlertBook:
    """The active alerts, keyed by fingerprint (bounded: oldest evicted and counted).

    >>> from datetime import UTC, datetime
    >>> from meshwatch.records import Endpoint, Finding
    >>> book = AlertBook(RunbookLinks("http://feed"))
    >>> f = Finding("plaintext_edge", "a->b", datetime(2026, 1, 1, tzinfo=UTC), 1.0, "high",
    ...             "t", "s", Endpoint(), Endpoint())
    >>> book.apply(f).kind, book.apply(f).kind, book.get(f.fingerprint).count
    ('opened', 'updated', 2)
    """

    def __init__(
        self,
        runbooks: RunbookLinks,
        max_evidence: int = 5,
        quiet_periods: Mapping[str, float] | None = None,
        default_quiet_period: float = DEFAULT_QUIET_PERIOD,
        max_alerts: int = 100_000,
        series: Callable[[Finding], dict[str, Any] | None] | None = None,
    ) -> None:
        self.runbooks = runbooks
        self.max_evidence = max_evidence
        self.quiet_periods = dict(quiet_periods or {})
        self.default_quiet_period = default_quiet_period
        # Looks up the edge's recent windows for a new alert's evidence (alerts/series.py).
        self.series = series
        self._active: BoundedMap[str, Alert] = BoundedMap(max_alerts, ttl=365 * 86400.0)

    def load(self, alerts: Iterable[Alert]) -> int:
        """Take active alerts from the store at start-up so repeats update them."""
        n = 0
        for alert in alerts:
            if alert.status in ACTIVE:
                self._active.put(alert.fingerprint, alert, alert.last_seen.timestamp())
                n += 1
        return n

    def state(self) -> BoundedMap[str, Alert]:
        """The active set, for the pipeline's checkpoint (replays then count exactly)."""
        return self._active

    def restore_state(self, active: BoundedMap[str, Alert]) -> None:
        self._active = active

    def get(self, fingerprint: str) -> Alert | None:
        return self._active.get(fingerprint)

    def active(self) -> list[Alert]:
        return [a for _, a in self._active.items()]

    def apply(self, finding: Finding) -> AlertChange:
        fp = finding.fingerprint
        current = self._active.get(fp)
        if current is None:
            evidence = finding.evidence[: self.max_evidence]
            recent = self.series(finding) if self.series is not None else None
            if recent is not None:
                evidence += (recent,)
            alert = Alert(
                id=alert_id(fp, finding.ts),
                fingerprint=fp,
                detector=finding.detector,
                severity=finding.severity,
                title=finding.title,
                summary=finding.summary,
                source=finding.source,
                destination=finding.destination,
                first_seen=finding.ts,
                last_seen=finding.ts,
                count=1,
                score=finding.score,
                mitre=finding.mitre,
                runbook_url=self.runbooks.url(finding.detector),
                evidence=evidence,
                status="open",
                labels=dict(finding.labels),
            )
            kind: Literal["opened", "updated"] = "opened"
        else:
            evidence = current.evidence
            if len(evidence) < self.max_evidence:
                evidence = (evidence + finding.evidence)[: self.max_evidence]
            alert = dataclasses.replace(
                current,
                last_seen=max(current.last_seen, finding.ts),
                first_seen=min(current.first_seen, finding.ts),
                count=current.count + 1,
                score=max(current.score, finding.score),
                severity=_max_severity(current.severity, finding.severity),  # type: ignore[arg-type]
                evidence=evidence,
            )
            kind = "updated"
        self._active.put(fp, alert, alert.last_seen.timestamp())
        return AlertChange(kind, alert)

    def set_status(self, fingerprint: str, status: str,
                   labels: Mapping[str, str] | None = None) -> None:
        """Mirror a status change (analyst, silence) and its labels into the active set."""
        current = self._active.get(fingerprint)
        if current is None:
            return
        if status in ACTIVE:
            updated = dataclasses.replace(current, status=status)  # type: ignore[arg-type]
            if labels is not None:
                updated = dataclasses.replace(updated, labels=dict(labels))
            self._active.put(fingerprint, updated, current.last_seen.timestamp())
        else:
            self._active.pop(fingerprint)

    def resolve_quiet(self, now: datetime) -> list[AlertChange]:
        """Resolve alerts whose detector has been quiet for its quiet period."""
        changes = []
        for fp, alert in list(self._active.items()):
            quiet = self.quiet_periods.get(alert.detector, self.default_quiet_period)
            if (now - alert.last_seen).total_seconds() >= quiet:
                self._active.pop(fp)
                changes.append(AlertChange("resolved", dataclasses.replace(alert,
                                                                           status="resolved")))
        return changes
