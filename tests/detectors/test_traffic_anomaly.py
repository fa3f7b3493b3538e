"""The per-edge traffic detector: one value model per (edge, metric), bounded edge map."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detectors.base import DETECTORS
from detectors.traffic import TrafficAnomaly, window_metrics
from meshwatch.records import Finding
from tests.detectors.streams import inputs_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _window(i: int, rng: random.Random, src: str = "ns1/app", dst: str = "db.ns2:5432",
            **overrides: Any) -> dict[str, Any]:
    requests = max(1, int(rng.gauss(120, 10)))
    w = {
        "window_start": T0 + timedelta(minutes=i), "window_seconds": 60,
        "edge_src": src, "edge_dst": dst, "src_workload": "app-v1", "src_namespace": "ns1",
        "src_principal": "spiffe://cluster.local/ns/ns1/sa/app", "dst_service": "db.ns2",
        "dst_namespace": "ns2", "requests": requests, "errors_4xx": 0,
        "errors_5xx": int(rng.random() < 0.3), "denials": 0,
        "bytes_sent": requests * int(rng.gauss(2000, 100)), "bytes_received": requests * 300,
        "latency_p50": rng.gauss(8, 0.5), "latency_p95": rng.gauss(20, 1.5),
        "latency_p99": rng.gauss(30, 2), "mtls_true": requests, "mtls_false": 0,
        "mtls_unknown": 0,
    }
    w.update(overrides)
    return w


def _train(det: TrafficAnomaly, n: int, seed: int = 11, **kw: Any) -> list[float]:
    rng = random.Random(seed)
    scores = []
    for i in range(n):
        w = _window(i, rng, **kw)
        scores.append(det.score_one(w))
        det.learn_one(w)
    return scores


def test_registered_with_metadata() -> None:
    assert DETECTORS.get("traffic_anomaly") is TrafficAnomaly
    assert TrafficAnomaly.consumes == "windows" and TrafficAnomaly.family == "traffic"
    assert {"T1041", "T1499"} <= set(TrafficAnomaly.mitre)


def test_metrics_treat_missing_keys_as_absent() -> None:
    assert window_metrics({}) == {}
    assert window_metrics({"requests": 0, "errors_5xx": 0}) == {"requests": 0.0}
    assert window_metrics({"bytes_received": 7, "latency_p95": 12.5}) == {
        "bytes": 7.0, "latency_p95": 12.5}


def test_neutral_before_warm_up_then_quiet_on_normal_traffic() -> None:
    det = TrafficAnomaly()
    scores = _train(det, 1500)
    assert scores[: det.warmup] == [0.0] * det.warmup
    assert max(scores[det.warmup :]) < det.default_threshold


def test_flags_exfiltration_and_explains_it() -> None:
    det = TrafficAnomaly()
    _train(det, 400)
    rng = random.Random(99)
    exfil = _window(400, rng, bytes_sent=2_000_000_000)
    score = det.score_one(exfil)
    assert score >= det.default_threshold
    finding = det.explain(exfil, score)
    assert isinstance(finding, Finding)
    assert finding.entity == "ns1/app->db.ns2:5432"
    assert finding.detector == "traffic_anomaly"
    assert finding.mitre == ("TA0010", "T1041")
    assert "bytes" in finding.title and "ns1/app->db.ns2:5432" in finding.title
    assert "2.0 GB" in finding.summary and "usually" in finding.summary
    assert finding.source.workload == "app-v1" and finding.source.namespace == "ns1"
    assert finding.source.principal == "spiffe://cluster.local/ns/ns1/sa/app"
    assert finding.destination.service == "db.ns2"
    assert finding.severity in ("medium", "high")
    assert finding.ts == exfil["window_start"]


def test_flags_an_error_storm_and_a_flood() -> None:
    det = TrafficAnomaly()
    _train(det, 400)
    rng = random.Random(5)
    storm = _window(400, rng, errors_5xx=110)
    assert det.score_one(storm) >= det.default_threshold
    assert det.explain(storm, det.score_one(storm)).labels == {"metric": "error_ratio"}
    flood = _window(400, rng, requests=60_000, bytes_sent=60_000 * 2000,
                    bytes_received=60_000 * 300)
    assert det.score_one(flood) >= det.default_threshold


def test_quiet_edge_resuming_after_a_gap_does_not_fire() -> None:
    det = TrafficAnomaly()
    rng = random.Random(3)
    for i in range(300):
        w = _window(i, rng)
        det.score_one(w)
        det.learn_one(w)
    resumed = [_window(i, rng) for i in range(300 + 180, 300 + 190)]  # back after 3 hours
    for w in resumed:
        assert det.score_one(w) < det.default_threshold
        det.learn_one(w)


def test_edge_map_is_bounded_and_counts_evictions() -> None:
    det = TrafficAnomaly(max_edges=5, ttl_seconds=600.0, warmup=5)
    rng = random.Random(1)
    for e in range(20):
        det.learn_one(_window(0, rng, src=f"ns/app{e}"))
    assert det.learned_size() == 5
    assert det.evictions.capacity == 15
    det.learn_one(_window(30, rng, src="ns/late"))  # 30 minutes later: the rest expired
    assert det.learned_size() == 1
    assert det.evictions.expired == 5


def test_contract_on_real_graph_windows() -> None:
    xs = inputs_for("windows")
    det = TrafficAnomaly(warmup=20)
    for x in xs[:3000]:
        det.score_one(x)
        det.learn_one(x)
    twin = det.clone()
    assert twin._get_params() == det._get_params() and twin.learned_size() == 0
    before = pickle.dumps(det)
    for x in xs[3000:3100]:
        det.score_one(x)
        det.explain(x, 0.9)
    assert pickle.dumps(det) == before
    restored = pickle.loads(before)
    for x in xs[3000:3600]:
        assert restored.score_one(x) == det.score_one(x)
        restored.learn_one(x)
        det.learn_one(x)


def test_validate_params() -> None:
    TrafficAnomaly.validate_params({"metrics": ["bytes"], "warmup": 10})
    for bad in ({"metrics": ["cpu"]}, {"max_edges": 0}, {"ttl_seconds": 0}, {"warmup": 0}):
        with pytest.raises(ValueError):
            TrafficAnomaly.validate_params(bad)


def test_a_gap_breaks_the_sequence() -> None:
    """Across a silence, the jump from the last value to the next is not a transition."""
    det = TrafficAnomaly(warmup=30, metrics=("requests",))
    rng = random.Random(2)
    for i in range(200):  # a quiet, regular edge: 2 and 40 requests, alternating
        w = _window(i, rng, requests=2 if i % 2 else 40)
        det.score_one(w)
        det.learn_one(w)
    # The last window had 2 requests; another 2 never follows a 2.
    next_minute = _window(200, rng, requests=2)
    after_gap = _window(200 + 120, rng, requests=2)
    assert det.score_one(next_minute) >= 0.3  # the transition 2 -> 2 is new
    assert det.score_one(after_gap) < 0.1  # after two hours of silence, it is not a transition
