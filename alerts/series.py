"""The edge's recent series, stored as evidence with a new alert.

An analyst judging "is this edge's traffic unusual?" wants the last few windows of the edge
next to the triggering events, not a query away. When an alert opens, the last N closed
windows of its edge (``edge_src``/``edge_dst`` from the finding's ``src->dst`` entity) are read
from ``edge_windows`` and kept as one evidence item ``{"kind": "edge_series", ...}``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from meshwatch.records import Finding, format_ts
from meshwatch.store import Store, StoreError
from meshwatch.store.store import ch_ts

log = logging.getLogger("meshwatch.alerts.series")

_COLUMNS = ("requests", "errors_4xx", "errors_5xx", "denials", "conn_failures", "bytes_sent",
            "bytes_received", "mtls_true", "mtls_false", "mtls_unknown")

# Parts of one window (late data) are summed; values are bound parameters.
_SELECT = (
    "SELECT window_start, max(window_seconds) AS window_seconds, sum(requests) AS requests, "
    "sum(errors_4xx) AS errors_4xx, sum(errors_5xx) AS errors_5xx, sum(denials) AS denials, "
    "sum(conn_failures) AS conn_failures, sum(bytes_sent) AS bytes_sent, "
    "sum(bytes_received) AS bytes_received, sum(mtls_true) AS mtls_true, "
    "sum(mtls_false) AS mtls_false, sum(mtls_unknown) AS mtls_unknown, "
    "max(latency_p95) AS latency_p95 FROM {db}.edge_windows FINAL "
    "WHERE window_start >= {since:DateTime64(3, 'UTC')} "
    "AND window_start <= {until:DateTime64(3, 'UTC')} "
    "AND edge_src = {src:String} AND edge_dst = {dst:String} "
    "GROUP BY window_start ORDER BY window_start DESC LIMIT {n:UInt32}"
)


def split_entity(entity: str) -> tuple[str, str] | None:
    """``src->dst`` into its two node ids (None for an entity that is not an edge).

    >>> split_entity("shop/web->db.pay:5432"), split_entity("10.0.0.1")
    (('shop/web', 'db.pay:5432'), None)
    """
    src, sep, dst = entity.partition("->")
    if not sep or not src or not dst:
        return None
    return src, dst


class EdgeSeries:
    """Reads the last ``windows`` windows of a finding's edge, up to the finding's time."""

    def __init__(self, store: Store, windows: int = 12, window_seconds: float = 60.0) -> None:
        self.store = store
        self.windows = windows
        self.window_seconds = window_seconds

    def __call__(self, finding: Finding) -> dict[str, Any] | None:
        edge = split_entity(finding.entity)
        if edge is None or self.windows <= 0:
            return None
        # Bound the scan to the time range that can hold the windows (the table is ordered
        # and partitioned by window_start), with slack for gaps in the traffic.
        since = finding.ts - timedelta(seconds=self.window_seconds * self.windows * 4)
        try:
            rows = self.store.query(
                _SELECT, {"since": ch_ts(since), "until": ch_ts(finding.ts), "src": edge[0],
                 "dst": edge[1], "n": self.windows},
            )
        except StoreError as exc:  # evidence is best effort: the alert matters more
            log.warning("cannot read the recent series of %s: %s", finding.entity, exc)
            return None
        if not rows:
            return None
        series = []
        for row in reversed(rows):
            item: dict[str, Any] = {"window_start": format_ts(_parse(row["window_start"]))}
            item.update({c: int(row[c]) for c in _COLUMNS})
            item["latency_p95"] = row["latency_p95"]
            series.append(item)
        return {"kind": "edge_series", "edge_src": edge[0], "edge_dst": edge[1],
                "window_seconds": int(rows[0]["window_seconds"]), "windows": series}


def _parse(value: str) -> Any:
    from meshwatch.records import parse_ts

    return parse_ts(value.replace(" ", "T"))
