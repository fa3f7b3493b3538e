"""Hand-built Istio sidecar JSON lines (the meshwatch format) for tests that need many records
with known ground truth; the simulator makes realistic traffic, this makes exact traffic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def inbound_line(i: int, seconds: float, src_ip: str = "10.1.0.5",
                 principal: str | None = "spiffe://cluster.local/ns/shop/sa/web",
                 service: str = "cart", namespace: str = "shop", port: int = 7070,
                 code: int = 200, path: str = "/cart") -> bytes:
    """A destination-side record; ``principal=None`` means the caller sent plaintext."""
    fqdn = f"{service}.{namespace}.svc.cluster.local"
    return json.dumps({
        "start_time": _ts(T0 + timedelta(seconds=seconds)), "method": "GET", "path": path,
        "protocol": "HTTP/1.1", "response_code": code, "response_flags": "-",
        "response_code_details": "via_upstream", "connection_termination_details": None,
        "upstream_transport_failure_reason": None, "bytes_received": 10, "bytes_sent": 300,
        "duration": 4, "upstream_service_time": "3", "x_forwarded_for": None,
        "user_agent": "Go-http-client/1.1", "request_id": f"req-{i}",
        "authority": f"{service}:{port}", "upstream_host": f"10.2.0.9:{port}",
        "upstream_cluster": f"inbound|{port}||", "upstream_local_address": "127.0.0.6:41000",
        "downstream_local_address": f"10.2.0.9:{port}",
        "downstream_remote_address": f"{src_ip}:5{i % 9999:04d}",
        "requested_server_name": f"outbound_.{port}_._.{fqdn}" if principal else None,
        "route_name": "default", "downstream_peer_uri_san": principal,
        "downstream_local_uri_san": f"spiffe://cluster.local/ns/{namespace}/sa/{service}",
        "upstream_peer_uri_san": None, "downstream_tls_version": "TLSv1.3" if principal else None,
        "downstream_peer_cert_v_end": _ts(T0 + timedelta(hours=18)) if principal else None,
        "pod_name": f"{service}-v1-5d8f7c9b4-x2x9q", "pod_namespace": namespace,
    }).encode()
