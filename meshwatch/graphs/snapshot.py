"""Turn aggregated query rows into a snapshot (edges, their nodes) or an edge's time series.

Pure functions over rows from `meshwatch.store.graph_queries`, so they can be tested without a
store and reused by the CLI and the API alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from meshwatch.graphs.model import (
    EdgeView,
    NodeView,
    Snapshot,
    encode_ref,
    mtls_share,
    mtls_status,
)
from meshwatch.graphs.sketches import merged_quantiles
from meshwatch.graphs.timerange import TimeRange
from meshwatch.records import format_ts
from meshwatch.store.graph_queries import EDGE_FIELDS

_N = len(EDGE_FIELDS)
if tuple(f.name for f in fields(EdgeView))[:_N] != EDGE_FIELDS:  # pragma: no cover
    raise ImportError("EdgeView fields and graph_queries.EDGE_FIELDS are out of order")


def latency_of(row: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """p50/p95/p99 of a row: its single window's stored values, else the merged sketches."""
    return _latency(row.get("single_p50"), row.get("single_p95"), row.get("single_p99"),
                    row.get("sketches"))


def _latency(p50: float | None, p95: float | None, p99: float | None,
             sketches: list[str] | None) -> tuple[float | None, float | None, float | None]:
    if sketches:
        m50, m95, m99 = merged_quantiles(sketches)
        return m50, m95, m99
    return p50, p95, p99


def edge_from_values(values: list[Any], latency: bool = True) -> EdgeView:
    """An edge from one `edge_aggregates` value list (positional: the hot path)."""
    edge = EdgeView(*values[:_N])
    if latency and len(values) > _N:
        edge.latency_p50, edge.latency_p95, edge.latency_p99 = _latency(*values[_N:_N + 4])
    return edge


def nodes_of(edges: Iterable[EdgeView]) -> list[NodeView]:
    """The nodes the edges touch, with what the edges say about them (sorted by id).

    Written for 100k edges: positional construction, no helper calls per edge.
    """
    nodes: dict[str, NodeView] = {}
    get = nodes.get
    for e in edges:
        first, last = e.first_seen, e.last_seen  # RFC 3339 text: compares chronologically
        src = get(e.src)
        if src is None:
            src = nodes[e.src] = NodeView(e.src, encode_ref(e.src), e.src_kind,
                                          e.src_namespace, e.src_workload, [], e.requests, 0,
                                          first, last)
        else:
            src.requests_out += e.requests
            if src.namespace is None:
                src.namespace = e.src_namespace
            if src.workload is None:
                src.workload = e.src_workload
            if first < src.first_seen:
                src.first_seen = first
            if last > src.last_seen:
                src.last_seen = last
        # Principals a caller presented, as verified by its callees (or declared by itself).
        principals = src.principals
        if e.src_principal and e.src_principal not in principals:
            principals.append(e.src_principal)
        for principal in e.peer_principals:
            if principal not in principals:
                principals.append(principal)
        dst = get(e.dst)
        if dst is None:
            dst = nodes[e.dst] = NodeView(e.dst, encode_ref(e.dst), e.dst_kind,
                                          e.dst_namespace, e.dst_workload,
                                          [e.dst_principal] if e.dst_principal else [], 0,
                                          e.requests, first, last)
        else:
            dst.requests_in += e.requests
            if dst.namespace is None:
                dst.namespace = e.dst_namespace
            if dst.workload is None:
                dst.workload = e.dst_workload
            if e.dst_principal and e.dst_principal not in dst.principals:
                dst.principals.append(e.dst_principal)
            if first < dst.first_seen:
                dst.first_seen = first
            if last > dst.last_seen:
                dst.last_seen = last
    out = sorted(nodes.values(), key=_node_id)
    for node in out:
        if len(node.principals) > 1:
            node.principals.sort()
    return out


_node_id = attrgetter("id")


def build_snapshot(rows: Iterable[list[Any]], time_range: TimeRange,
                   namespace: str | None = None, latency: bool = True) -> Snapshot:
    """A snapshot from `edge_aggregates` rows (which come sorted by source, destination)."""
    edges = [edge_from_values(r, latency) for r in rows]
    return Snapshot(range=time_range, namespace=namespace, nodes=nodes_of(edges), edges=edges,
                    latency=latency)


def series_points(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`edge_series` rows as JSON-ready points (one per window, parts summed)."""
    points = []
    for row in rows:
        p50, p95, p99 = latency_of(row)
        t, f = int(row["mtls_true"]), int(row["mtls_false"])
        points.append({
            "window_start": format_ts(row["window_start"]),
            "window_seconds": int(row["seconds"]),
            "parts": int(row["parts"]),
            "requests": int(row["requests"]),
            "errors_4xx": int(row["errors_4xx"]),
            "errors_5xx": int(row["errors_5xx"]),
            "denials": int(row["denials"]),
            "conn_failures": int(row["conn_failures"]),
            "bytes_sent": int(row["bytes_sent"]),
            "bytes_received": int(row["bytes_received"]),
            "latency_count": int(row["latency_count"]),
            "latency_p50": p50,
            "latency_p95": p95,
            "latency_p99": p99,
            "mtls_true": t,
            "mtls_false": f,
            "mtls_unknown": int(row["mtls_unknown"]),
            "mtls_share": mtls_share(t, f),
            "mtls_status": mtls_status(t, f),
            "tls_versions": list(row["tls_versions"]),
            "peer_principals": list(row["peer_principals"]),
        })
    return points
