"""ztunnel: Istio ambient L4 access logs, inbound/outbound/error, text and JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ingest.parsers.ztunnel import ZtunnelParser, duration_ms
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from tests.ingest.samples import ZTUNNEL_ERROR as ERROR
from tests.ingest.samples import ZTUNNEL_INBOUND as INBOUND
from tests.ingest.samples import ZTUNNEL_OUTBOUND as OUTBOUND
from tests.ingest.samples import ZTUNNEL_PLAINTEXT as PLAINTEXT

ORIGIN = Origin("ztunnel.log", 9)
END = datetime(2024, 5, 3, 16, 53, 43, 372364, tzinfo=UTC)


def one(line: str | bytes) -> EdgeEvent:
    payload = line.encode() if isinstance(line, str) else line
    [result] = ZtunnelParser().parse(payload, ORIGIN)
    assert isinstance(result, EdgeEvent), result
    return result


def test_inbound_line_golden() -> None:
    assert one(INBOUND) == EdgeEvent(
        ts=END - timedelta(milliseconds=2), origin="ztunnel", reporter="destination",
        source_workload="sleep", source_namespace="default",
        source_principal="spiffe://cluster.local/ns/default/sa/sleep",
        source_address="10.244.1.5",
        destination_service="productpage.default.svc.cluster.local",
        destination_workload="productpage-v1", destination_namespace="default",
        destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        destination_port=9080, protocol="tcp", bytes_sent=81, bytes_received=1839,
        duration_ms=2.0, mtls=True,
    )


def test_outbound_line_with_bare_values_has_unknown_mtls() -> None:
    event = one(OUTBOUND)
    assert (event.reporter, event.mtls, event.duration_ms) == ("source", None, 2.5)
    # The caller's ztunnel counts from the same downstream view: request bytes are 'recv'.
    assert (event.bytes_sent, event.bytes_received) == (1839, 81)
    assert event.source_principal == "spiffe://cluster.local/ns/default/sa/sleep"


def test_error_line_keeps_the_error_and_the_statefulset_workload() -> None:
    event = one(ERROR)
    assert event.response_flags == ("connection closed due to policy rejection: explicitly "
                                    "denied by: db/deny-sleep")
    assert (event.destination_workload, event.destination_port) == ("mysql", 3306)
    assert (event.mtls, event.duration_ms) == (True, 0.0)


def test_inbound_without_source_identity_is_plaintext_into_the_mesh() -> None:
    event = one(PLAINTEXT)
    assert (event.reporter, event.mtls, event.source_principal) == ("destination", False, None)
    assert event.ts == END - timedelta(seconds=1.5)
    assert event.destination_port == 9080  # dst.addr's own port: not HBONE's 15008


@pytest.mark.parametrize("nested", [False, True], ids=["flat-keys", "nested-objects"])
def test_json_variant(nested: bool) -> None:
    doc = {"level": "info", "time": "2024-05-03T16:53:43.372364Z", "scope": "access",
           "message": "connection complete", "src.addr": "10.244.1.5:46632",
           "src.workload": "sleep-7656cf8794-8nnlk", "src.namespace": "default",
           "src.identity": "spiffe://cluster.local/ns/default/sa/sleep",
           "dst.addr": "10.244.2.8:15008", "dst.hbone_addr": "10.244.2.8:9080",
           "dst.service": "productpage.default.svc.cluster.local",
           "dst.workload": "productpage-v1-87d54dd59-x8k4d", "dst.namespace": "default",
           "dst.identity": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
           "direction": "inbound", "bytes_sent": 1839, "bytes_recv": 81, "duration": "2ms"}
    if nested:
        src = {k[4:]: doc.pop(k) for k in [k for k in doc if k.startswith("src.")]}
        dst = {k[4:]: doc.pop(k) for k in [k for k in doc if k.startswith("dst.")]}
        doc = {"fields": {**doc, "src": src, "dst": dst}}
    expected = one(INBOUND)
    assert one(msgspec.json.encode(doc)) == expected


def test_opened_and_non_access_lines_are_skipped_not_failed() -> None:
    parser = ZtunnelParser()
    opened = INBOUND.replace("connection complete", "connection opened").encode()
    xds = b"2024-05-03T16:53:43.372364Z\tinfo\txds\treceived response\ttype_url=workload"
    assert parser.parse(opened, ORIGIN) == []
    assert parser.parse(xds, ORIGIN) == []
    assert parser.skipped == 2


@pytest.mark.parametrize(("payload", "reason"), [
    (b"hello", "not a ztunnel log line (expected 'TIMESTAMP LEVEL TARGET MESSAGE key=value ...')"),
    (b"2024-05-03T16:53:43Z\tinfo\taccess\tconnection complete\tfoo=bar",
     "ztunnel access line has no src.*/dst.* fields"),
    (INBOUND.replace("bytes_sent=1839", "bytes_sent=lots").encode(),
     "key 'bytes_sent': expected an integer, got 'lots'"),
    (INBOUND.replace('duration="2ms"', 'duration="soon"').encode(),
     "key 'duration': expected a duration like '2ms', got 'soon'"),
    (INBOUND.replace("2024-05-03T16:53:43.372364Z", "1999-05-03T16:53:43Z").encode(),
     "timestamp out of range: 1999-05-03T16:53:43+00:00 (accepted: 2000..2100)"),
    (INBOUND.encode().replace(b"sleep-", b"\xff"), "invalid UTF-8 at byte 100"),
    (b'{"src.addr": 1', "invalid JSON: Input data was truncated"),
    (b'{"level": "info"}', "JSON object has no ztunnel src.*/dst.* keys"),
])
def test_malformed_ztunnel_records(payload: bytes, reason: str) -> None:
    [result] = ZtunnelParser().parse(payload, ORIGIN)
    assert isinstance(result, ParseFailure)
    assert result.reason == reason


@pytest.mark.parametrize(("text", "ms"), [("2ms", 2.0), ("1.5s", 1500.0), ("340µs", 0.34),
                                          ("340us", 0.34), ("12ns", 0.000012), (7, 7.0)])
def test_rust_duration_strings(text: str | int, ms: float) -> None:
    assert duration_ms(text) == pytest.approx(ms)
