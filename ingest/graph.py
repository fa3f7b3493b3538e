"""The graph builder: per-edge tumbling windows over the stream of edge events.

An edge is *source identity -> destination service[:port]*. Events are counted into the open
window of their edge; a window closes when event time (the watermark: the newest timestamp seen
minus the allowed lateness) passes its end, and is handed out as a plain dict for the store and
the window detectors.

Both sidecars of one call log it. The two records are merged into one observation by call id
(request id, else trace id): the first record counts the call, the second only adds what the
first could not know (destination-side mTLS evidence, peer principal). So a call is never counted
twice, and an outbound record's unknown mTLS is upgraded by its inbound partner.

The builder also emits *edge notes*: the first observation of an edge in a window, and the first
plaintext / denied / new-principal / new-address / certificate observation. Event detectors see
notes instead of every event, so their cost follows the number of edges, not the request rate,
while alerts still fire as soon as the evidence arrives.

Everything keyed is bounded: at most ``max_edges`` open buckets (the oldest is closed early and
counted when full) and ``max_calls`` remembered call ids (TTL ``call_dedup_ttl``).
"""

from __future__ import annotations

import base64
import ipaddress
from array import array
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec
from datasketches import tdigest_float

from meshwatch.bounded import BoundedMap
from meshwatch.records import EdgeEvent

SKETCH_K = 50
_MAX_SET = 16  # distinct TLS versions / principals / addresses kept per bucket
# Latencies kept as float32 before a bucket gets a t-digest: a tdigest_float(50) reserves ~2.7 KB
# of native buffers (invisible to tracemalloc), so quiet edges stay small (`meshwatch bench
# store`). Feeding the same values later gives the very same sketch.
_LATENCY_BUFFER = 128
_RBAC_MARKERS = ("rbac_access_denied", "RBAC: access denied")
_CONN_FAILURE_FLAGS = ("UF", "URX", "UH", "NR", "UO", "DC", "UT", "LR", "UC")


# -- node identity -------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _address_kind(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "address"
    return "external" if ip.is_global else "address"


def source_node(event: EdgeEvent) -> tuple[str, str]:
    """(node id, kind) of the caller: principal, else namespace/workload, else address.

    >>> from meshwatch.records import EdgeEvent
    >>> ts = datetime(2026, 1, 1, tzinfo=UTC)
    >>> source_node(EdgeEvent(ts=ts, origin="envoy_json", source_workload="web",
    ...                       source_namespace="shop"))
    ('shop/web', 'workload')
    >>> source_node(EdgeEvent(ts=ts, origin="envoy_json", source_address="8.8.8.8"))
    ('8.8.8.8', 'external')
    """
    if event.source_principal:
        return event.source_principal, "workload"
    if event.source_workload:
        return f"{event.source_namespace or '-'}/{event.source_workload}", "workload"
    if event.source_address:
        return event.source_address, _address_kind(event.source_address)
    return "unknown", "unknown"


def destination_node(event: EdgeEvent) -> tuple[str, str]:
    """(node id, kind) of the callee: service[:port], else workload, else principal.

    >>> from meshwatch.records import EdgeEvent
    >>> destination_node(EdgeEvent(ts=datetime(2026, 1, 1, tzinfo=UTC), origin="envoy_json",
    ...                            destination_service="db.prod.svc.cluster.local",
    ...                            destination_port=5432))
    ('db.prod.svc.cluster.local:5432', 'service')
    """
    port = f":{event.destination_port}" if event.destination_port is not None else ""
    if event.destination_service:
        service = event.destination_service
        return f"{service}{port}", _service_kind(service)
    if event.destination_workload:
        workload = f"{event.destination_namespace or '-'}/{event.destination_workload}"
        return workload + port, "workload"
    if event.destination_principal:
        return event.destination_principal + port, "workload"
    return "unknown" + port, "unknown"


@lru_cache(maxsize=65536)
def _service_kind(service: str) -> str:
    if service[:1].isdigit() or ":" in service:
        return _address_kind(service)
    if ".svc." in service or service.endswith(".svc") or "." not in service:
        return "service"
    return "external"


def is_denial(event: EdgeEvent) -> bool:
    """An authorization denial: 403 from RBAC, or the RBAC/UAEX response flags."""
    flags = event.response_flags or ""
    if "RBAC" in flags or "UAEX" in flags:
        return True
    return event.response_code == 403


def is_connection_failure(event: EdgeEvent) -> bool:
    flags = event.response_flags
    if not flags:
        return False
    return any(flag in _CONN_FAILURE_FLAGS for flag in flags.split(","))


# -- buckets -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    """One edge's counters for one window. Slots keep it small (see `meshwatch bench store`)."""

    window_start: float
    edge_src: str
    edge_dst: str
    part: int
    src_kind: str
    dst_kind: str
    src_workload: str | None = None
    src_namespace: str | None = None
    src_principal: str | None = None
    src_address: str | None = None
    dst_service: str | None = None
    dst_port: int | None = None
    dst_workload: str | None = None
    dst_namespace: str | None = None
    dst_principal: str | None = None
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    denials: int = 0
    conn_failures: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    mtls_true: int = 0
    mtls_false: int = 0
    mtls_unknown: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    min_cert_not_after: datetime | None = None
    # Small capped tuples, not sets: a 1-item set costs 216 B, a 1-item tuple 48 B.
    tls_versions: tuple[str, ...] | None = None
    plaintext_paths: tuple[str, ...] | None = None
    peer_principals: tuple[str, ...] | None = None
    source_addresses: tuple[str, ...] | None = None
    sketch: tdigest_float | None = None
    latency_count: int = 0
    latencies: array | None = None  # float32 values not yet in `sketch` (see _LATENCY_BUFFER)

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.__slots__}
        if self.sketch is not None:
            state["sketch"] = bytes(self.sketch.serialize())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "latencies", None)  # absent from older checkpoints
        for name, value in state.items():
            if name == "sketch" and value is not None:
                value = tdigest_float.deserialize(value)
            object.__setattr__(self, name, value)


_CallSeen = tuple[tuple[float, str, str], int, str, bool | None]


def _add_capped(values: Collection[str] | None, value: str) -> tuple[tuple[str, ...], bool]:
    """Add ``value`` to a capped tuple (sets from older checkpoints become tuples)."""
    if values is None:
        return (value,), True
    if value in values or len(values) >= _MAX_SET:
        return values if isinstance(values, tuple) else tuple(values), False
    return (*values, value), True


def _latency_sketch(b: _Bucket) -> tdigest_float | None:
    """The bucket's sketch with any buffered latencies fed in (same order, same sketch)."""
    if b.latencies:
        if b.sketch is None:
            b.sketch = tdigest_float(SKETCH_K)
        for value in b.latencies:
            b.sketch.update(value)
        b.latencies = None
    return b.sketch


@dataclass
class GraphStats:
    """Counters operators look at: what was counted, merged, late or evicted."""

    events: int = 0
    merged_partner_records: int = 0
    late_events: int = 0
    windows_closed: int = 0
    buckets_evicted: int = 0


@dataclass
class Observation:
    """The result of adding one event: its edge and the notes it raised (maybe none)."""

    edge_src: str
    edge_dst: str
    notes: list[dict[str, Any]] = field(default_factory=list)


class EdgeGraph:
    """Per-edge tumbling windows with call merging, notes and bounded state.

    >>> from meshwatch.records import EdgeEvent
    >>> g = EdgeGraph(window=60, allowed_lateness=0)
    >>> ts = datetime(2026, 1, 1, tzinfo=UTC)
    >>> out = g.add(EdgeEvent(ts=ts, origin="envoy_json", reporter="destination", mtls=False,
    ...     source_address="10.0.0.9", destination_service="db.prod.svc.cluster.local",
    ...     destination_port=5432, request_id="r1"))
    >>> [n["note"] for n in out.notes]
    ['first', 'plaintext', 'new_address']
    >>> closed = g.close_all()
    >>> closed[0]["requests"], closed[0]["mtls_false"], closed[0]["edge_src"]
    (1, 1, '10.0.0.9')
    """

    def __init__(
        self,
        window: float = 60.0,
        allowed_lateness: float = 30.0,
        max_edges: int = 200_000,
        call_dedup_ttl: float = 120.0,
        max_calls: int = 500_000,
    ) -> None:
        self.window = float(window)
        self.allowed_lateness = float(allowed_lateness)
        self.max_edges = max_edges
        self.stats = GraphStats()
        self.watermark = float("-inf")
        self.max_ts = float("-inf")
        # (window_start, src, dst) -> open bucket, in creation order (oldest first).
        self._open: dict[tuple[float, str, str], _Bucket] = {}
        # call id -> (bucket key, bucket part, reporter that counted it, mtls it counted)
        self._calls: BoundedMap[str, _CallSeen] = BoundedMap(max_items=max_calls,
                                                              ttl=call_dedup_ttl)
        # (window_start, src, dst) -> last part written, so late/evicted data adds a new part.
        self._parts: BoundedMap[tuple[float, str, str], int] = BoundedMap(
            max_items=max(4 * max_edges, 1000), ttl=max(self.window * 4, 3600.0)
        )
        self._closed_pending: list[dict[str, Any]] = []
        # Earliest end of an open window: the watermark reaching it triggers closing.
        self._close_at = float("inf")
        self._next_expiry = float("-inf")

    # -- adding ----------------------------------------------------------------------------

    def add(self, event: EdgeEvent) -> Observation:
        """Count one event; returns its edge and any notes for the event detectors."""
        self.stats.events += 1
        ts = event.ts.timestamp()
        if ts > self.max_ts:
            self.max_ts = ts
            # On event time, not per batch: results must not depend on how input was batched.
            if ts >= self._next_expiry:
                self._calls.expire(ts)
                self._next_expiry = ts + 1.0
            if ts - self.allowed_lateness >= self._close_at:
                self._close_passed()
        call_id = event.request_id or event.trace_id
        if call_id is not None:
            seen = self._calls.get(call_id)
            if seen is not None and seen[2] != event.reporter:
                return self._merge_partner(call_id, seen, event)
        src, src_kind = source_node(event)
        dst, dst_kind = destination_node(event)
        window_start = ts - (ts % self.window)
        key = (window_start, src, dst)
        bucket = self._open.get(key)
        notes: list[dict[str, Any]] = []
        if bucket is None:
            if window_start + self.window <= self.watermark:
                self.stats.late_events += 1
            bucket = self._new_bucket(key, src_kind, dst_kind, event)
            notes.append(self._note("first", event, bucket))
        self._count(bucket, event, ts, notes)
        if call_id is not None:
            self._calls.put(call_id, (key, bucket.part, event.reporter, event.mtls), ts)
        return Observation(src, dst, notes)

    def _new_bucket(self, key: tuple[float, str, str], src_kind: str, dst_kind: str,
                    event: EdgeEvent) -> _Bucket:
        part = self._parts.get(key)
        part = 0 if part is None else part + 1
        bucket = _Bucket(window_start=key[0], edge_src=key[1], edge_dst=key[2], part=part,
                         src_kind=src_kind, dst_kind=dst_kind)
        self._open[key] = bucket
        self._parts.put(key, part, key[0])
        if key[0] + self.window < self._close_at:
            self._close_at = key[0] + self.window
        if len(self._open) > self.max_edges:
            oldest_key = next(iter(self._open))
            self._closed_pending.append(self._close(oldest_key))
            self.stats.buckets_evicted += 1
        return bucket

    def _count(self, b: _Bucket, e: EdgeEvent, ts: float, notes: list[dict[str, Any]]) -> None:
        if b.requests == 0:
            b.first_seen = ts
        b.requests += 1
        if ts > b.last_seen:
            b.last_seen = ts
        if ts < b.first_seen:
            b.first_seen = ts
        # Identity attributes: first non-null wins.
        if b.src_workload is None and e.source_workload:
            b.src_workload = e.source_workload
        if b.src_namespace is None and e.source_namespace:
            b.src_namespace = e.source_namespace
        if b.src_principal is None and e.source_principal:
            b.src_principal = e.source_principal
        if b.src_address is None and e.source_address:
            b.src_address = e.source_address
        if b.dst_service is None and e.destination_service:
            b.dst_service = e.destination_service
            b.dst_port = e.destination_port
        if b.dst_workload is None and e.destination_workload:
            b.dst_workload = e.destination_workload
        if b.dst_namespace is None and e.destination_namespace:
            b.dst_namespace = e.destination_namespace
        if b.dst_principal is None and e.destination_principal:
            b.dst_principal = e.destination_principal
        code = e.response_code
        if code is not None:
            if 400 <= code < 500:
                b.errors_4xx += 1
            elif code >= 500:
                b.errors_5xx += 1
        if is_denial(e):
            b.denials += 1
            if b.denials == 1:
                notes.append(self._note("denied", e, b))
        if is_connection_failure(e):
            b.conn_failures += 1
        if e.bytes_sent:
            b.bytes_sent += e.bytes_sent
        if e.bytes_received:
            b.bytes_received += e.bytes_received
        if e.duration_ms is not None:
            if b.sketch is not None:
                b.sketch.update(float(e.duration_ms))
            elif b.latencies is None:
                b.latencies = array("f", (e.duration_ms,))
            else:
                b.latencies.append(e.duration_ms)
                if len(b.latencies) >= _LATENCY_BUFFER:
                    _latency_sketch(b)
            b.latency_count += 1
        self._count_security(b, e, notes)

    def _count_security(self, b: _Bucket, e: EdgeEvent, notes: list[dict[str, Any]]) -> None:
        mtls = e.mtls
        if mtls is True:
            b.mtls_true += 1
        elif mtls is False:
            b.mtls_false += 1
            self._plaintext_note(b, e, notes)
        else:
            b.mtls_unknown += 1
        if e.tls_version:
            b.tls_versions, _ = _add_capped(b.tls_versions, e.tls_version)
        if e.reporter == "destination":
            if e.source_principal:
                b.peer_principals, added = _add_capped(b.peer_principals, e.source_principal)
                if added:
                    notes.append(self._note("new_principal", e, b))
            if e.source_address:
                b.source_addresses, added = _add_capped(b.source_addresses, e.source_address)
                if added:
                    notes.append(self._note("new_address", e, b))
        not_after = e.peer_cert_not_after
        if not_after is not None and (
            b.min_cert_not_after is None or not_after < b.min_cert_not_after
        ):
            b.min_cert_not_after = not_after
            notes.append(self._note("cert", e, b))

    def _merge_partner(self, call_id: str, seen: _CallSeen, event: EdgeEvent) -> Observation:
        """Another record of an already-counted call (the other side, or a retry attempt the
        destination logged again): add only what the counted record lacked, once."""
        key, part, first_reporter, counted_mtls = seen
        self.stats.merged_partner_records += 1
        upgraded = counted_mtls if counted_mtls is not None else event.mtls
        self._calls.put(call_id, (key, part, "both", upgraded), event.ts.timestamp())
        bucket = self._open.get(key)
        notes: list[dict[str, Any]] = []
        if bucket is None or bucket.part != part:
            # The window that counted the call closed: nothing left to upgrade there.
            return Observation(key[1], key[2], notes)
        if event.reporter == "destination" and first_reporter != "destination":
            if counted_mtls is None and event.mtls is not None:
                bucket.mtls_unknown -= 1
                if event.mtls:
                    bucket.mtls_true += 1
                else:
                    bucket.mtls_false += 1
                    self._plaintext_note(bucket, event, notes)
            if event.tls_version:
                bucket.tls_versions, _ = _add_capped(bucket.tls_versions, event.tls_version)
            if event.source_principal:
                if bucket.src_principal is None:
                    bucket.src_principal = event.source_principal
                bucket.peer_principals, added = _add_capped(bucket.peer_principals,
                                                            event.source_principal)
                if added:
                    notes.append(self._note("new_principal", event, bucket))
            if event.source_address:
                bucket.source_addresses, added = _add_capped(bucket.source_addresses,
                                                             event.source_address)
                if added:
                    notes.append(self._note("new_address", event, bucket))
            if bucket.dst_workload is None and event.destination_workload:
                bucket.dst_workload = event.destination_workload
            not_after = event.peer_cert_not_after
            if not_after is not None and (
                bucket.min_cert_not_after is None or not_after < bucket.min_cert_not_after
            ):
                bucket.min_cert_not_after = not_after
                notes.append(self._note("cert", event, bucket))
        elif bucket.src_workload is None and event.source_workload:
            bucket.src_workload = event.source_workload
            bucket.src_namespace = bucket.src_namespace or event.source_namespace
        return Observation(key[1], key[2], notes)

    def _plaintext_note(self, b: _Bucket, e: EdgeEvent, notes: list[dict[str, Any]]) -> None:
        # One note per distinct path (capped), not just the first plaintext record: an
        # allowlisted probe path must not hide other plaintext calls on the same edge.
        path = (e.path or "").split("?", 1)[0]
        b.plaintext_paths, added = _add_capped(b.plaintext_paths, path)
        if added:
            notes.append(self._note("plaintext", e, b))

    def _note(self, kind: str, event: EdgeEvent, bucket: _Bucket) -> dict[str, Any]:
        note = msgspec.structs.asdict(event)
        note["note"] = kind
        note["edge_src"] = bucket.edge_src
        note["edge_dst"] = bucket.edge_dst
        note["src_kind"] = bucket.src_kind
        note["dst_kind"] = bucket.dst_kind
        note["window_start"] = datetime.fromtimestamp(bucket.window_start, UTC)
        return note

    # -- closing ---------------------------------------------------------------------------

    def _close_passed(self) -> None:
        """Close the windows the watermark has passed, at the record that passed them.

        Closing per record (not per batch) makes the result independent of how the input was
        batched: a replay after a crash, or a partition moved to another worker, sees the same
        windows close at the same records.
        """
        self.watermark = self.max_ts - self.allowed_lateness
        horizon = self.watermark - self.window
        for key in [k for k in self._open if k[0] <= horizon]:
            self._closed_pending.append(self._close(key))
        self._close_at = min((k[0] for k in self._open), default=float("inf")) + self.window

    def advance(self) -> list[dict[str, Any]]:
        """The windows closed since the last call (oldest first)."""
        closed, self._closed_pending = self._closed_pending, []
        return closed

    def advance_time(self, seconds: float) -> None:
        """Move event time on without a record (no traffic for a while) and close what that
        passes; the next `advance` returns those windows."""
        if self.max_ts == float("-inf"):
            return
        self.max_ts += seconds
        if self.max_ts - self.allowed_lateness >= self._close_at:
            self._close_passed()

    def close_all(self) -> list[dict[str, Any]]:
        """Close everything (end of input)."""
        closed, self._closed_pending = self._closed_pending, []
        for key in list(self._open):
            closed.append(self._close(key))
        self._close_at = float("inf")
        return closed

    def _close(self, key: tuple[float, str, str]) -> dict[str, Any]:
        b = self._open.pop(key)
        self.stats.windows_closed += 1
        return window_dict(b, self.window)

    # -- introspection ---------------------------------------------------------------------

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    @property
    def remembered_calls(self) -> int:
        return len(self._calls)

    def evictions(self) -> dict[str, int]:
        return {
            "buckets": self.stats.buckets_evicted,
            "calls": self._calls.evictions.total,
            "parts": self._parts.evictions.total,
        }

    def iter_open(self) -> Iterator[dict[str, Any]]:
        """Snapshots of the open windows (for live views); does not close them."""
        for bucket in self._open.values():
            yield window_dict(bucket, self.window)


def window_dict(b: _Bucket, window_seconds: float) -> dict[str, Any]:
    """A closed window as a plain dict: store row and window-detector input in one."""
    sketch = _latency_sketch(b)
    p50 = p95 = p99 = None
    sketch_b64 = ""
    if sketch is not None and not sketch.is_empty():
        p50 = sketch.get_quantile(0.5)
        p95 = sketch.get_quantile(0.95)
        p99 = sketch.get_quantile(0.99)
        sketch_b64 = base64.b64encode(bytes(sketch.serialize())).decode("ascii")
    return {
        "window_start": datetime.fromtimestamp(b.window_start, UTC),
        "window_seconds": int(window_seconds),
        "edge_src": b.edge_src,
        "edge_dst": b.edge_dst,
        "part": b.part,
        "src_kind": b.src_kind,
        "src_workload": b.src_workload,
        "src_namespace": b.src_namespace,
        "src_principal": b.src_principal,
        "src_address": b.src_address,
        "dst_kind": b.dst_kind,
        "dst_service": b.dst_service,
        "dst_port": b.dst_port,
        "dst_workload": b.dst_workload,
        "dst_namespace": b.dst_namespace,
        "dst_principal": b.dst_principal,
        "requests": b.requests,
        "errors_4xx": b.errors_4xx,
        "errors_5xx": b.errors_5xx,
        "denials": b.denials,
        "conn_failures": b.conn_failures,
        "bytes_sent": b.bytes_sent,
        "bytes_received": b.bytes_received,
        "latency_count": b.latency_count,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "latency_sketch": sketch_b64,
        "mtls_true": b.mtls_true,
        "mtls_false": b.mtls_false,
        "mtls_unknown": b.mtls_unknown,
        "tls_versions": sorted(b.tls_versions or ()),
        "peer_principals": sorted(b.peer_principals or ()),
        "source_addresses": sorted(b.source_addresses or ()),
        "first_seen": datetime.fromtimestamp(b.first_seen, UTC),
        "last_seen": datetime.fromtimestamp(b.last_seen, UTC),
        "min_cert_not_after": b.min_cert_not_after,
    }
