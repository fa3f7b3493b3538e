"""Spans: real OTLP protobuf frames and OTLP/JSON lines describing the same calls as the logs."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshwatch.simulate.render_otlp import BATCH_SPANS, reference_otlp_json
from tests.simulate.helpers import Run, attrs, is_outbound

CLIENT, SERVER = Span.SpanKind.SPAN_KIND_CLIENT, Span.SpanKind.SPAN_KIND_SERVER
RESOURCE_KEYS = {"service.name", "service.namespace", "k8s.namespace.name",
                 "k8s.deployment.name", "k8s.pod.name", "telemetry.sdk.language"}


def _rid(span_attrs: dict) -> str | None:
    for key in ("http.request.header.x-request-id", "rpc.grpc.request.metadata.x-request-id",
                "http.request.header.x_request_id"):
        if key in span_attrs:
            return span_attrs[key][0]
    return None


def test_protobuf_frames_decode_into_client_and_server_spans(mixed: Run) -> None:
    assert len(mixed.frames) >= 2
    kinds = Counter()
    for message in mixed.frames:
        n = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        assert 0 < n <= BATCH_SPANS
    for resource, span in mixed.spans():
        assert set(resource) >= RESOURCE_KEYS
        pod = mixed.pods[resource["k8s.pod.name"]]
        assert resource["k8s.deployment.name"] == pod["workload"]
        assert resource["k8s.namespace.name"] == resource["service.namespace"] == pod["namespace"]
        kinds[span.kind] += 1
        assert span.end_time_unix_nano > span.start_time_unix_nano
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
    assert kinds[CLIENT] > 1000 and kinds[SERVER] > 1000
    assert set(kinds) == {CLIENT, SERVER}
    assert sum(kinds.values()) == mixed.summary.spans == mixed.summary.records["otlp-proto"]


def test_otlp_json_lines_follow_the_spec_encoding(mixed: Run) -> None:
    lines = (mixed.dir / "spans.otlp.json").read_text().splitlines()
    assert len(lines) == len(mixed.frames)
    hex32, hex16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")
    for line, message in zip(lines, mixed.frames, strict=True):
        data = json.loads(line)
        # The same message protobuf's json_format renders (ids as hex, per the OTLP spec).
        assert data == reference_otlp_json(message)
        for rs in data["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    assert hex32.match(span["traceId"]) and hex16.match(span["spanId"])
                    assert "parentSpanId" not in span or hex16.match(span["parentSpanId"])
                    assert isinstance(span["kind"], int)
                    assert isinstance(span["startTimeUnixNano"], str)
                    assert span["startTimeUnixNano"].isdigit()


def test_spans_parent_across_pods_and_follow_call_chains(mixed: Run) -> None:
    by_id = {}
    for resource, span in mixed.spans():
        by_id[span.span_id] = (resource, span)
    services_by_trace: dict[bytes, set[str]] = defaultdict(set)
    for resource, span in by_id.values():
        services_by_trace[span.trace_id].add(resource["service.name"])
        if not span.parent_span_id:
            continue
        parent_resource, parent = by_id[span.parent_span_id]
        assert parent.trace_id == span.trace_id
        if span.kind == SERVER:  # the caller's CLIENT span, in another pod
            assert parent.kind == CLIENT
            assert parent_resource["k8s.pod.name"] != resource["k8s.pod.name"]
        else:  # a call made while serving: the caller's own SERVER span
            assert parent.kind == SERVER
            assert parent_resource["k8s.pod.name"] == resource["k8s.pod.name"]
    assert any({"frontend", "checkoutservice", "paymentservice"} <= names
               for names in services_by_trace.values())
    assert any({"productpage", "reviews", "ratings"} <= names
               for names in services_by_trace.values())


def test_semantic_conventions_new_and_old_and_grpc(mixed: Run) -> None:
    seen = Counter()
    for _resource, span in mixed.spans():
        a = attrs(span)
        if a.get("rpc.system") == "grpc":
            seen["grpc"] += 1
            assert a["rpc.service"].startswith(("hipstershop.", "shop.", "platform.",
                                                "payments.", "flagd.", "envoy.",
                                                "tensorflow.", "grpc."))
            assert isinstance(a["rpc.grpc.status_code"], int)
        elif "http.request.method" in a:
            seen["new"] += 1
            assert isinstance(a["http.response.status_code"], int)
            assert "url.path" in a or "url.full" in a
            if span.kind == SERVER:
                assert a["client.address"] and a["network.peer.address"]
            else:
                assert a["server.address"] and isinstance(a["server.port"], int)
        else:
            seen["old"] += 1
            assert "http.method" in a and "http.status_code" in a
            if span.kind == CLIENT:
                assert {"net.peer.name", "net.peer.port", "peer.service"} <= set(a)
            else:
                assert "http.target" in a
    assert seen["grpc"] and seen["new"] and seen["old"]


def test_spans_and_access_logs_describe_the_same_calls(mixed: Run) -> None:
    """Per request id: a CLIENT span iff the caller's app is instrumented, and one SERVER span
    per inbound record that reached an instrumented app."""
    client_spans: Counter[str] = Counter()
    server_spans: Counter[str] = Counter()
    for _resource, span in mixed.spans():
        rid = _rid(attrs(span))
        assert rid is not None
        (client_spans if span.kind == CLIENT else server_spans)[rid] += 1
    served: Counter[str] = Counter()
    outbound_rids: dict[str, dict] = {}
    for record in mixed.records:
        rid = record["request_id"]
        if rid is None:
            continue
        if is_outbound(record):
            outbound_rids[rid] = record
        elif record["upstream_host"] is not None and record["user_agent"] != "kube-probe/1.30" \
                and mixed.pods[record["pod_name"]]["instrumented"]:
            served[rid] += 1
    assert server_spans == served
    assert all(n == 1 for n in client_spans.values())
    # Attack tools run inside compromised pods: their calls pass the sidecar, not the SDK.
    tools = [(a["source"]["address"], a["start"], a["end"]) for a in mixed.labels["attacks"]
             if a["kind"] in ("lateral_movement", "service_scan")]
    tools += [(hop["source"]["address"], hop["start"], a["end"])
              for a in mixed.labels["attacks"] for hop in a.get("chain", ())]
    for rid, record in outbound_rids.items():
        caller = mixed.pods[record["pod_name"]]
        by_tool = any(caller["ip"] == ip and start <= record["start_time"] <= end
                      for ip, start, end in tools)
        if record["protocol"] is not None:
            assert (rid in client_spans) == (caller["instrumented"] and not by_tool), record
    # Calls whose caller bypassed its sidecar still have the app's CLIENT span.
    assert set(client_spans) - set(outbound_rids)
