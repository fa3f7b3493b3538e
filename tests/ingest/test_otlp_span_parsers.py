"""otlp-proto / otlp-json: real SDK spans, real OTLP encoding, CLIENT/SERVER pairing."""

from __future__ import annotations

import base64
import pickle
from datetime import UTC, datetime

import msgspec
import pytest

from ingest.parsers.otlp_spans import OtlpJsonParser, OtlpProtoParser
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from tests.ingest.otlp_helpers import (
    MS,
    T0,
    Mesh,
    hex_ids,
    otlp_json,
    otlp_json_dict,
    proto_bytes,
)
from tests.ingest.samples import TRACE_JSON

ORIGIN = Origin("otlp_spans", 7, partition=0)
START = datetime.fromtimestamp(T0 / 1e9, UTC)

NEW_CLIENT = {"http.request.method": "GET", "server.address": "reviews.bookinfo",
              "server.port": 9080, "url.full": "http://reviews.bookinfo:9080/reviews/0",
              "network.protocol.version": "1.1", "http.response.status_code": 200,
              "http.request.body.size": 0, "http.response.body.size": 358}
NEW_SERVER = {"http.request.method": "GET", "url.path": "/reviews/0", "server.port": 9080,
              "network.peer.address": "10.244.1.5", "client.address": "10.244.1.5",
              "http.response.status_code": 200, "network.protocol.version": "1.1"}
OLD_CLIENT = {"http.method": "GET", "net.peer.name": "reviews.bookinfo", "net.peer.port": 9080,
              "http.url": "http://reviews.bookinfo:9080/reviews/0", "http.flavor": "1.1",
              "http.status_code": 200, "http.request_content_length": 0,
              "http.response_content_length": 358}
OLD_SERVER = {"http.method": "GET", "http.target": "/reviews/0", "net.host.port": 9080,
              "net.sock.peer.addr": "10.244.1.5", "http.status_code": 200,
              "http.flavor": "1.1"}


def mesh_with(*, client_attrs: dict | None = None, server_attrs: dict | None = None,
              client: bool = True, server: bool = True, error: bool = False) -> Mesh:
    mesh = Mesh()
    web = mesh.tracer("productpage", **{"k8s.namespace.name": "bookinfo",
                                        "k8s.pod.name": "productpage-v1-87d54dd59-x8k4d"})
    api = mesh.tracer("reviews", **{"k8s.namespace.name": "bookinfo",
                                    "k8s.deployment.name": "reviews-v2"})
    mesh.call(web if client else None, api if server else None, client_attrs=client_attrs,
              server_attrs=server_attrs, error=error)
    return mesh


def encodings(mesh: Mesh) -> dict[str, tuple[type, bytes]]:
    spans = mesh.spans()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    return {"otlp-proto": (OtlpProtoParser, proto_bytes(spans)),
            "otlp-json": (OtlpJsonParser, otlp_json(encode_spans(spans)))}


def events(results: list) -> list[EdgeEvent]:
    assert all(isinstance(r, EdgeEvent) for r in results), results
    return results


EXPECTED_PAIR = EdgeEvent(
    ts=START, origin="otlp_span", reporter="destination",
    source_workload="productpage-v1", source_namespace="bookinfo", source_address="10.244.1.5",
    destination_service="reviews", destination_workload="reviews-v2",
    destination_namespace="bookinfo", destination_port=9080, protocol="HTTP/1.1",
    method="GET", path="/reviews/0", response_code=200, bytes_sent=0, bytes_received=358,
    duration_ms=20.0, mtls=None,
)


@pytest.mark.parametrize("encoding", ["otlp-proto", "otlp-json"])
@pytest.mark.parametrize(("client_attrs", "server_attrs"), [(NEW_CLIENT, NEW_SERVER),
                                                            (OLD_CLIENT, OLD_SERVER)],
                         ids=["new-semconv", "old-semconv"])
def test_client_and_server_spans_pair_into_one_edge(encoding: str, client_attrs: dict,
                                                    server_attrs: dict) -> None:
    mesh = mesh_with(client_attrs=client_attrs, server_attrs=server_attrs)
    parser_type, payload = encodings(mesh)[encoding]
    parser = parser_type()
    [event] = events(parser.parse(payload, ORIGIN))
    trace_id = format(mesh.spans()[0].context.trace_id, "032x")
    assert event == msgspec.structs.replace(EXPECTED_PAIR, trace_id=trace_id)
    assert parser.flush(None) == []
    assert parser.pairer.paired == 1


@pytest.mark.parametrize("encoding", ["otlp-proto", "otlp-json"])
def test_pairs_complete_across_payloads_in_either_order(encoding: str) -> None:
    mesh = mesh_with(client_attrs=NEW_CLIENT, server_attrs=NEW_SERVER)
    server_span, client_span = mesh.spans()  # the SDK finishes the child first
    parser_type = {"otlp-proto": OtlpProtoParser, "otlp-json": OtlpJsonParser}[encoding]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    def encode(span: object) -> bytes:
        return (proto_bytes([span]) if encoding == "otlp-proto"
                else otlp_json(encode_spans([span])))

    for first, second in ((server_span, client_span), (client_span, server_span)):
        parser = parser_type()
        assert parser.parse(encode(first), ORIGIN) == []
        [event] = events(parser.parse(encode(second), ORIGIN))
        assert (event.source_workload, event.destination_workload) == ("productpage-v1",
                                                                       "reviews-v2")


def test_client_span_alone_is_a_source_edge_to_its_peer() -> None:
    mesh = mesh_with(client_attrs={**NEW_CLIENT, "peer.service": "reviews"}, server=False)
    parser = OtlpProtoParser()
    assert parser.parse(proto_bytes(mesh.spans()), ORIGIN) == []
    [event] = events(parser.flush(None))
    assert event.reporter == "source"
    assert (event.source_workload, event.source_namespace) == ("productpage-v1", "bookinfo")
    assert (event.destination_service, event.destination_port) == ("reviews", 9080)
    assert (event.mtls, event.response_code, event.duration_ms) == (None, 200, 20.0)
    assert parser.pairer.unpaired_clients == 1


def test_client_span_without_peer_service_names_the_server_address() -> None:
    mesh = mesh_with(client_attrs=OLD_CLIENT, server=False)
    parser = OtlpJsonParser()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    parser.parse(otlp_json(encode_spans(mesh.spans())), ORIGIN)
    [event] = events(parser.flush(None))
    assert (event.destination_service, event.destination_namespace) == ("reviews.bookinfo", None)


def test_uninstrumented_callers_stay_distinct_by_address() -> None:
    mesh = Mesh()
    api = mesh.tracer("reviews", **{"k8s.namespace.name": "bookinfo"})
    mesh.call(None, api, server_attrs={"client.address": "10.0.0.7", "server.port": 9080},
              remote_parent=0x1111)
    mesh.call(None, api, start=T0 + 5 * MS, remote_parent=0x2222,
              server_attrs={"network.peer.address": "10.0.0.8", "server.port": 9080})
    parser = OtlpProtoParser()
    assert parser.parse(proto_bytes(mesh.spans()), ORIGIN) == []  # remote parents: may come
    found = events(parser.flush(None))
    assert sorted(e.source_address for e in found) == ["10.0.0.7", "10.0.0.8"]
    assert {(e.reporter, e.destination_service, e.source_workload) for e in found} == {
        ("destination", "reviews", None)}


def test_a_root_server_span_is_emitted_at_once() -> None:
    mesh = Mesh()
    mesh.call(None, mesh.tracer("gateway"), server_parent=False,
              server_attrs={"net.sock.peer.addr": "203.0.113.9"})
    [event] = events(OtlpProtoParser().parse(proto_bytes(mesh.spans()), ORIGIN))
    assert (event.reporter, event.source_address) == ("destination", "203.0.113.9")


def test_loopback_peer_from_a_sidecar_falls_back_to_client_address() -> None:
    mesh = Mesh()
    mesh.call(None, mesh.tracer("reviews"), server_parent=False,
              server_attrs={"network.peer.address": "127.0.0.6", "client.address": "10.1.1.1"})
    [event] = events(OtlpProtoParser().parse(proto_bytes(mesh.spans()), ORIGIN))
    assert event.source_address == "10.1.1.1"


def test_pending_spans_expire_after_the_ttl_in_event_time() -> None:
    mesh = mesh_with(client_attrs=NEW_CLIENT, server=False)
    parser = OtlpProtoParser(pairing_ttl=5.0)
    parser.parse(proto_bytes(mesh.spans()), ORIGIN)
    end = (T0 + 20 * MS) / 1e9
    assert parser.flush(end + 4.9) == []
    [event] = events(parser.flush(end + 5.0))
    assert event.reporter == "source"
    assert parser.pairer.evictions["clients"].expired == 1
    assert parser.flush(None) == []


def test_a_full_store_releases_its_oldest_span_as_a_single_sided_edge() -> None:
    mesh = Mesh()
    web = mesh.tracer("web")
    for i in range(3):
        mesh.call(web, None, start=T0 + i * MS, client_attrs={"peer.service": f"svc{i}"})
    parser = OtlpProtoParser(max_pending=2)
    [event] = events(parser.parse(proto_bytes(mesh.spans()), ORIGIN))
    assert event.destination_service == "svc0"
    assert parser.pairer.evictions["clients"].capacity == 1
    assert sorted(e.destination_service for e in events(parser.flush(None))) == ["svc1", "svc2"]


def test_internal_producer_consumer_spans_are_skipped_not_failed() -> None:
    from opentelemetry.trace import SpanKind

    mesh = Mesh()
    tracer = mesh.tracer("worker")
    for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER):
        tracer.start_span("work", kind=kind, start_time=T0).end(end_time=T0 + MS)
    parser = OtlpProtoParser()
    assert parser.parse(proto_bytes(mesh.spans()), ORIGIN) == []
    assert parser.skipped == 3
    assert parser.flush(None) == []


def test_a_failed_producer_is_kept_as_a_calling_side() -> None:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    mesh = Mesh()
    span = mesh.tracer("orders").start_span(
        "publish", kind=SpanKind.PRODUCER, start_time=T0,
        attributes={"server.address": "kafka.infra", "server.port": 9092})
    span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=T0 + MS)
    parser = OtlpProtoParser()
    parser.parse(proto_bytes(mesh.spans()), ORIGIN)
    [event] = events(parser.flush(None))
    assert (event.source_workload, event.destination_service) == ("orders", "kafka.infra")


def test_grpc_spans_get_path_protocol_and_an_http_status() -> None:
    attrs = {"rpc.system": "grpc", "rpc.service": "ratings.Ratings", "rpc.method": "Get",
             "rpc.grpc.status_code": 14, "server.address": "ratings.bookinfo.svc.cluster.local"}
    mesh = mesh_with(client_attrs=attrs, server=False)
    parser = OtlpProtoParser()
    parser.parse(proto_bytes(mesh.spans()), ORIGIN)
    [event] = events(parser.flush(None))
    assert (event.path, event.protocol, event.response_code) == ("/ratings.Ratings/Get",
                                                                 "HTTP/2", 503)
    assert event.destination_namespace == "bookinfo"


def test_envoy_sidecar_span_tags() -> None:
    attrs = {"upstream_cluster": "outbound|9080||reviews.bookinfo.svc.cluster.local",
             "guid:x-request-id": "r-42", "response_flags": "UF", "http.protocol": "HTTP/2",
             "istio.canonical_service": "productpage", "istio.namespace": "bookinfo"}
    mesh = Mesh()
    mesh.call(mesh.tracer("productpage.bookinfo"), None, client_attrs=attrs)
    parser = OtlpProtoParser()
    parser.parse(proto_bytes(mesh.spans()), ORIGIN)
    [event] = events(parser.flush(None))
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"
    assert (event.destination_namespace, event.destination_port) == ("bookinfo", 9080)
    assert (event.request_id, event.response_flags, event.protocol) == ("r-42", "UF", "HTTP/2")


def test_pickle_mid_stream_keeps_pending_spans() -> None:
    mesh = mesh_with(client_attrs=NEW_CLIENT, server_attrs=NEW_SERVER)
    server_span, client_span = mesh.spans()
    parser = OtlpProtoParser()
    assert parser.parse(proto_bytes([client_span]), ORIGIN) == []
    restored = pickle.loads(pickle.dumps(parser))
    [event] = events(restored.parse(proto_bytes([server_span]), ORIGIN))
    assert event.source_workload == "productpage-v1"
    # The restored store still releases on expiry (its eviction callbacks are re-attached).
    restored.parse(proto_bytes([client_span]), ORIGIN)
    assert len(events(restored.flush(T0 / 1e9 + 100))) == 1


# -- OTLP/JSON spellings -----------------------------------------------------------------------


def test_the_otlp_trace_json_example() -> None:
    parser = OtlpJsonParser()
    assert parser.parse(TRACE_JSON, ORIGIN) == []  # a SERVER span waits for its CLIENT
    [event] = events(parser.flush(None))
    assert event == EdgeEvent(
        ts=datetime(2018, 12, 13, 14, 51, tzinfo=UTC), origin="otlp_span",
        reporter="destination", destination_service="my.service",
        destination_workload="my.service", duration_ms=1000.0,
        trace_id="5b8efff798038103d269b633813fc60c")


@pytest.mark.parametrize("variant", ["upper-hex", "base64", "string-enums", "int-timestamps",
                                     "snake-case"])
def test_otlp_json_spellings(variant: str) -> None:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    mesh = mesh_with(client_attrs=NEW_CLIENT, server_attrs=NEW_SERVER)
    request = encode_spans(mesh.spans())
    if variant == "upper-hex":
        doc = otlp_json_dict(request, upper_ids=True)
    elif variant == "base64":
        doc = MessageToDict(request, use_integers_for_enums=True)
    elif variant == "string-enums":
        doc = hex_ids(MessageToDict(request))
        assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"].startswith(
            "SPAN_KIND_")
    elif variant == "int-timestamps":
        doc = otlp_json_dict(request)
        for rs in doc["resourceSpans"]:
            for span in rs["scopeSpans"][0]["spans"]:
                span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
                span["endTimeUnixNano"] = int(span["endTimeUnixNano"])
    else:
        doc = hex_ids(MessageToDict(request, use_integers_for_enums=True,
                                    preserving_proto_field_name=True))
        doc = {"resource_spans": doc["resource_spans"]}
        for rs in doc["resource_spans"]:
            for span in rs["scope_spans"][0]["spans"]:
                for key in ("trace_id", "span_id", "parent_span_id"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    [event] = events(OtlpJsonParser().parse(msgspec.json.encode(doc), ORIGIN))
    assert event.source_workload == "productpage-v1"
    assert event.trace_id == format(mesh.spans()[0].context.trace_id, "032x")


def test_otlp_json_with_resource_logs_is_read_as_logs() -> None:
    from tests.ingest.samples import ISTIO_INBOUND

    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1606339578409000000", "body": {"stringValue": ISTIO_INBOUND.decode()}}
    ]}]}]}
    [event] = events(OtlpJsonParser().parse(msgspec.json.encode(doc), ORIGIN))
    assert (event.origin, event.reporter, event.mtls) == ("otlp_log", "destination", True)


# -- malformed input -----------------------------------------------------------------------------


def failure_reasons(results: list) -> list[str]:
    assert all(isinstance(r, ParseFailure) for r in results), results
    return [r.reason for r in results]


def test_truncated_and_garbage_protobuf() -> None:
    payload = proto_bytes(mesh_with(client_attrs=NEW_CLIENT).spans())
    parser = OtlpProtoParser()
    assert failure_reasons(parser.parse(payload[: len(payload) // 2], ORIGIN)) == [
        "truncated or corrupt protobuf (not an ExportTraceServiceRequest)"]
    assert failure_reasons(parser.parse(b"\xff\xfe garbage \x00", ORIGIN)) == [
        "truncated or corrupt protobuf (not an ExportTraceServiceRequest)"]
    assert failure_reasons(parser.parse(b"", ORIGIN)) == ["empty record"]
    # Valid protobuf of some other message: field 1 as a varint, not ResourceSpans.
    assert failure_reasons(parser.parse(b"\x08\x01", ORIGIN)) == [
        "protobuf holds no resourceSpans (not an ExportTraceServiceRequest)"]


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[]", "JSON value is not an object (got list)"),
    (b"12", "JSON value is not an object (got int)"),
    (b'{"resourceSpans": [', "invalid JSON: Input data was truncated"),
    (b'{"other": 1}', "JSON object has no resourceSpans (not an ExportTraceServiceRequest)"),
    (b'{"resourceSpans": [3]}', "resourceSpans item is not an object"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "EEE19B7EC3C1B'
     b'174", "kind": 2, "startTimeUnixNano": "1544712660000000000"}]}]}]}',
     "span 1: traceId 'zz' is neither 32 hex digits nor base64"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5B8EFFF798038103D269B633813FC'
     b'60C", "spanId": "EEE19B7EC3C1B174", "kind": 2, "startTimeUnixNano": "17"}]}]}]}',
     "span 1: timestamp out of range: startTimeUnixNano 17 ns (accepted: 2000..2100)"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5B8EFFF798038103D269B633813FC'
     b'60C", "spanId": "EEE19B7EC3C1B174", "kind": "SPAN_KIND_WEIRD"}]}]}]}',
     "span 1: kind: unknown value 'SPAN_KIND_WEIRD'"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 3, "startTimeUnixNano": '
     b'"1544712660000000000"}]}]}]}', "span 1: span has no traceId/spanId"),
])
def test_malformed_otlp_json(payload: bytes, reason: str) -> None:
    assert failure_reasons(OtlpJsonParser().parse(payload, ORIGIN)) == [reason]


def test_one_bad_span_does_not_spoil_its_batch() -> None:
    doc = msgspec.json.decode(TRACE_JSON)
    good = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    bad = {**good, "spanId": "not-an-id"}
    root = {**good, "parentSpanId": "", "spanId": "EEE19B7EC3C1B175"}
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = [bad, root]
    results = OtlpJsonParser().parse(msgspec.json.encode(doc), ORIGIN)
    assert [type(r).__name__ for r in results] == ["ParseFailure", "EdgeEvent"]
    assert results[0].reason.startswith("span 1: spanId 'not-an-id'")


def test_out_of_range_span_start_in_protobuf() -> None:
    from opentelemetry.trace import SpanKind

    mesh = Mesh()
    span = mesh.tracer("x").start_span("old", kind=SpanKind.SERVER, start_time=5)
    span.end(end_time=10)
    assert failure_reasons(OtlpProtoParser().parse(proto_bytes(mesh.spans()), ORIGIN)) == [
        "span 1: timestamp out of range: startTimeUnixNano 5 ns (accepted: 2000..2100)"]


def test_oversized_payload_is_refused_before_decoding() -> None:
    payload = b"\x0a" + b"\x00" * (1024 * 1024 + 1)
    [reason] = failure_reasons(OtlpProtoParser().parse(payload, ORIGIN))
    assert reason.endswith("over the 1048576 byte (1 MiB) limit")


def test_two_server_spans_under_one_parent_are_both_kept() -> None:
    mesh = Mesh()
    api = mesh.tracer("reviews")
    mesh.call(None, api, server_attrs={"client.address": "10.0.0.7"})
    mesh.call(None, api, start=T0 + 5 * MS, server_attrs={"client.address": "10.0.0.8"})
    parser = OtlpProtoParser()
    released = events(parser.parse(proto_bytes(mesh.spans()), ORIGIN))
    pending = events(parser.flush(None))
    assert sorted(e.source_address for e in released + pending) == ["10.0.0.7", "10.0.0.8"]
