"""What analysts do to alerts, and the audit trail that remembers who did it.

acknowledge, assign, resolve, reopen, suppress (a silence on the alert's fingerprint) and
feedback (a verdict; false positives also create a feedback rule and resolve the alert). Each
action writes the alert's new state (a newer ``version``, so it wins over the pipeline's last
write) and one ``alert_actions`` row: who (the token's name), when, what, and a comment.

The pipeline owns detection facts and re-reads analyst-owned state before each write
(`alerts.persist`). When it runs in this process, actions are also mirrored into its alert book
(`StatusMirror`, drained by the pipeline thread at each flush) so that a repeat finding never
reopens an acknowledged alert, and a resolved alert's next finding opens a new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from alerts.feedback import DEFAULT_TTL, FeedbackRule, FeedbackRules, FeedbackStore, rule_for
from alerts.lifecycle import AlertBook
from alerts.matchers import SILENCED_BY
from alerts.silences import SilenceStore
from alerts.versioning import next_version
from meshwatch.records import Alert, format_ts
from meshwatch.store import Store
from meshwatch.store.store import ch_ts

ActionName = Literal["acknowledge", "assign", "resolve", "reopen", "suppress", "feedback"]
MAX_COMMENT = 2000


class ActionError(ValueError):
    """An action that does not apply to the alert as it is (answered with 409)."""


class StatusMirror:
    """Analyst status changes waiting for the pipeline thread to apply to its alert book."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self._queue: queue.Queue[tuple[str, str, dict[str, str]]] = queue.Queue(max_pending)

    def push(self, alert: Alert) -> None:
        # When full, drop: the store holds the status and the writer re-reads it anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((alert.fingerprint, alert.status, dict(alert.labels)))

    def drain_into(self, book: AlertBook) -> int:
        """Apply pending changes (called by the pipeline thread, before it writes alerts)."""
        n = 0
        while True:
            try:
                fingerprint, status, labels = self._queue.get_nowait()
            except queue.Empty:
                return n
            book.set_status(fingerprint, status, labels)
            n += 1


class PipelineLink(Protocol):
    """What the API may reach of a pipeline running in the same process."""

    status_mirror: StatusMirror
    feedback_rules: FeedbackRules


@dataclass(frozen=True)
class AuditEntry:
    action_id: str
    alert_id: str
    ts: datetime
    actor: str
    action: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "alert_id": self.alert_id,
                "ts": format_ts(self.ts), "actor": self.actor, "action": self.action,
                **{k: v for k, v in self.detail.items() if k not in ("action", "actor")}}


@dataclass
class ActionResult:
    alert: Alert
    audit: AuditEntry
    silence_id: str | None = None
    rule: FeedbackRule | None = None


class AlertActions:
    """Performs analyst actions against the store (and a same-process pipeline, if any)."""

    def __init__(self, store: Store, pipeline: PipelineLink | None = None,
                 publish: Callable[[Sequence[Alert]], None] | None = None,
                 feedback_ttl: float = DEFAULT_TTL,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.pipeline = pipeline
        self.publish = publish
        self.feedback_ttl = feedback_ttl
        self.clock = clock

    # -- audit trail -----------------------------------------------------------------------

    def _audit(self, alert_id: str, actor: str, action: str,
               detail: dict[str, Any]) -> AuditEntry:
        entry = AuditEntry(f"act-{uuid.uuid4().hex[:20]}", alert_id, self.clock(), actor,
                           action, detail)
        self.store.insert_rows("alert_actions", [{
            "action_id": entry.action_id, "alert_id": alert_id, "ts": ch_ts(entry.ts),
            "actor": actor, "action": action, "detail": json.dumps(detail, sort_keys=True),
        }])
        return entry

    def audit(self, alert_id: str, limit: int = 500) -> list[AuditEntry]:
        """The alert's audit trail, oldest first."""
        rows = self.store.query(
            "SELECT action_id, alert_id, ts, actor, action, detail FROM {db}.alert_actions FINAL "
            "WHERE alert_id = {id:String} ORDER BY ts, action_id LIMIT {n:UInt32}",
            {"id": alert_id, "n": limit})
        out = []
        for r in rows:
            try:
                detail = json.loads(r["detail"]) if r["detail"] else {}
            except ValueError:
                detail = {"raw": r["detail"]}
            out.append(AuditEntry(r["action_id"], r["alert_id"],
                                  datetime.fromisoformat(r["ts"]).replace(tzinfo=UTC),
                                  r["actor"], r["action"], detail))
        return out

    # -- state changes ---------------------------------------------------------------------

    def _save(self, alert: Alert) -> None:
        self.store.upsert_alerts([alert], version=next_version())
        if self.pipeline is not None:
            self.pipeline.status_mirror.push(alert)
        if self.publish is not None:
            self.publish([alert])

    def _change(self, alert: Alert, actor: str, action: str, comment: str,
                status: str | None = None, labels: dict[str, str] | None = None,
                **detail: Any) -> ActionResult:
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"comment: at most {MAX_COMMENT} characters")
        updated = alert
        if status is not None:
            updated = dataclasses.replace(updated, status=status)  # type: ignore[arg-type]
        if labels is not None:
            updated = dataclasses.replace(updated, labels=labels)
        info: dict[str, Any] = {"comment": comment, **detail}
        if updated.status != alert.status:
            info.update(from_status=alert.status, to_status=updated.status)
        if updated != alert:
            self._save(updated)
        return ActionResult(updated, self._audit(alert.id, actor, action, info))

    def acknowledge(self, alert: Alert, actor: str, comment: str = "") -> ActionResult:
        if alert.status == "resolved":
            raise ActionError(f"alert {alert.id} is resolved: reopen it first")
        return self._change(alert, actor, "acknowledge", comment, status="acknowledged")

    def assign(self, alert: Alert, actor: str, assignee: str, comment: str = "") -> ActionResult:
        labels = dict(alert.labels)
        if assignee:
            labels["assignee"] = assignee
        else:
            labels.pop("assignee", None)
        return self._change(alert, actor, "assign", comment, labels=labels,
                            assignee=assignee or None,
                            previous_assignee=alert.labels.get("assignee"))

    def resolve(self, alert: Alert, actor: str, comment: str = "") -> ActionResult:
        return self._change(alert, actor, "resolve", comment, status="resolved")

    def reopen(self, alert: Alert, actor: str, comment: str = "") -> ActionResult:
        if alert.status == "open":
            raise ActionError(f"alert {alert.id} is already open")
        labels = {k: v for k, v in alert.labels.items() if k != SILENCED_BY}
        return self._change(alert, actor, "reopen", comment, status="open", labels=labels)

    def suppress(self, alert: Alert, actor: str, duration: float,
                 comment: str) -> ActionResult:
        """Create a silence on this alert's fingerprint (it suppresses the stored alert and
        its future findings until it ends)."""
        if alert.status == "resolved":
            raise ActionError(f"alert {alert.id} is resolved: nothing to suppress")
        silences = SilenceStore(self.store, clock=self.clock)
        silence = silences.create([f'fingerprint="{alert.fingerprint}"'], created_by=actor,
                                  comment=comment or f"suppressed from alert {alert.id}",
                                  duration=duration)
        labels = {**alert.labels, SILENCED_BY: silence.id}
        result = self._change(alert, actor, "suppress", comment, status="suppressed",
                              labels=labels, silence_id=silence.id,
                              until=format_ts(silence.ends_at))
        result.silence_id = silence.id
        return result

    def feedback(self, alert: Alert, actor: str, verdict: str, comment: str = "",
                 ttl: float | None = None, score_factor: float = 0.0,
                 resolve: bool = True) -> ActionResult:
        """Record a verdict; false positives / benign also create a feedback rule (and, with
        ``resolve``, resolve the alert: the next benign finding is dropped, not re-paged)."""
        now = self.clock()
        rule = rule_for(alert, verdict, actor, comment, now,
                        ttl=self.feedback_ttl if ttl is None else ttl,
                        score_factor=score_factor)
        feedback = FeedbackStore(self.store, self.clock)
        if rule is not None:
            feedback.write_rule(rule)
            if self.pipeline is not None:
                self.pipeline.feedback_rules.add(rule)
        feedback.record_verdict(alert, verdict, actor, comment, rule)
        status = "resolved" if rule is not None and resolve and alert.status != "resolved" \
            else None
        detail: dict[str, Any] = {"verdict": verdict}
        if rule is not None:
            detail.update(rule_id=rule.id, rule_expires_at=format_ts(rule.expires_at))
        result = self._change(alert, actor, "feedback", comment, status=status, **detail)
        result.rule = rule
        return result
