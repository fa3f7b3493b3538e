"""Snapshots read back from a real store: exact counts, merged latency, mTLS, replays."""

from __future__ import annotations

import bisect

import pytest

from meshwatch.graphs import service
from meshwatch.graphs.timerange import TimeRange
from meshwatch.store import graph_queries as q
from tests.graph.mesh import BATCH, CART, CART_SA, DB, INTRUDER, PAY, WEB, at, build

A = TimeRange(at(0), at(10))
B = TimeRange(at(20), at(30))


def test_counts_are_the_generated_calls_summed_over_windows_and_parts(mesh, truth):
    snap = service.snapshot(mesh, A)
    expected = truth.requests(0, 10)
    assert {e.key: e.requests for e in snap.edges} == expected
    cart = snap.edge_map()[(WEB, CART)]
    assert cart.requests == 20 * 10 + 2  # two late calls in extra parts of minute 3
    assert cart.windows == 10
    # Both sidecars logged each call: counted once, bytes once.
    assert cart.bytes_sent == 100 * cart.requests


def test_mtls_counts_share_and_status(mesh, truth):
    edges = service.snapshot(mesh, A).edge_map()
    web_cart, intruder, web_pay, cart_db = (edges[(WEB, CART)], edges[(INTRUDER, CART)],
                                            edges[(WEB, PAY)], edges[(CART_SA, DB)])
    assert (web_cart.mtls_true, web_cart.mtls_false, web_cart.mtls_status) == (202, 0,
                                                                              "all-mtls")
    plain = sum(1 for c in truth.select(0, 10, WEB, PAY) if c.mtls is False)
    assert (web_pay.mtls_true, web_pay.mtls_false) == (100 - plain, plain)
    assert web_pay.mtls_status == "mixed"
    assert web_pay.mtls_share == pytest.approx((100 - plain) / 100)
    assert (intruder.mtls_false, intruder.mtls_status, intruder.mtls_share) == (15, "plaintext",
                                                                               0.0)
    # Caller-side records only: unknown, never plaintext, and no share.
    assert (cart_db.mtls_unknown, cart_db.mtls_false, cart_db.mtls_status,
            cart_db.mtls_share) == (50, 0, "unknown", None)
    assert web_cart.tls_versions == ["TLSv1.3"] and web_cart.peer_principals == [WEB]
    assert cart_db.peer_principals == []  # a caller's own claim is not a verified principal


def _rank(sorted_values: list[float], value: float) -> float:
    return bisect.bisect_right(sorted_values, value) / len(sorted_values)


def test_latency_quantiles_merge_the_stored_sketches(mesh, truth):
    edge = service.snapshot(mesh, A).edge_map()[(WEB, CART)]
    exact = sorted(c.latency for c in truth.select(0, 10, WEB, CART))
    assert edge.latency_count == len(exact) == 202
    for q_, got in ((0.5, edge.latency_p50), (0.95, edge.latency_p95),
                    (0.99, edge.latency_p99)):
        assert got is not None
        # t-digest's rank error: at most a few hundredths in the middle, less at the tails.
        assert abs(_rank(exact, got) - q_) <= (0.03 if q_ == 0.5 else 0.015), (q_, got)


def test_single_window_latency_is_the_windows_own(mesh, truth):
    snap = service.snapshot(mesh, TimeRange(at(5), at(6)))
    edge = snap.edge_map()[(WEB, CART)]
    stored = q.edge_series(mesh, WEB, CART, at(5), at(6))
    assert edge.windows == 1 and len(stored) == 1
    exact = sorted(c.latency for c in truth.select(5, 6, WEB, CART))
    assert edge.latency_p50 == pytest.approx(exact[len(exact) // 2], rel=0.35)
    assert abs(_rank(exact, edge.latency_p99) - 0.99) <= 0.05


def test_without_latency_nothing_is_merged(mesh):
    edge = service.snapshot(mesh, A, latency=False).edge_map()[(WEB, CART)]
    assert (edge.latency_p50, edge.latency_p95, edge.latency_p99) == (None, None, None)
    assert edge.latency_count == 202


def test_only_windows_inside_the_range_count(mesh, truth):
    # [0:30, 5:30]: windows of minutes 1..4 lie inside; 0 and 5 stick out.
    snap = service.snapshot(mesh, TimeRange(at(0.5), at(5.5)))
    assert snap.edge_map()[(WEB, CART)].requests == 20 * 4 + 2
    assert (INTRUDER, CART) not in snap.edge_map()


def test_namespace_filter_keeps_edges_touching_it(mesh):
    pay = service.snapshot(mesh, B, namespace="pay")
    assert {e.key for e in pay.edges} == {(WEB, PAY), (CART_SA, DB), (BATCH, CART)}
    assert service.snapshot(mesh, B, namespace="nope").edges == []


def test_nodes_carry_kind_namespace_and_principals(mesh):
    nodes = {n.id: n for n in service.snapshot(mesh, A).nodes}
    assert set(nodes) == {WEB, CART_SA, INTRUDER, CART, PAY, DB}
    assert (nodes[WEB].kind, nodes[WEB].namespace, nodes[WEB].principals) == ("workload",
                                                                             "shop", [WEB])
    assert (nodes[CART].kind, nodes[CART].namespace) == ("service", "shop")
    assert nodes[INTRUDER].kind == "address" and nodes[INTRUDER].principals == []
    assert nodes[CART].requests_in == 202 + 15
    assert nodes[CART].to_dict()["first_seen"].startswith("2026-03-01T12:00:00")


def test_series_has_one_point_per_window_with_parts_summed(mesh, truth):
    points = service.series(mesh, WEB, CART, A)
    assert [p["requests"] for p in points] == [
        len(truth.select(m, m + 1, WEB, CART)) for m in range(10)]
    written, _ = build(truth)
    parts = [r["part"] for r in written if (r["edge_src"], r["edge_dst"]) == (WEB, CART)
             and r["window_start"].startswith("2026-03-01 12:03")]
    assert len(parts) >= 2  # the late calls went into a later part of the closed window
    assert points[3]["parts"] == len(parts) and points[3]["requests"] == 22
    assert all(p["mtls_status"] == "all-mtls" for p in points)
    with pytest.raises(service.NoData, match="no edge"):
        service.series(mesh, WEB, "nowhere:1", A)


def test_a_replay_leaves_the_snapshot_identical(mesh, truth):
    before = service.snapshot(mesh, A).to_dict()
    mesh.execute("SYSTEM STOP MERGES {db}.edge_windows")
    try:
        stored = mesh.count("edge_windows", final=False)
        rows, _ = build(truth)
        mesh.insert_windows(rows)  # the same windows again, as after a crash and replay
        assert mesh.count("edge_windows", final=False) == stored + len(rows)
        assert service.snapshot(mesh, A).to_dict() == before
    finally:
        mesh.execute("SYSTEM START MERGES {db}.edge_windows")


def test_empty_range_says_where_the_data_is(mesh):
    far = TimeRange(at(60 * 24 * 30), at(60 * 24 * 30 + 15))
    assert service.snapshot(mesh, far).edges == []
    hint = service.hint(mesh, far)
    assert "2026-03-01T12:00:00.000Z" in hint and "2026-03-01T12:30:00.000Z" in hint
    assert "namespaces there: pay, shop" in service.hint(mesh, A, namespace="nope")
    assert service.latest_end(mesh) == at(30)
