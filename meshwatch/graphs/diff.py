"""What changed between two snapshots: new and vanished edges, mTLS changes, traffic shifts.

Both snapshots cover ranges of the same length, so request counts compare directly. A traffic
shift needs both a ratio (default x2 either way) and volume (default 20 requests on the busier
side) so that 1 -> 3 requests is not news.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meshwatch.graphs.model import EdgeView, MtlsStatus, Snapshot
from meshwatch.records import format_ts

_RANK = {"plaintext": 0, "mixed": 1, "all-mtls": 2}


def _edge_brief(e: EdgeView) -> dict[str, Any]:
    return {"src": e.src, "dst": e.dst, "src_namespace": e.src_namespace,
            "dst_namespace": e.dst_namespace, "requests": e.requests,
            "mtls_status": e.mtls_status, "mtls_share": e.mtls_share,
            "peer_principals": list(e.peer_principals)}


@dataclass
class MtlsChange:
    src: str
    dst: str
    before: MtlsStatus
    after: MtlsStatus
    share_before: float | None
    share_after: float | None

    @property
    def regression(self) -> bool:
        """Less mTLS than before (unknown on either side is a loss of evidence, not a drop)."""
        if self.before not in _RANK or self.after not in _RANK:
            return False
        return _RANK[self.after] < _RANK[self.before]

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "before": self.before, "after": self.after,
                "share_before": self.share_before, "share_after": self.share_after,
                "regression": self.regression}


@dataclass
class TrafficShift:
    src: str
    dst: str
    requests_before: int
    requests_after: int

    @property
    def ratio(self) -> float:
        return self.requests_after / self.requests_before

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "requests_before": self.requests_before,
                "requests_after": self.requests_after, "ratio": round(self.ratio, 4)}


@dataclass
class PrincipalChange:
    src: str
    dst: str
    added: list[str]
    removed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "added": self.added, "removed": self.removed}


@dataclass
class GraphDiff:
    before: Snapshot
    after: Snapshot
    new_edges: list[EdgeView] = field(default_factory=list)
    vanished_edges: list[EdgeView] = field(default_factory=list)
    mtls_changes: list[MtlsChange] = field(default_factory=list)
    traffic_shifts: list[TrafficShift] = field(default_factory=list)
    principal_changes: list[PrincipalChange] = field(default_factory=list)
    # All-time first sighting of each new edge (edge key -> time), when looked up.
    first_seen_ever: dict[tuple[str, str], datetime] = field(default_factory=dict)
    min_ratio: float = 2.0
    min_requests: int = 20

    def is_empty(self) -> bool:
        return not (self.new_edges or self.vanished_edges or self.mtls_changes
                    or self.traffic_shifts or self.principal_changes)

    def summary(self) -> dict[str, int]:
        return {
            "edges_before": len(self.before.edges),
            "edges_after": len(self.after.edges),
            "new_edges": len(self.new_edges),
            "vanished_edges": len(self.vanished_edges),
            "mtls_changes": len(self.mtls_changes),
            "mtls_regressions": sum(c.regression for c in self.mtls_changes),
            "traffic_shifts": len(self.traffic_shifts),
            "principal_changes": len(self.principal_changes),
        }

    def to_dict(self) -> dict[str, Any]:
        new = []
        for e in self.new_edges:
            item = _edge_brief(e)
            ever = self.first_seen_ever.get(e.key)
            item["first_seen_ever"] = format_ts(ever) if ever else None
            # Never seen before the later range began: a brand-new path through the mesh.
            item["never_seen_before"] = bool(ever and ever >= self.after.range.start)
            new.append(item)
        return {
            "before": self.before.range.to_dict(),
            "after": self.after.range.to_dict(),
            "namespace": self.after.namespace,
            "thresholds": {"min_ratio": self.min_ratio, "min_requests": self.min_requests},
            "summary": self.summary(),
            "new_edges": new,
            "vanished_edges": [_edge_brief(e) for e in self.vanished_edges],
            "mtls_changes": [c.to_dict() for c in self.mtls_changes],
            "traffic_shifts": [s.to_dict() for s in self.traffic_shifts],
            "principal_changes": [c.to_dict() for c in self.principal_changes],
        }


def diff_snapshots(before: Snapshot, after: Snapshot, min_ratio: float = 2.0,
                   min_requests: int = 20) -> GraphDiff:
    """Compare two snapshots edge by edge.

    >>> from meshwatch.graphs.timerange import TimeRange
    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 3, 1, tzinfo=UTC)
    >>> empty = Snapshot(TimeRange(t, t + timedelta(minutes=1)), None, [], [])
    >>> diff_snapshots(empty, empty).is_empty()
    True
    """
    if min_ratio <= 1.0:
        raise ValueError("min_ratio must be greater than 1")
    a, b = before.edge_map(), after.edge_map()
    out = GraphDiff(before, after, min_ratio=min_ratio, min_requests=min_requests)
    out.new_edges = [b[k] for k in sorted(b.keys() - a.keys())]
    out.vanished_edges = [a[k] for k in sorted(a.keys() - b.keys())]
    for key in sorted(a.keys() & b.keys()):
        old, new = a[key], b[key]
        if old.mtls_status != new.mtls_status:
            out.mtls_changes.append(MtlsChange(key[0], key[1], old.mtls_status, new.mtls_status,
                                               old.mtls_share, new.mtls_share))
        if max(old.requests, new.requests) >= min_requests and old.requests > 0:
            ratio = new.requests / old.requests
            if ratio >= min_ratio or ratio <= 1.0 / min_ratio:
                out.traffic_shifts.append(TrafficShift(key[0], key[1], old.requests,
                                                       new.requests))
        added = sorted(set(new.peer_principals) - set(old.peer_principals))
        removed = sorted(set(old.peer_principals) - set(new.peer_principals))
        if added or removed:
            out.principal_changes.append(PrincipalChange(key[0], key[1], added, removed))
    out.traffic_shifts.sort(key=lambda s: -abs(s.requests_after - s.requests_before))
    return out
