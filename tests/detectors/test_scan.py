"""fanout_scan and lateral_chain on notes from the graph builder: a small mesh learns for an
hour, then one workload scans or pivots."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from detectors.chains import LateralChain
from detectors.scan import FanoutScan
from meshwatch.records import EdgeEvent
from tests.detectors.streams import T0, notes_and_windows

# (workload, namespace) -> callees ("service.namespace")
MESH = {
    ("frontend", "shop"): ["cart.shop", "catalog.shop", "ads.shop", "checkout.shop"],
    ("checkout", "shop"): ["payment.shop", "cart.shop", "email.shop"],
    ("cart", "shop"): ["redis.shop"],
    ("payment", "shop"): ["vault.security"],
    ("reviews-v1", "books"): ["ratings.books"],
    ("reviews-v2", "books"): ["ratings.books"],
    ("billing", "legacy"): ["legacy-db.legacy"],
}
SA = {"reviews-v1": "reviews", "reviews-v2": "reviews"}


def principal(workload: str, namespace: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{SA.get(workload, workload)}"


def call(minute: float, workload: str, namespace: str, callee: str, code: int = 200,
         path: str = "/", seq: int = 0, flags: str | None = None) -> list[EdgeEvent]:
    """Both records of one call: the caller's outbound and the callee's inbound."""
    service, dst_ns = callee.split(".")
    common: dict[str, Any] = dict(
        ts=T0 + timedelta(minutes=minute), origin="envoy_json",
        source_workload=workload, source_namespace=namespace,
        source_principal=principal(workload, namespace), source_address=f"10.44.0.{seq % 7}",
        destination_service=f"{service}.{dst_ns}.svc.cluster.local", destination_port=8080,
        destination_workload=service, destination_namespace=dst_ns, method="GET", path=path,
        response_code=code, response_flags=flags,
        request_id=f"{workload}-{callee}-{minute}-{seq}-{path}")
    return [EdgeEvent(reporter="source", mtls=None, **common),
            EdgeEvent(reporter="destination", mtls=True, tls_version="TLSv1.3", **common)]


def baseline(minutes: int = 60, seed: int = 1) -> list[EdgeEvent]:
    rng = random.Random(seed)
    events = []
    for minute in range(minutes):
        for (workload, namespace), callees in MESH.items():
            for callee in callees:
                if rng.random() < 0.7:
                    events += call(minute + rng.random(), workload, namespace, callee,
                                   seq=rng.randrange(1000))
    return events


def replay(det, events: list[EdgeEvent], findings: list | None = None
           ) -> list[tuple[float, dict[str, Any]]]:
    """Score, explain (at/above 0.5, as the engine does) and learn every note."""
    events = sorted(events, key=lambda e: e.ts)
    out = []
    for x in notes_and_windows(events)[0]:
        score = det.score_one(x)
        if findings is not None and score >= 0.5:
            findings.append(det.explain(x, score))
        out.append((score, x))
        det.learn_one(x)
    return out


def fired(scored, threshold: float = 0.5):
    return [x for s, x in scored if s >= threshold]


class TestFanoutScan:
    def scan(self, start: float, targets: list[str], code: int = 404) -> list[EdgeEvent]:
        events = []
        for i, target in enumerate(targets):
            events += call(start + i * 0.1, "cart", "shop", target, code=code, path="/admin",
                           seq=i)
        return events

    TARGETS = ["catalog.shop", "ads.shop", "checkout.shop", "payment.shop", "email.shop",
               "vault.security", "ratings.books", "legacy-db.legacy", "frontend.shop"]

    def test_a_burst_of_refused_new_destinations_fires_once_per_source(self):
        det = FanoutScan()
        findings: list = []
        scored = replay(det, baseline() + self.scan(61, self.TARGETS), findings)
        hits = fired(scored, 0.6)
        assert hits and {x["source_workload"] for x in hits} == {"cart"}
        assert {f.entity for f in findings} == {"shop/cart"}  # one alert for the burst
        assert "6 new destinations" in findings[0].title
        assert findings[-1].evidence[1]["failed"] == len(self.TARGETS)
        assert all(x["ts"] >= T0 + timedelta(minutes=61) for x in hits)

    def test_baseline_and_slow_or_small_fan_out_are_quiet(self):
        assert not fired(replay(FanoutScan(), baseline(120)), 0.6)
        small = self.scan(61, self.TARGETS[:4])
        assert not fired(replay(FanoutScan(), baseline() + small), 0.6)
        slow = []
        for i, target in enumerate(self.TARGETS):  # one new destination every 10 minutes
            slow += call(61 + 10 * i, "cart", "shop", target, code=404, seq=i)
        assert not fired(replay(FanoutScan(), baseline(150) + slow), 0.6)

    def test_sources_in_their_learning_period_are_not_judged(self):
        young = []
        for i, target in enumerate(self.TARGETS):
            young += call(61 + i * 0.1, "newjob", "shop", target, code=403, seq=i)
        assert not fired(replay(FanoutScan(), baseline() + young), 0.6)

    def test_successful_new_destinations_fire_only_in_numbers(self):
        ok = self.scan(61, self.TARGETS[:7], code=200)
        assert not fired(replay(FanoutScan(), baseline() + ok), 0.6)
        many = []
        for i in range(12):
            many += call(61 + i * 0.1, "cart", "shop", f"svc{i}.shop", code=200, seq=i)
        # Brand-new destinations that answer are rollouts; known ones that answer in numbers:
        known = baseline()
        for i in range(12):
            known += call(i, "checkout", "shop", f"svc{i}.shop", seq=i)
        assert not fired(replay(FanoutScan(), baseline() + many), 0.6)
        assert fired(replay(FanoutScan(), known + many), 0.6)


class TestLateralChain:
    def test_new_edge_then_pivot_from_the_callee_is_a_chain(self):
        det = LateralChain()
        attack = call(70, "cart", "shop", "legacy-db.legacy", code=200, path="/env")  # hop 1
        attack += call(74, "legacy-db", "legacy", "vault.security", code=200,
                       path="/v1/secret")  # hop 2, from the callee of hop 1
        base = baseline() + call(2, "legacy-db", "legacy", "redis.shop")  # legacy-db is known
        findings: list = []
        hits = fired(replay(det, base + attack, findings))
        assert hits and hits[0]["source_workload"] == "legacy-db"
        f = findings[0]
        assert f.entity == "shop/cart" and "chain of 2" in f.title
        assert len(f.evidence[1]["chain"]) == 2

    def test_a_refused_first_hop_or_a_late_second_hop_is_not_a_chain(self):
        base = baseline(200) + call(2, "legacy-db", "legacy", "redis.shop")
        refused = call(70, "cart", "shop", "legacy-db.legacy", code=403)
        refused += call(74, "legacy-db", "legacy", "vault.security")
        assert not fired(replay(LateralChain(), base + refused))
        late = call(70, "cart", "shop", "legacy-db.legacy")
        late += call(70 + 90, "legacy-db", "legacy", "vault.security")
        assert not fired(replay(LateralChain(), base + late))

    def test_canary_edges_are_not_hops(self):
        # reviews-v3 (same app and service account) calling ratings is not a new edge.
        base = baseline() + call(2, "ratings", "books", "redis.shop")
        canary = call(70, "reviews-v3", "books", "ratings.books")
        canary += call(72, "ratings", "books", "vault.security")
        assert not fired(replay(LateralChain(), base + canary))
