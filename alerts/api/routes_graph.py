"""`/api/v1/graph`, `/api/v1/edges`, `/api/v1/coverage`: the service graph over HTTP.

Node ids hold ``/`` and ``:`` (``spiffe://cluster.local/ns/shop/sa/web``,
``cart.shop.svc.cluster.local:7070``), so an edge's path segments are the node ids in unpadded
**base64url** (RFC 4648 section 5), not percent-encoding: proxies (Envoy included) decode or
reject ``%2F`` in paths. Every node in a snapshot carries its segment as ``ref``::

    GET /api/v1/edges/{src.ref}/{dst.ref}/series

Times accept RFC 3339, ``now``, ``latest`` or ``-15m``-style relative times; reversed, empty
or unreadable ranges and malformed refs are 400s with a message, never 500s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from alerts.api.deps import get_store
from meshwatch.graphs import service
from meshwatch.graphs.export import MEDIA_TYPES, json_bytes, render, to_cytoscape
from meshwatch.graphs.model import decode_ref
from meshwatch.graphs.timerange import (
    TIME_HELP,
    RangeError,
    TimeRange,
    between,
    parse_span,
    parse_time,
)
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1", tags=["graph"])
T = TypeVar("T")

_Namespace = Annotated[str | None, Query(max_length=253, description="Only edges from or to "
                                                                     "this namespace.")]
_Window = Annotated[str, Query(max_length=32, description="Duration: 90s, 15m, 2h, 1d.")]


# -- response models (documentation and contract tests; handlers return JSON directly) ----


class RangeOut(BaseModel):
    start: str = Field(description="RFC 3339 UTC, inclusive")
    end: str = Field(description="RFC 3339 UTC, exclusive")


class NodeOut(BaseModel):
    id: str
    ref: str = Field(description="The id as a base64url path segment.")
    kind: Literal["workload", "service", "external", "address", "unknown"]
    namespace: str | None
    workload: str | None
    principals: list[str]
    requests_out: int
    requests_in: int
    first_seen: str | None
    last_seen: str | None


class EdgeOut(BaseModel):
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
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    mtls_true: int
    mtls_false: int
    mtls_unknown: int
    mtls_share: float | None = Field(description="mtls_true / (mtls_true + mtls_false)")
    mtls_status: Literal["all-mtls", "mixed", "plaintext", "unknown"]
    tls_versions: list[str]
    peer_principals: list[str] = Field(description="Principals the callee verified.")
    first_seen: str
    last_seen: str
    windows: int


class GraphOut(BaseModel):
    range: RangeOut
    namespace: str | None
    totals: dict[str, Any]
    nodes: list[NodeOut]
    edges: list[EdgeOut]
    note: str | None = Field(None, description="Why the graph is empty, when it is.")


class SeriesOut(BaseModel):
    src: str
    dst: str
    range: RangeOut
    points: list[dict[str, Any]]


# -- helpers -------------------------------------------------------------------------------


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RangeError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    except service.NoData as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _time(store: Store, value: str, name: str, now: datetime) -> datetime:
    try:
        return parse_time(value, now, latest=lambda: service.latest_end(store))
    except RangeError as exc:
        raise RangeError(f"{name}: {exc}") from None


def _ending(store: Store, at: str, window: str, now: datetime) -> TimeRange:
    return TimeRange.ending(_time(store, at, "at", now), parse_span(window, "window"))


def _between(store: Store, since: str, until: str, now: datetime) -> TimeRange:
    return between(_time(store, since, "since", now), _time(store, until, "until", now))


def _ref(value: str, name: str) -> str:
    try:
        return decode_ref(value)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=(
            f"{name}: {exc}; encode the node id's UTF-8 bytes as unpadded base64url, or use "
            "the node's 'ref' from GET /api/v1/graph")) from None


# -- routes --------------------------------------------------------------------------------


@router.get(
    "/graph",
    summary="Service graph snapshot (time travel with `at`)",
    responses={200: {"model": GraphOut,
                     "content": {"application/graphml+xml": {}, "text/vnd.graphviz": {}}},
               400: {"description": "Unreadable time or window"}},
)
def get_graph(
    store: Annotated[Store, Depends(get_store)],
    at: Annotated[str, Query(max_length=64, description=f"End of the snapshot: {TIME_HELP}.")
                  ] = "now",
    window: _Window = "15m",
    namespace: _Namespace = None,
    fmt: Annotated[Literal["json", "cytoscape", "graphml", "dot"],
                   Query(alias="format", description="Response format.")] = "json",
    latency: Annotated[bool, Query(description="Merge latency sketches.")] = True,
) -> Response:
    now = datetime.now(UTC)

    def build() -> Any:
        return service.snapshot(store, _ending(store, at, window, now), namespace,
                                latency=latency)

    snap = _guard(build)
    if fmt == "json":
        body = snap.payload()
        body["note"] = None if snap.edges else service.hint(store, snap.range, namespace)
        return Response(json_bytes(body), media_type="application/json")
    if fmt == "cytoscape":
        return Response(json_bytes(to_cytoscape(snap)), media_type="application/json")
    return Response(render(snap, fmt), media_type=MEDIA_TYPES[fmt])


@router.get(
    "/graph/diff",
    summary="What changed between two moments",
    responses={400: {"description": "Unreadable, reversed or empty comparison"}},
)
def get_graph_diff(
    store: Annotated[Store, Depends(get_store)],
    since: Annotated[str, Query(alias="from", max_length=64,
                                description=f"The earlier moment: {TIME_HELP}.")],
    until: Annotated[str, Query(alias="to", max_length=64, description="The later moment.")
                     ] = "now",
    window: _Window = "15m",
    namespace: _Namespace = None,
    min_ratio: Annotated[float, Query(gt=1.0, le=1e6)] = 2.0,
    min_requests: Annotated[int, Query(ge=0)] = 20,
) -> JSONResponse:
    now = datetime.now(UTC)

    def build() -> Any:
        span = parse_span(window, "window")
        t1, t2 = _time(store, since, "from", now), _time(store, until, "to", now)
        if t2 <= t1:
            raise RangeError(f"{'empty' if t1 == t2 else 'reversed'} comparison: 'to' "
                             f"({t2.isoformat()}) must be later than 'from' ({t1.isoformat()})")
        return service.diff(store, TimeRange.ending(t1, span), TimeRange.ending(t2, span),
                            namespace, min_ratio, min_requests)

    return JSONResponse(_guard(build).to_dict())


@router.get("/edges", summary="Edges of a window; `plaintext=true` for plaintext ones only")
def list_edges(
    store: Annotated[Store, Depends(get_store)],
    plaintext: Annotated[bool, Query(description="Only edges with destination-side "
                                                 "plaintext calls.")] = False,
    at: Annotated[str, Query(max_length=64)] = "now",
    window: _Window = "15m",
    namespace: _Namespace = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> JSONResponse:
    now = datetime.now(UTC)

    def build() -> tuple[TimeRange, list[Any]]:
        time_range = _ending(store, at, window, now)
        if plaintext:
            return time_range, service.plaintext_edges(store, time_range, namespace)
        snap = service.snapshot(store, time_range, namespace, latency=False)
        return time_range, sorted(snap.edges, key=lambda e: (-e.requests, e.key))

    time_range, edges = _guard(build)
    items = []
    for e in edges[:limit]:
        item = e.to_dict()
        item["plaintext_share"] = e.plaintext_share
        items.append(item)
    return JSONResponse({"range": time_range.to_dict(), "plaintext_only": plaintext,
                         "total": len(edges), "edges": items})


@router.get(
    "/edges/{src}/{dst}/series",
    summary="Per-window time series of one edge",
    response_model=SeriesOut,
    responses={400: {"description": "Malformed ref or time"},
               404: {"description": "The edge was never seen"}},
)
def edge_series(
    store: Annotated[Store, Depends(get_store)],
    src: Annotated[str, Path(max_length=4096, description="Source node id, base64url.")],
    dst: Annotated[str, Path(max_length=4096, description="Destination node id, base64url.")],
    since: Annotated[str, Query(max_length=64)] = "-1h",
    until: Annotated[str, Query(max_length=64)] = "now",
) -> SeriesOut:
    src_id, dst_id = _ref(src, "src"), _ref(dst, "dst")
    now = datetime.now(UTC)

    def build() -> tuple[TimeRange, list[dict[str, Any]]]:
        time_range = _between(store, since, until, now)
        return time_range, service.series(store, src_id, dst_id, time_range)

    time_range, points = _guard(build)
    return SeriesOut(src=src_id, dst=dst_id, range=RangeOut(**time_range.to_dict()),
                     points=points)


@router.get("/edges/{rest:path}", include_in_schema=False)
def edge_path_help(rest: str) -> JSONResponse:
    """Paths that split a node id (a raw or %2F-encoded '/'): say how to encode it."""
    return JSONResponse({"detail": (
        f"no such edge path {rest[:200]!r}: use /api/v1/edges/{{src}}/{{dst}}/series with each "
        "node id as one unpadded base64url segment (a '/' in a segment, even as %2F, splits "
        "the path); each node's 'ref' in GET /api/v1/graph is that segment")}, status_code=400)


@router.get("/coverage", summary="mTLS coverage per destination namespace over time",
            responses={400: {"description": "Unreadable, reversed or empty range"}})
def get_coverage(
    store: Annotated[Store, Depends(get_store)],
    since: Annotated[str, Query(max_length=64)] = "-24h",
    until: Annotated[str, Query(max_length=64)] = "now",
    bucket: Annotated[str, Query(max_length=32, description="Bucket length, e.g. 1h.")] = "1h",
    namespace: _Namespace = None,
) -> JSONResponse:
    now = datetime.now(UTC)

    def build() -> Any:
        return service.coverage(store, _between(store, since, until, now),
                                parse_span(bucket, "bucket"), namespace)

    return JSONResponse(_guard(build).to_dict())
