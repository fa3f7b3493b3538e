"""envoy-json: both real JSON shapes, Istio's plain keys, custom json_format, malformed input."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ingest.parsers.envoy_json import EnvoyJsonParser
from meshwatch.formats import ISTIO_JSON_FORMAT
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from meshwatch.settings import ConfigError
from tests.ingest.samples import INBOUND, OUTBOUND, PLAINTEXT_INBOUND, json_record

ORIGIN = Origin("envoy.access", 42, partition=3)

EXPECTED_INBOUND = EdgeEvent(
    ts=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC), origin="envoy_json",
    reporter="destination", source_namespace="bookinfo",
    source_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
    source_address="10.244.1.5", destination_service="reviews.bookinfo.svc.cluster.local",
    destination_workload="reviews-v2", destination_namespace="bookinfo",
    destination_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
    destination_port=9080, protocol="HTTP/1.1", method="GET", path="/reviews/0",
    response_code=200, bytes_sent=0, bytes_received=358, duration_ms=12.0, mtls=True,
    tls_version="TLSv1.3", peer_cert_not_after=datetime(2024, 5, 2, 9, 12, 33, tzinfo=UTC),
    request_id="6a1c3b5e-1f0e-4d3c-9b8a-7e6f5d4c3b2a",
)


def one(parser: EnvoyJsonParser, payload: bytes) -> EdgeEvent:
    [result] = parser.parse(payload, ORIGIN)
    assert isinstance(result, EdgeEvent), result
    return result


def fail(parser: EnvoyJsonParser, payload: bytes) -> str:
    [result] = parser.parse(payload, ORIGIN)
    assert isinstance(result, ParseFailure), result
    assert (result.origin, result.format, result.payload) == (ORIGIN, "envoy-json", payload)
    return result.reason


@pytest.mark.parametrize("typed", [True, False], ids=["typed-with-null", "strings-with-dash"])
def test_both_real_json_shapes_give_the_same_event(typed: bool) -> None:
    assert one(EnvoyJsonParser(), json_record(INBOUND, typed=typed)) == EXPECTED_INBOUND


@pytest.mark.parametrize("typed", [True, False], ids=["typed-with-null", "strings-with-dash"])
def test_plaintext_inbound_in_both_shapes(typed: bool) -> None:
    event = one(EnvoyJsonParser(), json_record(PLAINTEXT_INBOUND, typed=typed))
    assert (event.reporter, event.mtls, event.source_principal) == ("destination", False, None)
    assert event.tls_version is None and event.peer_cert_not_after is None


def test_outbound_json_record() -> None:
    event = one(EnvoyJsonParser(), json_record(OUTBOUND))
    assert (event.reporter, event.mtls) == ("source", None)
    assert (event.source_workload, event.source_namespace) == ("productpage-v1", "bookinfo")
    assert event.destination_principal == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"


def test_istio_plain_json_keys_parse_with_the_default_mapping() -> None:
    # Istio's own JSON encoding (no identity keys): mTLS from the inbound SNI alone.
    record = json_record(INBOUND, json_format=ISTIO_JSON_FORMAT)
    event = one(EnvoyJsonParser(), record)
    assert (event.reporter, event.mtls, event.source_principal) == ("destination", True, None)
    assert event.destination_workload is None
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"


def test_istio_plain_json_without_sni_is_plaintext() -> None:
    record = json_record(PLAINTEXT_INBOUND, json_format=ISTIO_JSON_FORMAT)
    assert one(EnvoyJsonParser(), record).mtls is False


def test_custom_json_format_maps_any_keys() -> None:
    json_format = {"@timestamp": "%START_TIME%", "status": "%RESPONSE_CODE%",
                   "cluster": "%UPSTREAM_CLUSTER%", "client": "%DOWNSTREAM_PEER_URI_SAN%",
                   "peer": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                   "x-request-id": "%REQ(X-REQUEST-ID)%", "note": "static text",
                   "combo": "%PROTOCOL% %RESPONSE_FLAGS%"}
    payload = msgspec.json.encode({
        "@timestamp": "2024-05-01T10:00:00Z", "status": 403, "cluster": "inbound|8080||",
        "client": "cluster.local/ns/dev/sa/debug", "peer": "10.9.8.7",
        "x-request-id": "r-1", "note": "static text", "combo": "HTTP/2 -", "extra": [1, 2]})
    event = one(EnvoyJsonParser(json_format), payload)
    assert event.response_code == 403
    assert event.source_principal == "spiffe://cluster.local/ns/dev/sa/debug"
    assert (event.source_namespace, event.source_address) == ("dev", "10.9.8.7")
    assert (event.reporter, event.mtls, event.request_id) == ("destination", True, "r-1")
    assert event.protocol is None  # only inside a composite value: not readable


def test_custom_json_format_with_unknown_operator_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"json_format key 'code': unknown Envoy command "
                                          r"operator %RESPONSE_CODES%"):
        EnvoyJsonParser({"start_time": "%START_TIME%", "code": "%RESPONSE_CODES%"})
    with pytest.raises(ConfigError, match="maps no key meshwatch can use"):
        EnvoyJsonParser({"host": "%HOSTNAME%"})


def test_missing_keys_are_unknown_not_unset() -> None:
    # A record of a smaller format: no TLS evidence keys at all -> mtls unknown, not False.
    payload = b'{"start_time": "2024-05-01T10:00:00Z", "upstream_cluster": "inbound|80||"}'
    event = one(EnvoyJsonParser(), payload)
    assert (event.reporter, event.mtls, event.protocol) == ("destination", None, None)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[1, 2, 3]", "JSON value is not an object (got `array`)"),
    (b"42", "JSON value is not an object (got `int`)"),
    (b'"text"', "JSON value is not an object (got `str`)"),
    (b"null", "JSON value is not an object (got `null`)"),
    (b'{"start_time": "2024-05-01T10:00:00Z", "response_code": 2', "invalid JSON: Input data "
                                                                  "was truncated"),
    (b"{}", "JSON object has none of the access-log keys (start_time, method, path, "
            "protocol, ...)"),
    (b'{"start_time": "2024-05-01T10:00:00Z", "response_code": "abc"}',
     "key 'response_code' (RESPONSE_CODE): expected an integer, got 'abc'"),
    (b'{"start_time": "2024-05-01T10:00:00Z", "bytes_sent": true}',
     "key 'bytes_sent' (BYTES_SENT): expected an integer, got True"),
    (b'{"start_time": 17, "response_code": 200}',
     "key 'start_time' (START_TIME): expected an ISO 8601 timestamp, got 17"),
    (b'{"start_time": "1970-01-01T00:00:00Z", "response_code": 200}',
     "timestamp out of range: 1970-01-01T00:00:00+00:00 (accepted: 2000..2100)"),
    (b'{"response_code": 200}',
     "record has no start time (START_TIME is unset or not in the format)"),
])
def test_malformed_json_is_a_failure_with_a_reason(payload: bytes, reason: str) -> None:
    assert fail(EnvoyJsonParser(), payload) == reason


def test_invalid_utf8_and_garbage_bytes() -> None:
    assert fail(EnvoyJsonParser(), b'{"start_time": "\xff\xfe"}').startswith("invalid JSON")
    assert fail(EnvoyJsonParser(), b"\x00\x01\x02garbage").startswith("invalid JSON")


def test_two_keys_for_one_field_first_value_wins() -> None:
    json_format = {"start_time": "%START_TIME%", "@timestamp": "%START_TIME%",
                   "code": "%RESPONSE_CODE%", "status": "%RESPONSE_CODE%",
                   "sni": "%REQUESTED_SERVER_NAME%", "cluster": "%UPSTREAM_CLUSTER%"}
    parser = EnvoyJsonParser(json_format)
    event = one(parser, b'{"@timestamp": "2024-05-01T10:00:00Z", "code": null, "status": "404",'
                        b' "cluster": "inbound|80||", "sni": "-"}')
    assert (event.ts, event.response_code) == (datetime(2024, 5, 1, 10, tzinfo=UTC), 404)
    assert event.mtls is False  # the SNI key is there and unset: plaintext evidence
    event = one(parser, b'{"start_time": "2024-05-01T10:00:00Z", "code": 200, "status": 500,'
                        b' "cluster": "inbound|80||"}')
    assert (event.response_code, event.mtls) == (200, None)  # no SNI key at all: unknown
