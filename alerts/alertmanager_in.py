"""Alerts that Alertmanager sends us (its webhook, payload version 4) as meshwatch alerts.

Teams already alert on mesh signals in Prometheus (Istio's ``istio_requests_total`` with
``connection_security_policy="none"``, certificate expiry, ztunnel errors) and route them with
Alertmanager. Pointing a webhook receiver of that Alertmanager at
``/api/v1/integrations/alertmanager`` puts those alerts in the SOC feed next to meshwatch's own,
with the same contract: detector ``alertmanager``, one alert per Alertmanager alert fingerprint
and start time, ``firing`` -> open and ``resolved`` -> resolved, labels kept, ``runbook_url``
from the annotation when there is one. Silences apply (matching alerts are stored
suppressed). They are stored only, never routed to our sinks again: Alertmanager already
notified whoever it routes them to, and re-sending could loop between the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from alerts.lifecycle import alert_id
from alerts.runbooks import RunbookLinks
from alerts.silences import apply_silences
from meshwatch.records import Alert, Endpoint, Severity, fingerprint, format_ts

DETECTOR = "alertmanager"
ANALYST_STATES = ("acknowledged", "suppressed")

_SEVERITY: dict[str, Severity] = {
    "critical": "critical", "page": "critical", "emergency": "critical", "high": "high",
    "error": "high", "major": "high", "warning": "medium", "warn": "medium", "medium": "medium",
    "low": "low", "minor": "low", "info": "info", "informational": "info", "none": "info",
}


def _first(labels: Mapping[str, str], *keys: str) -> str | None:
    for key in keys:
        if labels.get(key):
            return labels[key]
    return None


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def to_alert(item: Mapping[str, Any], payload: Mapping[str, Any], runbooks: RunbookLinks,
             now: datetime) -> Alert:
    """One Alertmanager alert (a dict of the v4 payload) as a meshwatch alert.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = to_alert({"status": "firing", "labels": {"alertname": "IstioPlaintext",
    ...               "severity": "warning", "destination_service": "db.pay"},
    ...               "annotations": {"summary": "Plaintext to db"}, "startsAt": t,
    ...               "fingerprint": "abc"}, {"receiver": "meshwatch"}, RunbookLinks("http://f"), t)
    >>> a.detector, a.severity, a.title, a.destination.service, a.status
    ('alertmanager', 'medium', 'Plaintext to db', 'db.pay', 'open')
    """
    labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
    notes = {str(k): str(v) for k, v in (item.get("annotations") or {}).items()}
    entity = item.get("fingerprint") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    fp = fingerprint(DETECTOR, str(entity))
    starts = _utc(item["startsAt"])
    resolved = item.get("status") == "resolved"
    ends = item.get("endsAt")
    last_seen = _utc(ends) if resolved and ends and _utc(ends) >= starts else max(starts, now)
    name = labels.get("alertname", "alert")
    mitre = tuple(m.strip() for m in labels.get("mitre", "").split(",") if m.strip())
    return Alert(
        id=alert_id(fp, starts),
        fingerprint=fp,
        detector=DETECTOR,
        severity=_SEVERITY.get(labels.get("severity", "").lower(), "medium"),
        title=notes.get("summary") or notes.get("title") or name,
        summary=notes.get("description") or notes.get("message") or notes.get("summary") or name,
        source=Endpoint(
            workload=_first(labels, "src_workload", "source_workload"),
            namespace=_first(labels, "src_namespace", "source_workload_namespace",
                             "source_namespace"),
            principal=_first(labels, "src_principal", "source_principal"),
            address=_first(labels, "src_address", "source_address"),
        ),
        destination=Endpoint(
            workload=_first(labels, "dst_workload", "destination_workload", "pod"),
            namespace=_first(labels, "dst_namespace", "destination_workload_namespace",
                             "destination_namespace", "namespace"),
            principal=_first(labels, "dst_principal", "destination_principal"),
            service=_first(labels, "dst_service", "destination_service",
                           "destination_service_name", "service"),
        ),
        first_seen=starts,
        last_seen=last_seen,
        count=1,
        score=1.0,
        mitre=mitre,
        runbook_url=notes.get("runbook_url") or runbooks.url(DETECTOR),
        evidence=({
            "kind": "alertmanager",
            "receiver": payload.get("receiver", ""),
            "group_key": payload.get("groupKey", ""),
            "external_url": payload.get("externalURL", ""),
            "generator_url": item.get("generatorURL", ""),
            "alertmanager_fingerprint": item.get("fingerprint", ""),
            "starts_at": format_ts(starts),
            "annotations": notes,
        },),
        status="resolved" if resolved else "open",
        labels=labels,
    )


def merge(incoming: Iterable[Alert], stored: Mapping[str, Mapping[str, Any]],
          silences: Any) -> list[Alert]:
    """Keep what analysts did (acknowledged, hand-suppressed) and apply silences."""
    out = []
    for alert in incoming:
        state = stored.get(alert.id)
        if state is not None and alert.status == "open":
            labels = {**alert.labels, **state["labels"]}
            if state["status"] in ANALYST_STATES:
                alert = dataclasses.replace(alert, status=state["status"], labels=labels)
            elif state["status"] == "resolved":  # an analyst closed it: keep it closed
                alert = dataclasses.replace(alert, status="resolved", labels=labels)
        out.append(apply_silences(alert, silences))
    return out
