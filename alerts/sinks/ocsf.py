"""SIEM export: alerts as OCSF Detection Finding records (class_uid 2004).

Splunk, Elastic and Sentinel pipelines that speak OCSF take these without custom mapping: one
record per alert per notification, ``finding_info`` with the ATT&CK ``attacks``, the edge's two
ends as ``src_endpoint``/``dst_endpoint`` of the evidence, severity and status normalized to
OCSF's ids, and ``metadata.uid`` unique per delivery (``<notification id>:<alert id>``) so a
redelivered record can be dropped downstream. Records go to a Kafka topic (kafka-python) or
are appended to a JSON-lines file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from alerts import mitre
from alerts.sinks.base import SINKS, Notification, RetryableDelivery, Sink, SinkContext
from meshwatch import __version__
from meshwatch.records import Alert, Endpoint

OCSF_VERSION = "1.3.0"
SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS_ID = {"open": 1, "acknowledged": 2, "suppressed": 3, "resolved": 4}
STATUS_NAME = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
ACTIVITY_NAME = {1: "Create", 2: "Update", 3: "Close"}


def _ms(ts: datetime) -> int:
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def _split_address(address: str | None) -> tuple[str | None, int | None]:
    if not address:
        return None, None
    host, port = address, None
    if address.count(":") == 1:
        host, _, raw = address.partition(":")
        port = int(raw) if raw.isdigit() else None
    elif address.startswith("[") and "]:" in address:
        host, _, raw = address[1:].partition("]:")
        port = int(raw) if raw.isdigit() else None
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None, port


def network_endpoint(end: Endpoint) -> dict[str, Any]:
    """An OCSF Network Endpoint for one end of a mesh edge (workload, SPIFFE id, address)."""
    out: dict[str, Any] = {}
    if end.workload:
        out["name"] = f"{end.namespace}/{end.workload}" if end.namespace else end.workload
    if end.principal:
        out["uid"] = end.principal
    if end.service:
        service, _, port = end.service.rpartition(":")
        if service and port.isdigit():
            out["svc_name"], out["port"] = service, int(port)
        else:
            out["svc_name"] = end.service
    ip, port_ = _split_address(end.address)
    if ip:
        out["ip"] = ip
    if port_ is not None and "port" not in out:
        out["port"] = port_
    return out


def detection_finding(alert: Alert, notification: Notification,
                      now: datetime | None = None) -> dict[str, Any]:
    """One OCSF 1.x Detection Finding for an alert as delivered in ``notification``.

    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp123", "plaintext_edge", "high", "Plaintext call", "No mTLS.",
    ...           Endpoint(workload="web", namespace="shop", address="10.0.0.7"),
    ...           Endpoint(service="db.pay:5432"), t, t, 1, 1.0, ("TA0006", "T1040"),
    ...           "http://feed/runbooks/plaintext_edge", (), "open", {})
    >>> n = Notification("nt-1", "siem", "siem/ocsf/0", "g", {}, (a,), t, "http://feed")
    >>> f = detection_finding(a, n, now=t)
    >>> f["class_uid"], f["type_uid"], f["severity_id"], f["status"]
    (2004, 200401, 4, 'New')
    >>> f["evidences"][0]["src_endpoint"], f["evidences"][0]["dst_endpoint"]
    ({'name': 'shop/web', 'ip': '10.0.0.7'}, {'svc_name': 'db.pay', 'port': 5432})
    >>> f["finding_info"]["attacks"][0]["technique"]
    {'uid': 'T1040', 'name': 'Network Sniffing'}
    """
    now = now or datetime.now(UTC)
    # Create for a first sighting, Update for repeats, Close for a resolution.
    activity = 3 if alert.status == "resolved" else 1 if alert.count <= 1 else 2
    severity_id = SEVERITY_ID.get(alert.severity, 0)
    status_id = STATUS_ID.get(alert.status, 0)
    attacks = []
    for tactic, technique in mitre.pairs(alert.mitre):
        attack: dict[str, Any] = {"version": mitre.ATTACK_VERSION}
        if tactic:
            attack["tactic"] = {"uid": tactic, "name": mitre.name(tactic)}
        if technique:
            attack["technique"] = {"uid": technique, "name": mitre.name(technique)}
        attacks.append(attack)
    alert_url = notification.alert_url(alert)
    return {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity,
        "activity_name": ACTIVITY_NAME[activity],
        "type_uid": 2004 * 100 + activity,
        "type_name": f"Detection Finding: {ACTIVITY_NAME[activity]}",
        "time": _ms(now),
        "start_time": _ms(alert.first_seen),
        "end_time": _ms(alert.last_seen),
        "count": alert.count,
        "severity_id": severity_id,
        "severity": SEVERITY_NAME.get(severity_id, "Unknown"),
        "status_id": status_id,
        "status": STATUS_NAME.get(status_id, "Unknown"),
        "is_alert": activity != 3,
        "message": alert.title,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": f"{notification.id}:{alert.id}",
            "correlation_uid": alert.fingerprint,
            "product": {"name": "meshwatch", "vendor_name": "meshwatch",
                        "version": __version__},
        },
        "finding_info": {
            "uid": alert.id,
            "title": alert.title,
            "desc": alert.summary,
            "types": [alert.detector],
            "created_time": _ms(alert.first_seen),
            "first_seen_time": _ms(alert.first_seen),
            "last_seen_time": _ms(alert.last_seen),
            "modified_time": _ms(now),
            "src_url": alert_url,
            "analytic": {"uid": alert.detector, "name": alert.detector, "type_id": 2,
                         "type": "Behavioral"},
            "attacks": attacks,
        },
        "evidences": [{
            "src_endpoint": network_endpoint(alert.source),
            "dst_endpoint": network_endpoint(alert.destination),
            "data": {"events": [dict(e) for e in alert.evidence]},
        }],
        "unmapped": {"meshwatch": {
            "source": alert.source.to_dict(),
            "destination": alert.destination.to_dict(),
            "score": alert.score,
            "runbook_url": alert.runbook_url,
            "labels": dict(alert.labels),
            "receiver": notification.receiver,
        }},
    }


@SINKS.register("ocsf")
class OcsfSink(Sink):
    """Write OCSF Detection Findings to a Kafka topic or a JSON-lines file.

    Config: either ``topic`` with ``bootstrap_servers`` (list or comma-separated), or ``path``
    (a file appended to; ``-`` is stdout).

    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp1", "first_seen_edge", "medium", "New edge", "s", Endpoint(),
    ...           Endpoint(), t, t, 1, 1.0, (), "http://feed/runbooks/x", (), "open", {})
    >>> sink = OcsfSink.from_config({"path": "-"}, SinkContext())
    >>> sink.send(Notification("nt-1", "siem", "siem/ocsf/0", "g", {}, (a,), t, "http://f"))
    ... # doctest: +ELLIPSIS
    {"class_uid":2004,"class_name":"Detection Finding",...}
    """

    name = "ocsf"
    keys: ClassVar[frozenset[str]] = frozenset({"topic", "bootstrap_servers", "path"})

    def __init__(self, ctx: SinkContext, path: str | None = None, topic: str | None = None,
                 bootstrap_servers: list[str] | None = None) -> None:
        self.path = path
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers or []
        self.timeout = ctx.timeout
        self._producer: Any = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> OcsfSink:
        cls.check_keys(config)
        if ("topic" in config) == ("path" in config):
            raise ValueError("topic: set exactly one of topic (Kafka) or path (JSON lines)")
        if "path" in config:
            if not isinstance(config["path"], str) or not config["path"]:
                raise ValueError("path: must be a file path or '-'")
            return cls(ctx, path=config["path"])
        servers = config.get("bootstrap_servers")
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        if not servers or not all(isinstance(s, str) for s in servers):
            raise ValueError("bootstrap_servers: required with topic (host:port list)")
        if not isinstance(config["topic"], str) or not config["topic"]:
            raise ValueError("topic: must be a topic name")
        return cls(ctx, topic=config["topic"], bootstrap_servers=list(servers))

    def records(self, notification: Notification) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [detection_finding(a, notification, now) for a in notification.alerts]

    def send(self, notification: Notification) -> None:
        lines = [json.dumps(r, separators=(",", ":"), default=str)
                 for r in self.records(notification)]
        if self.path is not None:
            self._write_file(lines)
        else:
            self._produce(notification, lines)

    def _write_file(self, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if self.path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            with Path(self.path).open("a", encoding="utf-8") as out:  # type: ignore[arg-type]
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise RetryableDelivery(f"ocsf file {self.path}: {exc.strerror or exc}") from None

    def _produce(self, notification: Notification, lines: list[str]) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        target = f"ocsf kafka topic {self.topic}"
        timeout_ms = int(self.timeout * 1000)
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, client_id="meshwatch-ocsf",
                    acks="all", retries=0, enable_idempotence=False,
                    request_timeout_ms=timeout_ms, delivery_timeout_ms=2 * timeout_ms,
                    max_block_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
            futures = [self._producer.send(self.topic, key=a.fingerprint.encode(),
                                           value=line.encode())
                       for a, line in zip(notification.alerts, lines, strict=True)]
            self._producer.flush(timeout=self.timeout)
            for future in futures:
                future.get(timeout=self.timeout)
        except (KafkaError, OSError) as exc:
            self.close()
            raise RetryableDelivery(f"{target}: {type(exc).__name__}: {exc}") from None

    def describe(self) -> str:
        if self.path is not None:
            return f"ocsf file {self.path}"
        return f"ocsf kafka topic {self.topic}"

    def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):  # closing a broken producer must not raise
                producer.close(timeout=1)
