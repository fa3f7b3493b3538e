"""policy_violation: declared Istio policy against the callee's own records."""

from __future__ import annotations

from datetime import timedelta

import pytest

from detectors.policy import PolicyViolation
from meshwatch.records import EdgeEvent
from tests.detectors.streams import T0, notes_and_windows

POLICY = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: pay}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow, namespace: pay}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/checkout"]}}]}]
"""


@pytest.fixture
def det(tmp_path) -> PolicyViolation:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return PolicyViolation(policy_files=[str(path)])


def inbound(minute: float, sa: str | None, code: int = 200, path: str = "/charge",
            protocol: str = "HTTP/1.1", workload: str = "api-v1", reporter: str = "destination"):
    principal = f"spiffe://cluster.local/ns/shop/sa/{sa}" if sa else None
    return EdgeEvent(
        ts=T0 + timedelta(minutes=minute), origin="envoy_json", reporter=reporter,
        source_principal=principal if reporter == "destination" else None,
        source_workload=sa or "tmp", source_namespace="shop", source_address="10.44.1.1",
        destination_service="api.pay.svc.cluster.local", destination_workload=workload,
        destination_namespace="pay", destination_port=8080, method="POST", path=path,
        protocol=protocol, response_code=code,
        mtls=(sa is not None) if reporter == "destination" else None,
        tls_version="TLSv1.3" if sa else None, request_id=f"{sa}-{minute}-{path}")


def findings(det, events):
    out = []
    for x in notes_and_windows(events)[0]:
        score = det.score_one(x)
        if score >= 0.5:
            out.append(det.explain(x, score))
        det.learn_one(x)
    return out


def test_allowed_principal_is_quiet(det):
    assert findings(det, [inbound(0, "checkout")]) == []


def test_served_call_outside_policy_means_it_is_not_enforced(det):
    got = findings(det, [inbound(0, "frontend")])  # first/new_principal/new_address notes
    assert {(f.entity, f.severity) for f in got} == {
        ("served:api.pay.svc.cluster.local:8080", "high")}
    assert "not enforced" in got[0].title


def test_denied_and_unknown_outcomes_are_attempts_grouped_per_caller(det):
    got = findings(det, [inbound(0, "frontend", code=403),
                         inbound(2, "frontend", protocol="HTTP/2",
                                 path="/pay.Api/Charge")])  # gRPC denial looks like a 200
    assert {(f.entity, f.severity) for f in got} == {("outside-policy:shop/frontend", "medium")}
    assert any("proxy denied" in f.summary for f in got)
    assert any("not in the log" in f.summary for f in got)


def test_plaintext_into_strict_and_source_side_silence(det):
    strict = findings(det, [inbound(0, None)])
    assert any("STRICT" in f.title for f in strict)
    assert findings(det, [inbound(1, "frontend", reporter="source")]) == []
    assert findings(PolicyViolation(), [inbound(0, None), inbound(1, "frontend")]) == []
