"""Slack incoming webhook: one message per notification, Block Kit layout.

Per alert: a title and summary, fields for severity, edge, detector and count, and buttons to
the runbook and the alert in meshwatch. The webhook URL is itself the credential, so it is a
secret: it never appears in logs or errors.
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
    safe_url,
    url_secrets,
    validate_url,
)
from alerts.sinks.http import HttpPoster
from meshwatch.records import Alert

SEVERITY_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:",
                  "medium": ":large_yellow_circle:", "low": ":large_blue_circle:",
                  "info": ":white_circle:"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters in data (titles, names, paths come from
    traffic an attacker can shape: ``<!channel>`` would page everyone, ``<url|x>`` forge a
    link).

    >>> escape("<!channel> & <https://evil|docs>")
    '&lt;!channel&gt; &amp; &lt;https://evil|docs&gt;'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@SINKS.register("slack")
class SlackSink(Sink):
    """Post to a Slack incoming webhook with Block Kit blocks.

    Config: ``url`` (required; a string or ``{secret: NAME}``), ``max_alerts`` (alerts shown
    per message, default 5; the rest are counted).

    >>> from datetime import UTC, datetime
    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp", "plaintext_edge", "high", "Plaintext call", "No mTLS.",
    ...           Endpoint(workload="web", namespace="shop"), Endpoint(service="db:5432"),
    ...           t, t, 3, 1.0, ("T1040",), "http://feed/runbooks/plaintext_edge", (), "open", {})
    >>> n = Notification("nt-1", "oncall", "oncall/slack/0", "g", {}, (a,), t, "http://feed")
    >>> sink = SlackSink.from_config({"url": "https://hooks.slack.com/services/T/B/X"},
    ...                              SinkContext())
    >>> msg = sink.message(n)
    >>> [b["type"] for b in msg["blocks"]]
    ['header', 'section', 'section', 'actions', 'divider']
    >>> msg["blocks"][3]["elements"][0]["url"]
    'http://feed/runbooks/plaintext_edge'
    """

    name = "slack"
    keys: ClassVar[frozenset[str]] = frozenset({"url", "max_alerts"})
    required: ClassVar[frozenset[str]] = frozenset({"url"})

    def __init__(self, url: str, max_alerts: int, ctx: SinkContext) -> None:
        self._url = url
        self.max_alerts = max_alerts
        self.http = HttpPoster("slack", ctx.timeout, ctx.deny_networks, url_secrets(url))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> SlackSink:
        cls.check_keys(config)
        url = validate_url(ctx.secret(config["url"], "url"), "url", ctx.deny_networks)
        max_alerts = config.get("max_alerts", 5)
        if not isinstance(max_alerts, int) or isinstance(max_alerts, bool) or \
                not 1 <= max_alerts <= 10:
            raise ValueError("max_alerts: must be a whole number from 1 to 10")
        return cls(url, max_alerts, ctx)

    def _alert_blocks(self, alert: Alert, notification: Notification) -> list[dict[str, Any]]:
        resolved = alert.status == "resolved"
        mark = ":white_check_mark:" if resolved else SEVERITY_EMOJI.get(alert.severity, "")
        state = "RESOLVED " if resolved else ""
        fields = [
            ("Severity", escape(alert.severity)),
            ("Edge", f"`{escape(edge_text(alert))}`"),
            ("Detector", escape(alert.detector)),
            ("Count", f"{alert.count} (last {alert.last_seen:%Y-%m-%d %H:%M:%S} UTC)"),
        ]
        if alert.mitre:
            fields.append(("MITRE ATT&amp;CK", escape(", ".join(alert.mitre))))
        return [
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(
                f"{mark} *{state}{escape(alert.title)}*\n{escape(alert.summary)}", 3000)}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": _cut(f"*{k}*\n{v}", 2000)} for k, v in fields]},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Runbook"},
                 "url": alert.runbook_url, "action_id": "runbook"},
                {"type": "button", "text": {"type": "plain_text", "text": "Open in meshwatch"},
                 "url": notification.alert_url(alert), "action_id": "open"},
            ]},
            {"type": "divider"},
        ]

    def message(self, notification: Notification) -> dict[str, Any]:
        firing, resolved = notification.firing, notification.resolved
        if firing:
            head = f"[FIRING:{len(firing)}] {firing[0].title}"
        else:
            head = f"[RESOLVED:{len(resolved)}] {resolved[0].title}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(head, 150)}}]
        shown = (firing + resolved)[: self.max_alerts]
        for alert in shown:
            blocks.extend(self._alert_blocks(alert, notification))
        rest = len(notification.alerts) - len(shown)
        if rest > 0:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"and {rest} more alert(s): <{notification.feed_url}|open the feed>")}]})
        # The top-level text (notifications, fallback) is mrkdwn too; the header is plain.
        return {"text": escape(head), "blocks": blocks}

    def send(self, notification: Notification) -> None:
        body = json.dumps(self.message(notification), default=str).encode()
        self.http.post(self._url, body, {"Content-Type": "application/json"})

    def secrets(self) -> list[str]:
        return url_secrets(self._url)

    def describe(self) -> str:
        return f"slack {safe_url(self._url)}"

    def close(self) -> None:
        self.http.close()
