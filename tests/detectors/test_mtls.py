"""mtls_downgrade, plaintext_permissive, weak_tls and transport_failures on real-shaped inputs
(edge notes and windows from the graph builder)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from detectors.config import load_detectors
from detectors.mtls import MtlsDowngrade, PlaintextPermissive, TransportFailures, WeakTls
from meshwatch.records import EdgeEvent
from tests.detectors.streams import T0, notes_and_windows

CART = "spiffe://cluster.local/ns/shop/sa/cart"


def inbound(minute: float, *, mtls: bool, address: str = "10.44.1.5", workload: str = "cart",
            dst: str = "billing", path: str = "/api/invoices", tls: str | None = "TLSv1.3",
            rid: str | None = None, reporter: str = "destination", **kw: Any) -> EdgeEvent:
    return EdgeEvent(
        ts=T0 + timedelta(minutes=minute), origin="envoy_json", reporter=reporter,
        source_workload=workload, source_namespace="shop",
        source_principal=CART if mtls and reporter == "destination" else None,
        source_address=address,
        destination_service=f"{dst}.legacy.svc.cluster.local", destination_workload=dst,
        destination_namespace="legacy", destination_port=8080, method="GET", path=path,
        response_code=200, mtls=mtls if reporter == "destination" else None,
        tls_version=tls if mtls and reporter == "destination" else None,
        request_id=rid or f"r-{minute}-{address}-{dst}-{path}", **kw)


def run(det, xs):
    """Score then learn, like the engine; returns (score, input) pairs."""
    out = []
    for x in xs:
        out.append((det.score_one(x), x))
        det.learn_one(x)
    return out


def notes(events):
    return notes_and_windows(events)[0]


class TestMtlsDowngrade:
    def test_fires_when_an_mtls_edge_turns_plaintext_for_the_same_caller(self):
        history = [inbound(m, mtls=True) for m in range(0, 30, 3)]
        downgrade = [inbound(31 + m, mtls=False) for m in range(3)]
        scored = run(MtlsDowngrade(), notes(history + downgrade))
        hits = [x for s, x in scored if s >= 0.5]
        assert hits and all(x["mtls"] is False for x in hits)
        assert all(s == 0.0 for s, x in scored if x["mtls"] is not False)
        f = MtlsDowngrade().explain(hits[0], 1.0)  # explain works on a fresh copy too
        assert f is not None

    def test_explain_names_the_downgrade_and_raises_for_sensitive(self):
        det = MtlsDowngrade(sensitive_services=["billing.*"])
        scored = run(det, notes([inbound(0, mtls=True), inbound(5, mtls=False)]))
        s, x = next((s, x) for s, x in scored if s >= 0.5)
        f = det.explain(x, s)
        assert f.severity == "critical" and "downgraded" in f.title
        assert f.entity == f"{x['edge_src']}->{x['edge_dst']}"

    def test_a_plaintext_caller_that_never_used_mtls_is_not_a_downgrade(self):
        # tmp-shell style: a pod without a sidecar, never seen with mTLS anywhere.
        events = [inbound(m, mtls=True, address="10.44.2.9", workload="web") for m in range(10)]
        events += [inbound(12, mtls=False, address="10.44.3.18", workload="tmp-shell")]
        assert max(s for s, _ in run(MtlsDowngrade(), notes(events))) == 0.0

    def test_mesh_caller_plaintext_to_a_new_edge_scores_lower(self):
        events = [inbound(m, mtls=True, dst="ledger") for m in range(10)]
        events += [inbound(12, mtls=False, dst="billing")]
        det = MtlsDowngrade()
        top = max(run(det, notes(events)), key=lambda p: p[0])
        assert top[0] == pytest.approx(0.7)
        assert det.explain(top[1], top[0]).severity == "medium"

    def test_source_side_records_never_score(self):
        events = [inbound(m, mtls=True) for m in range(10)]
        events += [inbound(12 + m, mtls=False, reporter="source") for m in range(3)]
        scored = run(MtlsDowngrade(), notes(events))
        assert all(s == 0.0 for s, _ in scored)


class TestPlaintextPermissive:
    def test_tracks_new_plaintext_callers_of_permissive_workloads(self):
        det = PlaintextPermissive(permissive_namespaces=["legacy"])
        events = [inbound(m, mtls=False, address=f"10.44.3.{m % 3}", workload=None)
                  for m in range(9)]
        scored = run(det, notes(events))
        fired = [x for s, x in scored if s >= 0.5]
        assert len({x["source_address"] for x in fired}) == 3 == len(fired)  # once per caller
        f = det.explain(fired[0], 1.0)
        assert f.severity == "low" and f.entity == "legacy/billing"

    def test_reported_again_after_report_every(self):
        det = PlaintextPermissive(permissive_namespaces=["legacy"], report_every=600)
        scored = run(det, notes([inbound(0, mtls=False), inbound(5, mtls=False, path="/b"),
                                 inbound(11, mtls=False, path="/c")]))
        minutes = [(x["ts"] - T0).total_seconds() / 60 for s, x in scored if s >= 0.5]
        assert minutes == [0, 11]

    def test_silent_without_declarations_and_for_strict(self, tmp_path):
        events = notes([inbound(0, mtls=False)])
        assert max(s for s, _ in run(PlaintextPermissive(), events)) == 0.0
        path = tmp_path / "pa.yaml"
        path.write_text("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                        "metadata: {name: d, namespace: legacy}\nspec: {mtls: {mode: STRICT}}\n")
        strict = PlaintextPermissive(policy_files=[str(path)])
        assert max(s for s, _ in run(strict, events)) == 0.0
        path.write_text(path.read_text().replace("STRICT", "PERMISSIVE"))
        assert max(s for s, _ in run(PlaintextPermissive(policy_files=[str(path)]),
                                     events)) == 1.0

    def test_kubelet_probe_allowlist_applies(self):
        configured = {c.name: c for c in load_detectors(
            {"plaintext_permissive": {"enabled": True,
                                      "params": {"permissive_namespaces": ["legacy"]}}})}
        probe = notes([inbound(0, mtls=False, path="/healthz", address="10.128.0.10",
                               workload=None)])
        allow = configured["plaintext_permissive"].allowlist
        assert all(allow.matches(x) for x in probe if x["note"] == "plaintext")


class TestWeakTls:
    def test_window_with_an_old_version_fires(self):
        events = [inbound(0.1, mtls=True, tls="TLSv1.3"), inbound(0.2, mtls=True, tls="TLSv1.1")]
        (window,) = notes_and_windows(events)[1]
        det = WeakTls(sensitive_services=["billing.*"])
        assert det.score_one(window) == 1.0
        f = det.explain(window, 1.0)
        assert "TLSv1.1" in f.title and f.severity == "high"

    def test_modern_versions_and_plaintext_windows_are_quiet(self):
        events = [inbound(0.1, mtls=True, tls="TLSv1.2"), inbound(0.2, mtls=False)]
        windows = notes_and_windows(events)[1]
        assert len(windows) == 2  # the plaintext call is its own edge (no principal)
        assert [WeakTls().score_one(w) for w in windows] == [0.0, 0.0]
        assert sorted(WeakTls(min_version="TLSv1.3").score_one(w) for w in windows) == [0, 1]


def window(minute: int, requests: int, failures: int) -> dict[str, Any]:
    return {"window_start": T0 + timedelta(minutes=minute), "edge_src": CART,
            "edge_dst": "catalog:3550", "requests": requests, "conn_failures": failures,
            "errors_5xx": failures}


class TestTransportFailures:
    def test_spike_over_the_edges_usual_ratio(self):
        det = TransportFailures()
        scored = run(det, [window(m, 100, m % 20 == 0) for m in range(60)])
        assert max(s for s, _ in scored) == 0.0  # a failure now and then
        storm = window(60, 40, 25)
        assert det.score_one(storm) >= 0.5
        assert "25/40" in det.explain(storm, det.score_one(storm)).title

    def test_needs_a_minimum_count_and_beats_a_flaky_edges_baseline(self):
        det = TransportFailures(min_failures=5)
        assert det.score_one(window(0, 3, 3)) == 0.0  # too few to call a spike
        run(det, [window(m, 20, 6) for m in range(120)])  # chronically flaky edge (30 %)
        assert det.score_one(window(121, 20, 7)) == 0.0
        assert TransportFailures().score_one(window(121, 20, 7)) > 0.5
