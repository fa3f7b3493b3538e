"""Hostile and malformed input: nothing escapes a parser, nothing unstorable reaches the store,
and through the whole pipeline every bad record is a dead letter with a reason.

This extends tests/ingest/test_parser_conformance.py (which already checks garbage bytes,
oversized records and byte-level mutations of real samples for every registered parser) with
the cases an attacker picks on purpose: JSON nested 100k levels deep, OTLP records with tens of
thousands of attributes, invalid UTF-8 inside otherwise valid records, numbers outside their
column's range (ports 99999, negative byte counts, 2**64), timestamps far in the past or
future, and format-string injection in the per-topic configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ingest.parsers import PARSERS
from ingest.parsers.base import make_parser
from ingest.parsers.common import INTERNAL_ERROR, event_problem
from ingest.parsers.edge_event import encode_event
from meshwatch.records import EdgeEvent, Origin, ParseFailure
from meshwatch.settings import ConfigError
from tests.faults.conftest import Recorder
from tests.faults.helpers import cli, snapshot
from tests.ingest.samples import INBOUND, json_record, render, text_line
from tests.ingest.test_parser_conformance import NAMES, check_results, samples

ORIGIN = Origin("hostile", 7)
DEEP = 100_000
T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z in ns


def storable(results: list) -> list[EdgeEvent]:
    """The contract plus: every event fits its store columns; failures say why, not 'bug'."""
    events = [r for r in results if isinstance(r, EdgeEvent)]
    for event in events:
        assert event_problem(event) is None, event
    for failure in results:
        if isinstance(failure, ParseFailure):
            assert failure.reason and not failure.reason.startswith(INTERNAL_ERROR), failure
    return events


def check(name: str, payload: bytes) -> list:
    parser = PARSERS.get(name)()
    results = parser.parse(payload, ORIGIN) + parser.flush(None)
    check_results(results, name)
    storable(results)
    return results


# -- JSON nested 100k levels, for every parser -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("payload", [
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"[" * DEEP + b"]" * DEEP,
    b'{"resourceSpans":[' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"]}",
], ids=["objects", "arrays", "inside-otlp"])
def test_deeply_nested_json_is_a_dead_letter(name: str, payload: bytes) -> None:
    results = check(name, payload)
    assert results and all(isinstance(r, ParseFailure) for r in results), results


# -- huge OTLP attribute lists -----------------------------------------------------------------


def _span_request(attrs: dict[str, object], n_filler: int = 0,
                  start: int = T0, end: int = T0 + 2_000_000) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "ratings"
    span = rs.scope_spans.add().spans.add(
        trace_id=bytes(range(1, 17)), span_id=b"\x01" * 8, kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start, end_time_unix_nano=end)
    for key, value in attrs.items():
        a = span.attributes.add()
        a.key = key
        if isinstance(value, int):
            a.value.int_value = value
        else:
            a.value.string_value = str(value)
    for i in range(n_filler):
        a = span.attributes.add()
        a.key, a.value.string_value = f"attr.{i}", "x"
    return request.SerializeToString()


def _log_request(n_filler: int) -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=T0)
    record.body.string_value = render("%START_TIME% %REQ(:METHOD)% %RESPONSE_CODE%\n", INBOUND)
    for i in range(n_filler):
        a = record.attributes.add()
        a.key, a.value.string_value = f"attr.{i}", "y"
    return request.SerializeToString()


@pytest.mark.parametrize("name", ["otlp-proto", "auto"])
def test_a_span_with_40k_attributes_parses_within_the_size_limit(name: str) -> None:
    payload = _span_request({"server.port": 9080}, n_filler=40_000)
    assert 512 * 1024 < len(payload) <= 1024 * 1024
    [event] = check(name, payload)
    assert isinstance(event, EdgeEvent) and event.destination_service == "ratings"


def test_a_log_record_with_40k_attributes_is_handled() -> None:
    payload = _log_request(40_000)
    assert len(payload) <= 1024 * 1024
    assert check("otlp-log", payload)


# -- invalid UTF-8 inside otherwise valid records ----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_invalid_utf8_inside_valid_records(name: str) -> None:
    for sample in samples(name):
        for bad in (b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
            at = max(sample.find(b"reviews"), sample.find(b"ratings"), len(sample) // 2)
            check(name, sample[:at] + bad + sample[at:])


# -- numbers outside their column's range ------------------------------------------------------

_TYPED = json.loads(json_record(INBOUND))
OUT_OF_RANGE_JSON = {
    "port 99999": {**_TYPED, "upstream_cluster": "outbound|99999||reviews.bookinfo.svc."
                                                 "cluster.local"},
    "negative bytes": {**_TYPED, "bytes_sent": -5},
    "negative received": {**_TYPED, "bytes_received": -1},
    "2**64 bytes": {**_TYPED, "bytes_sent": 2**64},
    "2**64 status": {**_TYPED, "response_code": 2**64},
    "status -1": {**_TYPED, "response_code": -1},
    "status 70000": {**_TYPED, "response_code": 70000},
    "float port": {**_TYPED, "upstream_host": "10.244.2.9:1e9"},
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE_JSON))
def test_envoy_json_numbers_out_of_range(case: str) -> None:
    payload = json.dumps(OUT_OF_RANGE_JSON[case]).encode()
    results = check("envoy-json", payload)
    assert results
    events = [r for r in results if isinstance(r, EdgeEvent)]
    failures = [r for r in results if isinstance(r, ParseFailure)]
    # Either rejected with a reason naming the value, or read with the value dropped.
    assert failures or all(e.destination_port in (None, 9080) for e in events), results


@pytest.mark.parametrize("values", [
    {"BYTES_SENT": "18446744073709551616"}, {"RESPONSE_CODE": "99999999999"},
    {"DURATION": "1" + "0" * 400},
    {"UPSTREAM_CLUSTER_RAW": "outbound|70000||r.b.svc.cluster.local"},
], ids=["2**64 bytes", "huge status", "400-digit duration", "port 70000"])
def test_envoy_text_numbers_out_of_range(values: dict[str, str]) -> None:
    assert check("envoy-text", text_line({**INBOUND, **values}))


@pytest.mark.parametrize("attrs", [
    {"server.port": -1}, {"server.port": 99999}, {"http.response.status_code": 2**63 - 1},
    {"http.response.status_code": -200}, {"http.request.body.size": -5},
    {"http.response.body.size": 2**63 - 1},
], ids=["port -1", "port 99999", "status int64 max", "status -200", "negative size",
        "int64 size"])
@pytest.mark.parametrize("name", ["otlp-proto", "auto"])
def test_otlp_numbers_out_of_range_never_reach_the_store(name: str, attrs: dict) -> None:
    results = check(name, _span_request(attrs))
    assert results


def test_edge_event_records_out_of_range_are_dead_letters() -> None:
    event = PARSERS.get("envoy-text")().parse(text_line(INBOUND), ORIGIN)[0]
    doc = msgspec.msgpack.decode(encode_event(event))
    for field, value in (("destination_port", 99999), ("bytes_sent", -1),
                         ("response_code", 2**40)):
        [failure] = check("edge-event", msgspec.msgpack.encode({**doc, field: value}))
        assert isinstance(failure, ParseFailure) and field in failure.reason


# -- timestamps far in the past or future ------------------------------------------------------


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                  "1899-12-31T23:59:59Z", "2300-01-01T00:00:00Z",
                                  "9999-12-31T23:59:59.999Z", "+275760-09-13T00:00:00Z"])
def test_far_timestamps_are_dead_letters(when: str) -> None:
    for payload in (json.dumps({**_TYPED, "start_time": when}).encode(),
                    text_line({**INBOUND, "START_TIME": when})):
        name = "envoy-json" if payload.startswith(b"{") else "envoy-text"
        [failure] = check(name, payload)
        assert isinstance(failure, ParseFailure), failure


@pytest.mark.parametrize("start", [0, 1, 2**63 - 1, 946_684_799_999_999_999],
                         ids=["zero", "one-ns", "int64-max", "just-before-2000"])
def test_far_span_timestamps_are_dead_letters(start: int) -> None:
    end = min(start + 1_000_000, 2**64 - 1)
    results = check("otlp-proto", _span_request({}, start=start, end=end))
    assert results and all(isinstance(r, ParseFailure) for r in results)


# -- extreme numbers mutated into real samples (hypothesis) --------------------------------------

EXTREMES = [b"-1", b"99999", b"18446744073709551616", b"-9223372036854775809", b"1e400",
            b"-0", b"0", b"4294967296", b"65536", b"NaN", b"Infinity"]


@st.composite
def renumbered(draw: st.DrawFn, pool: tuple[bytes, ...]) -> bytes:
    """A real sample with some of its digit runs replaced by extreme numbers."""
    import re

    data = draw(st.sampled_from(pool))
    runs = [m.span() for m in re.finditer(rb"\d+", data)]
    if not runs:
        return data
    for _ in range(draw(st.integers(1, 3))):
        start, end = draw(st.sampled_from(runs))
        data = data[:start] + draw(st.sampled_from(EXTREMES)) + data[end:]
        runs = [m.span() for m in re.finditer(rb"\d+", data)] or [(0, 0)]
    return data


@pytest.mark.parametrize("name", NAMES)
def test_extreme_numbers_in_real_samples_never_reach_the_store(name: str) -> None:
    pool = tuple(samples(name))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=renumbered(pool))
    def run(payload: bytes) -> None:
        check(name, payload)

    run()


# -- format-string injection in the per-topic configuration --------------------------------------

ACCEPTED_FORMATS = [
    "%START_TIME% (.*)[ %REQ(:METHOD)% $^\\d+ %RESPONSE_CODE%\n",
    "%START_TIME% %% %REQ(:METHOD)% %RESPONSE_CODE% 100%% %UPSTREAM_HOST%\n",
    "%DOWNSTREAM_REMOTE_ADDRESS% %START_TIME% .+*?|(){}[]^$\\ %RESPONSE_CODE% {0} {} %%s\n",
    "%START_TIME%\t%RESPONSE_CODE%\t'%REQ(:METHOD)%'\n",
]
REJECTED_FORMATS = ["%", "%%", "%%%%", "%FOO%", "%START_TIME% %s %d %x %n",
                    "%REQ(:METHOD %RESPONSE_CODE%", "no operators at all"]


@pytest.mark.parametrize("format_string", ACCEPTED_FORMATS)
def test_format_string_literals_are_matched_literally(format_string: str) -> None:
    parser = make_parser("envoy-text", format_string=format_string)
    [event] = parser.parse(render(format_string, INBOUND), ORIGIN)
    assert isinstance(event, EdgeEvent) and event.response_code == 200
    # A line whose literal parts differ (the regex characters matched as themselves) fails.
    literal = next(c for c in "[$|\t%" if c in format_string.replace("%%", "%"))
    other = render(format_string, INBOUND).replace(literal.encode(), b"#", 1)
    [failure] = parser.parse(other, ORIGIN)
    assert isinstance(failure, ParseFailure) and failure.reason


@pytest.mark.parametrize("format_string", REJECTED_FORMATS)
def test_bad_format_strings_are_config_errors(format_string: str) -> None:
    with pytest.raises(ConfigError):
        make_parser("envoy-text", format_string=format_string)


def test_config_check_names_the_key_of_an_injected_format_string(tmp_path: Path) -> None:
    for i, format_string in enumerate(["%FOO%", "%START_TIME% %s %n %x"]):
        config = tmp_path / f"c{i}.yaml"
        config.write_text(json.dumps({"kafka": {"topics": {"edge.logs": {
            "format": "envoy-text", "format_string": format_string}}}}))
        done = cli("config", "check", "--config", str(config))
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "kafka.topics.edge.logs.format_string" in done.stderr
        assert "Traceback" not in done.stderr


# -- through the whole pipeline ----------------------------------------------------------------


def hostile_lines() -> list[bytes]:
    """Envoy JSON lines an attacker controls; every one must become a dead letter."""
    base = dict(_TYPED)
    return [
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b"[" * DEEP + b"]" * DEEP,
        json.dumps({**base, "path": "/" + "A" * (1024 * 1024)}).encode(),  # oversized
        json.dumps(base).encode().replace(b'"GET"', b'"G\xffT"'),  # invalid UTF-8
        json.dumps({**base, "bytes_sent": -5}).encode(),
        json.dumps({**base, "bytes_received": 2**64}).encode(),
        json.dumps({**base, "response_code": -1}).encode(),
        json.dumps(base).replace('"bytes_sent": 358', '"bytes_sent": 1e400').encode(),
        json.dumps({**base, "start_time": "0001-01-01T00:00:00Z"}).encode(),
        json.dumps({**base, "start_time": "9999-12-31T23:59:59Z"}).encode(),
        json.dumps({**base, "start_time": "1970-01-01T00:00:00Z"}).encode(),
        b'{"start_time": "%s%s%n%x{0}", "path": "\\u0000"}',
        b"\x00\x01\x02 binary \xff",
        b'{"truncated": ',
    ]


@pytest.mark.slow
def test_hostile_records_through_the_pipeline_are_dead_letters(sim: Path, tmp_path: Path,
                                                               measured: Recorder) -> None:
    good = (sim / "envoy-json.log").read_bytes().splitlines()[:3000]
    bad = hostile_lines()
    lines = list(good)
    for k, line in enumerate(bad):  # spread through the traffic, one every 200 lines
        lines.insert(100 + 201 * k, line)
    hostile = tmp_path / "hostile.log"
    hostile.write_bytes(b"\n".join(lines) + b"\n")
    done = cli("run", "--input", str(hostile), "--format", "envoy-json", "--store",
               str(tmp_path / "store"), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    got = snapshot(tmp_path / "store")
    assert got.dead_letters == len(bad)
    assert got.events == len(good)
    reasons = [row["reason"] for row in _dead_letters(tmp_path / "store")]
    assert len(reasons) == len(bad) and all(reasons)
    assert not [r for r in reasons if r.startswith(INTERNAL_ERROR)], reasons
    measured(scenario="hostile Envoy JSON lines mixed into real traffic (`meshwatch run "
                      "--input hostile.log`)",
             records_in=len(lines), records_stored=got.events, dead_letters=got.dead_letters,
             detail=f"{len(bad)} hostile records: 100k-deep JSON, 1 MiB+ line, invalid "
                    "UTF-8, out-of-range numbers, far timestamps, format-string junk",
             result="exit 0; every hostile record a dead letter with a reason; every good "
                    "record stored")


def _dead_letters(path: Path) -> list[dict]:
    from meshwatch.settings import StoreSettings
    from meshwatch.store import Store

    store = Store.open(StoreSettings(path=path))
    try:
        return store.dead_letters(limit=1000)
    finally:
        store.close()
