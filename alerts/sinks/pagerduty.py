"""PagerDuty Events API v2: trigger per firing alert, resolve per resolved alert.

``dedup_key`` is the alert fingerprint, so PagerDuty keeps one incident per detector and entity,
a repeat trigger updates it, and the resolve event closes it. Sending the same event twice is
harmless for the same reason, which is what makes a multi-alert notification safe to retry as a
whole. The routing key is a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from alerts.sinks.base import (
    SINKS,
    Notification,
    Sink,
    SinkContext,
    edge_text,
    endpoint_text,
    safe_url,
    validate_url,
)
from alerts.sinks.http import HttpPoster
from meshwatch.records import Alert, format_ts

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: meshwatch severity -> PagerDuty's four levels.
SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "warning",
            "info": "info"}


@SINKS.register("pagerduty")
class PagerDutySink(Sink):
    """Send Events API v2 trigger/resolve events.

    Config: ``routing_key`` (required; the integration key, a string or ``{secret: NAME}``),
    ``url`` (default the public Events API), ``client`` (shown in PagerDuty, default
    "meshwatch").

    >>> from datetime import UTC, datetime
    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp123", "plaintext_edge", "high", "Plaintext call", "No mTLS.",
    ...           Endpoint(workload="web", namespace="shop"), Endpoint(service="db:5432"),
    ...           t, t, 3, 1.0, ("T1040",), "http://feed/runbooks/plaintext_edge", (), "open", {})
    >>> sink = PagerDutySink.from_config({"routing_key": "R0UTINGKEY"}, SinkContext())
    >>> event = sink.event(a, "http://feed/api/v1/alerts/al-1")
    >>> event["event_action"], event["dedup_key"], event["payload"]["severity"]
    ('trigger', 'fp123', 'error')
    >>> "R0UTINGKEY" in repr(sink)
    False
    """

    name = "pagerduty"
    keys: ClassVar[frozenset[str]] = frozenset({"routing_key", "url", "client"})
    required: ClassVar[frozenset[str]] = frozenset({"routing_key"})

    def __init__(self, routing_key: str, url: str, client: str, ctx: SinkContext) -> None:
        self._key = routing_key
        self.url = url
        self.client = client
        self.feed_url = ctx.feed_url
        self.http = HttpPoster("pagerduty", ctx.timeout, ctx.deny_networks, [routing_key])

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> PagerDutySink:
        cls.check_keys(config)
        key = ctx.secret(config["routing_key"], "routing_key")
        url = validate_url(config.get("url", EVENTS_URL), "url", ctx.deny_networks)
        client = str(config.get("client", "meshwatch"))
        return cls(key, url, client, ctx)

    def event(self, alert: Alert, alert_url: str) -> dict[str, Any]:
        if alert.status == "resolved":
            return {"routing_key": self._key, "event_action": "resolve",
                    "dedup_key": alert.fingerprint}
        return {
            "routing_key": self._key,
            "event_action": "trigger",
            "dedup_key": alert.fingerprint,
            "payload": {
                "summary": alert.title[:1024],
                "source": endpoint_text(alert, "source"),
                "severity": SEVERITY.get(alert.severity, "warning"),
                "timestamp": format_ts(alert.first_seen),
                "component": alert.destination.service or endpoint_text(alert, "destination"),
                "group": alert.destination.namespace or "",
                "class": alert.detector,
                "custom_details": {
                    "summary": alert.summary,
                    "edge": edge_text(alert),
                    "count": alert.count,
                    "last_seen": format_ts(alert.last_seen),
                    "score": alert.score,
                    "mitre": list(alert.mitre),
                    "alert_id": alert.id,
                    "status": alert.status,
                    "labels": dict(alert.labels),
                },
            },
            "client": self.client,
            "client_url": self.feed_url,
            "links": [
                {"href": alert.runbook_url, "text": f"Runbook: {alert.detector}"},
                {"href": alert_url, "text": "Alert in meshwatch"},
            ],
        }

    def send(self, notification: Notification) -> None:
        # One event per alert; dedup_key makes re-sending the earlier ones of a retried
        # notification a no-op in PagerDuty.
        for alert in notification.alerts:
            body = json.dumps(self.event(alert, notification.alert_url(alert))).encode()
            self.http.post(self.url, body, {"Content-Type": "application/json"})

    def secrets(self) -> list[str]:
        return [self._key]

    def describe(self) -> str:
        return f"pagerduty {safe_url(self.url)}"

    def close(self) -> None:
        self.http.close()
