"""Alerts, notifications and access-log records for the alerting tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.lifecycle import AlertChange, alert_id
from alerts.sinks.base import Notification
from meshwatch.records import Alert, Endpoint, Origin, RawRecord, fingerprint

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def alert(entity: str = "shop/web->db.pay:5432", detector: str = "plaintext_edge",
          severity: str = "high", status: str = "open", minutes: int = 0,
          labels: dict[str, str] | None = None, dst_namespace: str = "pay",
          count: int = 1) -> Alert:
    fp = fingerprint(detector, entity)
    first = T0 + timedelta(minutes=minutes)
    src, _, dst = entity.partition("->")
    return Alert(
        id=alert_id(fp, first), fingerprint=fp, detector=detector, severity=severity,
        title=f"Plaintext call {src} -> {dst}", summary="No client certificate on this edge.",
        source=Endpoint(workload=src.split("/")[-1], namespace=src.split("/")[0],
                        address="10.244.3.77"),
        destination=Endpoint(service=dst, namespace=dst_namespace),
        first_seen=first, last_seen=first, count=count, score=1.0,
        mitre=("TA0006", "T1040", "TA0008", "T1557"),
        runbook_url=f"http://feed.test/runbooks/{detector}",
        evidence=({"request_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},),
        status=status, labels=dict(labels or {}))  # type: ignore[arg-type]


def change(a: Alert, kind: str = "opened") -> AlertChange:
    return AlertChange(kind, a)  # type: ignore[arg-type]


def notification(*alerts: Alert, receiver: str = "oncall", integration: str = "oncall/x/0",
                 nid: str = "nt-test-1") -> Notification:
    return Notification(nid, receiver, integration, "g-1", {"detector": "plaintext_edge"},
                        tuple(alerts), T0, "http://feed.test")


def access_log(i: int, src_ip: str = "10.244.3.77", namespace: str = "pay",
               service: str = "ledger", ts: str = "2026-03-01T10:00:00.000Z",
               mtls: bool = False) -> bytes:
    """An Istio inbound (destination-side) JSON access-log line; plaintext unless ``mtls``."""
    record: dict[str, Any] = {
        "start_time": ts, "method": "POST", "path": f"/tx/{i}", "protocol": "HTTP/1.1",
        "response_code": 200, "response_flags": "-", "bytes_received": 10, "bytes_sent": 20,
        "duration": 3, "request_id": f"req-{i}", "authority": f"{service}:8080",
        "upstream_host": "10.244.2.9:8080", "upstream_cluster": "inbound|8080||",
        "downstream_local_address": "10.244.2.9:8080",
        "downstream_remote_address": f"{src_ip}:40112",
        "pod_name": f"{service}-7d9f-abcde", "pod_namespace": namespace,
        # The recommended format's TLS fields, empty: no client certificate, no TLS.
        "requested_server_name": None, "downstream_peer_uri_san": None,
        "downstream_tls_version": None,
    }
    if mtls:
        record.update({
            "requested_server_name": f"outbound_.8080_._.{service}.{namespace}.svc.cluster.local",
            "downstream_peer_uri_san": "spiffe://cluster.local/ns/shop/sa/web",
            "downstream_tls_version": "TLSv1.3"})
    return json.dumps(record).encode()


def raw(payload: bytes, offset: int) -> RawRecord:
    return RawRecord(payload, Origin("access.log", offset), "envoy-json")
