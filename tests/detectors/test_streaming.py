"""source_behaviour (River HalfSpaceTrees over per-source window features)."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta
from typing import Any

from detectors.config import load_detectors
from detectors.streaming import SourceBehaviour
from tests.detectors.streams import T0


def window(minute: int, src: str, dst: str, requests: int = 20, failed: int = 0,
           denials: int = 0, mtls_false: int = 0, nbytes: int | None = None) -> dict[str, Any]:
    return {"window_start": T0 + timedelta(minutes=minute), "window_seconds": 60,
            "edge_src": src, "src_workload": src, "src_namespace": "shop", "edge_dst": dst,
            "dst_workload": dst.split(":")[0], "dst_namespace": "shop", "requests": requests,
            "errors_4xx": failed, "denials": denials, "conn_failures": 0, "errors_5xx": 0,
            "bytes_sent": nbytes if nbytes is not None else 300 * requests,
            "bytes_received": 0, "mtls_true": requests - mtls_false, "mtls_false": mtls_false}


def steady(minutes: int, seed: int = 4) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for m in range(minutes):
        for s in range(8):
            for d in range(2):
                out.append(window(m, f"app{s}", f"svc{(s + d) % 8}:80",
                                  requests=rng.randint(10, 40), failed=rng.random() < 0.05))
    return out


def run(det, windows, findings=None):
    scores = []
    for x in windows:
        s = det.score_one(x)
        if findings is not None and s >= 0.5:
            findings.append(det.explain(x, s))
        scores.append(s)
        det.learn_one(x)
    return scores


def test_steady_mesh_is_quiet_and_a_scan_like_period_fires():
    det = SourceBehaviour()
    assert max(run(det, steady(180))) < 0.5
    burst = [window(180, "app3", f"new{i}:80", requests=2, failed=2) for i in range(15)]
    findings: list = []
    run(det, [*burst, window(181, "app0", "svc0:80")], findings)  # the next period carries it
    assert [f.entity for f in findings] == ["shop/app3"]
    features = findings[0].evidence[0]["features"]
    assert features["new_destinations"] > 2 and features["failed"] == 1.0


def test_several_anomalous_sources_are_each_reported():
    det = SourceBehaviour()
    run(det, steady(180))
    burst = [window(180, src, f"new{i}:80", requests=2, failed=2)
             for src in ("app2", "app5") for i in range(15)]
    findings: list = []
    run(det, burst + [window(181, f"app{s}", f"svc{s}:80") for s in range(8)], findings)
    assert sorted(f.entity for f in findings) == ["shop/app2", "shop/app5"]


def test_volume_alone_within_history_is_not_suspicious_and_ignore_sources_works():
    det = SourceBehaviour(ignore_sources=["shop/app3"])
    run(det, steady(180))
    burst = [window(180, "app3", f"new{i}:80", requests=2, failed=2) for i in range(15)]
    quiet = [window(180, "app4", "svc4:80", requests=5)]  # a quiet minute is not an attack
    assert max(run(det, burst + quiet + [window(181, "app0", "svc0:80")])) < 0.5


def test_warm_up_neutral_pickle_and_bounds():
    det = SourceBehaviour()
    assert max(run(det, steady(15))) == 0.0  # fewer than min_periods per source
    run(det, steady(60)[len(steady(15)):])
    twin = pickle.loads(pickle.dumps(det))
    probe = steady(61)[-1]
    assert twin.score_one(probe) == det.score_one(probe)
    names = [c.name for c in load_detectors()]
    assert "source_behaviour" in names and "window_outlier" not in names  # baseline: opt-in
