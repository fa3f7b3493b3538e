"""Envoy JSON and TEXT records: exact keys, the shape of real Istio lines, paired sides."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from meshwatch.formats import (
    ISTIO_DEFAULT_TEXT_FORMAT,
    MESHWATCH_JSON_FORMAT,
    MESHWATCH_TEXT_FORMAT,
)
from tests.simulate.helpers import Run, addr_ip, is_outbound, ts

_OPERATOR = re.compile(r"%[A-Z_]+(?:\([^)%]*\))?(?::\d+)?%")


def format_regex(fmt: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex with one group per command operator of an Envoy format string."""
    parts, names, pos = [], [], 0
    for match in _OPERATOR.finditer(fmt):
        literal = fmt[pos:match.start()]
        parts.append(re.escape(literal))
        if literal.endswith('"'):
            parts.append(r'([^"]*)')
        elif literal.endswith("["):
            parts.append(r"([^\]]*)")
        else:
            parts.append(r"(\S+)")
        names.append(match.group(0))
        pos = match.end()
    parts.append(re.escape(fmt[pos:].rstrip("\n")))
    return re.compile("^" + "".join(parts) + "$"), names


# What each Istio field looks like in real sidecar logs (the shared sample obeys these too).
SHAPES = {
    "%START_TIME%": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "%PROTOCOL%": r"HTTP/1\.1|HTTP/2|-",
    "%RESPONSE_CODE%": r"\d{1,3}",
    "%BYTES_RECEIVED%": r"\d+",
    "%BYTES_SENT%": r"\d+",
    "%DURATION%": r"\d+",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%": r"\d+|-",
    "%REQ(X-REQUEST-ID)%": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|-",
    "%UPSTREAM_HOST%": r"\d+\.\d+\.\d+\.\d+:\d+|-",
    "%UPSTREAM_CLUSTER_RAW%": (r"outbound\|\d+\|[a-z0-9]*\|[a-z0-9-]+\.[a-z0-9-]+"
                               r"\.svc\.cluster\.local|inbound\|\d+\|\||PassthroughCluster|-"),
    "%UPSTREAM_LOCAL_ADDRESS%": r"\d+\.\d+\.\d+\.\d+:\d+|-",
    "%DOWNSTREAM_LOCAL_ADDRESS%": r"\d+\.\d+\.\d+\.\d+:\d+",
    "%DOWNSTREAM_REMOTE_ADDRESS%": r"\d+\.\d+\.\d+\.\d+:\d+",
    "%REQUESTED_SERVER_NAME%": r"outbound_\.\d+_\.[a-z0-9]*_\.[a-z0-9.-]+\.svc\.cluster\.local|-",
    "%ROUTE_NAME%": r"default|-",
}


def test_regex_from_istio_format_matches_the_shared_istio_sample(test_data: Path) -> None:
    regex, names = format_regex(ISTIO_DEFAULT_TEXT_FORMAT)
    lines = (test_data / "istio_text_sidecar_pair.log").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        match = regex.match(line)
        assert match, line
        for name, value in zip(names, match.groups(), strict=True):
            if name in SHAPES:
                assert re.fullmatch(SHAPES[name], value), (name, value)


def test_text_lines_have_the_format_fields_and_the_istio_shape(mixed: Run) -> None:
    regex, names = format_regex(MESHWATCH_TEXT_FORMAT)
    assert len(names) == len(MESHWATCH_JSON_FORMAT)
    assert mixed.text_lines
    for line in mixed.text_lines:
        match = regex.match(line)
        assert match, line
        for name, value in zip(names, match.groups(), strict=True):
            if name in SHAPES:
                assert re.fullmatch(SHAPES[name], value), (name, value, line)


def test_json_lines_carry_exactly_the_meshwatch_keys_typed_like_envoy(mixed: Run) -> None:
    keys = list(MESHWATCH_JSON_FORMAT)
    for record in mixed.records:
        assert list(record) == keys
        for key in ("response_code", "bytes_received", "bytes_sent", "duration"):
            assert isinstance(record[key], int), (key, record)
        assert record["upstream_service_time"] is None or \
            isinstance(record["upstream_service_time"], str)
        assert record["response_flags"] is not None  # Envoy prints "-" for no flags
        assert "-" not in (record["method"], record["path"], record["request_id"])


def test_text_and_json_files_are_the_same_records(mixed: Run) -> None:
    regex, names = format_regex(MESHWATCH_TEXT_FORMAT)
    key_of = {op: key for key, op in MESHWATCH_JSON_FORMAT.items()}
    assert len(mixed.text_lines) == len(mixed.records) == mixed.summary.records["envoy-json"]
    for line, record in zip(mixed.text_lines, mixed.records, strict=True):
        match = regex.match(line)
        assert match
        for name, value in zip(names, match.groups(), strict=True):
            expected = record[key_of[name]]
            assert value == ("-" if expected is None else str(expected)), (name, line)


def test_source_side_records_never_carry_peer_identity_or_tls(mixed: Run) -> None:
    outbound = [r for r in mixed.records if is_outbound(r)]
    assert len(outbound) > 1000
    for record in outbound:
        assert record["downstream_peer_uri_san"] is None
        assert record["downstream_local_uri_san"] is None
        assert record["downstream_tls_version"] is None
        assert record["downstream_peer_cert_v_end"] is None
        assert record["requested_server_name"] is None
        assert record["pod_name"] in mixed.pods


def test_outbound_and_inbound_records_of_a_call_pair_up(mixed: Run) -> None:
    by_rid: dict[str, list[dict]] = defaultdict(list)
    for record in mixed.records:
        if record["request_id"]:
            by_rid[record["request_id"]].append(record)
    paired = 0
    for rid, records in by_rid.items():
        outs = [r for r in records if is_outbound(r)]
        ins = [r for r in records if not is_outbound(r)]
        assert len(outs) <= 1, rid
        if not outs or not ins:
            continue
        out = outs[0]
        paired += 1
        fqdn = out["upstream_cluster"].split("|")[3]
        port, subset = out["upstream_cluster"].split("|")[1:3]
        for inbound in ins:
            assert inbound["pod_name"] != out["pod_name"]
            assert inbound["pod_namespace"] == fqdn.split(".")[1]
            start_gap = ts(inbound["start_time"]) - ts(out["start_time"])
            assert timedelta(0) <= start_gap < timedelta(seconds=1)
            assert inbound["duration"] <= out["duration"]
            assert inbound["request_id"] == out["request_id"]
            assert (inbound["method"], inbound["path"]) == (out["method"], out["path"])
            if inbound["downstream_peer_uri_san"] is not None:  # mTLS from the caller's sidecar
                assert inbound["requested_server_name"] == f"outbound_.{port}_.{subset}_.{fqdn}"
                assert inbound["downstream_tls_version"] == "TLSv1.3"
                caller = mixed.pods[out["pod_name"]]
                assert inbound["downstream_peer_uri_san"] == caller["principal"]
                assert out["upstream_peer_uri_san"] == mixed.pods[inbound["pod_name"]]["principal"]
        last = ins[-1]
        assert last["downstream_remote_address"] == out["upstream_local_address"]
        assert addr_ip(last["downstream_local_address"]) == addr_ip(out["upstream_host"])
    assert paired > 2000


def test_inbound_records_use_istio_inbound_names(mixed: Run) -> None:
    inbound = [r for r in mixed.records if not is_outbound(r)]
    assert inbound
    for record in inbound:
        port = record["upstream_cluster"].split("|")[1]
        assert record["downstream_local_address"].endswith(f":{port}")
        assert record["upstream_peer_uri_san"] is None
        if record["upstream_host"] is not None:  # reached the app through the sidecar
            assert record["upstream_local_address"].startswith("127.0.0.6:")


def test_traffic_mixes_protocols_errors_and_retries(mixed: Run) -> None:
    records = mixed.records
    protocols = {r["protocol"] for r in records}
    assert {"HTTP/1.1", "HTTP/2", None} <= protocols
    grpc = [r for r in records if (r["path"] or "").startswith("/hipstershop.")]
    assert grpc and all(r["protocol"] == "HTTP/2" and r["method"] == "POST" for r in grpc)
    assert any(r["path"] == "/hipstershop.CartService/GetCart" for r in grpc)
    tcp = [r for r in records if r["protocol"] is None]
    assert any(r["upstream_cluster"] == "outbound|6379||redis-cart.boutique.svc.cluster.local"
               for r in tcp)
    assert all(r["method"] is None and r["response_code"] == 0 for r in tcp)
    ingress = [r for r in records if r["pod_namespace"] == "istio-system"]
    assert ingress and all(r["x_forwarded_for"] for r in ingress)
    subsets = {r["upstream_cluster"].split("|")[2] for r in records
               if (r["upstream_cluster"] or "").startswith("outbound|9080||reviews")
               or (r["upstream_cluster"] or "").startswith("outbound|9080|v")}
    assert {"v1", "v2", "v3"} <= subsets
    server_errors = [r for r in records if r["response_code"] >= 500]
    assert len(server_errors) < 0.02 * len(records)


@pytest.mark.parametrize("code", [200, 302, 404])
def test_common_http_statuses_occur(mixed: Run, code: int) -> None:
    assert any(r["response_code"] == code for r in mixed.records)
