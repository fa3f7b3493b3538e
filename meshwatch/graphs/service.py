"""The graph reads the CLI and the API share: query the store, build the answer.

Each function validates its range first (reversed/empty ranges raise `RangeError` before any
query runs) and reports "no data" as `NoData`, whose message says what the store does hold.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meshwatch.graphs.coverage import CoverageReport, coverage_from_rows
from meshwatch.graphs.diff import GraphDiff, diff_snapshots
from meshwatch.graphs.model import Snapshot
from meshwatch.graphs.snapshot import build_snapshot, series_points
from meshwatch.graphs.timerange import RangeError, TimeRange
from meshwatch.records import format_ts
from meshwatch.store import graph_queries as q
from meshwatch.store.store import Store

MAX_BUCKETS = 5000


class NoData(LookupError):
    """The range (or namespace) holds no edge windows; the message says where data is."""


def hint(store: Store, time_range: TimeRange, namespace: str | None = None) -> str:
    """Why a range came back empty, phrased with what the store does hold."""
    held = q.data_range(store)
    if held is None:
        return "the store holds no edge windows yet (run `meshwatch run` first)"
    if namespace is not None:
        names = q.namespaces(store, time_range.start, time_range.end)
        if names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            return f"no edges touch namespace {namespace!r} in {time_range}; namespaces " \
                   f"there: {shown}"
    return (f"no edge windows lie inside {time_range}; the store holds windows from "
            f"{format_ts(held['first'])} to {format_ts(held['last'])} "
            f"(try --at latest or a range inside that)")


def latest_end(store: Store) -> Any:
    """End of the newest stored window, for the 'latest' time keyword."""
    held = q.data_range(store)
    return held["last"] if held else None


@contextmanager
def _bulk() -> Iterator[None]:
    """Pause the cyclic GC while decoding and building ~10 objects per edge: none of them
    form cycles, and full collections over a growing heap doubled a 100k-edge snapshot."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def snapshot(store: Store, time_range: TimeRange, namespace: str | None = None,
             latency: bool = True) -> Snapshot:
    """Nodes and edges over ``time_range`` (windows entirely inside it)."""
    with _bulk():
        rows = q.edge_aggregates(store, time_range.start, time_range.end, namespace,
                                 latency=latency)
        return build_snapshot(rows, time_range, namespace, latency=latency)


def diff(store: Store, before: TimeRange, after: TimeRange, namespace: str | None = None,
         min_ratio: float = 2.0, min_requests: int = 20) -> GraphDiff:
    """Compare the graph over ``before`` with the graph over ``after``."""
    if after.end <= before.end:
        raise RangeError(f"reversed comparison: 'to' ({format_ts(after.end)}) must be later "
                         f"than 'from' ({format_ts(before.end)})")
    if min_ratio <= 1.0:
        raise RangeError(f"min ratio must be greater than 1, got {min_ratio}")
    a = snapshot(store, before, namespace, latency=False)
    b = snapshot(store, after, namespace, latency=False)
    result = diff_snapshots(a, b, min_ratio=min_ratio, min_requests=min_requests)
    lifetimes = q.edge_lifetimes(store, [e.key for e in result.new_edges])
    result.first_seen_ever = {k: v["first_seen_ever"] for k, v in lifetimes.items()}
    return result


def series(store: Store, src: str, dst: str, time_range: TimeRange) -> list[dict[str, Any]]:
    """Per-window points of one edge; `NoData` if the edge was never seen at all."""
    if not q.edge_lifetimes(store, [(src, dst)]):
        raise NoData(f"no edge {src} -> {dst} in the store")
    return series_points(q.edge_series(store, src, dst, time_range.start, time_range.end))


def plaintext_edges(store: Store, time_range: TimeRange,
                    namespace: str | None = None) -> list[Any]:
    """Edges with destination-side plaintext calls, most plaintext requests first."""
    rows = q.edge_aggregates(store, time_range.start, time_range.end, namespace,
                             latency=False, plaintext_only=True)
    edges = build_snapshot(rows, time_range, namespace, latency=False).edges
    return sorted(edges, key=lambda e: (-e.mtls_false, e.key))


def coverage(store: Store, time_range: TimeRange, bucket_seconds: float,
             namespace: str | None = None) -> CoverageReport:
    """mTLS coverage per destination namespace, per bucket and over the whole range."""
    bucket = int(bucket_seconds)
    if bucket < 1:
        raise RangeError("bucket must be at least 1s")
    if time_range.seconds / bucket > MAX_BUCKETS:
        raise RangeError(f"{time_range.seconds / bucket:,.0f} buckets of {bucket}s in "
                         f"{time_range}; use a larger bucket (at most {MAX_BUCKETS:,} buckets)")
    rows = q.coverage_rows(store, time_range.start, time_range.end, bucket, namespace)
    whole = max(int(time_range.seconds) + 1, 1)
    totals = q.coverage_rows(store, time_range.start, time_range.end, whole, namespace)
    return CoverageReport(range=time_range, bucket_seconds=bucket, namespace=namespace,
                          buckets=coverage_from_rows(rows, time_range, bucket),
                          totals=coverage_from_rows(totals, time_range, whole))

