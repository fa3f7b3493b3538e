"""Istio policy import: parsing, validation errors at start-up, mode precedence, authz verdicts."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from detectors.config import load_detectors
from detectors.istio_policy import (
    IstioPolicies,
    PolicyError,
    Request,
    load_policy_files,
    parse_documents,
)
from meshwatch.settings import ConfigError

PEER = """
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: billing, namespace: shop}
spec:
  selector: {matchLabels: {app: billing}}
  mtls: {mode: UNSET}
  portLevelMtls:
    8081: {mode: DISABLE}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored, namespace: shop}
"""

AUTHZ = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/api", "cluster.local/ns/ops/*"]}}]
    to: [{operation: {ports: ["5432"]}}]
  - from: [{source: {namespaces: ["batch"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reports/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-deny-debug, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {notNamespaces: ["shop", "batch", "ops"]}}]
  - to: [{operation: {ports: ["8080"], paths: ["/debug*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lock, namespace: vault}
spec: {action: ALLOW}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec: {action: AUDIT, rules: [{}]}
"""


def policies(*texts: str, **kw) -> IstioPolicies:
    peers, authz = [], []
    for i, text in enumerate(texts):
        p, a = parse_documents(yaml.safe_load_all(text), f"inline{i}")
        peers += p
        authz += a
    return IstioPolicies(peers, authz, **kw)


def req(principal=None, port=5432, method=None, path=None, address="10.0.0.1"):
    if principal and not principal.startswith("spiffe://"):
        principal = "spiffe://cluster.local/" + principal
    return Request(principal, address, port, method, path)


class TestPeerAuthentication:
    def test_precedence_workload_namespace_mesh(self):
        pol = policies(PEER)
        assert pol.mtls_mode("shop", "cart-v1", 8080) == "STRICT"  # namespace-wide
        # billing's selector policy is UNSET: it inherits the namespace's STRICT ...
        assert pol.mtls_mode("shop", "billing-v2", 8080) == "STRICT"
        # ... except the port it overrides.
        assert pol.mtls_mode("shop", "billing-v2", 8081) == "DISABLE"
        assert pol.mtls_mode("other", "x", 80) == "PERMISSIVE"  # mesh-wide (root namespace)
        assert policies().mtls_mode("shop", "x", 80) is None  # nothing declared

    def test_selectors_match_derived_or_explicit_labels(self):
        text = PEER.replace("app: billing", "tier: money")
        assert policies(text).mtls_mode("shop", "billing-v2", 8081) == "STRICT"  # label unknown
        explicit = policies(text, labels={"shop/billing-v2": {"tier": "money"}})
        assert explicit.mtls_mode("shop", "billing-v2", 8081) == "DISABLE"

    def test_root_namespace_is_configurable(self):
        pol = policies(PEER.replace("istio-system", "mesh-root"), root_namespace="mesh-root")
        assert pol.mtls_mode("other", "x", 80) == "PERMISSIVE"


class TestAuthorizationPolicy:
    def test_allow_rules_principals_ports_and_operations(self):
        pol = policies(AUTHZ)
        assert pol.authorize("shop", "db", req("ns/shop/sa/api")).allowed
        assert pol.authorize("shop", "db", req("ns/ops/sa/backup")).allowed  # prefix match
        assert not pol.authorize("shop", "db", req("ns/shop/sa/api", port=6379)).allowed
        assert not pol.authorize("shop", "db", req("ns/shop/sa/web")).allowed
        reports = req("ns/batch/sa/job", port=8080, method="GET", path="/reports/q3?x=1")
        assert pol.authorize("shop", "db", reports).allowed
        assert not pol.authorize("shop", "db", req("ns/batch/sa/job", port=8080, method="POST",
                                                   path="/reports/q3")).allowed

    def test_deny_wins_and_http_fields_on_tcp(self):
        pol = policies(AUTHZ)
        verdict = pol.authorize("shop", "db", req("ns/shop/sa/api", port=8080,
                                                  path="/debug/vars", method="GET"))
        assert not verdict.allowed and verdict.policy == "shop/db-deny-debug"
        outsider = pol.authorize("shop", "db", req("ns/web/sa/frontend"))
        assert not outsider.allowed and "DENY" in outsider.reason
        # A TCP call (no method/path) cannot match an ALLOW rule that needs them, and a DENY
        # rule drops them (Istio: HTTP-only fields make TCP DENY rules stricter).
        tcp = pol.authorize("shop", "db", req("ns/batch/sa/job", port=8080))
        assert not tcp.allowed and tcp.policy == "shop/db-deny-debug"
        assert not pol.authorize("shop", "db", req("ns/batch/sa/job", port=9000)).allowed

    def test_no_policy_allow_nothing_and_plaintext(self):
        pol = policies(AUTHZ)
        assert pol.authorize("shop", "cart", req("ns/shop/sa/web")) is None  # not selected
        assert not pol.authorize("vault", "vault", req("ns/shop/sa/api")).allowed  # allow-nothing
        assert not pol.authorize("shop", "db", req(None)).allowed  # no principal: no match

    def test_unjudgeable_conditions_favour_the_caller(self):
        text = textwrap.dedent("""
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: a, namespace: ns}
            spec:
              rules: [{from: [{source: {principals: ["*/sa/x"]}}],
                       when: [{key: "request.headers[x-token]", values: ["abc"]}]}]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: d, namespace: ns}
            spec:
              action: DENY
              rules: [{when: [{key: source.ip, values: ["1.2.3.4"]}]}]
        """)
        pol = policies(text)
        assert pol.authorize("ns", "w", req("ns/a/sa/x")).allowed
        assert not pol.authorize("ns", "w", req("ns/a/sa/y")).allowed


class TestValidation:
    @pytest.mark.parametrize(("text", "problem"), [
        ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\n"
         "spec: {mtls: {mode: STRICTER}}\n", "spec.mtls.mode: 'STRICTER'"),
        ("apiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: a}\n",
         "apiVersion 'security.istio.io/v2'"),
        ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
         "spec: {targetRefs: [{kind: Gateway, name: gw}]}\n", "targetRef(s) is not supported"),
        ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
         "spec: {rules: [{to: [{operation: {ports: ['http']}}]}]}\n", "is not a port number"),
        ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\n"
         "spec: {portLevelMtls: {8080: {mode: STRICT}}}\n", "needs a workload selector"),
        ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
         "spec: {rules: [{from: [{source: {principal: [x]}}]}]}\n", "unknown field 'principal'"),
        ("kind: [unclosed\n", "not valid YAML"),
    ])
    def test_bad_file_names_detector_file_and_problem(self, tmp_path, text, problem):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(PolicyError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            load_policy_files([path])
        with pytest.raises(ConfigError) as exc:
            load_detectors({"policy_violation": {"enabled": True,
                                                 "params": {"policy_files": [str(path)]}}})
        message = str(exc.value)
        assert message.startswith("detectors.policy_violation.params: policy_files:")
        assert str(path) in message

    def test_missing_file_fails_at_start_up(self, tmp_path):
        with pytest.raises(ConfigError, match=r"plaintext_edge\.params: policy_files: .*cannot"):
            load_detectors({"plaintext_edge": {"params": {
                "policy_files": [str(tmp_path / "nope.yaml")]}}})

    def test_good_files_load_for_every_policy_aware_detector(self, tmp_path):
        path = tmp_path / "ok.yaml"
        path.write_text(PEER + "---" + AUTHZ)
        files = {"policy_files": [str(path)]}
        names = {c.name for c in load_detectors({
            "policy_violation": {"enabled": True, "params": files},
            "plaintext_edge": {"params": files},
            "plaintext_permissive": {"enabled": True, "params": files}})}
        assert {"policy_violation", "plaintext_edge", "plaintext_permissive"} <= names
