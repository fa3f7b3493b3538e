"""Writing alert changes to the store without clobbering what analysts did.

The pipeline owns detection facts (count, last_seen, score, evidence); analysts own the status
(acknowledged, suppressed, resolved) and assignment. Before an update is written, the current
status in the store is read back and kept, so a repeat finding never reopens an acknowledged
alert. An alert an analyst resolved is dropped from the active set: the next finding opens a
new alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from alerts.lifecycle import AlertBook, AlertChange
from meshwatch.records import Alert
from meshwatch.store import Store

ANALYST_STATES = ("acknowledged", "suppressed", "resolved")


class AlertWriter:
    """Upserts changed alerts, preserving analyst-owned state."""

    def __init__(self, store: Store, book: AlertBook) -> None:
        self.store = store
        self.book = book

    def write(self, changes: Sequence[AlertChange]) -> list[Alert]:
        """Persist the latest state of each changed alert; returns what was written."""
        latest: dict[str, Alert] = {}
        for change in changes:
            latest[change.alert.id] = change.alert
        if not latest:
            return []
        current = self.store.alert_states(list(latest))
        out = []
        for alert_id, alert in latest.items():
            state = current.get(alert_id)
            if state is not None and state["status"] in ANALYST_STATES and alert.status == "open":
                labels = {**alert.labels, **state["labels"]}
                alert = dataclasses.replace(alert, status=state["status"], labels=labels)
                self.book.set_status(alert.fingerprint, alert.status)
            out.append(alert)
        self.store.upsert_alerts(out)
        return out
