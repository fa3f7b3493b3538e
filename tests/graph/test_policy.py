"""Zero-trust policy from observed traffic: exact principals, STRICT, operations, dry run."""

from __future__ import annotations

import yaml

from meshwatch.graphs import service
from meshwatch.graphs.timerange import TimeRange
from meshwatch.policy import PolicyOptions, istio_principal, plan_policies, render_yaml
from meshwatch.store import graph_queries as q
from tests.graph.mesh import BATCH, CART, CART_SA, DB, INTRUDER, PAY, WEB, at

A = TimeRange(at(0), at(10))
B = TimeRange(at(20), at(30))


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _by_kind(docs: list[dict], kind: str) -> dict[tuple[str, str], dict]:
    return {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs
            if d["kind"] == kind}


def test_policies_allow_exactly_the_principals_callees_verified(mesh):
    plan = plan_policies(service.snapshot(mesh, A, latency=False))
    text = render_yaml(plan)
    docs = _docs(text)
    assert all(d["apiVersion"] == "security.istio.io/v1" for d in docs)
    authz = _by_kind(docs, "AuthorizationPolicy")
    assert set(authz) == {("shop", "meshwatch-allow-cart"), ("pay", "meshwatch-allow-pay")}
    cart = authz[("shop", "meshwatch-allow-cart")]["spec"]
    assert cart["selector"] == {"matchLabels": {"app": "cart"}} and cart["action"] == "ALLOW"
    assert cart["rules"] == [{"from": [{"source": {"principals": [istio_principal(WEB)]}}]}]
    # cart -> db was only seen by the caller: its claimed principal allows nothing, and db
    # gets no policy at all.
    assert all(istio_principal(CART_SA) not in str(d["spec"]) for d in docs)
    assert "No AuthorizationPolicy for pay/db" in text
    assert _by_kind(docs, "PeerAuthentication") == {}  # plaintext reached cart and pay


def test_dry_run_flags_the_edges_a_policy_would_break(mesh, truth):
    plan = plan_policies(service.snapshot(mesh, A, latency=False))
    verdicts = {(v.src, v.dst): v for v in plan.verdicts}
    intruder = verdicts[(INTRUDER, CART)]
    assert (intruder.verdict, intruder.denied_requests) == ("deny", 15)
    assert "plaintext requests carry no principal" in intruder.reasons[0]
    plain = sum(1 for c in truth.select(0, 10, WEB, PAY) if c.mtls is False)
    assert (verdicts[(WEB, PAY)].verdict, verdicts[(WEB, PAY)].denied_requests) == ("deny",
                                                                                    plain)
    assert verdicts[(WEB, CART)].verdict == "allow"
    assert verdicts[(CART_SA, DB)].verdict == "uncovered"
    assert plan.verdict_counts() == {"allow": 1, "deny": 2, "unverified": 0, "uncovered": 1}
    text = render_yaml(plan)
    assert f"DENY: {INTRUDER} -> {CART}: 15 plaintext requests carry no principal" in text
    assert "2 DENIED" in text


def test_strict_where_all_inbound_was_mtls(mesh):
    plan = plan_policies(service.snapshot(mesh, B, latency=False))
    docs = _docs(render_yaml(plan))
    strict = _by_kind(docs, "PeerAuthentication")
    assert set(strict) == {("shop", "meshwatch-strict-cart"), ("pay", "meshwatch-strict-pay")}
    assert strict[("pay", "meshwatch-strict-pay")]["spec"] == {
        "selector": {"matchLabels": {"app": "pay"}}, "mtls": {"mode": "STRICT"}}
    cart = _by_kind(docs, "AuthorizationPolicy")[("shop", "meshwatch-allow-cart")]
    assert cart["spec"]["rules"][0]["from"][0]["source"]["principals"] == sorted(
        [istio_principal(WEB), istio_principal(BATCH)])
    not_strict = {t["target"]: t["reason"] for t in plan.to_dict()["not_strict"]}
    assert "without destination-side evidence" in not_strict["pay/db"]


def test_checking_a_later_period_flags_a_new_caller(mesh):
    plan = plan_policies(service.snapshot(mesh, A, latency=False),
                         checked=service.snapshot(mesh, B, latency=False))
    verdicts = {(v.src, v.dst): v for v in plan.verdicts}
    assert verdicts[(BATCH, CART)].verdict == "deny"
    assert verdicts[(BATCH, CART)].reasons == [f"caller principal not allowed: {BATCH}"]
    assert verdicts[(WEB, PAY)].verdict == "allow"  # all mTLS in B


def test_operations_narrow_rules_to_what_each_caller_used(mesh):
    options = PolicyOptions(methods=True, paths=True, ports=True)
    ops = q.observed_operations(mesh, A.start, A.end)
    assert all(row["principal"] != CART_SA for row in ops)  # caller-side events never count
    plan = plan_policies(service.snapshot(mesh, A, latency=False), options, ops)
    authz = _by_kind(_docs(render_yaml(plan)), "AuthorizationPolicy")
    (rule,) = authz[("shop", "meshwatch-allow-cart")]["spec"]["rules"]
    assert rule["from"] == [{"source": {"principals": [istio_principal(WEB)]}}]
    assert rule["to"] == [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/cart"],
                                         "ports": ["7070"]}}]
    few = plan_policies(service.snapshot(mesh, A, latency=False),
                        PolicyOptions(paths=True, max_paths=0), ops)
    text = render_yaml(few)
    assert "distinct paths; paths not restricted" in text
    assert "paths" not in str(_by_kind(_docs(text), "AuthorizationPolicy"))


def test_operation_check_against_a_later_period(mesh):
    options = PolicyOptions(methods=True)
    learned = service.snapshot(mesh, A, latency=False)
    ops = q.observed_operations(mesh, A.start, A.end)
    later = [dict(r, methods=[*r["methods"], "DELETE"]) for r in
             q.observed_operations(mesh, B.start, B.end)]
    plan = plan_policies(learned, options, ops, service.snapshot(mesh, B, latency=False), later)
    web_cart = next(v for v in plan.verdicts if (v.src, v.dst) == (WEB, CART))
    assert web_cart.verdict == "deny" and "methods DELETE" in "; ".join(web_cart.reasons)


def test_namespace_scope_and_unverified_callers(mesh):
    plan = plan_policies(service.snapshot(mesh, A, latency=False),
                         PolicyOptions(scope="namespace"))
    authz = _by_kind(_docs(render_yaml(plan)), "AuthorizationPolicy")
    assert set(authz) == {("shop", "meshwatch-allow-namespace"),
                          ("pay", "meshwatch-allow-namespace")}
    assert "selector" not in authz[("pay", "meshwatch-allow-namespace")]["spec"]
    verdicts = {(v.src, v.dst): v.verdict for v in plan.verdicts}
    # db is now covered by pay's namespace policy, but nobody saw cart's certificate there.
    assert verdicts[(CART_SA, DB)] == "unverified"
    assert verdicts[(INTRUDER, CART)] == "deny" and verdicts[(WEB, PAY)] == "deny"
