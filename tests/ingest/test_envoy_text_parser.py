"""envoy-text: golden events for the real Istio/Envoy samples, meshwatch's and custom formats."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.parsers.envoy_text import EnvoyTextParser
from meshwatch.formats import ENVOY_DEFAULT_FORMAT, ISTIO_DEFAULT_TEXT_FORMAT
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from meshwatch.settings import ConfigError
from tests.ingest.samples import (
    ENVOY_DEFAULT,
    INBOUND,
    ISTIO_INBOUND,
    ISTIO_OUTBOUND,
    OUTBOUND,
    PLAINTEXT_INBOUND,
    render,
    text_line,
)

ORIGIN = Origin("access.log", 1)
TS_2020 = datetime(2020, 11, 25, 21, 26, 18, 409000, tzinfo=UTC)


def one(parser: EnvoyTextParser, line: bytes) -> EdgeEvent:
    [result] = parser.parse(line, ORIGIN)
    assert isinstance(result, EdgeEvent), result
    return result


def fail(parser: EnvoyTextParser, line: bytes) -> str:
    [result] = parser.parse(line, ORIGIN)
    assert isinstance(result, ParseFailure), result
    assert result.origin == ORIGIN and result.format == "envoy-text"
    return result.reason


def test_istio_outbound_line_is_the_callers_view_with_unknown_mtls() -> None:
    event = one(EnvoyTextParser(), ISTIO_OUTBOUND)
    assert event == EdgeEvent(
        ts=TS_2020, origin="envoy_text", reporter="source",
        source_address="10.44.1.23",
        destination_service="httpbin.foo.svc.cluster.local", destination_namespace="foo",
        destination_port=8000, protocol="HTTP/1.1", method="GET", path="/status/418",
        response_code=418, response_flags=None, bytes_sent=0, bytes_received=135,
        duration_ms=4.0, mtls=None, request_id="84961386-6d84-929d-98bd-c5aee93b5c88",
    )


def test_istio_inbound_line_is_the_destinations_view_with_mtls_from_the_sni() -> None:
    event = one(EnvoyTextParser(), ISTIO_INBOUND)
    assert event == EdgeEvent(
        ts=TS_2020, origin="envoy_text", reporter="destination",
        source_address="10.44.1.23",
        destination_service="httpbin.foo.svc.cluster.local", destination_namespace="foo",
        destination_port=8000, protocol="HTTP/1.1", method="GET", path="/status/418",
        response_code=418, bytes_sent=0, bytes_received=135, duration_ms=3.0, mtls=True,
        request_id="84961386-6d84-929d-98bd-c5aee93b5c88",
    )


def test_envoy_default_line_has_no_cluster_so_reporter_and_mtls_are_unknown() -> None:
    event = one(EnvoyTextParser(), ENVOY_DEFAULT)
    assert event == EdgeEvent(
        ts=datetime(2016, 4, 15, 20, 17, 0, 310000, tzinfo=UTC), origin="envoy_text",
        reporter="unknown", destination_service="locations", destination_port=80,
        protocol="HTTP/2", method="POST", path="/api/v1/locations", response_code=204,
        bytes_sent=154, bytes_received=0, duration_ms=226.0, mtls=None,
        request_id="cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
    )


def test_a_configured_istio_format_parses_the_istio_lines_only() -> None:
    parser = EnvoyTextParser(ISTIO_DEFAULT_TEXT_FORMAT)
    assert one(parser, ISTIO_INBOUND).mtls is True
    assert fail(parser, ENVOY_DEFAULT).startswith("line does not match the format string: ")


def test_meshwatch_format_inbound_carries_identity_tls_and_certificate() -> None:
    event = one(EnvoyTextParser(), text_line(INBOUND))
    assert event == EdgeEvent(
        ts=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC), origin="envoy_text",
        reporter="destination",
        source_namespace="bookinfo",
        source_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
        source_address="10.244.1.5",
        destination_service="reviews.bookinfo.svc.cluster.local",
        destination_workload="reviews-v2", destination_namespace="bookinfo",
        destination_principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
        destination_port=9080, protocol="HTTP/1.1", method="GET", path="/reviews/0",
        response_code=200, bytes_sent=0, bytes_received=358, duration_ms=12.0, mtls=True,
        tls_version="TLSv1.3",
        peer_cert_not_after=datetime(2024, 5, 2, 9, 12, 33, tzinfo=UTC),
        request_id="6a1c3b5e-1f0e-4d3c-9b8a-7e6f5d4c3b2a",
    )


def test_meshwatch_format_outbound_names_the_caller_pod_and_the_callee_principal() -> None:
    event = one(EnvoyTextParser(), text_line(OUTBOUND))
    assert (event.reporter, event.mtls, event.tls_version) == ("source", None, None)
    assert event.source_workload == "productpage-v1"
    assert event.source_namespace == "bookinfo"
    assert event.source_address == "10.244.1.5"
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"
    assert event.destination_principal == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    assert event.destination_port == 9080
    assert event.peer_cert_not_after is None


def test_inbound_without_sni_san_or_tls_is_plaintext() -> None:
    event = one(EnvoyTextParser(), text_line(PLAINTEXT_INBOUND))
    assert event.reporter == "destination"
    assert event.mtls is False
    assert event.source_principal is None
    assert event.source_address == "10.244.3.77"
    # No SNI: the service comes from the authority, resolved in the pod's namespace.
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"


def test_outbound_records_never_claim_plaintext_whatever_they_say() -> None:
    # A caller's record with TLS fields unset still must not say mtls=False (DESIGN.md trap).
    values = {**OUTBOUND, "DOWNSTREAM_TLS_VERSION": "-", "REQUESTED_SERVER_NAME": "-"}
    assert one(EnvoyTextParser(), text_line(values)).mtls is None
    values = {**OUTBOUND, "DOWNSTREAM_TLS_VERSION": "TLSv1.2"}
    assert one(EnvoyTextParser(), text_line(values)).mtls is None


def test_a_format_without_tls_fields_cannot_say_plaintext() -> None:
    fmt = "[%START_TIME%] %RESPONSE_CODE% %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS%"
    event = one(EnvoyTextParser(fmt), b"[2024-05-01T10:00:00Z] 200 inbound|80|| 10.1.2.3:5555")
    assert (event.reporter, event.mtls, event.destination_port) == ("destination", None, 80)


@pytest.mark.parametrize(("cluster", "reporter"), [
    ("PassthroughCluster", "source"),
    ("BlackHoleCluster", "source"),
    ("InboundPassthroughCluster", "destination"),
    ("InboundPassthroughClusterIpv4", "destination"),
    ("outbound|9080|v2|reviews.bookinfo.svc.cluster.local", "source"),
    ("inbound|9080|http|reviews.bookinfo.svc.cluster.local", "destination"),
    ("some-static-cluster", "unknown"),
])
def test_istio_cluster_names_decide_the_reporter(cluster: str, reporter: str) -> None:
    values = {**PLAINTEXT_INBOUND, "UPSTREAM_CLUSTER_RAW": cluster}
    assert one(EnvoyTextParser(), text_line(values)).reporter == reporter


def test_passthrough_calls_name_what_the_caller_asked_for() -> None:
    values = {**OUTBOUND, "UPSTREAM_CLUSTER_RAW": "PassthroughCluster",
              "UPSTREAM_HOST": "140.82.112.3:443", "REQ(:AUTHORITY)": "api.github.com"}
    event = one(EnvoyTextParser(), text_line(values))
    assert (event.destination_service, event.destination_port) == ("api.github.com", 443)
    values["REQ(:AUTHORITY)"] = "-"
    event = one(EnvoyTextParser(), text_line(values))
    assert (event.destination_service, event.destination_port) == ("140.82.112.3", 443)


def test_tcp_records_have_protocol_tcp_and_code_zero() -> None:
    values = {**INBOUND, "REQ(:METHOD)": "-", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "-",
              "PROTOCOL": "-", "RESPONSE_CODE": "0", "REQ(:AUTHORITY)": "-",
              "RESPONSE_FLAGS": "UF,URX"}
    event = one(EnvoyTextParser(), text_line(values))
    assert (event.protocol, event.method, event.response_code) == ("tcp", None, 0)
    assert event.response_flags == "UF,URX"
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"  # from the SNI


def test_custom_format_string_with_quotes_spaces_strftime_and_percent() -> None:
    fmt = ('%START_TIME(%Y/%m/%d %H:%M:%S.%3f %z)% 100%% "%REQ(USER-AGENT)%" %RESPONSE_CODE% '
           '%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% "%REQ(TRACEPARENT)%" '
           "%UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN% %REQ(:AUTHORITY):10%\n")
    line = (b'2024/05/01 12:00:00.250 +0200 100% "curl/8.5 (evil "x" y)" 503 10.1.2.3 '
            b'"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01" inbound|8080|| '
            b"cluster.local/ns/web/sa/frontend api:8080")
    event = one(EnvoyTextParser(fmt), line)
    assert event.ts == datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert event.response_code == 503
    assert event.source_address == "10.1.2.3"
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.source_principal == "spiffe://cluster.local/ns/web/sa/frontend"
    assert (event.reporter, event.mtls, event.destination_port) == ("destination", True, 8080)


def test_epoch_start_time_and_b3_trace_ids() -> None:
    fmt = "%START_TIME(%s.%6f)% %RESPONSE_CODE% %REQ(X-B3-TRACEID)%"
    event = one(EnvoyTextParser(fmt), b"1714557600.123456 200 463ac35c9f6413ad")
    assert event.ts == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert event.trace_id == "0000000000000000463ac35c9f6413ad"


def test_xfcc_names_the_caller_only_over_mtls() -> None:
    fmt = ('[%START_TIME%] %UPSTREAM_CLUSTER% %REQUESTED_SERVER_NAME% '
           '"%REQ(X-FORWARDED-CLIENT-CERT)%"')
    xfcc = ('By=spiffe://cluster.local/ns/shop/sa/cart;Hash=abc;Subject="";'
            "URI=spiffe://cluster.local/ns/shop/sa/web")
    sni = "outbound_.80_._.cart.shop.svc.cluster.local"
    mtls = one(EnvoyTextParser(fmt),
               f'[2024-05-01T10:00:00Z] inbound|80|| {sni} "{xfcc}"'.encode())
    assert mtls.source_principal == "spiffe://cluster.local/ns/shop/sa/web"
    forged = one(EnvoyTextParser(fmt), f'[2024-05-01T10:00:00Z] inbound|80|| - "{xfcc}"'.encode())
    assert (forged.mtls, forged.source_principal) == (False, None)


def test_crlf_and_trailing_newline_are_tolerated() -> None:
    assert one(EnvoyTextParser(), ISTIO_INBOUND + b"\r\n").mtls is True


def test_known_formats_are_tried_in_turn_on_a_mixed_stream() -> None:
    parser = EnvoyTextParser()
    lines = [ISTIO_INBOUND, ENVOY_DEFAULT, text_line(INBOUND), ISTIO_OUTBOUND, ENVOY_DEFAULT]
    reporters = [one(parser, line).reporter for line in lines]
    assert reporters == ["destination", "unknown", "destination", "source", "unknown"]


# -- failures: values with reasons, never exceptions -------------------------------------------


def test_bad_integer_field_names_field_number_and_operator() -> None:
    line = ISTIO_INBOUND.replace(b'HTTP/1.1" 418 ', b'HTTP/1.1" abc ')
    assert fail(EnvoyTextParser(), line) == (
        "field 5 (RESPONSE_CODE): expected an integer, got 'abc'")


def test_bad_timestamp_field() -> None:
    line = ISTIO_INBOUND.replace(b"2020-11-25T21:26:18.409Z", b"yesterday")
    assert fail(EnvoyTextParser(), line) == (
        "field 1 (START_TIME): expected an ISO 8601 timestamp, got 'yesterday'")


@pytest.mark.parametrize("stamp", [b"1999-12-31T23:59:59.999Z", b"2100-01-01T00:00:00.000Z",
                                   b"0001-01-01T00:00:00.000Z"])
def test_timestamps_outside_2000_2100_are_rejected(stamp: bytes) -> None:
    line = ISTIO_INBOUND.replace(b"2020-11-25T21:26:18.409Z", stamp)
    assert fail(EnvoyTextParser(), line).startswith("timestamp out of range: ")


def test_garbage_says_no_known_format_and_where_the_closest_one_differs() -> None:
    reason = fail(EnvoyTextParser(), b"GET /index.html 200")
    assert reason.startswith("line matches no known Envoy format; set format_string")
    assert "expected '['" in reason


def test_truncated_line_names_the_field_where_it_stops() -> None:
    reason = fail(EnvoyTextParser(ISTIO_DEFAULT_TEXT_FORMAT), ISTIO_INBOUND[:60])
    assert reason == ("line does not match the format string: expected ' ' after field 7 "
                      "(RESPONSE_CODE_DETAILS) at column 61, found ''")


def test_invalid_utf8_empty_and_oversized_records() -> None:
    parser = EnvoyTextParser()
    assert fail(parser, b"[2020-11-25T21:26:18.409Z] \xff\xfe") == "invalid UTF-8 at byte 27"
    assert fail(parser, b"   ") == "empty record"
    huge = ISTIO_INBOUND + b" " * (1024 * 1024)
    assert fail(parser, huge) == f"record is {len(huge)} bytes, over the 1048576 byte (1 MiB) limit"


def test_unknown_operator_fails_at_construction_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown Envoy command operator %RESPONSE_COED%"):
        EnvoyTextParser("[%START_TIME%] %RESPONSE_COED%")


def test_envoy_default_format_renders_back_to_the_sample() -> None:
    # The sample renderer and the compiler agree on the real Envoy default format.
    values = {"START_TIME": "2016-04-15T20:17:00.310Z", "REQ(:METHOD)": "POST",
              "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/api/v1/locations", "PROTOCOL": "HTTP/2",
              "RESPONSE_CODE": "204", "BYTES_RECEIVED": "154", "BYTES_SENT": "0",
              "DURATION": "226", "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": "100",
              "REQ(X-FORWARDED-FOR)": "10.0.35.28", "REQ(USER-AGENT)": "nsq2http",
              "REQ(X-REQUEST-ID)": "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
              "REQ(:AUTHORITY)": "locations", "UPSTREAM_HOST": "tcp://10.0.2.1:80"}
    assert render(ENVOY_DEFAULT_FORMAT, values) == ENVOY_DEFAULT


@pytest.mark.parametrize("agent", ['Mozilla "x" "y', 'x" "y" "z', '" "'])
def test_a_header_holding_the_closing_quote_cannot_hide_a_call(agent: str) -> None:
    # Envoy does not escape header values, so a User-Agent with '" "' in it shifts the quoted
    # fields and the fast expression rejects the line. It must still become an event, with the
    # identity fields (unquoted, written by the proxy, after the quoted block) right. Which of
    # the caller-controlled quoted fields absorbs the extra quotes is undecidable.
    values = {**INBOUND, "REQ(USER-AGENT)": agent}
    event = one(EnvoyTextParser(), text_line(values))
    assert event.source_principal == INBOUND["DOWNSTREAM_PEER_URI_SAN"]
    assert event.source_address == "10.244.1.5"
    assert event.destination_service == "reviews.bookinfo.svc.cluster.local"
    assert (event.reporter, event.mtls, event.destination_port) == ("destination", True, 9080)


def test_hostile_lines_cost_bounded_time() -> None:
    import time

    parser = EnvoyTextParser()
    hostile = [
        ISTIO_INBOUND.replace(b'"curl/7.73.0-DEV"', b'"' + b'" "' * 5000 + b'"') + b" x",
        b"[" + b'" "' * 300_000 + b"]",
        b'[2020-11-25T21:26:18.409Z] "' + b"a" * 1_000_000,
    ]
    started = time.perf_counter()
    for line in hostile:
        [result] = parser.parse(line, ORIGIN)
        assert isinstance(result, ParseFailure)
    assert time.perf_counter() - started < 2.0


def test_two_operators_for_one_field_first_value_wins() -> None:
    fmt = ("%START_TIME% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
           "%UPSTREAM_CLUSTER% %REQUESTED_SERVER_NAME%")
    parser = EnvoyTextParser(fmt)
    event = one(parser, b"2024-05-01T10:00:00Z - 10.1.1.1 inbound|80|| -")
    assert (event.source_address, event.mtls) == ("10.1.1.1", False)
    event = one(parser, b"2024-05-01T10:00:00Z 10.2.2.2:5 10.1.1.1 inbound|80|| -")
    assert event.source_address == "10.2.2.2"


def test_line_endings_do_not_leave_the_fast_path() -> None:
    parser = EnvoyTextParser()
    one(parser, ISTIO_INBOUND)
    fast = parser._fields.fullmatch
    assert one(parser, ISTIO_OUTBOUND + b"\r\n").reporter == "source"
    assert parser._fields.fullmatch is fast  # no fallback to trying every known format
