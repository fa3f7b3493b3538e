"""cert_expiry: judged against the certificate lifetime and rotation point, not "N days"."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from detectors.certs import CertExpiry
from detectors.config import load_detectors
from meshwatch.records import EdgeEvent
from meshwatch.settings import ConfigError
from tests.detectors.streams import T0, notes_and_windows

HOUR = 3600.0
PRINCIPAL = "spiffe://cluster.local/ns/shop/sa/cart"


def istio_not_after(t: float, anchor: float = -5 * HOUR, stall: float | None = None) -> float:
    """NotAfter a pod presents at ``t`` (seconds after T0): 24 h certificates renewed at 12 h,
    optionally no renewal after ``stall``."""
    k = max(0, math.floor((t - anchor) / (12 * HOUR)))
    if stall is not None:
        k = min(k, max(0, math.floor((stall - anchor) / (12 * HOUR))))
    return anchor + k * 12 * HOUR + 24 * HOUR


def calls(minutes: range, not_after, address: str = "10.44.1.5"):
    events = []
    for m in minutes:
        t = m * 60.0
        events.append(EdgeEvent(
            ts=T0 + timedelta(seconds=t), origin="envoy_json", reporter="destination",
            source_principal=PRINCIPAL, source_workload="cart", source_namespace="shop",
            source_address=address, destination_service="db.shop.svc.cluster.local",
            destination_port=5432, response_code=0, mtls=True, tls_version="TLSv1.3",
            peer_cert_not_after=T0 + timedelta(seconds=not_after(t)), request_id=f"r{m}"))
    return notes_and_windows(events)[0]


def scores(det, notes):
    out = []
    for x in notes:
        out.append((det.score_one(x), x))
        det.learn_one(x)
    return out


def test_healthy_rotation_is_quiet_for_two_days():
    det = CertExpiry()
    assert max(s for s, _ in scores(det, calls(range(0, 48 * 60, 7), istio_not_after))) == 0.0


def test_stalled_rotation_fires_after_the_rotation_point_plus_grace():
    stall = 7 * HOUR  # the renewal due at 7 h never happens
    scored = scores(CertExpiry(), calls(range(0, 20 * 60, 5),
                                        lambda t: istio_not_after(t, stall=stall - 1)))
    first = next(x["ts"] for s, x in scored if s >= 0.5)
    hours = (first - T0).total_seconds() / HOUR
    assert 7.5 <= hours < 7.6  # 30 min grace after the missed renewal, not days later
    assert all(s < 0.5 for s, x in scored if x["ts"] < first)


def test_expired_certificate_in_use_is_critical():
    det = CertExpiry()
    scored = scores(det, calls(range(0, 30), lambda t: 10 * 60.0))  # expires at minute 10
    late = [(s, x) for s, x in scored if x["ts"] - T0 >= timedelta(minutes=11)]
    s, x = max(late, key=lambda p: p[0])
    assert s == 1.0 and det.explain(x, s).severity == "critical"
    early = det.explain(*next((x, s) for s, x in scored if s >= 0.5))
    assert early.severity == "high" and "stopped rotating" in early.title


def test_long_lived_connection_with_an_old_cert_is_not_stale_when_the_pod_rotates():
    det = CertExpiry()
    scores(det, calls(range(0, 60, 5), lambda t: 30 * HOUR))  # fresh certificate
    old = calls(range(61, 62), lambda t: 11 * HOUR)  # an old connection, 10 h left
    assert max(s for s, _ in scores(det, old)) == 0.0
    other_pod = calls(range(61, 62), lambda t: 11 * HOUR, address="10.44.2.7")
    assert max(s for s, _ in scores(det, other_pod)) == 0.8


def test_lifetime_is_configurable_and_source_side_never_scores():
    long_lived = calls(range(0, 5), lambda t: 20 * 24 * HOUR)  # 20 days left
    assert max(s for s, _ in scores(CertExpiry(lifetime=90 * 24 * HOUR), long_lived)) == 0.8
    assert max(s for s, _ in scores(CertExpiry(), long_lived)) == 0.0
    source_side = [{**x, "reporter": "source"} for x in calls(range(0, 5), lambda t: 60.0)]
    assert max(s for s, _ in scores(CertExpiry(), source_side)) == 0.0


def test_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"cert_expiry\.params: grace"):
        load_detectors({"cert_expiry": {"params": {"grace": "13h"}}})
    with pytest.raises(ConfigError, match=r"cert_expiry\.params: rotate_at"):
        load_detectors({"cert_expiry": {"params": {"rotate_at": 1.5}}})
    (det,) = [c for c in load_detectors({"cert_expiry": {"params": {"lifetime": "48h"}}})
              if c.name == "cert_expiry"]
    assert det.detector.lifetime == 48 * HOUR
