"""Attacker-controlled text (request paths, user agents, Host headers, SNI, request ids, a
hostile webhook receiver's error body) must not forge log lines, break or ping through Slack
and PagerDuty payloads, or run in the analyst's browser.

The records are real Envoy JSON lines run through the pipeline into a real store; deliveries go
to real loopback HTTP receivers; the UI is served by the real app.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from alerts.notify import Notifier
from alerts.sinks.base import Notification, SinkContext
from alerts.sinks.pagerduty import PagerDutySink
from alerts.sinks.slack import SlackSink
from meshwatch.pipeline import Pipeline
from meshwatch.records import Alert, Endpoint
from meshwatch.settings import load_settings
from meshwatch.store import Store
from tests.alerts.api_client import client
from tests.alerts.factories import access_log, raw
from tests.alerts.receivers import Receiver
from tests.faults.conftest import Recorder

WEB = Path(__file__).resolve().parents[2] / "alerts" / "web"
FORGED = "2026-01-01 00:00:00,000 CRITICAL forged log line"
HOSTILE = {
    "path": f"/login\r\n{FORGED}\x1b[2J\x1b[31m<script>alert('path')</script>",
    "user_agent": "Mozilla\n<img src=x onerror=alert('ua')> <!channel> & *bold*",
    "authority": "<b>ledger</b>&<!everyone>:8080",
    "requested_server_name": "<!here>&evil\n.example",
    "request_id": "req-<svg/onload=alert('rid')>\x1b[0m",
    "x_forwarded_for": "<!channel>, 1.2.3.4\n" + FORGED,
}
MARKERS = ("<script>", "<img", "<!channel>", "<!everyone>", "<!here>", "<svg", "<b>")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _records() -> list[bytes]:
    lines = []
    for i in range(4):
        doc = json.loads(access_log(i, src_ip=f"10.244.3.{70 + i}"))
        doc.update(HOSTILE)
        lines.append(json.dumps(doc).encode())
    return lines


def _mrkdwn_texts(message: dict) -> list[str]:
    """Every mrkdwn text of a Slack Block Kit message (where Slack parses <, >, &)."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message.get("blocks", []))
    if isinstance(message.get("text"), str):  # the fallback/notification text is mrkdwn too
        out.append(message["text"])
    return out


def _assert_mrkdwn_escaped(message: dict) -> None:
    for text in _mrkdwn_texts(message):
        for marker in MARKERS:
            assert marker not in text, (marker, text)
        # A bare & is Slack's escape character: it may only start &amp; &lt; &gt;.
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text
        # meshwatch's own links (<url|label>) are the only angle brackets left.
        assert not re.sub(r"<https?://[^<>|\s]+\|[^<>]*>", "", text).count("<"), text


def hostile_alert() -> Alert:
    """An alert whose every free-text field carries attacker-shaped text."""
    t = datetime(2026, 3, 1, 10, tzinfo=UTC)
    evil = "<!channel> & <script>x</script>\n*bold*"
    return Alert("al-evil", "fp-evil", "plaintext_edge", "high", f"Plaintext {evil}",
                 f"Summary {evil}", Endpoint(workload=f"web{evil}", namespace="shop",
                                             address="10.0.0.1"),
                 Endpoint(service=f"db{evil}:5432"), t, t, 3, 1.0, ("T1040",),
                 "http://feed/runbooks/plaintext_edge", ({"path": evil},), "open",
                 {"team": evil})


def test_slack_mrkdwn_escapes_attacker_text() -> None:
    alert = hostile_alert()
    note = Notification("nt-1", "oncall", "oncall/slack/0", "g", {}, (alert,) * 7,
                        alert.first_seen, "http://feed")
    sink = SlackSink.from_config({"url": "https://hooks.slack.com/services/T/B/X",
                                  "max_alerts": 2}, SinkContext())
    message = sink.message(note)
    json.loads(json.dumps(message))
    _assert_mrkdwn_escaped(message)
    # The text is still there, escaped (an analyst can read what the attacker sent).
    assert any("&lt;!channel&gt; &amp; &lt;script&gt;" in t for t in _mrkdwn_texts(message))


def test_pagerduty_payload_is_valid_json_with_the_text_intact() -> None:
    alert = hostile_alert()
    sink = PagerDutySink.from_config({"routing_key": "R0UTINGKEY"}, SinkContext())
    body = json.dumps(sink.event(alert, "http://feed/api/v1/alerts/al-evil")).encode()
    event = json.loads(body)
    assert event["payload"]["summary"] == alert.title  # intact: PagerDuty shows plain text
    assert event["payload"]["custom_details"]["summary"] == alert.summary
    assert b"\n" not in body  # JSON-escaped, never a raw newline in the request body


def test_ui_scripts_never_build_html_from_data() -> None:
    """The UI renders client-side; its scripts must set text, never parse markup."""
    scripts = sorted((WEB / "static").glob("*.js"))
    assert scripts
    for script in scripts:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", script.read_text(), flags=re.S)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function"):
            assert sink not in code, f"{script.name} uses {sink}"
    for page in WEB.glob("*.html"):
        assert "{{" not in page.read_text() and "{%" not in page.read_text(), page.name


@pytest.mark.slow
def test_hostile_fields_through_pipeline_logs_sinks_and_ui(tmp_path: Path,
                                                           measured: Recorder) -> None:
    hooks = Receiver().start()
    slack = Receiver().start()
    pagerduty = Receiver().start()
    # A compromised receiver answers 500 with a body that tries to forge log lines.
    hostile_receiver = Receiver(status=500, reply=f"oops\n{FORGED}\x1b[31m".encode()).start()
    config = tmp_path / "meshwatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")}, "alerts": {
        "routing": {"route": {"receiver": "all", "group_by": ["..."], "group_wait": "0s"},
                    "receivers": [{"name": "all",
                                   "webhook_configs": [{"url": hooks.url()},
                                                       {"url": hostile_receiver.url()}],
                                   "slack_configs": [{"url": slack.url("/services/T/B/X")}],
                                   "pagerduty_configs": [{"routing_key": "R0UTINGKEY",
                                                          "url": pagerduty.url("/v2")}]}]},
        "delivery": {"retry_initial": "100ms", "retry_max": "200ms"}}}))
    logged: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(self.format(record))

    handler = Capture(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    settings = load_settings(config)
    store = Store.open(settings.store)
    try:
        notifier = Notifier(settings, store)
        notifier.start()
        pipeline = Pipeline(settings, store, notifier=notifier)
        pipeline.process([raw(line, i) for i, line in enumerate(_records())])
        pipeline.finish()
        written = pipeline.checkpoint()
        notifier.drain(5.0)
        hostile_receiver.wait_for(2, timeout=10)
        notifier.stop()
        assert written, "the hostile records raised no alert"

        # Logs: one line per message, no control characters, nothing forged.
        meshwatch_lines = [m for m in logged if "meshwatch" in m or "delivery" in m]
        assert any("HTTP 500" in m for m in meshwatch_lines), "the 500 was not logged"
        for message in logged:
            assert not CONTROL.search(message), repr(message)

        # Webhook JSON: valid, the attacker's text intact as data.
        body = hooks.wait_for(1)[0].json()
        assert body["alerts"]
        # Slack: mrkdwn escaped; PagerDuty: valid JSON.
        for request in slack.wait_for(1):
            _assert_mrkdwn_escaped(request.json())
        for request in pagerduty.wait_for(1):
            assert request.json()["event_action"] in ("trigger", "resolve")

        # UI and API: the pages are static (the data comes as JSON), no marker in the HTML.
        with client(store, role="admin") as c:
            for alert in written:
                detail = c.get(f"/api/v1/alerts/{alert.id}")
                assert detail.status_code == 200
                assert detail.headers["content-type"].startswith("application/json")
                assert detail.headers.get("x-content-type-options") == "nosniff"
                page = c.get(f"/ui/alerts/{alert.id}")
                assert page.status_code == 200, page.status_code
                for marker in MARKERS:
                    assert marker not in page.text
        reached = sorted({k for k, v in HOSTILE.items()
                          if any(v.split("\n")[0][:12] in json.dumps(a.to_dict())
                                 for a in written)})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        store.close()
        for r in (hooks, slack, pagerduty, hostile_receiver):
            r.stop()
    measured(scenario="attacker text in path, user agent, Host, SNI, request id, XFF and a "
                      "receiver's error body",
             records_in=len(_records()), alerts=len(written),
             notifications=len(hooks.requests) + len(slack.requests),
             detail=f"{len(logged)} log messages checked, none with control characters; "
                    f"fields that reached an alert: {', '.join(reached) or 'none'}",
             result="logs one line each; Slack mrkdwn escaped; PagerDuty/webhook valid JSON; "
                    "UI renders text only")
