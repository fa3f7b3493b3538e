"""auto: per-record sniffing and delegation to one parser instance per format."""

from __future__ import annotations

import msgspec
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.parsers.auto import AutoParser, sniff
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from tests.ingest.otlp_helpers import Mesh, otlp_json, proto_bytes
from tests.ingest.samples import (
    ENVOY_DEFAULT,
    INBOUND,
    ISTIO_INBOUND,
    TRACE_JSON,
    ZTUNNEL_INBOUND,
    json_record,
)

ORIGIN = Origin("mixed", 1)


def logs_request() -> bytes:
    message = ExportLogsServiceRequest()
    record = message.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=1_606_339_578_409_000_000)
    record.body.string_value = ISTIO_INBOUND.decode()
    return message.SerializeToString()


@pytest.mark.parametrize(("payload", "fmt"), [
    (TRACE_JSON, "otlp-json"),
    (b'  {"resourceLogs": []}', "otlp-log"),
    (json_record(INBOUND), "envoy-json"),
    (b'{"user_agent": "resourceSpans", "start_time": "x"}', "envoy-json"),  # a value, not a key
    (ISTIO_INBOUND, "envoy-text"),
    (ENVOY_DEFAULT, "envoy-text"),
    (ZTUNNEL_INBOUND.encode(), "ztunnel"),
    (b'{"src.addr": "10.0.0.1:1", "dst.addr": "10.0.0.2:2"}', "ztunnel"),
    (b'{"fields": {"src": {"addr": "10.0.0.1:1"}}}', "ztunnel"),
    (b'{"src": "10.0.0.1", "start_time": "2024-05-01T10:00:00Z"}', "envoy-json"),
    (logs_request(), "otlp-proto"),
    (b"\xff\xfe\xfd", "otlp-proto"),
    (b"plain words", None),
])
def test_sniff(payload: bytes, fmt: str | None) -> None:
    assert sniff(payload) == fmt


def test_protobuf_that_starts_like_json_after_its_tag_is_still_protobuf() -> None:
    # Field 1 tag (0x0a) then length 123 (= '{'): must not be stripped as whitespace.
    assert sniff(b"\x0a\x7b" + b"x" * 123) == "otlp-proto"


def test_every_format_in_one_stream() -> None:
    mesh = Mesh()
    mesh.call(mesh.tracer("web"), mesh.tracer("cart"))
    server, client = mesh.spans()
    parser = AutoParser()
    stream = [ISTIO_INBOUND, json_record(INBOUND), ZTUNNEL_INBOUND.encode(), logs_request(),
              proto_bytes([client]), otlp_json(encode_spans([server]))]
    origins = []
    for payload in stream:
        for result in parser.parse(payload, ORIGIN):
            assert isinstance(result, EdgeEvent), result
            origins.append(result.origin)
    # The CLIENT span came as protobuf, its SERVER as JSON: one store pairs them.
    assert origins == ["envoy_text", "envoy_json", "ztunnel", "otlp_log", "otlp_span"]
    assert parser.flush(None) == []


def test_unknown_and_empty_records() -> None:
    parser = AutoParser()
    [failure] = parser.parse(b"GET / HTTP/1.1", ORIGIN)
    assert isinstance(failure, ParseFailure)
    assert failure.reason.startswith("unknown format")
    [failure] = parser.parse(b" \t ", ORIGIN)
    assert failure.reason == "empty record"


def test_a_configured_format_string_takes_lines_that_do_not_start_with_a_bracket() -> None:
    parser = AutoParser(format_string="%START_TIME% %RESPONSE_CODE% %UPSTREAM_CLUSTER%")
    [event] = parser.parse(b"2024-05-01T10:00:00Z 200 inbound|80||", ORIGIN)
    assert isinstance(event, EdgeEvent) and event.reporter == "destination"


def test_delegated_failures_name_the_format_that_failed() -> None:
    [failure] = AutoParser().parse(msgspec.json.encode({"start_time": "nope"}), ORIGIN)
    assert isinstance(failure, ParseFailure)
    assert (failure.format, failure.reason) == (
        "envoy-json", "key 'start_time' (START_TIME): expected an ISO 8601 timestamp, got 'nope'")
