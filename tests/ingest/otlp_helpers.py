"""Real OpenTelemetry spans/logs for tests, encoded as a Collector's Kafka exporter would.

Spans come from the real SDK (one TracerProvider per service resource, an in-memory exporter,
explicit start/end times); encoding uses the real OTLP encoder. The OTLP/JSON form is
protobuf's JSON mapping with integer enums and the ids turned from base64 into hex, as the
OTLP/JSON spec requires.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import msgspec
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z in ns
MS = 1_000_000
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


class Mesh:
    """Services with their own resources, all exporting into one in-memory exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._tracers: dict[str, trace.Tracer] = {}

    def tracer(self, service: str, **resource: str) -> trace.Tracer:
        key = service + repr(sorted(resource.items()))
        if key not in self._tracers:
            provider = TracerProvider(resource=Resource.create({"service.name": service,
                                                                **resource}))
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self._tracers[key] = provider.get_tracer("meshwatch-tests")
        return self._tracers[key]

    def call(self, client: trace.Tracer | None, server: trace.Tracer | None, *,
             start: int = T0, client_ms: int = 20, server_ms: int = 15,
             client_attrs: dict[str, Any] | None = None,
             server_attrs: dict[str, Any] | None = None,
             server_parent: bool = True, error: bool = False,
             remote_parent: int = 0xEEE19B7EC3C1B173) -> None:
        """One call: a CLIENT span (if ``client``) and its SERVER child (if ``server``)."""
        context = None
        if client is not None:
            span = client.start_span("GET", kind=SpanKind.CLIENT, start_time=start,
                                     attributes=client_attrs or {})
            if error:
                span.set_status(Status(StatusCode.ERROR))
            context = trace.set_span_in_context(span)
        if server is not None:
            if context is None and server_parent:
                # An uninstrumented caller still propagated a traceparent.
                parent = trace.NonRecordingSpan(trace.SpanContext(
                    0x5B8EFFF798038103D269B633813FC60C, remote_parent, is_remote=True,
                    trace_flags=trace.TraceFlags(1)))
                context = trace.set_span_in_context(parent)
            inner = server.start_span("GET /", kind=SpanKind.SERVER, context=context,
                                      start_time=start + 2 * MS, attributes=server_attrs or {})
            inner.end(end_time=start + (2 + server_ms) * MS)
        if client is not None:
            span.end(end_time=start + client_ms * MS)

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def clear(self) -> None:
        self.exporter.clear()


def proto_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest as the Collector's Kafka exporter writes (otlp_proto)."""
    return encode_spans(spans).SerializeToString()


def otlp_json_dict(message: Message, upper_ids: bool = False) -> dict[str, Any]:
    """OTLP/JSON of a protobuf message: integer enums, int64 as strings, hex ids."""
    doc = MessageToDict(message, use_integers_for_enums=True)
    return hex_ids(doc, upper_ids)


def otlp_json(message: Message, upper_ids: bool = False) -> bytes:
    return msgspec.json.encode(otlp_json_dict(message, upper_ids))


def hex_ids(obj: Any, upper: bool = False) -> Any:
    """Turn protobuf-JSON base64 ids into OTLP/JSON hex ids, recursively."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in ID_KEYS and isinstance(value, str):
                text = base64.b64decode(value).hex()
                out[key] = text.upper() if upper else text
            else:
                out[key] = hex_ids(value, upper)
        return out
    if isinstance(obj, list):
        return [hex_ids(item, upper) for item in obj]
    return obj


def delimited(messages: Sequence[bytes]) -> bytes:
    """protobuf's writeDelimitedTo framing: varint length + message, repeated."""
    out = bytearray()
    for message in messages:
        size = len(message)
        while True:
            byte = size & 0x7F
            size >>= 7
            out.append(byte | (0x80 if size else 0))
            if not size:
                break
        out += message
    return bytes(out)
