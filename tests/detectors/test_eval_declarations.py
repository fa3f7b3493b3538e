"""`meshwatch eval --declare-from-mesh`: the simulator's topology as operator declarations."""

from __future__ import annotations

import json

from detectors.config import load_detectors
from detectors.evaluation.declarations import write_declarations
from detectors.istio_policy import Request, load_policy_files

MESH = {
    "namespaces": [{"name": "legacy", "peer_authentication": "PERMISSIVE"},
                   {"name": "security", "peer_authentication": "STRICT"}],
    "services": [
        {"name": "vault", "namespace": "security", "sensitive": True,
         "authorization_policy": ["spiffe://cluster.local/ns/pay/sa/payments"]},
        {"name": "billing", "namespace": "legacy", "sensitive": False,
         "authorization_policy": None},
    ],
    "workloads": [{"name": "payments", "namespace": "pay", "service_account": "payments",
                   "principal": "spiffe://cluster.local/ns/pay/sa/payments"},
                  {"name": "tmp-shell", "namespace": "default", "service_account": "default",
                   "principal": None}],
}


def test_declarations_load_and_mean_what_the_mesh_says(tmp_path):
    mesh_json = tmp_path / "mesh.json"
    mesh_json.write_text(json.dumps(MESH))
    overrides = write_declarations(mesh_json, tmp_path / "decl")
    configured = {c.name: c.detector for c in load_detectors(overrides)}
    assert configured["crown_jewel_access"].services == ["vault.security.*"]
    assert configured["identity_misuse"].service_accounts == {"pay/payments": "payments"}
    (path,) = configured["policy_violation"].policy_files
    policies = load_policy_files([path])
    assert policies.mtls_mode("legacy", "billing", 8080) == "PERMISSIVE"
    assert policies.mtls_mode("security", "vault", 8200) == "STRICT"
    allowed = Request("spiffe://cluster.local/ns/pay/sa/payments", "10.0.0.1", 8200, "GET", "/")
    other = Request("spiffe://cluster.local/ns/shop/sa/web", "10.0.0.2", 8200, "GET", "/")
    assert policies.authorize("security", "vault", allowed).allowed
    assert not policies.authorize("security", "vault", other).allowed
    assert policies.authorize("legacy", "billing", other) is None
