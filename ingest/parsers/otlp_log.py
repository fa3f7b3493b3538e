"""Envoy access logs shipped as OTLP log records (``otlp-log``).

Istio's OpenTelemetry access-log provider (Envoy's ``envoy.access_loggers.open_telemetry``)
puts the whole TEXT line in the log body and no attributes by default; custom setups put
fields into attributes (``response_code: %RESPONSE_CODE%``) or a kvlist body. All three are
read here. The resource says which proxy wrote the record (``k8s.pod.name``,
``k8s.namespace.name``, ``service.name``, or Envoy's ``node_name`` = Istio's node id) and
fills identity the record itself lacks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.identity import parse_istio_node_id
from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import RecordError, failure, guarded, ns_to_datetime
from ingest.parsers.envoy_fields import (
    KEY_KINDS,
    build_event,
    canonical_key,
    to_int,
    to_time,
)
from ingest.parsers.envoy_format import OPERATORS, Command, tokenize
from ingest.parsers.envoy_json import JsonFields
from ingest.parsers.envoy_text import TextFields
from ingest.parsers.otlp_common import (
    RESOURCE_KEYS,
    bytes_id,
    decode_json_object,
    field,
    json_any_value,
    json_attributes,
    json_id,
    json_int,
    proto_any_value,
    proto_attributes,
)
from meshwatch.formats import MESHWATCH_JSON_FORMAT
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from meshwatch.settings import ConfigError

# Attribute names of the OpenTelemetry semantic conventions an exporter may use instead.
_SEMCONV = {
    "http.request.method": "method", "http.method": "method", "url.path": "path",
    "http.target": "path", "http.response.status_code": "response_code",
    "http.status_code": "response_code", "client.address": "downstream_remote",
    "source.address": "downstream_remote", "x-request-id": "request_id",
}


def attribute_keys(json_format: dict[str, str] | None = None) -> dict[str, str]:
    """Normalized attribute name -> canonical key: meshwatch/Istio JSON keys, operator names
    (``RESPONSE_CODE``, ``%UPSTREAM_CLUSTER%``), semantic-convention names, and ``json_format``.
    """
    table: dict[str, str] = {}
    for operator in OPERATORS:
        key = canonical_key(Command(operator))
        if key is not None:
            table[operator.lower()] = key
    for source in (MESHWATCH_JSON_FORMAT, json_format or {}):
        for name, value in source.items():
            try:
                tokens = tokenize(value)
            except ConfigError as exc:
                raise ConfigError(f"json_format key {name!r}: {exc}") from None
            if len(tokens) == 1 and isinstance(tokens[0], Command):
                key = canonical_key(tokens[0])
                if key is not None:
                    table[name.strip("%").lower()] = key
    for name, key in _SEMCONV.items():
        table.setdefault(name, key)
    return table


class OtlpLogRecord:
    """One log record, decoded from either encoding."""

    __slots__ = ("attributes", "body", "observed_ns", "time_ns", "trace_id")

    def __init__(self, time_ns: int, observed_ns: int, body: Any, attributes: dict[str, Any],
                 trace_id: str | None) -> None:
        self.time_ns = time_ns
        self.observed_ns = observed_ns
        self.body = body
        self.attributes = attributes
        self.trace_id = trace_id


def _json_batches(doc: dict[str, Any]) -> list[tuple[dict[str, Any], list[Any]]]:
    resource_logs = field(doc, "resourceLogs", "resource_logs")
    if not isinstance(resource_logs, list):
        raise RecordError("JSON object has no resourceLogs (not an ExportLogsServiceRequest)")
    batches = []
    for rl in resource_logs:
        if not isinstance(rl, dict):
            raise RecordError("resourceLogs item is not an object")
        resource = field(rl, "resource") or {}
        attrs = json_attributes(resource.get("attributes") if isinstance(resource, dict) else None,
                                RESOURCE_KEYS)
        records: list[Any] = []
        scopes = field(rl, "scopeLogs", "scope_logs") or field(
            rl, "instrumentationLibraryLogs", "instrumentation_library_logs") or []
        for scope in scopes if isinstance(scopes, list) else []:
            if isinstance(scope, dict):
                items = field(scope, "logRecords", "log_records") or []
                records.extend(items if isinstance(items, list) else [])
        batches.append((attrs, records))
    return batches


def _json_record(item: Any) -> OtlpLogRecord:
    if not isinstance(item, dict):
        raise RecordError("logRecords item is not an object")
    body = item.get("body")
    return OtlpLogRecord(
        json_int(field(item, "timeUnixNano", "time_unix_nano"), "timeUnixNano"),
        json_int(field(item, "observedTimeUnixNano", "observed_time_unix_nano"),
                 "observedTimeUnixNano"),
        json_any_value(body) if body is not None else None,
        json_attributes(item.get("attributes")),
        json_id(field(item, "traceId", "trace_id"), 16, "traceId"),
    )


class LogRecords:
    """Turns OTLP log records into access-log edge events (shared with ``otlp-json``)."""

    origin = "otlp_log"

    def __init__(self, format_string: str | None, json_format: dict[str, str] | None,
                 cluster_domain: str, trust_domain: str) -> None:
        self.text = TextFields(format_string)
        self.json = JsonFields(json_format)
        self.keys = attribute_keys(json_format)
        self.cluster_domain = cluster_domain
        self.trust_domain = trust_domain

    def parse(self, parser_name: str, payload: bytes, origin: Origin) -> ParseResult:
        # Protobuf starts with field 1's tag (0x0a), never with '{' or '['.
        if payload.lstrip()[:1] in (b"{", b"["):
            batches = [(attrs, [(_json_record, item) for item in items])
                       for attrs, items in _json_batches(decode_json_object(payload))]
        else:
            batches = self._proto_batches(payload)
        results: ParseResult = []
        total = 0
        for resource, items in batches:
            for convert, item in items:
                total += 1
                try:
                    results.append(self.event(convert(item), resource))
                except RecordError as exc:
                    results.append(self._failure(parser_name, origin, total, str(exc), payload))
        if total == 0:
            raise RecordError("OTLP logs request holds no log records")
        return results

    @staticmethod
    def _failure(parser_name: str, origin: Origin, n: int, reason: str,
                 payload: bytes) -> ParseFailure:
        return failure(parser_name, origin, f"log record {n}: {reason}", payload)

    @staticmethod
    def _proto_batches(payload: bytes) -> list[tuple[dict[str, Any], list[Any]]]:
        try:
            request = ExportLogsServiceRequest.FromString(payload)
        except DecodeError:
            raise RecordError("truncated or corrupt protobuf (not an ExportLogsServiceRequest)"
                              ) from None
        if not request.resource_logs:
            raise RecordError("protobuf holds no resourceLogs (not an ExportLogsServiceRequest)")
        batches = []
        for rl in request.resource_logs:
            attrs = proto_attributes(rl.resource.attributes, RESOURCE_KEYS)
            items = [(_proto_record, record) for sl in rl.scope_logs for record in sl.log_records]
            batches.append((attrs, items))
        return batches

    def event(self, record: OtlpLogRecord, resource: dict[str, Any]) -> EdgeEvent:
        values: dict[str, Any] = {}
        body_error: str | None = None
        body = record.body
        if isinstance(body, str) and body.strip():
            try:
                if body.lstrip().startswith("{"):
                    values = self.json.fields(body.encode())
                else:
                    values = self.text.fields(body)
            except RecordError as exc:
                body_error = str(exc)
        elif isinstance(body, dict):
            values = self._mapped(body)
        attributes = self._mapped(record.attributes)
        for key, value in attributes.items():
            if values.get(key) is None:
                values[key] = value
        if not values:
            if body_error is not None:
                raise RecordError(f"body is not an Envoy access log: {body_error}")
            raise RecordError("log record carries no access-log fields (no Envoy line in the "
                              "body, no known attributes)")
        self._fill_from_resource(values, resource)
        if values.get("start_time") is None:
            ns = record.time_ns or record.observed_ns
            values["start_time"] = ns_to_datetime(ns, "timeUnixNano")
        if record.trace_id and not (values.get("trace_id") or values.get("traceparent")
                                    or values.get("b3_trace_id")):
            values["trace_id"] = record.trace_id
        return build_event(values, self.origin, self.cluster_domain, self.trust_domain)

    def _mapped(self, attributes: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = self.keys
        for name, raw in attributes.items():
            key = keys.get(name.strip("%").lower())
            if key is None and "(" in name:
                key = _operator_key(name)
            if key is None or out.get(key) is not None:
                continue
            if raw is None or raw == "-" or raw == "":
                out.setdefault(key, None)
                continue
            kind = KEY_KINDS.get(key, "str")
            label = f"attribute {name!r}"
            if kind == "int":
                out[key] = to_int(raw, label)
            elif kind == "time":
                out[key] = to_time(raw, label)
            else:
                out[key] = raw if isinstance(raw, str) else str(raw)
        return out

    @staticmethod
    def _fill_from_resource(values: dict[str, Any], resource: dict[str, Any]) -> None:
        pod, namespace, _ = parse_istio_node_id(resource.get("node_name"))
        pod = resource.get("k8s.pod.name") or pod
        namespace = resource.get("k8s.namespace.name") or namespace
        if values.get("pod_name") is None and isinstance(pod, str) and pod:
            values["pod_name"] = pod
        if values.get("pod_namespace") is None and isinstance(namespace, str) and namespace:
            values["pod_namespace"] = namespace
        workload = resource.get("k8s.deployment.name") or resource.get("service.name")
        if values.get("workload_name") is None and isinstance(workload, str) and workload:
            values["workload_name"] = workload


@lru_cache(maxsize=1024)
def _operator_key(name: str) -> str | None:
    """The canonical key of an operator-style attribute name with an argument (%REQ(:PATH)%)."""
    try:
        tokens = tokenize("%" + name.strip().strip("%") + "%")
    except ConfigError:
        return None
    return canonical_key(tokens[0]) if len(tokens) == 1 and isinstance(tokens[0], Command) \
        else None


def _proto_record(record: Any) -> OtlpLogRecord:
    return OtlpLogRecord(
        record.time_unix_nano,
        record.observed_time_unix_nano,
        proto_any_value(record.body) if record.HasField("body") else None,
        proto_attributes(record.attributes),
        bytes_id(record.trace_id, 16, "trace_id"),
    )


@PARSERS.register("otlp-log")
class OtlpLogParser:
    """OTLP ``ExportLogsServiceRequest`` records (protobuf, or OTLP/JSON when it starts with ``{``).

    Each log record becomes one edge event (or one failure naming the record). The body is read
    as an Envoy TEXT line (``format_string``, default: the known formats) or JSON
    (``json_format``); attributes named like the JSON keys, the operators
    (``RESPONSE_CODE``) or the semantic conventions fill in or replace it.

    >>> p = OtlpLogParser()
    >>> body = ('[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - '
    ...     '"-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" '
    ...     '"httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local '
    ...     '10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default')
    >>> doc = {"resourceLogs": [{"resource": {"attributes": [
    ...     {"key": "k8s.pod.name", "value": {"stringValue": "sleep-7656cf8794-8nnlk"}},
    ...     {"key": "k8s.namespace.name", "value": {"stringValue": "foo"}}]},
    ...     "scopeLogs": [{"logRecords": [{"timeUnixNano": "1606339578409000000",
    ...                                    "body": {"stringValue": body}}]}]}]}
    >>> import json
    >>> [e] = p.parse(json.dumps(doc).encode(), Origin("otlp", 1))
    >>> e.reporter, e.source_workload, e.source_namespace, e.destination_service, e.mtls
    ('source', 'sleep', 'foo', 'httpbin.foo.svc.cluster.local', None)
    """

    name: ClassVar[str] = "otlp-log"
    origin: ClassVar[str] = "otlp_log"

    def __init__(self, format_string: str | None = None,
                 json_format: dict[str, str] | None = None, *,
                 cluster_domain: str = "cluster.local",
                 trust_domain: str = "cluster.local") -> None:
        self.format_string = format_string
        self.json_format = json_format
        self.cluster_domain = cluster_domain
        self.trust_domain = trust_domain
        self._records = LogRecords(format_string, json_format, cluster_domain, trust_domain)

    def __getstate__(self) -> dict[str, Any]:
        return {"format_string": self.format_string, "json_format": self.json_format,
                "cluster_domain": self.cluster_domain, "trust_domain": self.trust_domain}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["format_string"], state["json_format"],  # type: ignore[misc]
                      cluster_domain=state["cluster_domain"], trust_domain=state["trust_domain"])

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        return self._records.parse(self.name, payload, origin)

    def flush(self, now: float | None = None) -> ParseResult:
        return []
