"""identity_misuse: a principal presented by a pod that is not one of its workload's pods."""

from __future__ import annotations

from datetime import timedelta

import pytest

from detectors.config import load_detectors
from detectors.identity import IdentityMisuse
from meshwatch.records import EdgeEvent
from meshwatch.settings import ConfigError
from tests.detectors.streams import T0, notes_and_windows

PAY = "spiffe://cluster.local/ns/shop/sa/payment"
ADS = "spiffe://cluster.local/ns/shop/sa/ads"


def call(minute: float, principal: str | None, address: str, workload: str | None,
         callee: str = "vault", sidecar: bool = True, tls: str = "TLSv1.3", seq: int = 0
         ) -> list[EdgeEvent]:
    """The callee's inbound record, plus the caller's outbound record when it has a sidecar
    (which is how the pipeline learns the address's workload)."""
    common = dict(ts=T0 + timedelta(minutes=minute), origin="envoy_json",
                  source_address=address, destination_service=f"{callee}.sec.svc.cluster.local",
                  destination_workload=callee, destination_namespace="sec",
                  destination_port=8200, method="GET", path="/v1/secret", response_code=200,
                  request_id=f"{address}-{callee}-{minute}-{seq}")
    events = []
    if sidecar:
        events.append(EdgeEvent(reporter="source", source_workload=workload,
                                source_namespace="shop", source_principal=principal, **common))
    events.append(EdgeEvent(reporter="destination", mtls=True, tls_version=tls,
                            source_principal=principal,
                            source_workload=workload if sidecar else None,
                            source_namespace="shop" if sidecar else None,
                            peer_cert_not_after=T0 + timedelta(hours=20), **common))
    return events


def normal(minutes: int = 40) -> list[EdgeEvent]:
    events = []
    for m in range(minutes):
        events += call(m, PAY, "10.44.1.7", "payment", seq=1)
        events += call(m + 0.5, PAY, "10.44.2.4", "payment", callee="db", seq=2)
        events += call(m + 0.2, ADS, "10.44.3.10", "ads", callee="catalog", seq=3)
    return events


def replay(det, events, findings=None):
    out = []
    for x in notes_and_windows(sorted(events, key=lambda e: e.ts))[0]:
        score = det.score_one(x)
        if findings is not None and score >= 0.5:
            findings.append(det.explain(x, score))
        out.append((score, x))
        det.learn_one(x)
    return out


def test_new_pods_and_canaries_of_the_same_app_are_quiet():
    events = normal()
    events += call(41, PAY, "10.44.4.9", "payment-v2")  # a new pod, a new version
    events += call(42, PAY, "10.44.4.10", "payment")
    assert max(s for s, _ in replay(IdentityMisuse(), events)) < 0.5


def test_principal_from_another_workloads_pod():
    # The ads pod (its sidecar says so) presents payment's principal.
    findings: list = []
    replay(IdentityMisuse(), normal() + call(41, PAY, "10.44.3.10", "ads", seq=9), findings)
    assert findings
    f = findings[0]
    assert f.entity == f"{PAY}@10.44.3.10" and f.severity == "critical"
    assert "shop/ads" in f.summary


def test_declared_service_account_mismatch():
    det = IdentityMisuse(service_accounts={"shop/ads": "ads"})
    findings: list = []
    replay(det, call(0, PAY, "10.44.3.10", "ads"), findings)  # no learning needed
    assert findings and "runs as service account ads" in findings[0].summary


def test_address_no_sidecar_vouches_for_is_reported_after_the_grace_period():
    findings: list = []
    stolen = call(41, PAY, "10.128.0.231", None, sidecar=False, tls="TLSv1.2", seq=7)
    replay(IdentityMisuse(grace=120), normal(45) + stolen, findings)
    assert len(findings) == 1
    f = findings[0]
    assert f.entity == f"{PAY}@10.128.0.231"
    assert f.ts >= T0 + timedelta(minutes=43)  # reported when the grace period ran out
    assert f.evidence[0]["source_address"] == "10.128.0.231"
    assert "no sidecar reported" in f.summary and "TLSv1.2" in f.summary


def test_ignored_addresses_are_not_judged():
    stolen = call(41, PAY, "10.128.0.231", None, sidecar=False, seq=7)
    det = IdentityMisuse(ignore_addresses=["10.128.0.0/24"])
    assert max(s for s, _ in replay(det, normal(45) + stolen)) < 0.5
    with pytest.raises(ConfigError, match=r"identity_misuse\.params: ignore_addresses"):
        load_detectors({"identity_misuse": {"params": {"ignore_addresses": ["10.0.0/33"]}}})


def test_pending_check_is_cleared_when_the_pods_own_sidecar_reports():
    late_sidecar = call(41, PAY, "10.44.5.5", None, sidecar=False, seq=5)
    late_sidecar += [EdgeEvent(ts=T0 + timedelta(minutes=41.5), origin="envoy_json",
                               reporter="source", source_workload="payment",
                               source_namespace="shop", source_address="10.44.5.5",
                               destination_service="db.sec.svc.cluster.local",
                               destination_port=5432, request_id="late")]
    assert max(s for s, _ in replay(IdentityMisuse(), normal(45) + late_sidecar)) < 0.5


def test_unlearned_principals_are_not_judged_and_params_are_checked():
    fresh = call(0, PAY, "10.128.0.231", None, sidecar=False) + call(5, ADS, "10.0.0.1", None)
    assert max(s for s, _ in replay(IdentityMisuse(), fresh)) == 0.0
    with pytest.raises(ConfigError, match=r"identity_misuse\.params: service_accounts"):
        load_detectors({"identity_misuse": {"params": {"service_accounts": {"ads": 1}}}})
