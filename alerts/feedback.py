"""The feedback loop: analysts' verdicts change what pages next, and measure each detector.

A ``false_positive`` or ``benign_by_design`` verdict on an alert creates a rule for its
pattern: the detector plus the alert's caller identity and callee (``''`` = any callee, for
detectors about a source alone). Until the rule expires (30 days by default) matching findings
have their score multiplied by the rule's ``score_factor`` (0 by default); a finding that
drops below its detector's threshold is dropped before it becomes an alert, so the same
benign pattern no longer pages. A ``true_positive`` verdict creates no rule: it only counts
towards precision = TP / (TP + FP) per detector, where FP counts both false_positive and
benign_by_design verdicts (the detector's alert needed no response either way).

The pipeline holds a `FeedbackRules` and reloads it from the store at every checkpoint; an API
serving in the same process also adds new rules to it at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from alerts.alert_graph import destination_node, source_node
from alerts.versioning import next_version
from meshwatch.records import Alert, Endpoint, Finding, format_ts
from meshwatch.store import Store, StoreError
from meshwatch.store.store import ch_ts

log = logging.getLogger("meshwatch.alerts.feedback")

Verdict = Literal["true_positive", "false_positive", "benign_by_design"]
VERDICTS: tuple[str, ...] = ("true_positive", "false_positive", "benign_by_design")
RULE_VERDICTS = ("false_positive", "benign_by_design")
DEFAULT_TTL = 30 * 86400.0


def _parse_ch(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def identities(endpoint: Endpoint, kind: Literal["source", "destination"]) -> set[str]:
    """Every name an endpoint goes by, for matching a rule made from another alert."""
    names = {endpoint.principal, endpoint.address, endpoint.service}
    if endpoint.workload:
        names.add(f"{endpoint.namespace or '-'}/{endpoint.workload}")
    node = source_node(endpoint) if kind == "source" else destination_node(endpoint)
    names.add(node)
    return {n for n in names if n}


def rule_id(detector: str, source: str, destination: str) -> str:
    """Deterministic: the same pattern marked again updates one rule."""
    digest = hashlib.sha256(f"{detector}\x1f{source}\x1f{destination}".encode()).hexdigest()
    return f"fr-{digest[:16]}"


@dataclass(frozen=True)
class FeedbackRule:
    """Findings of ``detector`` from ``source`` to ``destination`` ('' = any) score lower.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> r = FeedbackRule("fr-1", "plaintext_edge", "shop/web", "", 0.0, "false_positive",
    ...                  "al-1", "ana", "health probe", t, t + timedelta(days=30))
    >>> f = Finding("plaintext_edge", "e", t, 1.0, "high", "t", "s",
    ...             Endpoint(workload="web", namespace="shop"), Endpoint(service="db:5432"))
    >>> r.matches(f), r.state(t + timedelta(days=31))
    (True, 'expired')
    """

    id: str
    detector: str
    source: str
    destination: str
    score_factor: float
    verdict: str
    alert_id: str
    created_by: str
    comment: str
    created_at: datetime
    expires_at: datetime

    def state(self, now: datetime) -> Literal["active", "expired"]:
        return "active" if now < self.expires_at else "expired"

    def matches(self, finding: Finding) -> bool:
        if finding.detector != self.detector:
            return False
        if self.source not in identities(finding.source, "source"):
            return False
        return not self.destination or self.destination in identities(finding.destination,
                                                                       "destination")

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "detector": self.detector, "source": self.source,
            "destination": self.destination or None, "score_factor": self.score_factor,
            "verdict": self.verdict, "alert_id": self.alert_id, "created_by": self.created_by,
            "comment": self.comment, "created_at": format_ts(self.created_at),
            "expires_at": format_ts(self.expires_at),
            "state": self.state(now or datetime.now(UTC)),
        }


def rule_for(alert: Alert, verdict: str, actor: str, comment: str, now: datetime,
             ttl: float = DEFAULT_TTL, score_factor: float = 0.0) -> FeedbackRule | None:
    """The rule a verdict on ``alert`` creates (None for true positives or no caller)."""
    if verdict not in RULE_VERDICTS:
        return None
    source = source_node(alert.source)
    if not source:
        return None
    destination = destination_node(alert.destination) or ""
    return FeedbackRule(rule_id(alert.detector, source, destination), alert.detector, source,
                        destination, score_factor, verdict, alert.id, actor, comment, now,
                        now + timedelta(seconds=ttl))


class FeedbackStore:
    """Rules and verdicts in the store (``feedback_rules``, ``alert_feedback``)."""

    def __init__(self, store: Store,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    def write_rule(self, rule: FeedbackRule) -> None:
        self.store.insert_rows("feedback_rules", [{
            "id": rule.id, "detector": rule.detector, "source": rule.source,
            "destination": rule.destination, "score_factor": rule.score_factor,
            "verdict": rule.verdict, "alert_id": rule.alert_id, "created_by": rule.created_by,
            "comment": rule.comment, "created_at": ch_ts(rule.created_at),
            "expires_at": ch_ts(rule.expires_at), "version": next_version(),
        }])

    def rules(self, state: Literal["active", "expired"] | None = None) -> list[FeedbackRule]:
        rows = self.store.query(
            "SELECT id, detector, source, destination, score_factor, verdict, alert_id, "
            "created_by, comment, created_at, expires_at FROM {db}.feedback_rules FINAL "
            "ORDER BY created_at DESC, id")
        now = self.clock()
        out = [FeedbackRule(r["id"], r["detector"], r["source"], r["destination"],
                            float(r["score_factor"]), r["verdict"], r["alert_id"],
                            r["created_by"], r["comment"], _parse_ch(r["created_at"]),
                            _parse_ch(r["expires_at"])) for r in rows]
        return [r for r in out if state is None or r.state(now) == state]

    def rule(self, rid: str) -> FeedbackRule | None:
        return next((r for r in self.rules() if r.id == rid), None)

    def expire(self, rid: str) -> FeedbackRule | None:
        """End a rule now (no-op for one already expired); None if there is no such rule."""
        rule = self.rule(rid)
        if rule is None:
            return None
        now = self.clock()
        if rule.state(now) == "expired":
            return rule
        ended = dataclasses.replace(rule, expires_at=now)
        self.write_rule(ended)
        return ended

    def record_verdict(self, alert: Alert, verdict: str, actor: str, comment: str,
                       rule: FeedbackRule | None) -> None:
        self.store.insert_rows("alert_feedback", [{
            "alert_id": alert.id, "fingerprint": alert.fingerprint, "detector": alert.detector,
            "verdict": verdict, "comment": comment, "actor": actor, "ts": ch_ts(self.clock()),
            "rule_id": rule.id if rule else "", "version": next_version(),
        }])

    def verdict(self, alert_id: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT verdict, comment, actor, ts, rule_id FROM {db}.alert_feedback FINAL "
            "WHERE alert_id = {id:String}", {"id": alert_id})
        if not rows:
            return None
        row = rows[0]
        return {"verdict": row["verdict"], "comment": row["comment"], "actor": row["actor"],
                "ts": format_ts(_parse_ch(row["ts"])), "rule_id": row["rule_id"] or None}

    def precision(self) -> list[dict[str, Any]]:
        """Per detector: labelled alerts by verdict and TP / (TP + FP) (None when unlabelled)."""
        rows = self.store.query(
            "SELECT detector, countIf(verdict = 'true_positive') AS tp, "
            "countIf(verdict = 'false_positive') AS fp, "
            "countIf(verdict = 'benign_by_design') AS benign "
            "FROM {db}.alert_feedback FINAL GROUP BY detector ORDER BY detector "
            "SETTINGS output_format_json_quote_64bit_integers = 0")
        return [precision_row(r["detector"], int(r["tp"]), int(r["fp"]), int(r["benign"]))
                for r in rows]


def precision_row(detector: str, tp: int, fp: int, benign: int) -> dict[str, Any]:
    """One detector's precision row; benign-by-design verdicts count as false positives.

    >>> precision_row("x", 3, 1, 0)["precision"], precision_row("x", 1, 0, 1)["precision"]
    (0.75, 0.5)
    """
    negatives = fp + benign
    labelled = tp + negatives
    return {"detector": detector, "true_positive": tp, "false_positive": fp,
            "benign_by_design": benign, "labelled": labelled,
            "precision": tp / labelled if labelled else None}


class FeedbackRules:
    """The active rules, applied to findings before they become alerts (thread-safe).

    ``thresholds`` maps a detector to its alerting threshold: a finding whose lowered score
    stays at or above it still alerts (with the lower score and a ``feedback_rule`` label).
    """

    def __init__(self, store: Store | None = None,
                 thresholds: Mapping[str, float] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.thresholds = dict(thresholds or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._rules: tuple[FeedbackRule, ...] = ()
        self._loaded = store is None
        self.dropped: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()

    def reload(self) -> int:
        """Take the active rules from the store (the pipeline calls this at checkpoints).

        A store error keeps the rules held so far (logged): detection must not stop because
        the feedback table could not be read.
        """
        if self.store is None:
            return len(self._rules)
        try:
            rules = tuple(FeedbackStore(self.store, self.clock).rules("active"))
        except StoreError as exc:
            log.warning("cannot reload feedback rules, keeping %d: %s", len(self._rules), exc)
            return len(self._rules)
        with self._lock:
            self._rules = rules
            self._loaded = True
        return len(rules)

    def add(self, rule: FeedbackRule) -> None:
        """Apply a new (or extended, or expired) rule now, before the next reload."""
        with self._lock:
            self._rules = (*[r for r in self._rules if r.id != rule.id], rule)

    @property
    def rules(self) -> tuple[FeedbackRule, ...]:
        return self._rules

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings that still alert, scores lowered by matching active rules."""
        if not self._loaded:
            self.reload()
        rules = self._rules
        if not rules:
            return list(findings)
        now = self.clock()
        active = [r for r in rules if r.state(now) == "active"]
        out: list[Finding] = []
        for finding in findings:
            rule = next((r for r in active if r.matches(finding)), None)
            if rule is None:
                out.append(finding)
                continue
            self.hits[rule.id] += 1
            score = finding.score * rule.score_factor
            threshold = self.thresholds.get(finding.detector, float("inf"))
            if score < threshold:
                self.dropped[finding.detector] += 1
                continue
            out.append(dataclasses.replace(finding, score=score,
                                           labels={**finding.labels, "feedback_rule": rule.id}))
        return out


def detector_thresholds(configured: Sequence[Any]) -> dict[str, float]:
    """Alerting thresholds by detector name, from the engine's configured detectors."""
    out: dict[str, float] = {}
    for item in configured:
        out[item.name] = float(item.threshold)
        name = getattr(item.detector, "name", None)
        if isinstance(name, str):
            out.setdefault(name, float(item.threshold))
    return out
