"""An alert's place in the service graph: its edge, the edge's series, its neighbourhood.

Alerts keep endpoints, not graph node ids, so the edge is recovered the way the graph builder
names nodes (`ingest.graph.source_node` / `destination_node`): the caller's principal, else
``namespace/workload``, else its address; the callee's ``service:port``, else
``namespace/workload``. An ``edge_series`` evidence item (stored when the alert opened) names
the edge exactly and wins.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from meshwatch.graphs import service
from meshwatch.graphs.model import encode_ref
from meshwatch.graphs.snapshot import build_snapshot
from meshwatch.graphs.timerange import TimeRange
from meshwatch.records import Alert, Endpoint
from meshwatch.store import Store
from meshwatch.store import graph_queries as q

MAX_NEIGHBOURS = 200
# Detectors whose alerts mark an edge as lateral movement on the graph page.
LATERAL_DETECTORS = ("first_seen_edge", "lateral_chain", "fanout_scan")


def source_node(src: Endpoint) -> str | None:
    """The graph node id of an alert's caller (None when the alert does not say).

    >>> source_node(Endpoint(workload="web", namespace="shop"))
    'shop/web'
    """
    if src.principal:
        return src.principal
    if src.workload:
        return f"{src.namespace or '-'}/{src.workload}"
    return src.address


def destination_node(dst: Endpoint) -> str | None:
    """The graph node id of an alert's callee (None when the alert does not say)."""
    if dst.service:
        return dst.service
    if dst.workload:
        return f"{dst.namespace or '-'}/{dst.workload}"
    return dst.principal


def alert_edge(alert: Alert) -> tuple[str | None, str | None]:
    """(source node, destination node) of the alert; either may be None."""
    for item in alert.evidence:
        if isinstance(item, dict) and item.get("edge_src") and item.get("edge_dst"):
            return str(item["edge_src"]), str(item["edge_dst"])
    return source_node(alert.source), destination_node(alert.destination)


def alert_range(alert: Alert, before: float = 1800.0, after: float = 600.0) -> TimeRange:
    """The alert's time span with some context either side (whole seconds)."""
    start = (alert.first_seen - timedelta(seconds=before)).replace(microsecond=0)
    end = (alert.last_seen + timedelta(seconds=after)).replace(microsecond=0)
    return TimeRange(start, max(end, start + timedelta(seconds=60)))


def edge_series(store: Store, alert: Alert) -> dict[str, Any] | None:
    """Per-window points of the alert's edge over its span, or None without an edge."""
    src, dst = alert_edge(alert)
    if not src or not dst:
        return None
    time_range = alert_range(alert)
    try:
        points = service.series(store, src, dst, time_range)
    except service.NoData:
        points = []
    return {"src": src, "dst": dst, "src_ref": encode_ref(src), "dst_ref": encode_ref(dst),
            "range": time_range.to_dict(), "points": points}


def neighbourhood(store: Store, alert: Alert) -> dict[str, Any]:
    """Edges into and out of the alert's endpoints over its span, the alerting edge marked.

    The destination's workload principal counts as the same endpoint (its outgoing calls are
    made under that identity), so a compromised callee's next hops show up too.
    """
    src, dst = alert_edge(alert)
    nodes = [n for n in (src, dst, alert.destination.principal) if n]
    time_range = alert_range(alert)
    empty = {"range": time_range.to_dict(), "alert_edge": {"src": src, "dst": dst},
             "nodes": [], "edges": [], "truncated": False}
    if not nodes:
        return empty
    rows = _touching(store, nodes, time_range.start, time_range.end)
    truncated = len(rows) > MAX_NEIGHBOURS
    if truncated:
        rows.sort(key=lambda r: -int(r[q.EDGE_FIELDS.index("requests")]))
        keep = rows[:MAX_NEIGHBOURS]
        rows = sorted(keep, key=lambda r: (r[0], r[1]))
    snap = build_snapshot(rows, time_range, latency=False)
    edges = []
    for e in snap.edges:
        edges.append({"src": e.src, "dst": e.dst, "requests": e.requests,
                      "mtls_status": e.mtls_status, "mtls_false": e.mtls_false,
                      "alerting": (e.src, e.dst) == (src, dst)})
    out_nodes = [{"id": n.id, "ref": n.ref, "kind": n.kind, "namespace": n.namespace,
                  "workload": n.workload} for n in snap.nodes]
    known = {n["id"] for n in out_nodes}
    for node in (src, dst):  # the alert's endpoints show even without traffic in the span
        if node and node not in known:
            out_nodes.append({"id": node, "ref": encode_ref(node), "kind": "unknown",
                              "namespace": None, "workload": None})
    return {**empty, "nodes": out_nodes, "edges": edges, "truncated": truncated}


def _touching(store: Store, nodes: list[str], start: datetime,
              end: datetime) -> list[list[Any]]:
    columns = ", ".join(expr for _, expr in q.EDGE_COLUMNS)
    sql = (
        f"SELECT tuple({columns}) AS e\n{q._RANGE}"  # fixed SQL; values are bound
        " AND (edge_src IN {nodes:Array(String)} OR edge_dst IN {nodes:Array(String)})"
        f"\nGROUP BY edge_src, edge_dst ORDER BY edge_src, edge_dst LIMIT 5000\n"
        f"{q._JSON_SETTINGS}"
    )
    params = {"start": q.ch_second(start), "end": q.ch_second(end), "nodes": nodes}
    return [row["e"] for row in store.query(sql, params)]


def lateral_marks(store: Store, start: datetime, end: datetime,
                  detectors: tuple[str, ...] = LATERAL_DETECTORS,
                  limit: int = 5000) -> list[dict[str, Any]]:
    """Edges (or sources, when an alert names no destination) with lateral-movement alerts
    active in [start, end): what the graph page highlights."""
    from meshwatch.store.store import ch_ts, row_alert

    rows = store.query(
        "SELECT * FROM {db}.alerts FINAL WHERE detector IN {d:Array(String)}"
        " AND last_seen >= {s:DateTime64(3, 'UTC')} AND first_seen < {e:DateTime64(3, 'UTC')}"
        " ORDER BY last_seen DESC LIMIT {n:UInt32}",
        {"d": list(detectors), "s": ch_ts(start), "e": ch_ts(end), "n": limit})
    marks: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for row in rows:
        alert = row_alert(row)
        src, dst = alert_edge(alert)
        if not src:
            continue
        mark = marks.setdefault((src, dst), {"src": src, "dst": dst, "alerts": [],
                                              "detectors": []})
        mark["alerts"].append(alert.id)
        if alert.detector not in mark["detectors"]:
            mark["detectors"].append(alert.detector)
    return list(marks.values())
