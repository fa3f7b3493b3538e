"""OpenTelemetry spans (``otlp-proto``, ``otlp-json``) -> edge events via span pairing.

``otlp-proto`` reads one ``ExportTraceServiceRequest`` protobuf per payload: what an
OpenTelemetry Collector's Kafka exporter writes with its default ``otlp_proto`` encoding.
``otlp-json`` reads OTLP/JSON (the Kafka exporter's ``otlp_json``); a JSON payload holding
``resourceLogs`` instead is handed to the OTLP log logic.

Only CLIENT and SERVER spans describe service-to-service calls. INTERNAL, PRODUCER and CONSUMER
spans are counted in ``skipped`` (not failures) unless they carry an error status: a failed
PRODUCER/CONSUMER is kept as the calling/called side of a messaging hop, a failed INTERNAL span
only when it names a peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import (
    TS_MAX_NS,
    TS_MIN_NS,
    RecordError,
    checked,
    failure,
    guarded,
    ns_to_datetime,
)
from ingest.parsers.otlp_common import (
    RESOURCE_KEYS,
    SPAN_KINDS,
    STATUS_CODES,
    bytes_id,
    decode_json_object,
    field,
    json_attributes,
    json_enum,
    json_id,
    json_int,
    proto_attributes,
)
from ingest.parsers.otlp_log import LogRecords
from ingest.span_pairing import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    KIND_UNSPECIFIED,
    SPAN_ATTRIBUTE_KEYS,
    STATUS_ERROR,
    SpanPairer,
    SpanRecord,
    resource_identity,
    span_record,
)
from meshwatch.records import Origin

_PEER_KEYS = ("peer.service", "service.peer.name", "server.address", "net.peer.name",
              "url.full", "http.url", "upstream_cluster")


def span_role(kind: int, error: bool, attrs: dict[str, Any]) -> str | None:
    """"client", "server", or None for spans that are not a service-to-service call."""
    if kind == KIND_CLIENT:
        return "client"
    if kind == KIND_SERVER:
        return "server"
    if not error:
        return None
    if kind == KIND_PRODUCER:
        return "client"
    if kind == KIND_CONSUMER:
        return "server"
    if kind in (KIND_INTERNAL, KIND_UNSPECIFIED):
        return "client" if any(attrs.get(k) for k in _PEER_KEYS) else None
    return None


def _check_ns(ns: int, what: str) -> int:
    if not TS_MIN_NS <= ns < TS_MAX_NS:
        ns_to_datetime(ns, what)  # raises with the precise reason
    return ns


class _SpanParser:
    """Shared state and pairing for both span encodings."""

    name: ClassVar[str] = ""
    origin: ClassVar[str] = "otlp_span"

    def __init__(self, pairing_ttl: float = 10.0, max_pending: int = 100_000) -> None:
        self.pairing_ttl = pairing_ttl
        self.max_pending = max_pending
        self.pairer = SpanPairer(pairing_ttl, max_pending)
        self.skipped = 0

    def flush(self, now: float | None = None) -> ParseResult:
        return checked(self.name, list(self.pairer.flush(now)))

    def _add(self, results: ParseResult, origin: Origin, payload: bytes, n: int,
             build: Callable[[Any, Any], SpanRecord | None], span: Any, resource: Any) -> None:
        try:
            record = build(span, resource)
        except RecordError as exc:
            results.append(failure(self.name, origin, f"span {n}: {exc}", payload))
            return
        if record is None:
            self.skipped += 1
            return
        results.extend(self.pairer.add(record))


@PARSERS.register("otlp-proto")
class OtlpProtoParser(_SpanParser):
    """One protobuf ``ExportTraceServiceRequest`` per payload; CLIENT/SERVER spans are paired.

    ``parse`` returns the edges completed by this payload; spans still waiting for their
    partner come out of ``flush(now)`` once ``pairing_ttl`` seconds (event time) have passed,
    or ``flush(None)`` at the end of input.

    >>> from opentelemetry.proto.trace.v1.trace_pb2 import Span
    >>> request = ExportTraceServiceRequest()
    >>> rs = request.resource_spans.add()
    >>> kv = rs.resource.attributes.add(); kv.key = "service.name"
    >>> kv.value.string_value = "ratings"
    >>> span = rs.scope_spans.add().spans.add(trace_id=bytes(range(1, 17)),
    ...     span_id=b"\\x01" * 8, kind=Span.SPAN_KIND_SERVER,
    ...     start_time_unix_nano=1_700_000_000_000_000_000,
    ...     end_time_unix_nano=1_700_000_000_002_000_000)
    >>> p = OtlpProtoParser()
    >>> [e] = p.parse(request.SerializeToString(), Origin("otlp_spans", 0))
    >>> e.reporter, e.destination_service, e.duration_ms, e.trace_id
    ('destination', 'ratings', 2.0, '0102030405060708090a0b0c0d0e0f10')
    >>> p.parse(request.SerializeToString()[:-5], Origin("otlp_spans", 1))[0].reason
    'truncated or corrupt protobuf (not an ExportTraceServiceRequest)'
    """

    name: ClassVar[str] = "otlp-proto"

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        if not payload:
            raise RecordError("empty record")
        try:
            request = ExportTraceServiceRequest.FromString(payload)
        except DecodeError:
            raise RecordError("truncated or corrupt protobuf (not an ExportTraceServiceRequest)"
                              ) from None
        if not request.resource_spans:
            raise RecordError("protobuf holds no resourceSpans (not an ExportTraceServiceRequest)")
        results: ParseResult = []
        n = 0
        for rs in request.resource_spans:
            resource = resource_identity(proto_attributes(rs.resource.attributes, RESOURCE_KEYS))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n += 1
                    self._add(results, origin, payload, n, _proto_span, span, resource)
        return results


def _proto_span(span: Any, resource: Any) -> SpanRecord | None:
    error = span.status.code == STATUS_ERROR
    attrs = proto_attributes(span.attributes, SPAN_ATTRIBUTE_KEYS)
    role = span_role(span.kind, error, attrs)
    if role is None:
        return None
    trace_id = bytes_id(span.trace_id, 16, "trace_id")
    span_id = bytes_id(span.span_id, 8, "span_id")
    if trace_id is None or span_id is None:
        raise RecordError("span has no trace_id/span_id")
    return span_record(
        trace_id=trace_id, span_id=span_id,
        parent_span_id=bytes_id(span.parent_span_id, 8, "parent_span_id"), kind=role,
        start_ns=_check_ns(span.start_time_unix_nano, "startTimeUnixNano"),
        end_ns=span.end_time_unix_nano, error=error, attrs=attrs, resource=resource)


def _json_span(span: Any, resource: Any) -> SpanRecord | None:
    if not isinstance(span, dict):
        raise RecordError("spans item is not an object")
    status = span.get("status")
    code = json_enum(status.get("code") if isinstance(status, dict) else None, STATUS_CODES,
                     "status.code")
    attrs = json_attributes(span.get("attributes"), SPAN_ATTRIBUTE_KEYS)
    role = span_role(json_enum(span.get("kind"), SPAN_KINDS, "kind"), code == STATUS_ERROR,
                     attrs)
    if role is None:
        return None
    trace_id = json_id(field(span, "traceId", "trace_id"), 16, "traceId")
    span_id = json_id(field(span, "spanId", "span_id"), 8, "spanId")
    if trace_id is None or span_id is None:
        raise RecordError("span has no traceId/spanId")
    start = json_int(field(span, "startTimeUnixNano", "start_time_unix_nano"),
                     "startTimeUnixNano")
    return span_record(
        trace_id=trace_id, span_id=span_id,
        parent_span_id=json_id(field(span, "parentSpanId", "parent_span_id"), 8,
                               "parentSpanId"),
        kind=role, start_ns=_check_ns(start, "startTimeUnixNano"),
        end_ns=json_int(field(span, "endTimeUnixNano", "end_time_unix_nano"),
                        "endTimeUnixNano"),
        error=code == STATUS_ERROR, attrs=attrs, resource=resource)


@PARSERS.register("otlp-json")
class OtlpJsonParser(_SpanParser):
    """OTLP/JSON ``ExportTraceServiceRequest`` (or ``ExportLogsServiceRequest``) per payload.

    Ids may be hex (OTLP/JSON; either case) or base64 (plain protobuf JSON mapping), enums
    integers or names, 64-bit integers strings or numbers.

    >>> doc = (b'{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", '
    ...        b'"value": {"stringValue": "my.service"}}]}, "scopeSpans": [{"spans": [{'
    ...        b'"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174", '
    ...        b'"startTimeUnixNano": "1544712660000000000", '
    ...        b'"endTimeUnixNano": "1544712661000000000", "kind": 2}]}]}]}')
    >>> [e] = OtlpJsonParser().parse(doc, Origin("trace.json", 1))
    >>> e.destination_service, e.trace_id, e.duration_ms
    ('my.service', '5b8efff798038103d269b633813fc60c', 1000.0)
    """

    name: ClassVar[str] = "otlp-json"

    def __init__(self, pairing_ttl: float = 10.0, max_pending: int = 100_000) -> None:
        super().__init__(pairing_ttl, max_pending)
        self._logs: LogRecords | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_logs"] = None  # compiled formats are rebuilt on demand
        return state

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        doc = decode_json_object(payload)
        resource_spans = field(doc, "resourceSpans", "resource_spans")
        if resource_spans is None and field(doc, "resourceLogs", "resource_logs") is not None:
            if self._logs is None:
                self._logs = LogRecords(None, None, "cluster.local", "cluster.local")
            return self._logs.parse(self.name, payload, origin)
        if not isinstance(resource_spans, list):
            raise RecordError("JSON object has no resourceSpans (not an ExportTraceServiceRequest)")
        results: ParseResult = []
        n = 0
        for rs in resource_spans:
            if not isinstance(rs, dict):
                raise RecordError("resourceSpans item is not an object")
            res = rs.get("resource")
            resource = resource_identity(json_attributes(
                res.get("attributes") if isinstance(res, dict) else None, RESOURCE_KEYS))
            scopes = field(rs, "scopeSpans", "scope_spans") or field(
                rs, "instrumentationLibrarySpans", "instrumentation_library_spans") or []
            for scope in scopes if isinstance(scopes, list) else []:
                spans = field(scope, "spans") if isinstance(scope, dict) else None
                for span in spans if isinstance(spans, list) else []:
                    n += 1
                    self._add(results, origin, payload, n, _json_span, span, resource)
        return results


def looks_like_logs(payload: bytes) -> bool:
    """Whether a protobuf payload is an ExportLogsServiceRequest rather than spans.

    The two messages share their outer shape, so either decodes the other's bytes; spans have
    16-byte trace ids in field 1, log records a fixed64 time there.
    """
    try:
        traces = ExportTraceServiceRequest.FromString(payload)
    except DecodeError:
        traces = None
    if traces is not None and any(len(span.trace_id) == 16 for rs in traces.resource_spans
                                  for ss in rs.scope_spans for span in ss.spans):
        return False
    try:
        logs = ExportLogsServiceRequest.FromString(payload)
    except DecodeError:
        return False
    return any(record.time_unix_nano or record.observed_time_unix_nano or record.HasField("body")
               for rl in logs.resource_logs for sl in rl.scope_logs for record in sl.log_records)
