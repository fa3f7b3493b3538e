"""Building findings from detector inputs: endpoints, evidence and text, shared by detectors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from meshwatch.records import Endpoint, format_ts

# Fields of an edge observation worth showing an analyst as evidence of one call.
EVIDENCE_FIELDS = (
    "ts", "reporter", "origin", "source_workload", "source_namespace", "source_principal",
    "source_address", "destination_service", "destination_port", "method", "path",
    "response_code", "response_flags", "mtls", "tls_version", "peer_cert_not_after",
    "request_id", "trace_id",
)


def _get(x: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = x.get(key)
        if value is not None:
            return value
    return None


def source_endpoint(x: Mapping[str, Any]) -> Endpoint:
    """The caller, from an edge observation (event fields) or a window (src_* fields)."""
    return Endpoint(
        workload=_get(x, "source_workload", "src_workload"),
        namespace=_get(x, "source_namespace", "src_namespace"),
        principal=_get(x, "source_principal", "src_principal"),
        service=None,
        address=_get(x, "source_address", "src_address"),
    )


def destination_endpoint(x: Mapping[str, Any]) -> Endpoint:
    service = _get(x, "destination_service", "dst_service")
    port = _get(x, "destination_port", "dst_port")
    return Endpoint(
        workload=_get(x, "destination_workload", "dst_workload"),
        namespace=_get(x, "destination_namespace", "dst_namespace"),
        principal=_get(x, "destination_principal", "dst_principal"),
        service=f"{service}:{port}" if service and port is not None else service,
        address=None,
    )


def evidence(x: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready record of one observed call (request/trace ids included)."""
    out: dict[str, Any] = {}
    for key in EVIDENCE_FIELDS:
        value = x.get(key)
        if isinstance(value, datetime):
            value = format_ts(value)
        out[key] = value
    return out


def observed_at(x: Mapping[str, Any]) -> datetime:
    ts = _get(x, "ts", "last_seen", "window_start")
    if isinstance(ts, datetime):
        return ts
    return datetime.now(UTC)


def edge_entity(x: Mapping[str, Any]) -> str:
    return f"{x.get('edge_src')}->{x.get('edge_dst')}"


def describe_source(x: Mapping[str, Any]) -> str:
    src = source_endpoint(x)
    if src.workload:
        return f"{src.namespace or '?'}/{src.workload}"
    return src.principal or src.address or str(x.get("edge_src") or "unknown")


def describe_destination(x: Mapping[str, Any]) -> str:
    dst = destination_endpoint(x)
    return dst.service or str(x.get("edge_dst") or "unknown")
