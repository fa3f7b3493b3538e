"""Alertmanager: push alerts to a real Alertmanager's ``/api/v2/alerts``.

For teams that already route pages through Alertmanager: meshwatch becomes one more alert
source, with its labels (detector, severity, namespaces, service ...) available to their
routing tree and silences, and ``runbook_url`` as an annotation. A firing alert is posted with
``endsAt`` ``alert_ttl`` ahead (meshwatch re-posts it at each repeat and posts the resolution
explicitly); a resolved alert is posted with ``endsAt`` now, which resolves it in Alertmanager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from alerts.matchers import LABEL_NAME, SILENCED_BY, alert_labels
from alerts.sinks.base import (
    SINKS,
    Notification,
    Sink,
    SinkContext,
    edge_text,
    safe_url,
    validate_url,
)
from alerts.sinks.http import HttpPoster
from meshwatch.records import Alert, format_ts
from meshwatch.settings import parse_duration

# Labels that change over an alert's life would split it into several Alertmanager alerts
# (Alertmanager identifies an alert by its label set), so they go to annotations instead.
_VOLATILE = {"status", "mitre", "assignee", SILENCED_BY}


def _label_name(name: str) -> str:
    return name if LABEL_NAME.match(name) else re.sub(r"[^A-Za-z0-9_]", "_", name).lstrip(
        "0123456789") or "_"


@SINKS.register("alertmanager")
class AlertmanagerSink(Sink):
    """POST alerts to Alertmanager's API v2.

    Config: ``url`` (required; the Alertmanager base URL, e.g. ``http://alertmanager:9093``),
    ``alert_ttl`` (how long a firing alert stays active in Alertmanager without a refresh,
    default 6h: meshwatch's default quiet period), ``labels`` (extra static labels, e.g.
    ``cluster: prod``).

    >>> from datetime import UTC, datetime
    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp123", "plaintext_edge", "high", "Plaintext call", "No mTLS.",
    ...           Endpoint(workload="web", namespace="shop"), Endpoint(service="db:5432"),
    ...           t, t, 3, 1.0, ("T1040",), "http://feed/runbooks/plaintext_edge", (), "open", {})
    >>> sink = AlertmanagerSink.from_config({"url": "http://127.0.0.1:9093",
    ...                                      "labels": {"cluster": "prod"}}, SinkContext())
    >>> item = sink.item(a, "http://feed/api/v1/alerts/al-1", t)
    >>> item["labels"]["alertname"], item["labels"]["cluster"], item["annotations"]["runbook_url"]
    ('plaintext_edge', 'prod', 'http://feed/runbooks/plaintext_edge')
    """

    name = "alertmanager"
    keys: ClassVar[frozenset[str]] = frozenset({"url", "alert_ttl", "labels"})
    required: ClassVar[frozenset[str]] = frozenset({"url"})

    def __init__(self, url: str, alert_ttl: float, labels: Mapping[str, str],
                 ctx: SinkContext) -> None:
        self.base_url = url.rstrip("/")
        self.alert_ttl = alert_ttl
        self.labels = dict(labels)
        self.http = HttpPoster("alertmanager", ctx.timeout, ctx.deny_networks)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> AlertmanagerSink:
        cls.check_keys(config)
        url = validate_url(config["url"], "url", ctx.deny_networks)
        try:
            ttl = parse_duration(config.get("alert_ttl", "6h"))
        except ValueError as exc:
            raise ValueError(f"alert_ttl: {exc}") from None
        if ttl <= 0:
            raise ValueError("alert_ttl: must be positive")
        labels = config.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise ValueError("labels: must be a mapping of label name to value")
        for key in labels:
            if not LABEL_NAME.match(str(key)):
                raise ValueError(f"labels.{key}: invalid label name")
        return cls(url, ttl, {str(k): str(v) for k, v in labels.items()}, ctx)

    def item(self, alert: Alert, alert_url: str, now: datetime) -> dict[str, Any]:
        labels = {_label_name(k): v for k, v in alert_labels(alert).items()
                  if k not in _VOLATILE and v}
        labels["alert_id"] = alert.id
        labels.update(self.labels)
        if alert.status == "resolved":
            ends = max(now, alert.first_seen + timedelta(milliseconds=1))
        else:
            ends = now + timedelta(seconds=self.alert_ttl)
        return {
            "labels": labels,
            "annotations": {
                "summary": alert.title,
                "description": alert.summary,
                "runbook_url": alert.runbook_url,
                "edge": edge_text(alert),
                "mitre": ", ".join(alert.mitre),
                "count": str(alert.count),
                "meshwatch_status": alert.status,
                "meshwatch_url": alert_url,
            },
            "startsAt": format_ts(alert.first_seen),
            "endsAt": format_ts(ends),
            "generatorURL": alert_url,
        }

    def send(self, notification: Notification) -> None:
        now = datetime.now(UTC)
        items = [self.item(a, notification.alert_url(a), now)
                 for a in notification.alerts]
        body = json.dumps(items).encode()
        self.http.post(f"{self.base_url}/api/v2/alerts", body,
                       {"Content-Type": "application/json"})

    def describe(self) -> str:
        return f"alertmanager {safe_url(self.base_url)}"

    def close(self) -> None:
        self.http.close()
