"""CLIENT/SERVER span pairing: spans -> edge events, like the OTel servicegraph connector.

A call between two instrumented services leaves two spans: a CLIENT span in the caller's
resource and a SERVER span, its child, in the callee's. Pairing them (client keyed by
``(trace_id, span_id)``, server by ``(trace_id, parent_span_id)``) gives one edge with both
identities. Spans wait for their partner in a bounded store (max items + TTL in event time,
counted evictions); a span whose partner never comes still becomes an edge, from its own side:
a lone CLIENT span says who called which peer, a lone SERVER span says which address called
this service (uninstrumented callers stay distinct by address instead of collapsing into one
anonymous node).

This module also normalizes the semantic-convention dialects (old ``http.method``/
``net.peer.name`` and new ``http.request.method``/``server.address``, Envoy's own tracing
tags) into one `SpanRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ingest.identity import (
    fqdn_namespace,
    is_ip,
    parse_cluster,
    split_host_port,
    workload_from_pod,
)
from meshwatch.bounded import BoundedMap, EvictionCounts
from meshwatch.records import EdgeEvent

# OTLP enums (opentelemetry/proto/trace/v1/trace.proto).
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
STATUS_ERROR = 2


class ResourceIdentity(msgspec.Struct, frozen=True):
    """Who emitted a span, from its resource attributes."""

    service: str | None = None
    namespace: str | None = None
    workload: str | None = None
    pod_ip: str | None = None


def resource_identity(attrs: Mapping[str, Any]) -> ResourceIdentity:
    """Workload identity from OTel resource attributes (k8s.* beats service.*).

    >>> resource_identity({"service.name": "reviews", "k8s.namespace.name": "bookinfo",
    ...                    "k8s.pod.name": "reviews-v2-5b667bcbf8-xj7vd"})
    ResourceIdentity(service='reviews', namespace='bookinfo', workload='reviews-v2', pod_ip=None)
    """
    service = _text(attrs.get("service.name"))
    if service is not None and service.startswith("unknown_service"):
        service = None  # the SDK's placeholder when service.name was never set
    workload = (_text(attrs.get("k8s.deployment.name")) or _text(attrs.get("k8s.statefulset.name"))
                or _text(attrs.get("k8s.daemonset.name"))
                or workload_from_pod(_text(attrs.get("k8s.pod.name"))) or service)
    namespace = _text(attrs.get("k8s.namespace.name")) or _text(attrs.get("service.namespace"))
    return ResourceIdentity(service, namespace, workload, _text(attrs.get("k8s.pod.ip")))


class SpanRecord(msgspec.Struct, frozen=True):
    """One CLIENT or SERVER span reduced to what an edge needs (picklable, compact)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: str  # "client" | "server"
    start_ns: int
    end_ns: int
    resource: ResourceIdentity
    error: bool = False
    peer_service: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    peer_address: str | None = None
    upstream_cluster: str | None = None
    method: str | None = None
    path: str | None = None
    status_code: int | None = None
    protocol: str | None = None
    request_id: str | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    response_flags: str | None = None


def _text(value: Any) -> str | None:
    if value.__class__ is str:  # nearly always: skip the general checks
        return value if value and value != "-" else None
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    text = value if isinstance(value, str) else str(value)
    return text if text and text != "-" else None


def _int(value: Any) -> int | None:
    if value.__class__ is int:  # nearly always (bool is not int's class)
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


# Envoy's gRPC -> HTTP status mapping (Grpc::Utility::grpcToHttpStatus).
_GRPC_TO_HTTP = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
                 9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}

_LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")

# Attribute name -> (field, priority): old and new semantic conventions and Envoy's tracing
# tags for the same thing; the lowest priority number present wins.
_ATTRIBUTE_SLOTS: dict[str, tuple[str, int]] = {}
for _field, *_names in (
    ("method", "http.request.method", "http.method"),
    ("status", "http.response.status_code", "http.status_code"),
    ("grpc_status", "rpc.grpc.status_code"),
    ("path", "url.path", "http.target"),
    ("url", "url.full", "http.url"),
    ("server_address", "server.address", "net.peer.name", "http.host"),
    ("server_port", "server.port", "net.peer.port", "net.host.port"),
    ("peer_service", "peer.service", "service.peer.name"),
    # The TCP peer first (a forged X-Forwarded-For cannot move it), then request-derived ones.
    ("peer_address", "network.peer.address", "net.sock.peer.addr", "net.peer.ip",
     "peer.address", "client.address", "http.client_ip"),
    ("protocol_name", "network.protocol.name"),
    ("protocol_version", "network.protocol.version", "http.flavor"),
    ("envoy_protocol", "http.protocol"),
    ("rpc_system", "rpc.system", "rpc.system.name"),
    ("rpc_service", "rpc.service"),
    ("rpc_method", "rpc.method"),
    ("request_id", "guid:x-request-id", "http.request.header.x-request-id", "x-request-id"),
    ("request_bytes", "http.request.body.size", "http.request_content_length", "request_size"),
    ("response_bytes", "http.response.body.size", "http.response_content_length",
     "response_size"),
    ("response_flags", "response_flags"),
    ("upstream_cluster", "upstream_cluster"),
    ("error", "error"),
    ("istio_service", "istio.canonical_service"),
    ("istio_namespace", "istio.namespace"),
):
    for _priority, _name in enumerate(_names):
        _ATTRIBUTE_SLOTS[_name] = (_field, _priority)

# Every attribute key `span_record` reads; parsers skip converting the others.
SPAN_ATTRIBUTE_KEYS = frozenset(_ATTRIBUTE_SLOTS)


def span_record(*, trace_id: str, span_id: str, parent_span_id: str | None, kind: str,
                start_ns: int, end_ns: int, error: bool, attrs: Mapping[str, Any],
                resource: ResourceIdentity) -> SpanRecord:
    """Normalize one span's attributes (old and new semantic conventions, Envoy's tags).

    Work is proportional to the attributes the span has, not to the names known.
    """
    values: dict[str, Any] = {}
    priorities: dict[str, int] = {}
    peers: list[tuple[int, Any]] = []
    slots = _ATTRIBUTE_SLOTS
    for name, value in attrs.items():
        slot = slots.get(name)
        if slot is None or value is None or value == "" or value == []:
            continue
        field, priority = slot
        if field == "peer_address":
            peers.append((priority, value))
            continue
        held = priorities.get(field)
        if held is None or priority < held:
            priorities[field] = priority
            values[field] = value
    get = values.get
    if get("error") is True or get("error") == "true":
        error = True
    if resource.workload is None and get("istio_service"):
        resource = ResourceIdentity(resource.service,
                                    resource.namespace or _text(get("istio_namespace")),
                                    _text(get("istio_service")), resource.pod_ip)
    url = _text(get("url"))
    url_host = url_port = url_path = None
    if url:
        try:
            parts = urlsplit(url)
            url_host, url_port = parts.hostname, parts.port
            url_path = parts.path + ("?" + parts.query if parts.query else "") or None
        except ValueError:
            pass
    rpc_service = _text(get("rpc_service"))
    rpc_method = _text(get("rpc_method"))
    path = _text(get("path")) or url_path
    if path is None and rpc_service and rpc_method:
        path = f"/{rpc_service}/{rpc_method}"  # what a gRPC request's :path is
    status = _int(get("status"))
    if status is None:
        grpc = _int(get("grpc_status"))
        if grpc is not None:
            status = _GRPC_TO_HTTP.get(grpc, 500)
    server_address = _text(get("server_address"))
    server_port = _int(get("server_port"))
    if server_address and server_port is None and ":" in server_address:
        server_address, server_port = split_host_port(server_address)
    return SpanRecord(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent_span_id, kind=kind,
        start_ns=start_ns, end_ns=end_ns, resource=resource, error=error,
        peer_service=_text(get("peer_service")),
        server_address=server_address or url_host,
        server_port=server_port or url_port,
        peer_address=_peer_address(peers) if peers else None,
        upstream_cluster=_text(get("upstream_cluster")),
        method=_text(get("method")),
        path=path, status_code=status,
        protocol=_protocol(get("protocol_name"), get("protocol_version"),
                           get("envoy_protocol"), _text(get("rpc_system"))),
        request_id=_text(get("request_id")),
        request_bytes=_int(get("request_bytes")),
        response_bytes=_int(get("response_bytes")),
        response_flags=_text(get("response_flags")),
    )


def _peer_address(candidates: list[tuple[int, Any]]) -> str | None:
    # In priority order, skipping the loopback hop from a sidecar (127.0.0.6 and friends).
    if len(candidates) > 1:
        candidates = sorted(candidates, key=lambda item: item[0])
    for _, value in candidates:
        text = _text(value)
        if not text:
            continue
        host = text if is_ip(text) else split_host_port(text)[0]
        if host and not host.startswith(_LOOPBACK_PREFIXES):
            return host
    return None


def _protocol(name: Any, version: Any, envoy: Any, rpc_system: str | None) -> str | None:
    name, version = _text(name), _text(version)
    if version and (name is None or name.lower() == "http"):
        version = {"2.0": "2", "3.0": "3"}.get(version, version)
        return f"HTTP/{version}"
    if name:
        return name if version is None else f"{name}/{version}"
    envoy = _text(envoy)
    if envoy:
        return envoy
    if rpc_system == "grpc":
        return "HTTP/2"  # gRPC always rides on HTTP/2, as Envoy's logs report it
    return None


def _client_destination(client: SpanRecord) -> tuple[str | None, str | None, int | None]:
    """(service, namespace, port) a CLIENT span called."""
    cluster = parse_cluster(client.upstream_cluster)
    fqdn = cluster.fqdn if cluster is not None else None
    address = client.server_address
    service = client.peer_service or fqdn or address
    namespace = fqdn_namespace(fqdn) or fqdn_namespace(address)
    port = client.server_port or (cluster.port if cluster is not None else None)
    return service, namespace, port


def _ms(span: SpanRecord) -> float:
    return max(span.end_ns - span.start_ns, 0) / 1e6


def _ts(span: SpanRecord) -> datetime:
    # Parsers range-check timestamps before a SpanRecord exists.
    ns = span.start_ns
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1000)


def pair_event(client: SpanRecord, server: SpanRecord) -> EdgeEvent:
    """Both sides seen: the caller's identity from its resource, the callee's from its own."""
    service, namespace, port = _client_destination(client)
    return EdgeEvent(
        ts=_ts(client), origin="otlp_span", reporter="destination",
        source_workload=client.resource.workload, source_namespace=client.resource.namespace,
        source_address=server.peer_address or client.resource.pod_ip,
        destination_service=server.resource.service or service,
        destination_workload=server.resource.workload,
        destination_namespace=server.resource.namespace or namespace,
        destination_port=server.server_port or port,
        protocol=client.protocol or server.protocol, method=client.method or server.method,
        path=server.path or client.path,
        response_code=client.status_code if client.status_code is not None
        else server.status_code,
        response_flags=server.response_flags or client.response_flags,
        bytes_sent=_either(client.request_bytes, server.request_bytes),
        bytes_received=_either(client.response_bytes, server.response_bytes),
        duration_ms=_ms(client), request_id=client.request_id or server.request_id,
        trace_id=client.trace_id,
    )


def client_event(client: SpanRecord) -> EdgeEvent:
    """A CLIENT span whose SERVER never came (uninstrumented or external callee)."""
    service, namespace, port = _client_destination(client)
    return EdgeEvent(
        ts=_ts(client), origin="otlp_span", reporter="source",
        source_workload=client.resource.workload, source_namespace=client.resource.namespace,
        source_address=client.resource.pod_ip,
        destination_service=service, destination_namespace=namespace, destination_port=port,
        protocol=client.protocol, method=client.method, path=client.path,
        response_code=client.status_code, response_flags=client.response_flags,
        bytes_sent=client.request_bytes, bytes_received=client.response_bytes,
        duration_ms=_ms(client), request_id=client.request_id, trace_id=client.trace_id,
    )


def server_event(server: SpanRecord) -> EdgeEvent:
    """A SERVER span without its CLIENT: the caller is known by address only."""
    return EdgeEvent(
        ts=_ts(server), origin="otlp_span", reporter="destination",
        source_address=server.peer_address,
        destination_service=server.resource.service, destination_workload=server.resource.workload,
        destination_namespace=server.resource.namespace, destination_port=server.server_port,
        protocol=server.protocol, method=server.method, path=server.path,
        response_code=server.status_code, response_flags=server.response_flags,
        bytes_sent=server.request_bytes, bytes_received=server.response_bytes,
        duration_ms=_ms(server), request_id=server.request_id, trace_id=server.trace_id,
    )


def _either(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


class SpanPairer:
    """The bounded store of spans waiting for their partner.

    ``add`` returns the edges it could complete now (pairs, and spans pushed out of a full
    store as single-sided edges); ``flush(now)`` returns edges for spans older than ``ttl``
    seconds of event time; ``flush(None)`` returns everything pending.

    >>> from ingest.span_pairing import SpanPairer, SpanRecord, ResourceIdentity
    >>> t = 1_700_000_000_000_000_000
    >>> client = SpanRecord("a" * 32, "b" * 16, None, "client", t, t + 5_000_000,
    ...                     ResourceIdentity("web", "shop", "web"))
    >>> server = SpanRecord("a" * 32, "c" * 16, "b" * 16, "server", t + 1, t + 4_000_000,
    ...                     ResourceIdentity("cart", "shop", "cart"))
    >>> pairer = SpanPairer(ttl=10.0, max_pending=1000)
    >>> pairer.add(client)
    []
    >>> [edge] = pairer.add(server)
    >>> edge.source_workload, edge.destination_service, edge.duration_ms
    ('web', 'cart', 5.0)
    """

    def __init__(self, ttl: float = 10.0, max_pending: int = 100_000) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self._clients: BoundedMap[tuple[str, str], SpanRecord] = BoundedMap(max_pending, ttl)
        self._servers: BoundedMap[tuple[str, str], SpanRecord] = BoundedMap(max_pending, ttl)
        self._released: list[EdgeEvent] = []
        self.paired = 0
        self.unpaired_clients = 0
        self.unpaired_servers = 0
        self.watermark = 0.0  # the latest span end seen, event-time seconds
        self._attach()

    def _attach(self) -> None:
        self._clients.on_evict = self._release_client
        self._servers.on_evict = self._release_server

    def _release_client(self, key: tuple[str, str], span: SpanRecord) -> None:
        self.unpaired_clients += 1
        self._released.append(client_event(span))

    def _release_server(self, key: tuple[str, str], span: SpanRecord) -> None:
        self.unpaired_servers += 1
        self._released.append(server_event(span))

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach()  # BoundedMap drops its callback when pickled

    @property
    def evictions(self) -> dict[str, EvictionCounts]:
        return {"clients": self._clients.evictions, "servers": self._servers.evictions}

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def add(self, span: SpanRecord) -> list[EdgeEvent]:
        now = span.end_ns / 1e9
        if now > self.watermark:
            self.watermark = now
        if span.kind == "client":
            key = (span.trace_id, span.span_id)
            server = self._servers.pop(key)
            if server is not None:
                self.paired += 1
                return self._take([pair_event(span, server)])
            self._clients.put(key, span, now)
        else:
            if not span.parent_span_id:  # a root SERVER span: no CLIENT will ever come
                self.unpaired_servers += 1
                return self._take([server_event(span)])
            key = (span.trace_id, span.parent_span_id)
            client = self._clients.pop(key)
            if client is not None:
                self.paired += 1
                return self._take([pair_event(client, span)])
            older = self._servers.pop(key)
            if older is not None:  # two SERVER children of one CLIENT: keep the newest waiting
                self._release_server(key, older)
            self._servers.put(key, span, now)
        return self._take([])

    def _take(self, events: list[EdgeEvent]) -> list[EdgeEvent]:
        if self._released:
            events.extend(self._released)
            self._released = []
        return events

    def flush(self, now: float | None = None) -> list[EdgeEvent]:
        if now is None:
            for key, span in self._clients.drain():
                self._release_client(key, span)
            for key, span in self._servers.drain():
                self._release_server(key, span)
        else:
            self._clients.expire(now)  # the eviction callbacks release them
            self._servers.expire(now)
        return self._take([])
