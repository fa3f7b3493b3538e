"""Diffs between the two periods of the synthetic mesh, and mTLS coverage over time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshwatch.graphs import service
from meshwatch.graphs.diff import diff_snapshots
from meshwatch.graphs.model import Snapshot
from meshwatch.graphs.snapshot import nodes_of
from meshwatch.graphs.timerange import RangeError, TimeRange
from tests.graph.mesh import BATCH, CART, CART_SA, DB, INTRUDER, PAY, WEB, at

A = TimeRange(at(0), at(10))
B = TimeRange(at(20), at(30))


def test_diff_between_periods(mesh, truth):
    d = service.diff(mesh, A, B)
    assert [e.key for e in d.new_edges] == [(BATCH, CART)]
    assert [e.key for e in d.vanished_edges] == [(INTRUDER, CART)]
    (change,) = d.mtls_changes
    assert (change.src, change.dst, change.before, change.after) == (WEB, PAY, "mixed",
                                                                      "all-mtls")
    assert not change.regression
    (shift,) = d.traffic_shifts  # web->pay and cart->db kept their volume
    before, after = truth.requests(0, 10)[(WEB, CART)], truth.requests(20, 30)[(WEB, CART)]
    assert (shift.src, shift.dst, shift.requests_before, shift.requests_after) == (
        WEB, CART, before, after)
    assert shift.ratio == pytest.approx(after / before)
    assert d.principal_changes == []  # batch->cart is a new edge, not a new caller of one
    data = d.to_dict()
    assert data["new_edges"][0]["never_seen_before"] is True
    assert data["summary"]["mtls_regressions"] == 0


def test_reverse_diff_reports_a_regression_and_the_thresholds_apply(mesh):
    d = service.diff(mesh, TimeRange(at(20), at(30)), TimeRange(at(40), at(50)))
    assert {e.key for e in d.vanished_edges} == {(WEB, CART), (WEB, PAY), (CART_SA, DB),
                                                 (BATCH, CART)}
    back = diff_snapshots(service.snapshot(mesh, B, latency=False),
                          service.snapshot(mesh, A, latency=False))
    (change,) = back.mtls_changes
    assert (change.before, change.after, change.regression) == ("all-mtls", "mixed", True)
    assert back.to_dict()["new_edges"][0]["src"] == INTRUDER
    quiet = diff_snapshots(service.snapshot(mesh, A, latency=False),
                           service.snapshot(mesh, B, latency=False), min_ratio=5.0)
    assert quiet.traffic_shifts == []  # x3.96 is below x5
    loud = diff_snapshots(service.snapshot(mesh, A, latency=False),
                          service.snapshot(mesh, B, latency=False), min_requests=10_000)
    assert loud.traffic_shifts == []  # not enough volume


def test_a_new_principal_on_an_existing_edge_is_reported(mesh):
    before, after = (service.snapshot(mesh, A, latency=False),
                     service.snapshot(mesh, B, latency=False))
    after.edge_map()[(WEB, CART)].peer_principals.append(BATCH)
    (change,) = diff_snapshots(before, after).principal_changes
    assert (change.src, change.dst, change.added, change.removed) == (WEB, CART, [BATCH], [])


def test_diff_rejects_reversed_and_bad_thresholds(mesh):
    with pytest.raises(RangeError, match="reversed comparison"):
        service.diff(mesh, B, A)
    with pytest.raises(RangeError, match="greater than 1"):
        service.diff(mesh, A, B, min_ratio=1.0)


def test_coverage_per_bucket_and_namespace(mesh, truth):
    report = service.coverage(mesh, A, 300)
    rows = {(r.start, r.namespace): r for r in report.buckets}
    first_shop, second_shop = rows[(at(0), "shop")], rows[(at(5), "shop")]
    assert (first_shop.edges, first_shop.edges_all_mtls, first_shop.edge_share) == (1, 1, 1.0)
    assert first_shop.requests == len(truth.select(0, 5, dst=CART))
    assert (second_shop.edges, second_shop.edges_plaintext, second_shop.edge_share) == (2, 1,
                                                                                        0.5)
    assert second_shop.request_share == pytest.approx(100 / 115)
    pay = rows[(at(0), "pay")]
    # web->pay mixed; cart->db has no callee-side evidence: left out of the edge share.
    assert (pay.edges, pay.edges_mixed, pay.edges_unknown, pay.edge_share) == (2, 1, 1, 0.0)
    plain = sum(1 for c in truth.select(0, 5, WEB, PAY) if c.mtls is False)
    assert pay.request_share == pytest.approx((50 - plain) / 50)
    assert pay.requests_unknown == 25
    totals = {r.namespace: r for r in report.totals}
    assert totals["shop"].edges == 2 and totals["shop"].end == at(10)
    assert totals["shop"].requests == sum(rows[(t, "shop")].requests for t in (at(0), at(5)))
    only_pay = service.coverage(mesh, A, 300, namespace="pay")
    assert {r.namespace for r in only_pay.buckets} == {"pay"}


def test_coverage_refuses_too_many_buckets(mesh):
    with pytest.raises(RangeError, match="larger bucket"):
        service.coverage(mesh, TimeRange(at(0), at(0) + timedelta(days=30)), 60)


def test_empty_diff_of_identical_snapshots():
    empty = Snapshot(A, None, nodes_of([]), [])
    assert diff_snapshots(empty, empty).is_empty()
