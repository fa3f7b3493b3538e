"""Spans of the simulated calls, made by the real OpenTelemetry SDK and its OTLP encoder.

Each pod gets its own TracerProvider and Resource (service.name, k8s.* attributes, the SDK its
language would run), so the bytes are what a Collector's Kafka exporter would ship. A call
becomes a CLIENT span in the caller (when its app is instrumented) and a SERVER span in the
callee per attempt its app served, parented across pods through W3C-style remote contexts, so
call chains share a trace. About a fifth of the fleet runs older SDKs with the pre-1.20
semantic-convention names, as real fleets do.

Ids come from a seeded `IdGenerator` and all times are explicit, so output is reproducible.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    set_span_in_context,
)

from meshwatch.simulate.calls import Call
from meshwatch.simulate.catalog import SCOPES, SDK_LANGUAGE
from meshwatch.simulate.topology import CLUSTER_NAME, Pod

NEW_SCHEMA = "https://opentelemetry.io/schemas/1.26.0"
OLD_SCHEMA = "https://opentelemetry.io/schemas/1.17.0"
BATCH_SPANS = 500  # spans per ExportTraceServiceRequest, like a BatchSpanProcessor batch
# gRPC codes a server reports as errors (semantic conventions for RPC).
_GRPC_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded stream: reproducible, still uniformly random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True


class _Collect(SpanProcessor):
    """Keeps finished spans for the encoder (the SDK's own export path, minus the network)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _remote(ctx: SpanContext) -> Any:
    """The context a callee extracts from the caller's traceparent header."""
    return set_span_in_context(NonRecordingSpan(SpanContext(
        ctx.trace_id, ctx.span_id, is_remote=True, trace_flags=_SAMPLED)))


class SpanRenderer:
    """Turns calls into finished SDK spans; `take_batches` hands them out in OTLP batches."""

    def __init__(self, rng: random.Random) -> None:
        self._ids = SeededIdGenerator(rng)
        self._collect = _Collect()
        self._providers: dict[str, TracerProvider] = {}
        self._tracers: dict[tuple[str, str, str], Tracer] = {}
        self.span_count = 0

    def reseed(self, rng: random.Random) -> None:
        """Draw the following ids from ``rng`` (one stream per window: windows can be rendered
        by different processes and still give the same bytes)."""
        self._ids.rng = rng

    # -- SDK plumbing -------------------------------------------------------------------------
    def _provider(self, pod: Pod) -> TracerProvider:
        provider = self._providers.get(pod.name)
        if provider is None:
            wl = pod.workload
            sdk_lang, sdk_version = SDK_LANGUAGE.get(wl.language, ("python", "1.24.0"))
            resource = Resource({
                "service.name": wl.service.name if wl.service else wl.name,
                "service.namespace": wl.namespace,
                "service.version": wl.version,
                "service.instance.id": pod.name,
                "k8s.cluster.name": CLUSTER_NAME,
                "k8s.namespace.name": wl.namespace,
                "k8s.deployment.name": wl.name,
                "k8s.pod.name": pod.name,
                "k8s.node.name": pod.node.name,
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.language": sdk_lang,
                "telemetry.sdk.version": sdk_version,
            })
            provider = TracerProvider(
                sampler=ParentBased(ALWAYS_ON), resource=resource, shutdown_on_exit=False,
                id_generator=self._ids, span_limits=SpanLimits(max_attributes=128))
            provider.add_span_processor(self._collect)
            self._providers[pod.name] = provider
        return provider

    def _tracer(self, pod: Pod, proto: str, role: str) -> Tracer:
        key = (pod.name, proto, role)
        tracer = self._tracers.get(key)
        if tracer is None:
            wl = pod.workload
            name, version = SCOPES.get((wl.language, proto, role), ("meshwatch.simulate", "0"))
            tracer = self._provider(pod).get_tracer(
                name, version, schema_url=OLD_SCHEMA if wl.old_semconv else NEW_SCHEMA)
            self._tracers[key] = tracer
        return tracer

    # -- spans of one call --------------------------------------------------------------------
    def render(self, calls: Sequence[Call]) -> None:
        """Create the spans of ``calls`` (parents must precede their children)."""
        for call in calls:
            if call.kind != "tcp" and call.service is not None and call.traced:
                self._call(call)

    def _call(self, call: Call) -> None:
        client_ctx = None
        src = call.src_pod
        if call.src_instrumented and src is not None:
            parent = call.parent.server_ctx if call.parent is not None else None
            tracer = self._tracer(src, "grpc" if call.kind == "grpc" else "http", "client")
            span = tracer.start_span(
                self._client_name(call, src.workload.old_semconv),
                context=_remote(parent) if parent is not None else None,
                kind=SpanKind.CLIENT,
                attributes=self._client_attrs(call, src.workload.old_semconv),
                start_time=call.start_us * 1000 - 90_000)
            if self._client_error(call):
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=call.end_us * 1000 + 70_000)
            client_ctx = span.get_span_context()
            self.span_count += 1
        serving = call.serving
        for attempt in call.attempts:
            pod = attempt.pod
            if attempt.app_us is None or pod is None or not pod.workload.instrumented:
                continue
            wl = pod.workload
            tracer = self._tracer(pod, "grpc" if call.kind == "grpc" else "http", "server")
            start = (call.start_us + attempt.offset_us + 120) * 1000
            span = tracer.start_span(
                self._server_name(call),
                context=_remote(client_ctx) if client_ctx is not None else None,
                kind=SpanKind.SERVER,
                attributes=self._server_attrs(call, attempt.code, attempt.grpc_status,
                                              attempt.remote_port, wl.old_semconv),
                start_time=start)
            if (call.kind == "grpc" and attempt.grpc_status in _GRPC_SERVER_ERRORS) or \
                    (call.kind == "http" and attempt.code >= 500):
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=start + attempt.app_us * 1000)
            self.span_count += 1
            if attempt is serving:
                call.server_ctx = span.get_span_context()

    @staticmethod
    def _client_error(call: Call) -> bool:
        if call.kind == "grpc":
            return call.grpc_status != 0
        return call.code >= 400

    @staticmethod
    def _rpc(call: Call) -> tuple[str, str]:
        path = (call.path or "/").lstrip("/")
        service, _, method = path.partition("/")
        return service, method

    def _client_name(self, call: Call, old: bool) -> str:
        if call.kind == "grpc":
            return (call.path or "/").lstrip("/")
        return f"HTTP {call.method}" if old else str(call.method)

    def _server_name(self, call: Call) -> str:
        if call.kind == "grpc":
            return (call.path or "/").lstrip("/")
        route = call.op.spec.path if call.op is not None else call.path
        return f"{call.method} {route}"

    @staticmethod
    def _host(call: Call) -> str:
        return (call.authority or "").rsplit(":", 1)[0] if call.authority else ""

    def _client_attrs(self, call: Call, old: bool) -> dict[str, Any]:
        host = self._host(call)
        rid = [call.request_id] if call.request_id else []
        assert call.service is not None
        if call.kind == "grpc":
            rpc_service, rpc_method = self._rpc(call)
            attrs: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": rpc_service,
                                     "rpc.method": rpc_method,
                                     "rpc.grpc.status_code": call.grpc_status}
            if old:
                attrs.update({"net.peer.name": host, "net.peer.port": call.port,
                              "peer.service": call.service.name})
            else:
                attrs.update({"server.address": host, "server.port": call.port,
                              "network.peer.address": call.dst_ip,
                              "network.peer.port": call.port,
                              "rpc.grpc.request.metadata.x-request-id": rid})
            return attrs
        if old:
            return {"http.method": call.method, "http.url": f"http://{call.authority}{call.path}",
                    "http.target": call.path, "http.status_code": call.code,
                    "http.flavor": "2.0" if call.protocol == "HTTP/2" else "1.1",
                    "net.peer.name": host, "net.peer.port": call.port,
                    "peer.service": call.service.name,
                    "http.request.header.x_request_id": rid}
        attrs = {"http.request.method": call.method,
                 "url.full": f"http://{call.authority}{call.path}",
                 "url.path": call.path, "server.address": host, "server.port": call.port,
                 "network.peer.address": call.dst_ip, "network.peer.port": call.port,
                 "network.protocol.version": "2" if call.protocol == "HTTP/2" else "1.1",
                 "http.response.status_code": call.code,
                 "http.request.header.x-request-id": rid}
        if call.code >= 400:
            attrs["error.type"] = str(call.code)
        return attrs

    def _server_attrs(self, call: Call, code: int, grpc_status: int, peer_port: int,
                      old: bool) -> dict[str, Any]:
        assert call.service is not None
        host = self._host(call) or call.service.name
        client = call.xff or call.src_ip
        rid = [call.request_id] if call.request_id else []
        port = call.service.target_port
        if call.kind == "grpc":
            rpc_service, rpc_method = self._rpc(call)
            attrs: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": rpc_service,
                                     "rpc.method": rpc_method,
                                     "rpc.grpc.status_code": grpc_status}
            if old:
                attrs.update({"net.sock.peer.addr": call.src_ip,
                              "net.sock.peer.port": peer_port, "net.host.port": port})
            else:
                attrs.update({"server.address": host, "server.port": port,
                              "client.address": client, "network.peer.address": call.src_ip,
                              "network.peer.port": peer_port,
                              "rpc.grpc.request.metadata.x-request-id": rid})
            return attrs
        route = call.op.spec.path if call.op is not None else call.path
        if old:
            return {"http.method": call.method, "http.target": call.path, "http.route": route,
                    "http.scheme": "http", "http.host": call.authority,
                    "http.status_code": code,
                    "http.flavor": "2.0" if call.protocol == "HTTP/2" else "1.1",
                    "http.user_agent": call.user_agent or "", "http.client_ip": client,
                    "net.host.port": port, "net.sock.peer.addr": call.src_ip,
                    "net.sock.peer.port": peer_port,
                    "http.request.header.x_request_id": rid}
        attrs = {"http.request.method": call.method, "url.path": call.path,
                 "url.scheme": "http", "http.route": route, "server.address": host,
                 "server.port": port, "client.address": client,
                 "network.peer.address": call.src_ip, "network.peer.port": peer_port,
                 "network.protocol.version": "2" if call.protocol == "HTTP/2" else "1.1",
                 "user_agent.original": call.user_agent or "",
                 "http.response.status_code": code,
                 "http.request.header.x-request-id": rid}
        if code >= 500:
            attrs["error.type"] = str(code)
        return attrs

    # -- batches ------------------------------------------------------------------------------
    def take_batches(self, final: bool = False) -> list[ExportTraceServiceRequest]:
        """Full batches of finished spans (and the remainder when ``final``)."""
        spans = self._collect.spans
        n_full = len(spans) // BATCH_SPANS * BATCH_SPANS
        cut = len(spans) if final else n_full
        batches = [encode_spans(spans[i:i + BATCH_SPANS]) for i in range(0, cut, BATCH_SPANS)]
        self._collect.spans = spans[cut:]
        return batches


def to_otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON: lowerCamelCase, integer enums, int64 as strings, ids as lower-case hex.

    Equal to ``MessageToDict(message, use_integers_for_enums=True)`` with the ids turned from
    base64 to hex (`reference_otlp_json`; the tests hold the two equal), but ~4x faster:
    json_format's generic reflection costs more per span than the SDK does to build it. Spans
    and attributes, the hot part, are read field by field; everything else goes through the
    same present-fields-in-field-number-order walk json_format does.
    """
    return _JSON.encode(_message(message)) + b"\n"


def reference_otlp_json(message: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON the spec asks for, via protobuf's own json_format (slow, exact)."""
    data = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return data


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()


_ID_FIELDS = {"trace_id", "span_id", "parent_span_id"}
_INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                FieldDescriptor.TYPE_SINT64}
_CONVERTERS: dict[Any, tuple[str, Callable[[Any], Any]]] = {}


def _message(message: Any) -> dict[str, Any]:
    special = _SPECIAL.get(message.DESCRIPTOR.full_name)
    if special is not None:
        return special(message)
    out = {}
    for fd, value in message.ListFields():  # present fields, by field number, as json_format
        conv = _CONVERTERS.get(fd)
        if conv is None:
            conv = _CONVERTERS[fd] = (fd.json_name, _converter(fd))
        out[conv[0]] = conv[1](value)
    return out


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _converter(fd: Any) -> Callable[[Any], Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        one: Callable[[Any], Any] = _message
    elif fd.type == FieldDescriptor.TYPE_BYTES:
        one = bytes.hex if fd.name in _ID_FIELDS else _b64
    elif fd.type in _INT64_TYPES:
        one = str
    elif fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        one = _double
    else:  # strings, bools, 32-bit ints, enums (as integers)
        return _same
    repeated = getattr(fd, "is_repeated", None)
    if repeated is None:
        repeated = fd.label == FieldDescriptor.LABEL_REPEATED
    if repeated:
        return lambda values: [one(v) for v in values]
    return one


def _same(value: Any) -> Any:
    return value


def _any_value(value: Any) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": value.string_value}
    if kind == "int_value":
        return {"intValue": str(value.int_value)}
    if kind == "bool_value":
        return {"boolValue": value.bool_value}
    if kind == "array_value":
        values = value.array_value.values
        return {"arrayValue": {"values": [_any_value(v) for v in values]} if len(values) else {}}
    return _generic(value)  # doubles, bytes, kvlists, unset: rare, exact either way


def _key_value(kv: Any) -> dict[str, Any]:
    if kv.key_strindex:
        return _generic(kv)
    out: dict[str, Any] = {}
    if kv.key:
        out["key"] = kv.key
    if kv.HasField("value"):
        out["value"] = _any_value(kv.value)
    return out


def _span(span: Any) -> dict[str, Any]:
    if len(span.events) or len(span.links) or span.dropped_attributes_count \
            or span.dropped_events_count or span.dropped_links_count:
        return _generic(span)
    out: dict[str, Any] = {}
    if span.trace_id:
        out["traceId"] = span.trace_id.hex()
    if span.span_id:
        out["spanId"] = span.span_id.hex()
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id.hex()
    if span.name:
        out["name"] = span.name
    if span.kind:
        out["kind"] = span.kind
    if span.start_time_unix_nano:
        out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        out["endTimeUnixNano"] = str(span.end_time_unix_nano)
    if len(span.attributes):
        out["attributes"] = [_key_value(kv) for kv in span.attributes]
    if span.HasField("status"):
        status: dict[str, Any] = {}
        if span.status.message:
            status["message"] = span.status.message
        if span.status.code:
            status["code"] = span.status.code
        out["status"] = status
    if span.flags:
        out["flags"] = span.flags
    return out


def _generic(message: Any) -> dict[str, Any]:
    out = {}
    for fd, value in message.ListFields():
        conv = _CONVERTERS.get(fd)
        if conv is None:
            conv = _CONVERTERS[fd] = (fd.json_name, _converter(fd))
        out[conv[0]] = conv[1](value)
    return out


_SPECIAL: dict[str, Callable[[Any], dict[str, Any]]] = {
    "opentelemetry.proto.trace.v1.Span": _span,
    "opentelemetry.proto.common.v1.KeyValue": _key_value,
}
_JSON = msgspec.json.Encoder()


def _double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def delimited(message: ExportTraceServiceRequest) -> bytes:
    """protobuf's writeDelimitedTo framing: a varint length, then the message."""
    body = message.SerializeToString(deterministic=True)
    n, prefix = len(body), bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            prefix.append(byte | 0x80)
        else:
            prefix.append(byte)
            return bytes(prefix) + body
