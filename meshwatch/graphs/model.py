"""The service graph as read back from the store: nodes, edges with metrics, snapshots.

Plain dataclasses built from query rows; API payload models live with the API
(DESIGN.md habit 5). mTLS is judged only from destination-side evidence, which is what the
window counts hold: ``mtls_unknown`` calls had no destination-side record and are never
counted as plaintext.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from meshwatch.graphs.timerange import TimeRange

MtlsStatus = Literal["all-mtls", "mixed", "plaintext", "unknown"]
MTLS_STATUSES: tuple[MtlsStatus, ...] = ("all-mtls", "mixed", "plaintext", "unknown")
_REF = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def mtls_status(mtls_true: int, mtls_false: int) -> MtlsStatus:
    """all-mtls / mixed / plaintext from destination-side evidence; unknown without any.

    >>> mtls_status(10, 0), mtls_status(10, 1), mtls_status(0, 3), mtls_status(0, 0)
    ('all-mtls', 'mixed', 'plaintext', 'unknown')
    """
    if mtls_true and mtls_false:
        return "mixed"
    if mtls_true:
        return "all-mtls"
    if mtls_false:
        return "plaintext"
    return "unknown"


def mtls_share(mtls_true: int, mtls_false: int) -> float | None:
    """mtls_true / (mtls_true + mtls_false); None when no call had destination-side evidence."""
    known = mtls_true + mtls_false
    return mtls_true / known if known else None


def encode_ref(node_id: str) -> str:
    """A node id as one URL path segment: unpadded base64url of its UTF-8 bytes.

    Node ids hold ``/`` and ``:`` (``spiffe://td/ns/a/sa/web``, ``svc.ns:8080``). Percent-encoded
    slashes (%2F) are decoded or rejected by many proxies, Envoy included, so the API takes
    base64url segments instead.

    >>> encode_ref("spiffe://cluster.local/ns/shop/sa/web")
    'c3BpZmZlOi8vY2x1c3Rlci5sb2NhbC9ucy9zaG9wL3NhL3dlYg'
    >>> decode_ref(encode_ref("db.prod.svc.cluster.local:5432"))
    'db.prod.svc.cluster.local:5432'
    """
    return base64.urlsafe_b64encode(node_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_ref(ref: str) -> str:
    """The node id in an `encode_ref` segment; ValueError with a how-to when malformed."""
    if not ref or len(ref) > 4096 or not _REF.match(ref):
        raise ValueError("not a base64url node reference (characters A-Z a-z 0-9 - _)")
    padded = ref.rstrip("=") + "=" * (-len(ref.rstrip("=")) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a base64url node reference (does not decode to UTF-8 text)") from None
    if not text or any(ord(c) < 32 for c in text):
        raise ValueError("not a base64url node reference (decodes to empty or control text)")
    return text


@dataclass(slots=True)
class EdgeView:
    """One edge's metrics over a range: counts summed over windows and parts.

    Fields up to ``windows`` come in the order `graph_queries.EDGE_FIELDS` returns them (a
    10k-edge snapshot is built positionally, see `meshwatch.graphs.snapshot`); the share,
    status and RFC 3339 times are computed by ClickHouse.
    """

    src: str
    dst: str
    src_kind: str
    dst_kind: str
    src_workload: str | None
    src_namespace: str | None
    src_principal: str | None
    src_address: str | None
    dst_service: str | None
    dst_port: int | None
    dst_workload: str | None
    dst_namespace: str | None
    dst_principal: str | None
    requests: int
    errors_4xx: int
    errors_5xx: int
    denials: int
    conn_failures: int
    bytes_sent: int
    bytes_received: int
    latency_count: int
    mtls_true: int
    mtls_false: int
    mtls_unknown: int
    mtls_share: float | None  # mtls_true / (mtls_true + mtls_false); None without evidence
    mtls_status: MtlsStatus
    tls_versions: list[str]
    peer_principals: list[str]
    first_seen: str  # RFC 3339 UTC (`format_ts` form), so it sorts as text
    last_seen: str
    windows: int
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.src, self.dst)

    @property
    def plaintext_share(self) -> float | None:
        share = self.mtls_share
        return None if share is None else 1.0 - share

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


@dataclass(slots=True)
class NodeView:
    """A node of the snapshot: what the edges touching it say about it."""

    id: str
    ref: str  # `encode_ref(id)`: the node's path segment in /api/v1/edges/{src}/{dst}/series
    kind: str
    namespace: str | None = None
    workload: str | None = None
    principals: list[str] = field(default_factory=list)
    requests_out: int = 0
    requests_in: int = 0
    first_seen: str | None = None
    last_seen: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


@dataclass
class Snapshot:
    """The graph over one range: what `meshwatch graph snapshot` and `GET /api/v1/graph` show."""

    range: TimeRange
    namespace: str | None
    nodes: list[NodeView]
    edges: list[EdgeView]
    latency: bool = True

    def edge_map(self) -> dict[tuple[str, str], EdgeView]:
        return {e.key: e for e in self.edges}

    def totals(self) -> dict[str, Any]:
        requests = sum(e.requests for e in self.edges)
        t = sum(e.mtls_true for e in self.edges)
        f = sum(e.mtls_false for e in self.edges)
        by_status = {s: 0 for s in MTLS_STATUSES}
        for e in self.edges:
            by_status[e.mtls_status] += 1
        return {"nodes": len(self.nodes), "edges": len(self.edges), "requests": requests,
                "mtls_true": t, "mtls_false": f,
                "mtls_unknown": sum(e.mtls_unknown for e in self.edges),
                "mtls_share": mtls_share(t, f), "edges_by_mtls_status": by_status}

    def payload(self) -> dict[str, Any]:
        """The JSON shape with the node/edge objects as they are (msgspec encodes them
        directly: a 10k-edge snapshot in tens of milliseconds)."""
        return {
            "range": self.range.to_dict(),
            "namespace": self.namespace,
            "totals": self.totals(),
            "nodes": self.nodes,
            "edges": self.edges,
        }

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.payload())
