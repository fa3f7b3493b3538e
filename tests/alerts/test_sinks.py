"""Sinks against real receivers: exact payloads on loopback HTTP servers, a real Alertmanager,
a real Kafka-protocol broker, and a conformance suite over every registered sink."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from alerts.sinks import SINKS, PermanentDelivery, RetryableDelivery, SinkContext
from alerts.sinks.base import deny_networks
from alerts.sinks.webhook import verify_signature
from tests.alerts.factories import alert, notification
from tests.alerts.receivers import Receiver

SECRET = "hmac-s3cret-value"
PD_KEY = "R0UTING-KEY-0123456789"
CTX = SinkContext(secrets={"hook": SECRET, "pd": PD_KEY}, timeout=2.0,
                  feed_url="http://feed.test")


def make(name: str, config: dict, ctx: SinkContext = CTX):
    return SINKS.get(name).from_config(config, ctx)


# -- webhook ----------------------------------------------------------------------------------

def test_webhook_posts_the_notification_signed_with_an_idempotency_key(receiver):
    sink = make("webhook", {"url": receiver.url("/hooks/mw"), "hmac_secret": {"secret": "hook"},
                            "headers": {"Authorization": "Bearer tok-123"}})
    n = notification(alert(), alert("x/y->z:1"))
    sink.send(n)
    (req,) = receiver.wait_for(1)
    assert req.method == "POST" and req.path == "/hooks/mw"
    assert req.json() == n.to_dict()
    assert req.json()["alerts"][0]["runbook_url"] == "http://feed.test/runbooks/plaintext_edge"
    assert req.headers["idempotency-key"] == n.id
    assert req.headers["authorization"] == "Bearer tok-123"
    assert req.headers["content-type"] == "application/json"
    # Verify the signature independently: HMAC-SHA256 over "<t>." + body.
    fields = dict(p.split("=", 1) for p in req.headers["x-meshwatch-signature"].split(","))
    assert abs(int(fields["t"]) - time.time()) < 30
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + req.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    header = req.headers["x-meshwatch-signature"]
    assert verify_signature(SECRET, header, req.body)
    assert not verify_signature(SECRET, header, req.body.replace(b"high", b"info"))
    assert not verify_signature(SECRET, header, req.body, now=int(fields["t"]) + 301)  # replay
    assert not verify_signature("wrong", header, req.body)


def test_webhook_status_mapping_and_retry_after(receiver):
    sink = make("webhook", {"url": receiver.url()})
    receiver.status, receiver.retry_after = 429, "7"
    with pytest.raises(RetryableDelivery) as info:
        sink.send(notification(alert()))
    assert info.value.retry_after == 7.0 and info.value.status == 429
    receiver.status, receiver.retry_after = 503, None
    with pytest.raises(RetryableDelivery, match="HTTP 503"):
        sink.send(notification(alert()))
    receiver.status = 410
    with pytest.raises(PermanentDelivery, match="HTTP 410"):
        sink.send(notification(alert()))
    receiver.status = 302
    with pytest.raises(PermanentDelivery, match="redirect"):
        sink.send(notification(alert()))


def test_webhook_time_out_is_retryable(receiver):
    sink = make("webhook", {"url": receiver.url()}, SinkContext(timeout=0.3))
    receiver.delay = 1.0
    with pytest.raises(RetryableDelivery, match="timed out"):
        sink.send(notification(alert()))


def test_private_ranges_are_refused_when_configured():
    ctx = SinkContext(deny_networks=deny_networks(private=True))
    for url in ("http://127.0.0.1:8080/x", "http://10.1.2.3/x", "http://[::1]:80/x",
                "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(ValueError, match="denied network"):
            make("webhook", {"url": url}, ctx)
    # A name is resolved at send time; no request is made when it resolves into a denied range.
    sink = make("webhook", {"url": "http://localhost:9/x"}, ctx)
    with pytest.raises(PermanentDelivery, match="denied network"):
        sink.send(notification(alert()))
    make("webhook", {"url": "http://127.0.0.1:9/x"}, SinkContext())  # allowed by default


# -- Slack ------------------------------------------------------------------------------------

def test_slack_blocks(receiver):
    url = receiver.url("/services/T000/B000/XXXXSECRET")
    sink = make("slack", {"url": url})
    firing, done = alert(severity="critical"), alert("a/b->c:1", status="resolved")
    sink.send(notification(firing, done))
    body = receiver.wait_for(1)[0].json()
    # mrkdwn: &, <, > are escaped (Slack renders them back)
    assert body["text"].startswith("[FIRING:1] Plaintext call shop/web -&gt; db.pay:5432")
    header, section, fields, actions, _divider = body["blocks"][:5]
    assert header["type"] == "header"
    assert "*Plaintext call shop/web -&gt; db.pay:5432*" in section["text"]["text"]
    texts = [f["text"] for f in fields["fields"]]
    assert "*Severity*\ncritical" in texts
    assert "*Edge*\n`shop/web -&gt; db.pay:5432`" in texts
    assert any(t.startswith("*MITRE ATT&amp;CK*\nTA0006, T1040") for t in texts)
    runbook, feed = actions["elements"]
    assert runbook["text"]["text"] == "Runbook" and runbook["url"] == firing.runbook_url
    assert feed["url"] == f"http://feed.test/api/v1/alerts/{firing.id}"
    assert "RESOLVED" in body["blocks"][5]["text"]["text"]  # the resolved alert follows
    assert "XXXXSECRET" not in repr(sink) and "XXXXSECRET" not in sink.describe()
    receiver.status = 404
    with pytest.raises(PermanentDelivery) as info:
        sink.send(notification(firing))
    assert "XXXXSECRET" not in str(info.value)


# -- PagerDuty --------------------------------------------------------------------------------

def test_pagerduty_trigger_and_resolve_with_dedup_key(receiver):
    sink = make("pagerduty", {"routing_key": {"secret": "pd"}, "url": receiver.url("/v2/enqueue")})
    receiver.status = 202
    firing = alert(severity="high")
    sink.send(notification(firing))
    trigger = receiver.wait_for(1)[0].json()
    assert trigger["routing_key"] == PD_KEY and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == firing.fingerprint
    payload = trigger["payload"]
    assert payload["severity"] == "error" and payload["class"] == "plaintext_edge"
    assert payload["summary"] == firing.title and payload["source"] == "shop/web"
    assert payload["component"] == "db.pay:5432" and payload["group"] == "pay"
    assert payload["custom_details"]["mitre"] == list(firing.mitre)
    assert {"href": firing.runbook_url, "text": "Runbook: plaintext_edge"} in trigger["links"]
    assert {"href": f"http://feed.test/api/v1/alerts/{firing.id}",
            "text": "Alert in meshwatch"} in trigger["links"]
    sink.send(notification(alert(status="resolved")))
    resolve = receiver.wait_for(2)[1].json()
    assert resolve == {"routing_key": PD_KEY, "event_action": "resolve",
                       "dedup_key": firing.fingerprint}
    assert [make("pagerduty", {"routing_key": "k"}).event(alert(severity=s), "u")["payload"]
            ["severity"] for s in ("critical", "high", "medium", "low", "info")] == [
        "critical", "error", "warning", "warning", "info"]


def test_pagerduty_errors_never_carry_the_routing_key(receiver):
    sink = make("pagerduty", {"routing_key": {"secret": "pd"}, "url": receiver.url()})
    receiver.status = 400
    receiver.reply = json.dumps({"status": "invalid event", "message": f"bad key {PD_KEY}"}
                                ).encode()
    with pytest.raises(PermanentDelivery) as info:
        sink.send(notification(alert()))
    assert PD_KEY not in str(info.value) and "***" in str(info.value)
    assert PD_KEY not in repr(sink)


# -- Alertmanager -----------------------------------------------------------------------------

def test_alertmanager_sink_shows_up_in_a_real_alertmanager(am):
    sink = make("alertmanager", {"url": am.url, "labels": {"cluster": "prod"}})
    firing = alert(labels={"team": "payments"})
    sink.send(notification(firing))
    (got,) = am.alerts()
    assert got["labels"]["alertname"] == "plaintext_edge"
    assert got["labels"]["severity"] == "high" and got["labels"]["dst_namespace"] == "pay"
    assert got["labels"]["cluster"] == "prod" and got["labels"]["team"] == "payments"
    assert got["labels"]["fingerprint"] == firing.fingerprint
    assert got["annotations"]["runbook_url"] == firing.runbook_url
    assert got["annotations"]["summary"] == firing.title
    assert got["status"]["state"] == "active"
    assert got["generatorURL"] == f"http://feed.test/api/v1/alerts/{firing.id}"
    sink.send(notification(alert(labels={"team": "payments"}, status="resolved")))
    deadline = time.monotonic() + 10
    while am.alerts(active="true") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert am.alerts(active="true") == []  # resolved in Alertmanager


def test_alertmanager_webhook_round_trip_into_the_feed(tmp_path, store):
    """A real Alertmanager notifies our API (payload v4); the alert lands in the store."""
    import threading

    import uvicorn

    from alerts.api import create_app
    from alerts.tokens import TokenStore
    from meshwatch.settings import load_settings
    from tests.alerts.receivers import alertmanager, free_port

    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")}})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        hook = f"http://127.0.0.1:{port}/api/v1/integrations/alertmanager"
        _, token = TokenStore(store).create("alertmanager", "integration")
        with alertmanager(tmp_path, webhook_url=hook, webhook_token=token) as am:
            make("alertmanager", {"url": am.url}).send(notification(alert()))
            deadline = time.monotonic() + 20
            found = []
            while not found and time.monotonic() < deadline:
                found = store.list_alerts(detector=["alertmanager"])
                time.sleep(0.2)
    finally:
        server.should_exit = True
        thread.join(10)
    (got,) = found
    assert got.status == "open" and got.labels["alertname"] == "plaintext_edge"
    assert got.runbook_url == "http://feed.test/runbooks/plaintext_edge"  # from annotations
    assert got.destination.namespace == "pay" and got.severity == "high"
    assert got.evidence[0]["kind"] == "alertmanager" and got.evidence[0]["receiver"] == "meshwatch"


# -- OCSF -------------------------------------------------------------------------------------

def check_ocsf(record: dict, a) -> None:
    assert record["class_uid"] == 2004 and record["category_uid"] == 2
    assert record["class_name"] == "Detection Finding"
    assert record["activity_id"] == 1 and record["type_uid"] == 200401
    assert record["severity_id"] == 4 and record["status_id"] == 1
    info = record["finding_info"]
    assert info["uid"] == a.id and info["title"] == a.title and info["types"] == [a.detector]
    assert info["analytic"]["name"] == "plaintext_edge"
    assert {"tactic": {"uid": "TA0006", "name": "Credential Access"},
            "technique": {"uid": "T1040", "name": "Network Sniffing"},
            "version": "v15"} in info["attacks"]
    evidence = record["evidences"][0]
    assert evidence["src_endpoint"] == {"name": "shop/web", "ip": "10.244.3.77"}
    assert evidence["dst_endpoint"] == {"svc_name": "db.pay", "port": 5432}
    assert evidence["data"]["events"][0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["metadata"]["product"]["name"] == "meshwatch"
    assert record["metadata"]["uid"].endswith(a.id)


def test_ocsf_json_lines_file(tmp_path):
    path = tmp_path / "siem" / "findings.jsonl"
    path.parent.mkdir()
    sink = make("ocsf", {"path": str(path)})
    a, closed = alert(), alert("x/y->z:1", status="resolved")
    sink.send(notification(a, closed))
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    check_ocsf(first, a)
    assert second["activity_id"] == 3 and second["status"] == "Resolved"
    assert second["is_alert"] is False


@pytest.mark.kafka
def test_ocsf_to_a_kafka_topic(kafka_broker):
    from kafka import KafkaConsumer

    kafka_broker.create_topics({"security.findings": 1})
    sink = make("ocsf", {"topic": "security.findings",
                         "bootstrap_servers": kafka_broker.bootstrap}, SinkContext(timeout=10))
    a = alert()
    try:
        sink.send(notification(a))
    finally:
        sink.close()
    consumer = KafkaConsumer("security.findings", bootstrap_servers=kafka_broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=15_000)
    try:
        message = next(iter(consumer))
    finally:
        consumer.close()
    assert message.key == a.fingerprint.encode()
    check_ocsf(json.loads(message.value), a)


def test_ocsf_kafka_down_is_retryable():
    from tests.alerts.receivers import free_port

    sink = make("ocsf", {"topic": "t", "bootstrap_servers": [f"127.0.0.1:{free_port()}"]},
                SinkContext(timeout=1))
    with pytest.raises(RetryableDelivery, match="ocsf kafka topic t"):
        sink.send(notification(alert()))


# -- conformance over every registered sink ---------------------------------------------------

# How to point each sink at a live target (a loopback receiver or a file) and at a dead one.
HTTP = {"webhook": lambda url: {"url": url, "hmac_secret": {"secret": "hook"}},
        "slack": lambda url: {"url": url + "/T0/B0/" + SECRET},
        "pagerduty": lambda url: {"routing_key": {"secret": "pd"}, "url": url},
        "alertmanager": lambda url: {"url": url}}
FILES = {"file": lambda path: {"path": path}, "ocsf": lambda path: {"path": path}}
SECRETS = {"webhook": SECRET, "slack": SECRET, "pagerduty": PD_KEY}


def test_every_registered_sink_has_a_conformance_target():
    assert set(SINKS.names()) == set(HTTP) | set(FILES)


@pytest.mark.parametrize("name", SINKS.names())
def test_sink_conformance(name, tmp_path):
    cls = SINKS.get(name)
    assert cls.name == name
    assert ">>>" in (cls.__doc__ or ""), f"{name}: the docstring needs a runnable example"
    n = notification(alert())
    if name in HTTP:
        live = Receiver().start()
        try:
            sink = make(name, HTTP[name](live.url("/in")))
            sink.send(n)
            assert len(live.requests) >= 1 and live.requests[0].method == "POST"
            live.status, live.retry_after = 503, "3"
            with pytest.raises(RetryableDelivery) as retry:
                sink.send(n)
            assert retry.value.retry_after == 3.0
            live.status = 400
            with pytest.raises(PermanentDelivery):
                sink.send(n)
        finally:
            live.stop()
        with pytest.raises(RetryableDelivery) as down:  # nothing listens there any more
            sink.send(n)
        messages = [str(retry.value), str(down.value)]
        config = HTTP[name]("http://127.0.0.1:9")
    else:
        target = tmp_path / "out.jsonl"
        sink = make(name, FILES[name](str(target)))
        sink.send(n)
        assert json.loads(target.read_text().splitlines()[0])
        dead = make(name, FILES[name](str(tmp_path / "missing-dir" / "out.jsonl")))
        with pytest.raises(RetryableDelivery) as down:
            dead.send(n)
        messages = [str(down.value)]
        config = FILES[name](str(target))
    secret = SECRETS.get(name)
    if secret:
        assert all(secret not in m for m in messages), messages
        assert secret not in repr(sink) and secret not in sink.describe()
        assert any(secret in s for s in sink.secrets())
    with pytest.raises(ValueError, match=r"^bogus: unknown key"):
        make(name, {**config, "bogus": 1})
    sink.close()


def test_sink_doctests_are_collected():
    """The sink modules' examples run under --doctest-modules; make sure they exist."""
    import alerts.sinks as package

    folder = Path(package.__file__).parent
    for module in ("webhook", "slack", "pagerduty", "alertmanager", "ocsf", "file"):
        assert ">>> " in (folder / f"{module}.py").read_text()


def test_alertmanager_webhook_endpoint_validates_and_tracks_status(tmp_path, store):
    from fastapi.testclient import TestClient

    from alerts.api import create_app
    from meshwatch.settings import load_settings
    from tests.alerts.api_client import bearer

    settings = load_settings(overrides={"store": {"path": str(tmp_path / "store")}})
    item = {"status": "firing", "labels": {"alertname": "IstioPlaintext", "severity": "critical",
                                           "destination_service": "db.pay"},
            "annotations": {"description": "plaintext seen by Prometheus"},
            "startsAt": "2026-03-01T10:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph?g0.expr=x", "fingerprint": "6f0b3c1d"}
    body = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "meshwatch",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am:9093", "alerts": [item]}
    with TestClient(create_app(store, settings), headers=bearer(store, "admin")) as client:
        url = "/api/v1/integrations/alertmanager"
        assert client.post(url, json={**body, "version": "3"}).status_code == 422
        missing = client.post(url, json={k: v for k, v in body.items() if k != "alerts"})
        assert missing.status_code == 422 and "alerts" in missing.json()["detail"]
        bad_time = client.post(url, json={**body, "alerts": [{**item, "startsAt": "soon"}]})
        assert bad_time.status_code == 422 and "startsAt" in bad_time.json()["detail"]
        ok = client.post(url, json=body)
        assert ok.status_code == 200, ok.text
        (alert_id,) = ok.json()["alert_ids"]
        stored = client.get(f"/api/v1/alerts/{alert_id}").json()
        assert stored["detector"] == "alertmanager" and stored["severity"] == "critical"
        assert stored["title"] == "IstioPlaintext" and stored["status"] == "open"
        assert stored["summary"] == "plaintext seen by Prometheus"
        assert stored["destination"]["service"] == "db.pay"
        assert stored["runbook_url"].endswith("/runbooks/alertmanager")
        assert client.get("/runbooks/alertmanager").status_code == 200
        done = {**item, "status": "resolved", "endsAt": "2026-03-01T10:05:00Z"}
        again = client.post(url, json={**body, "status": "resolved", "alerts": [done]})
        assert again.json()["alert_ids"] == [alert_id]  # same alert, now resolved
        assert client.get(f"/api/v1/alerts/{alert_id}").json()["status"] == "resolved"
