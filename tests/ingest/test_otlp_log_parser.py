"""otlp-log: Istio's OpenTelemetry access logs (TEXT line in the body), attributes, kvlist."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.parsers.otlp_log import OtlpLogParser
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from tests.ingest.otlp_helpers import otlp_json
from tests.ingest.samples import (
    INBOUND,
    ISTIO_INBOUND,
    ISTIO_OUTBOUND,
    LOGS_JSON,
    json_record,
)

ORIGIN = Origin("otlp_logs", 3)
TS_2020 = datetime(2020, 11, 25, 21, 26, 18, 409000, tzinfo=UTC)


def request(*records: dict[str, Any], resource: dict[str, str] | None = None
            ) -> ExportLogsServiceRequest:
    """A real ExportLogsServiceRequest: one resource, the given log records."""
    message = ExportLogsServiceRequest()
    rl = message.resource_logs.add()
    for key, value in (resource or {}).items():
        kv = rl.resource.attributes.add()
        kv.key = key
        kv.value.string_value = value
    scope = rl.scope_logs.add()
    for spec in records:
        record = scope.log_records.add()
        record.time_unix_nano = spec.get("time", 1_606_339_578_409_000_000)
        if "body" in spec:
            body = spec["body"]
            if isinstance(body, dict):
                for key, value in body.items():
                    kv = record.body.kvlist_value.values.add()
                    kv.key = key
                    _set(kv.value, value)
            else:
                record.body.string_value = body
        for key, value in spec.get("attributes", {}).items():
            kv = record.attributes.add()
            kv.key = key
            _set(kv.value, value)
        if "trace_id" in spec:
            record.trace_id = bytes.fromhex(spec["trace_id"])
    return message


def _set(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    else:
        target.string_value = value


def encoded(message: ExportLogsServiceRequest, encoding: str) -> bytes:
    return message.SerializeToString() if encoding == "proto" else otlp_json(message)


ENCODINGS = ["proto", "json"]


def events(results: list) -> list[EdgeEvent]:
    assert all(isinstance(r, EdgeEvent) for r in results), results
    return results


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_istio_text_line_in_the_body(encoding: str) -> None:
    message = request({"body": ISTIO_OUTBOUND.decode()}, {"body": ISTIO_INBOUND.decode()},
                      resource={"k8s.pod.name": "sleep-7656cf8794-8nnlk",
                                "k8s.namespace.name": "foo"})
    outbound, inbound = events(OtlpLogParser().parse(encoded(message, encoding), ORIGIN))
    assert outbound == EdgeEvent(
        ts=TS_2020, origin="otlp_log", reporter="source", source_workload="sleep",
        source_namespace="foo", source_address="10.44.1.23",
        destination_service="httpbin.foo.svc.cluster.local", destination_namespace="foo",
        destination_port=8000, protocol="HTTP/1.1", method="GET", path="/status/418",
        response_code=418, bytes_sent=0, bytes_received=135, duration_ms=4.0,
        request_id="84961386-6d84-929d-98bd-c5aee93b5c88")
    # The resource is the pod that wrote the log: for an inbound record, the destination.
    assert (inbound.reporter, inbound.mtls) == ("destination", True)
    assert (inbound.destination_workload, inbound.destination_namespace) == ("sleep", "foo")


def test_envoy_node_id_resource_names_the_pod() -> None:
    node = "sidecar~10.44.1.27~httpbin-74fb669cc6-q7wlx.foo~foo.svc.cluster.local"
    message = request({"body": ISTIO_INBOUND.decode()}, resource={"node_name": node})
    [event] = events(OtlpLogParser().parse(message.SerializeToString(), ORIGIN))
    assert (event.destination_workload, event.destination_namespace) == ("httpbin", "foo")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fields_as_attributes(encoding: str) -> None:
    attributes = {
        "start_time": "2024-05-01T10:00:00.123Z", "response_code": 503,
        "upstream_cluster": "inbound|9080||", "downstream_peer_uri_san": "-",
        "requested_server_name": "-", "DOWNSTREAM_REMOTE_ADDRESS": "10.244.3.77:40112",
        "%REQ(:AUTHORITY)%": "reviews:9080", "pod_namespace": "bookinfo",
        "bytes_received": "17", "unrelated.attribute": True,
    }
    message = request({"attributes": attributes}, resource={"service.name": "reviews"})
    [event] = events(OtlpLogParser().parse(encoded(message, encoding), ORIGIN))
    assert event.ts == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert (event.reporter, event.mtls, event.response_code) == ("destination", False, 503)
    assert (event.source_address, event.bytes_sent) == ("10.244.3.77", 17)
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"
    assert event.destination_workload == "reviews"  # service.name: no pod name given


def test_semantic_convention_attributes_and_record_time_and_trace_id() -> None:
    attributes = {"http.request.method": "POST", "http.response.status_code": 201,
                  "url.path": "/api", "upstream_cluster": "outbound|80||api.prod.svc.cluster.local"}
    message = request({"attributes": attributes, "time": 1_714_557_600_000_000_000,
                       "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    [event] = events(OtlpLogParser().parse(message.SerializeToString(), ORIGIN))
    assert (event.method, event.response_code, event.path) == ("POST", 201, "/api")
    assert event.ts == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (event.reporter, event.destination_namespace) == ("source", "prod")


def test_kvlist_body_and_json_body() -> None:
    kvlist = request({"body": {"start_time": "2024-05-01T10:00:00Z", "response_code": 200,
                               "upstream_cluster": "inbound|80||",
                               "requested_server_name": "outbound_.80_._.a.b.svc.cluster.local"}})
    [event] = events(OtlpLogParser().parse(kvlist.SerializeToString(), ORIGIN))
    assert (event.mtls, event.destination_service) == (True, "a.b.svc.cluster.local")
    json_body = request({"body": json_record(INBOUND).decode()})
    [event] = events(OtlpLogParser().parse(json_body.SerializeToString(), ORIGIN))
    assert (event.origin, event.mtls, event.destination_workload) == ("otlp_log", True,
                                                                      "reviews-v2")


def test_custom_format_string_for_bodies() -> None:
    parser = OtlpLogParser("%START_TIME% %RESPONSE_CODE% %UPSTREAM_CLUSTER%")
    message = request({"body": "2024-05-01T10:00:00Z 404 outbound|80||x.y.svc.cluster.local"})
    [event] = events(parser.parse(message.SerializeToString(), ORIGIN))
    assert (event.response_code, event.destination_service) == (404, "x.y.svc.cluster.local")


def failures(results: list) -> list[str]:
    assert all(isinstance(r, ParseFailure) for r in results), results
    return [r.reason for r in results]


def test_the_otlp_logs_example_is_not_an_access_log() -> None:
    [reason] = failures(OtlpLogParser().parse(LOGS_JSON, ORIGIN))
    assert reason.startswith("log record 1: body is not an Envoy access log: line matches no "
                             "known Envoy format")


def test_one_bad_record_among_good_ones() -> None:
    message = request({"body": "hello"}, {"body": ISTIO_INBOUND.decode()},
                      {"body": ISTIO_INBOUND.decode().replace('" 418 ', '" x ')})
    results = OtlpLogParser().parse(message.SerializeToString(), ORIGIN)
    assert [type(r).__name__ for r in results] == ["ParseFailure", "EdgeEvent", "ParseFailure"]
    assert results[2].reason == ("log record 3: body is not an Envoy access log: field 5 "
                                 "(RESPONSE_CODE): expected an integer, got 'x'")


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "protobuf holds no resourceLogs (not an ExportLogsServiceRequest)"),
    (b"\x0a\x05\x0a", "truncated or corrupt protobuf (not an ExportLogsServiceRequest)"),
    (b"{", "invalid JSON: Input data was truncated"),
    (b"[1]", "JSON value is not an object (got list)"),
    (b"\xff\xfe\xfd", "truncated or corrupt protobuf (not an ExportLogsServiceRequest)"),
    (b'{"resourceSpans": []}', "JSON object has no resourceLogs (not an "
                               "ExportLogsServiceRequest)"),
    (b'{"resourceLogs": [{"scopeLogs": []}]}', "OTLP logs request holds no log records"),
])
def test_malformed_requests(payload: bytes, reason: str) -> None:
    assert failures(OtlpLogParser().parse(payload, ORIGIN)) == [reason]


def test_record_without_any_time_and_with_bad_attribute() -> None:
    message = request({"attributes": {"response_code": 200}, "time": 0})
    assert failures(OtlpLogParser().parse(message.SerializeToString(), ORIGIN)) == [
        "log record 1: timeUnixNano is missing (0)"]
    message = request({"attributes": {"response_code": "two hundred"}})
    assert failures(OtlpLogParser().parse(message.SerializeToString(), ORIGIN)) == [
        "log record 1: attribute 'response_code': expected an integer, got 'two hundred'"]


def test_json_log_record_with_bad_trace_id() -> None:
    doc = msgspec.json.decode(LOGS_JSON)
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] = "xyz"
    [reason] = failures(OtlpLogParser().parse(msgspec.json.encode(doc), ORIGIN))
    assert reason == "log record 1: traceId 'xyz' is neither 32 hex digits nor base64"
