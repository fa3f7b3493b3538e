"""The per-edge window builder: counting, merging both sides of a call, notes, bounds."""

from __future__ import annotations

import base64
import pickle
from datetime import UTC, datetime, timedelta

from datasketches import tdigest_float

from ingest.graph import EdgeGraph, destination_node, source_node
from meshwatch.records import EdgeEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEB = "spiffe://cluster.local/ns/shop/sa/web"


def outbound(i: int, at: float, **kw) -> EdgeEvent:
    base = dict(ts=T0 + timedelta(seconds=at), origin="envoy_json", reporter="source",
                source_workload="web", source_namespace="shop", source_principal=WEB,
                source_address="10.1.0.5", destination_service="cart.shop.svc.cluster.local",
                destination_port=7070, response_code=200, duration_ms=12.0, bytes_sent=100,
                bytes_received=900, mtls=None, request_id=f"req-{i}")
    base.update(kw)
    return EdgeEvent(**base)


def inbound(i: int, at: float, **kw) -> EdgeEvent:
    base = dict(ts=T0 + timedelta(seconds=at), origin="envoy_json", reporter="destination",
                source_principal=WEB, source_namespace="shop", source_address="10.1.0.5",
                destination_service="cart.shop.svc.cluster.local", destination_port=7070,
                destination_workload="cart", response_code=200, duration_ms=10.0,
                bytes_sent=100, bytes_received=900, mtls=True, tls_version="TLSv1.3",
                request_id=f"req-{i}")
    base.update(kw)
    return EdgeEvent(**base)


def test_both_sides_of_a_call_count_once_and_inbound_evidence_upgrades_mtls():
    g = EdgeGraph(window=60, allowed_lateness=0)
    for i in range(10):
        g.add(outbound(i, i))
        g.add(inbound(i, i + 0.01))
    (w,) = g.close_all()
    assert w["requests"] == 10
    assert (w["mtls_true"], w["mtls_false"], w["mtls_unknown"]) == (10, 0, 0)
    assert w["bytes_sent"] == 1000 and w["bytes_received"] == 9000
    assert w["tls_versions"] == ["TLSv1.3"] and w["peer_principals"] == [WEB]
    assert g.stats.merged_partner_records == 10


def test_inbound_first_then_outbound_also_counts_once():
    g = EdgeGraph(window=60, allowed_lateness=0)
    for i in range(5):
        g.add(inbound(i, i))
        g.add(outbound(i, i + 0.5))
    (w,) = g.close_all()
    assert w["requests"] == 5 and w["mtls_true"] == 5 and w["mtls_unknown"] == 0
    assert w["src_workload"] == "web"  # learned from the outbound partner


def test_source_side_alone_is_never_plaintext():
    g = EdgeGraph(window=60, allowed_lateness=0)
    notes = [n["note"] for i in range(3) for n in g.add(outbound(i, i)).notes]
    (w,) = g.close_all()
    assert w["mtls_false"] == 0 and w["mtls_unknown"] == 3
    assert "plaintext" not in notes


def test_plaintext_notes_once_per_path_per_window():
    g = EdgeGraph(window=60, allowed_lateness=0)
    notes = []
    for i in range(6):
        path = "/healthz" if i % 2 else "/admin"
        ev = inbound(i, i, mtls=False, tls_version=None, source_principal=None,
                     source_address="10.9.9.9", path=path)
        notes += [n for n in g.add(ev).notes if n["note"] == "plaintext"]
    assert sorted(n["path"] for n in notes) == ["/admin", "/healthz"]
    assert all(n["edge_src"] == "10.9.9.9" for n in notes)


def test_windows_close_on_watermark_and_late_data_adds_a_part():
    g = EdgeGraph(window=60, allowed_lateness=10)
    g.add(inbound(1, 5))
    assert g.advance() == []
    g.add(inbound(2, 75))  # watermark 65: window [0,60) closes
    closed = g.advance()
    assert [(w["window_start"], w["part"], w["requests"]) for w in closed] == [(T0, 0, 1)]
    g.add(inbound(3, 30))  # late for the closed window
    g.add(inbound(4, 200))
    closed = g.advance()
    assert (T0, 1, 1) in [(w["window_start"], w["part"], w["requests"]) for w in closed]
    assert g.stats.late_events == 1


def test_latency_is_a_mergeable_sketch():
    g = EdgeGraph(window=60, allowed_lateness=0)
    for i in range(200):
        g.add(inbound(i, i * 0.1, duration_ms=float(i)))
    (w,) = g.close_all()
    assert 90 <= w["latency_p50"] <= 110
    assert 185 <= w["latency_p99"] <= 199
    sketch = tdigest_float.deserialize(base64.b64decode(w["latency_sketch"]))
    assert sketch.get_total_weight() == 200


def test_open_buckets_are_bounded_and_evictions_counted():
    g = EdgeGraph(window=60, allowed_lateness=0, max_edges=3)
    for i in range(10):
        g.add(inbound(i, 1, destination_service=f"svc{i}.shop.svc.cluster.local"))
    assert g.open_buckets == 3
    assert g.evictions()["buckets"] == 7
    closed = g.advance() + g.close_all()
    assert sum(w["requests"] for w in closed) == 10  # nothing lost, just closed early


def test_call_memory_is_bounded():
    g = EdgeGraph(window=60, allowed_lateness=0, max_calls=100)
    for i in range(1000):
        g.add(outbound(i, i * 0.01))
    assert g.remembered_calls == 100
    assert g.evictions()["calls"] == 900


def test_state_survives_pickle_mid_window():
    g = EdgeGraph(window=60, allowed_lateness=0)
    for i in range(5):
        g.add(inbound(i, i, duration_ms=5.0))
    g2 = pickle.loads(pickle.dumps(g))
    g2.add(inbound(5, 6, duration_ms=5.0))
    (w,) = g2.close_all()
    assert w["requests"] == 6 and w["latency_count"] == 6


def test_node_identity_precedence():
    ev = outbound(1, 0)
    assert source_node(ev) == (WEB, "workload")
    assert destination_node(ev) == ("cart.shop.svc.cluster.local:7070", "service")
    anon = EdgeEvent(ts=T0, origin="otlp_span", source_address="8.8.4.4",
                     destination_service="api.example.com")
    assert source_node(anon) == ("8.8.4.4", "external")
    assert destination_node(anon) == ("api.example.com", "external")


def test_retried_attempts_with_one_request_id_never_drive_counts_negative():
    g = EdgeGraph(window=60, allowed_lateness=0)
    g.add(outbound(1, 0))
    for attempt in range(3):  # the destination logs each retry attempt with the same id
        g.add(inbound(1, 0.1 + attempt))
    (w,) = g.close_all()
    assert w["requests"] == 1
    assert (w["mtls_true"], w["mtls_false"], w["mtls_unknown"]) == (1, 0, 0)


def test_partner_arriving_after_its_window_closed_does_not_touch_a_later_part():
    g = EdgeGraph(window=60, allowed_lateness=0)
    g.add(outbound(1, 10))
    g.add(outbound(2, 70))  # closes window 0
    windows = g.advance()
    assert len(windows) == 1
    g.add(outbound(3, 20))  # late: opens part 1 of window 0
    g.add(inbound(1, 11))  # partner of call 1, counted in part 0 (closed)
    windows += g.advance() + g.close_all()
    assert all(w["mtls_unknown"] >= 0 for w in windows)
    assert sum(w["requests"] for w in windows) == 3
