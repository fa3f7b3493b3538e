"""plaintext_edge severity from declared PeerAuthentication, and first_seen_edge details."""

from __future__ import annotations

from datetime import timedelta

from detectors.lateral import FirstSeenEdge
from detectors.plaintext import PlaintextEdge
from tests.detectors.streams import T0


def note(**kw):
    x = {"note": "plaintext", "reporter": "destination", "mtls": False, "edge_src": "10.0.0.9",
         "edge_dst": "db.pay.svc.cluster.local:5432", "destination_service":
         "db.pay.svc.cluster.local", "destination_namespace": "pay", "destination_workload": "db",
         "destination_port": 5432, "ts": T0}
    x.update(kw)
    return x


def test_strict_from_policy_files_raises_severity_per_workload_and_port(tmp_path):
    path = tmp_path / "pa.yaml"
    path.write_text("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: pay}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-metrics, namespace: pay}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {"9187": {mode: PERMISSIVE}}
""")
    det = PlaintextEdge(policy_files=[str(path)])
    assert det.explain(note(), 1.0).severity == "high"
    assert det.explain(note(destination_port=9187), 1.0).severity == "medium"
    assert det.explain(note(destination_namespace="other"), 1.0).severity == "medium"
    assert PlaintextEdge(policy_files=[str(path)], sensitive_services=["db.pay.*"]).explain(
        note(), 1.0).severity == "critical"


def test_policy_cache_is_not_pickled_and_reloads(tmp_path):
    import pickle

    path = tmp_path / "pa.yaml"
    path.write_text("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                    "metadata: {name: d, namespace: pay}\nspec: {mtls: {mode: STRICT}}\n")
    det = PlaintextEdge(policy_files=[str(path)])
    det.explain(note(), 1.0)
    assert "_policies" in det.__dict__ and b"PeerAuthentication" not in pickle.dumps(det)
    assert pickle.loads(pickle.dumps(det)).explain(note(), 1.0).severity == "high"


def test_default_allowlists_cover_probes_and_ingress_gateways_only():
    from detectors.config import load_detectors

    allow = {c.name: c.allowlist for c in load_detectors()}["plaintext_edge"]
    probe = note(method="GET", path="/healthz/ready", edge_src="10.128.0.10")
    gateway = note(destination_workload="istio-ingressgateway-7f9d", method="GET", path="/")
    assert allow.matches(probe) and allow.matches(gateway)
    assert not allow.matches(note(method="GET", path="/api/v1/invoices"))
    assert not allow.matches({**probe, "mtls": True})


def edge(src, dst, minutes, code=200, flags=None, note_kind="first"):
    return {"note": note_kind, "edge_src": src, "edge_dst": dst, "source_workload": src,
            "source_namespace": "shop", "response_code": code, "response_flags": flags,
            "ts": T0 + timedelta(minutes=minutes)}


def test_first_seen_treats_a_tcp_session_as_success_and_skips_repeat_notes():
    det = FirstSeenEdge(learning_period=600, rollout_grace=600)
    for m in range(0, 40):  # active in 40 windows: past its learning period
        det.learn_one(edge("cart", "redis:6379", m))
        det.learn_one(edge("orders", "db:5432", m))
    # A brand-new database that answers a TCP session (code 0, no flags) is a rollout ...
    assert det.score_one(edge("cart", "newdb:5432", 45, code=0)) < 0.5
    # ... one refused at connect (UF) is not.
    assert det.score_one(edge("cart", "newdb:5432", 45, code=0, flags="UF")) >= 0.5
    # A known database called for the first time by cart is unusual either way.
    assert det.score_one(edge("cart", "db:5432", 45, code=0)) >= 0.5
    # Per-address repeats of an edge are not edges of their own.
    assert det.score_one(edge("cart", "db:5432", 45, note_kind="new_address")) == 0.0
