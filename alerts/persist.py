"""Writing alert changes to the store without clobbering what analysts did.

The pipeline owns detection facts (count, last_seen, score, evidence); analysts own the status
(acknowledged, suppressed, resolved) and assignment. Before an update is written, the current
status in the store is read back and kept, so a repeat finding never reopens an acknowledged
alert. An alert an analyst resolved is dropped from the active set: the next finding opens a
new alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from alerts.lifecycle import AlertBook, AlertChange
from alerts.matchers import SILENCED_BY
from meshwatch.records import Alert
from meshwatch.store import Store

ANALYST_STATES = ("acknowledged", "suppressed", "resolved")


class AlertWriter:
    """Upserts changed alerts, preserving analyst-owned state."""

    def __init__(self, store: Store, book: AlertBook) -> None:
        self.store = store
        self.book = book

    def write(self, changes: Sequence[AlertChange],
              review: Callable[[Sequence[AlertChange]], Sequence[Alert]] | None = None,
              ) -> list[Alert]:
        """Persist the latest state of each changed alert; returns what was written.

        ``review`` (the notifier's `submit`) sees the changes with analyst state applied,
        before they are written, and returns the alerts whose status it changed (silences):
        those versions are written instead, and mirrored into the alert book.
        """
        latest: dict[str, AlertChange] = {}
        for change in changes:
            latest[change.alert.id] = change
        if not latest:
            return []
        current = self.store.alert_states(list(latest))
        merged: list[AlertChange] = []
        for alert_id, change in latest.items():
            alert = change.alert
            state = current.get(alert_id)
            if state is not None and alert.status == "open":
                # A suppression carrying `silenced_by` belongs to a silence, not an analyst:
                # the notifier re-decides it (the silence may have ended).
                by_silence = state["status"] == "suppressed" and SILENCED_BY in state["labels"]
                labels = {**alert.labels, **state["labels"]}
                if state["status"] in ANALYST_STATES and not by_silence:
                    alert = dataclasses.replace(alert, status=state["status"], labels=labels)
                    self.book.set_status(alert.fingerprint, alert.status)
                elif by_silence:
                    alert = dataclasses.replace(alert, labels=labels)
            merged.append(AlertChange(change.kind, alert))
        out = {c.alert.id: c.alert for c in merged}
        if review is not None:
            for alert in review(merged):
                out[alert.id] = alert
                self.book.set_status(alert.fingerprint, alert.status, alert.labels)
        written = list(out.values())
        self.store.upsert_alerts(written)
        return written
