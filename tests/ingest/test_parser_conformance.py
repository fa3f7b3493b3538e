"""The parser contract, checked for EVERY registered parser (DESIGN.md habit 3).

A parser registered tomorrow is tested here the moment it registers: it must give samples in
`SAMPLES`, and then it must return lists of EdgeEvent/ParseFailure, never raise (whatever the
bytes), release held state on ``flush(None)`` and survive a pickle round trip mid-stream with
its pending state intact.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.parsers import PARSERS, Parser
from ingest.parsers.common import INTERNAL_ERROR
from ingest.parsers.edge_event import encode_event
from meshwatch.records import EDGE_EVENT_FIELDS, EdgeEvent, Origin, ParseFailure
from tests.ingest.otlp_helpers import Mesh, otlp_json, proto_bytes
from tests.ingest.samples import (
    ENVOY_DEFAULT,
    INBOUND,
    ISTIO_INBOUND,
    ISTIO_OUTBOUND,
    OUTBOUND,
    PLAINTEXT_INBOUND,
    TRACE_JSON,
    ZTUNNEL_ERROR,
    ZTUNNEL_INBOUND,
    ZTUNNEL_OUTBOUND,
    json_record,
    text_line,
)

ORIGIN = Origin("conformance", 1)
ORIGINS = {"envoy_text", "envoy_json", "otlp_log", "ztunnel", "otlp_span"}


@cache
def span_payloads() -> tuple[list[bytes], list[bytes]]:
    """(protobuf, OTLP/JSON) payloads: a CLIENT span, then its SERVER child, separately."""
    mesh = Mesh()
    mesh.call(mesh.tracer("web", **{"k8s.namespace.name": "shop"}),
              mesh.tracer("cart", **{"k8s.namespace.name": "shop"}),
              client_attrs={"server.address": "cart.shop", "http.request.method": "GET"},
              server_attrs={"network.peer.address": "10.0.0.9", "url.path": "/cart"})
    server, client = mesh.spans()
    ordered = [client, server]
    return ([proto_bytes([s]) for s in ordered],
            [otlp_json(encode_spans([s])) for s in ordered])


def log_payload() -> bytes:
    message = ExportLogsServiceRequest()
    records = message.resource_logs.add().scope_logs.add()
    for line in (ISTIO_OUTBOUND, ISTIO_INBOUND):
        records.log_records.add(time_unix_nano=1_606_339_578_409_000_000).body.string_value = (
            line.decode())
    return message.SerializeToString()


def samples(name: str) -> list[bytes]:
    """Valid records of the format, in stream order (span parsers: a pair split in two)."""
    proto, json_spans = span_payloads()
    text = [ISTIO_OUTBOUND, ISTIO_INBOUND, ENVOY_DEFAULT, text_line(INBOUND),
            text_line(OUTBOUND)]
    table = {
        "envoy-text": text,
        "envoy-json": [json_record(INBOUND), json_record(PLAINTEXT_INBOUND, typed=False),
                       json_record(OUTBOUND)],
        "otlp-log": [log_payload(), otlp_json(ExportLogsServiceRequest.FromString(
            log_payload()))],
        "otlp-proto": proto,
        "otlp-json": [*json_spans, TRACE_JSON],
        "ztunnel": [ZTUNNEL_INBOUND.encode(), ZTUNNEL_OUTBOUND.encode(), ZTUNNEL_ERROR.encode()],
        "edge-event": [encode_event(event) for record in text for event in
                       PARSERS.get("envoy-text")().parse(record, ORIGIN)],
    }
    table["auto"] = [proto[0], json_spans[1], *text[:3], table["envoy-json"][0],
                     table["ztunnel"][0], table["otlp-log"][0]]
    if name not in table:
        pytest.fail(f"parser {name!r} is registered but has no samples in SAMPLES: add some")
    return table[name]


NAMES = PARSERS.names()


def test_every_format_name_of_the_settings_is_registered() -> None:
    from meshwatch.settings import FORMAT_NAMES

    assert set(FORMAT_NAMES) <= set(NAMES)


def check_results(results: object, name: str) -> None:
    """The output contract: a list of events/failures, each well-formed."""
    assert isinstance(results, list)
    for item in results:
        assert isinstance(item, EdgeEvent | ParseFailure), item
        if isinstance(item, ParseFailure):
            assert item.reason and not item.reason.startswith(INTERNAL_ERROR), item.reason
            assert item.format in NAMES
            continue
        check_event(item)


def check_event(event: EdgeEvent) -> None:
    assert event.ts.tzinfo is not None and event.ts.utcoffset().total_seconds() == 0
    assert datetime(2000, 1, 1, tzinfo=UTC) <= event.ts < datetime(2100, 1, 1, tzinfo=UTC)
    assert event.origin in ORIGINS
    assert event.reporter in ("source", "destination", "unknown")
    if event.reporter != "destination":
        assert event.mtls is None  # only a destination can tell (DESIGN.md trap)
    assert sorted(event.to_dict()) == sorted(EDGE_EVENT_FIELDS)
    for principal in (event.source_principal, event.destination_principal):
        assert principal is None or "://" in principal
    if event.trace_id is not None:
        assert len(event.trace_id) == 32 and event.trace_id == event.trace_id.lower()
    if event.source_address is not None:
        assert not event.source_address.startswith("[")


@pytest.mark.parametrize("name", NAMES)
def test_protocol_and_samples_parse(name: str) -> None:
    parser = PARSERS.get(name)()
    assert isinstance(parser, Parser)
    assert parser.name == name
    produced: list[EdgeEvent] = []
    for payload in samples(name):
        results = parser.parse(payload, ORIGIN)
        check_results(results, name)
        assert not [r for r in results if isinstance(r, ParseFailure)], results
        produced += results
    tail = parser.flush(None)
    check_results(tail, name)
    produced += tail
    assert produced, f"{name}: the samples produced no event"
    assert parser.flush(None) == []  # flush(None) empties held state


@pytest.mark.parametrize("name", NAMES)
def test_pickle_mid_stream_changes_nothing(name: str) -> None:
    stream = samples(name)
    straight = PARSERS.get(name)()
    expected = [r for payload in stream for r in straight.parse(payload, ORIGIN)]
    expected += straight.flush(None)
    resumed = PARSERS.get(name)()
    got = list(resumed.parse(stream[0], ORIGIN))
    resumed = pickle.loads(pickle.dumps(resumed))  # e.g. a CLIENT span is pending here
    for payload in stream[1:]:
        got += resumed.parse(payload, ORIGIN)
    got += resumed.flush(None)
    assert got == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("payload", [
    b"\x00\x01garbage\xff", b"\xff\xfe\xfd", b"{", b"[1, 2]", b"12", b'"str"', b"   ",
    b"\n\x05\x0a\x03\x0a\x01", b"A" * 1024,
], ids=["garbage", "non-utf8", "truncated-json", "json-array", "json-number", "json-string",
        "blank", "truncated-protobuf", "letters"])
def test_bad_bytes_are_failures_with_reasons(name: str, payload: bytes) -> None:
    results = PARSERS.get(name)().parse(payload, ORIGIN)
    check_results(results, name)
    assert results and all(isinstance(r, ParseFailure) for r in results), results
    assert all(r.payload == payload and r.origin == ORIGIN for r in results)


@pytest.mark.parametrize("name", NAMES)
def test_oversized_records_are_refused_unparsed(name: str) -> None:
    payload = samples(name)[0] + b" " * (1024 * 1024)
    [failure] = PARSERS.get(name)().parse(payload, ORIGIN)
    assert isinstance(failure, ParseFailure)
    assert failure.reason.endswith("over the 1048576 byte (1 MiB) limit")
    assert len(failure.payload) == 64 * 1024  # dead letters keep a capped copy


@st.composite
def mutated(draw: st.DrawFn, pool: tuple[bytes, ...]) -> bytes:
    """A real sample with byte flips, truncations, insertions, deletions and splices."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8)
                               | st.sampled_from([b'"', b" ", b"-", b"\n", b"{", b"%", b"|"]))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            other = draw(st.sampled_from(pool))
            data[at:] = other[draw(st.integers(0, len(other))):]
    return bytes(data)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_samples_never_raise(name: str) -> None:
    parser = PARSERS.get(name)()
    pool = tuple(samples(name))  # built outside the strategy (the SDK draws random ids)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=mutated(pool))
    def run(payload: bytes) -> None:
        check_results(parser.parse(payload, ORIGIN), name)

    run()
    check_results(parser.flush(None), name)
