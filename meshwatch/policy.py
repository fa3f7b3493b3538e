"""Zero-trust policy from observed traffic: Istio AuthorizationPolicy + PeerAuthentication.

The allow-lists come only from *destination-side* evidence: the peer principals a callee's
sidecar (or ztunnel) verified, which the graph builder keeps in ``peer_principals``. A source-side
record names the identity the caller claims, not the certificate the callee checked, so it never
widens a policy.

* One ``AuthorizationPolicy`` (security.istio.io/v1, ALLOW) per destination workload (selector
  ``app: <workload>``) or per namespace, allowing exactly the principals observed calling it,
  optionally narrowed to the methods, paths and ports they used (from raw destination-side
  events, when stored).
* ``PeerAuthentication`` STRICT for workloads whose inbound traffic was all mTLS over the period
  (no plaintext and no call without destination-side evidence).
* A dry run: every observed edge gets a verdict (allow / deny / unverified / uncovered), so
  nobody enforces a policy that breaks traffic. Plaintext callers have no principal and are
  denied by any principal-based ALLOW policy; that is the usual finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from meshwatch.graphs.model import EdgeView, Snapshot

Scope = Literal["workload", "namespace"]
Verdict = Literal["allow", "deny", "unverified", "uncovered"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshwatch"}
_MESH_KINDS = frozenset({"service", "workload"})
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def istio_principal(principal: str) -> str:
    """Istio writes principals without the URI scheme: ``td/ns/N/sa/S``.

    >>> istio_principal("spiffe://cluster.local/ns/shop/sa/web")
    'cluster.local/ns/shop/sa/web'
    """
    return principal[len("spiffe://"):] if principal.startswith("spiffe://") else principal


def dns_label(text: str, limit: int = 63) -> str:
    """A Kubernetes object name part: lowercase DNS-1123, at most ``limit`` characters."""
    cleaned = _DNS_LABEL.sub("-", text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "x"


def target_of(edge: EdgeView) -> tuple[str, str] | None:
    """(namespace, workload) a policy for this edge's destination selects, if it is in the mesh.

    The workload is the destination workload seen on the callee's side, else the first label
    of the service FQDN (``cart.shop.svc.cluster.local`` -> ``cart``).
    """
    if edge.dst_kind not in _MESH_KINDS or not edge.dst_namespace:
        return None
    workload = edge.dst_workload
    if not workload and edge.dst_service:
        workload = edge.dst_service.split(".", 1)[0].split(":", 1)[0]
    if not workload:
        return None
    return edge.dst_namespace, workload


@dataclass
class Operations:
    """Methods, paths and ports one principal used on one target (destination-side events)."""

    methods: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    paths_overflow: bool = False


@dataclass
class PolicyOptions:
    scope: Scope = "workload"
    methods: bool = False
    paths: bool = False
    ports: bool = False
    max_paths: int = 20

    @property
    def operations(self) -> bool:
        return self.methods or self.paths or self.ports


@dataclass
class TargetPolicy:
    """The observed inbound traffic of one target and the policies derived from it."""

    namespace: str
    workload: str | None  # None: a namespace-wide policy
    edges: list[EdgeView] = field(default_factory=list)
    principals: set[str] = field(default_factory=set)
    operations: dict[str, Operations] = field(default_factory=dict)
    strict: bool = False
    strict_reason: str = ""

    @property
    def name(self) -> str:
        suffix = dns_label(self.workload, 47) if self.workload else "namespace"
        return f"meshwatch-allow-{suffix}"

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.edges)

    @property
    def has_policy(self) -> bool:
        return bool(self.principals)

    def describe(self) -> str:
        return f"{self.namespace}/{self.workload}" if self.workload else \
            f"namespace {self.namespace}"


@dataclass
class EdgeVerdict:
    """What enforcing the generated policies would do to one observed edge."""

    src: str
    dst: str
    requests: int
    verdict: Verdict
    denied_requests: int = 0
    reasons: list[str] = field(default_factory=list)
    policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "requests": self.requests,
                "verdict": self.verdict, "denied_requests": self.denied_requests,
                "reasons": list(self.reasons), "policy": self.policy}


@dataclass
class PolicyPlan:
    learned: Snapshot
    options: PolicyOptions
    targets: list[TargetPolicy]
    verdicts: list[EdgeVerdict] = field(default_factory=list)
    checked: Snapshot | None = None
    operations_available: bool = True

    def verdict_counts(self) -> dict[str, int]:
        counts = {"allow": 0, "deny": 0, "unverified": 0, "uncovered": 0}
        for v in self.verdicts:
            counts[v.verdict] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        checked = self.checked or self.learned
        return {
            "learned_from": self.learned.range.to_dict(),
            "checked_against": checked.range.to_dict(),
            "namespace": self.learned.namespace,
            "scope": self.options.scope,
            "authorization_policies": [
                {"namespace": t.namespace, "name": t.name, "workload": t.workload,
                 "principals": sorted(istio_principal(p) for p in t.principals)}
                for t in self.targets if t.has_policy
            ],
            "peer_authentications": [
                {"namespace": t.namespace, "workload": t.workload, "mode": "STRICT"}
                for t in self.targets if t.strict
            ],
            "not_strict": [{"target": t.describe(), "reason": t.strict_reason}
                           for t in self.targets if not t.strict],
            "summary": self.verdict_counts(),
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def _targets(edges: Iterable[EdgeView], scope: Scope) -> tuple[dict[tuple[str, str | None],
                                                                    TargetPolicy],
                                                               dict[tuple[str, str], tuple]]:
    targets: dict[tuple[str, str | None], TargetPolicy] = {}
    placed: dict[tuple[str, str], tuple] = {}
    for edge in edges:
        where = target_of(edge)
        if where is None:
            continue
        key = (where[0], where[1] if scope == "workload" else None)
        target = targets.get(key)
        if target is None:
            target = targets[key] = TargetPolicy(namespace=key[0], workload=key[1])
        target.edges.append(edge)
        target.principals.update(edge.peer_principals)
        placed[edge.key] = key
    return targets, placed


def _strictness(target: TargetPolicy) -> None:
    t = sum(e.mtls_true for e in target.edges)
    f = sum(e.mtls_false for e in target.edges)
    u = sum(e.mtls_unknown for e in target.edges)
    if f:
        target.strict_reason = f"{f:,} plaintext inbound requests"
    elif u:
        target.strict_reason = (f"{u:,} inbound requests without destination-side evidence "
                                "(mTLS unverified)")
    elif not t:
        target.strict_reason = "no inbound requests"
    else:
        target.strict = True
        target.strict_reason = f"all {t:,} inbound requests used mTLS"


def _operations(targets: dict[tuple[str, str | None], TargetPolicy],
                placed: dict[tuple[str, str], tuple], rows: Iterable[dict[str, Any]],
                options: PolicyOptions) -> None:
    dst_targets: dict[str, set[tuple]] = {}
    for (_, dst), key in placed.items():
        dst_targets.setdefault(dst, set()).add(key)
    for row in rows:
        for key in dst_targets.get(row["edge_dst"], ()):
            target = targets[key]
            if row["principal"] not in target.principals:
                continue
            ops = target.operations.setdefault(row["principal"], Operations())
            ops.methods.update(m.upper() for m in row["methods"])
            ops.paths.update(row["paths"])
            ops.ports.update(int(p) for p in row["ports"])
    for target in targets.values():
        for ops in target.operations.values():
            if len(ops.paths) > options.max_paths:
                ops.paths_overflow = True
                ops.paths = set()


def plan_policies(learned: Snapshot, options: PolicyOptions | None = None,
                  operations: Sequence[dict[str, Any]] | None = None,
                  checked: Snapshot | None = None,
                  check_operations: Sequence[dict[str, Any]] | None = None) -> PolicyPlan:
    """Derive policies from ``learned`` and dry-run them against ``checked`` (default: the
    same edges). ``operations`` are `graph_queries.observed_operations` rows (None: not stored).
    """
    options = options or PolicyOptions()
    targets, placed = _targets(learned.edges, options.scope)
    for target in targets.values():
        _strictness(target)
    if options.operations and operations:
        _operations(targets, placed, operations, options)
    ordered = [targets[k] for k in sorted(targets, key=lambda k: (k[0], k[1] or ""))]
    plan = PolicyPlan(learned=learned, options=options, targets=ordered, checked=checked,
                      operations_available=operations is not None and bool(operations))
    check_ops = None
    if checked is not None and options.operations and check_operations:
        check_ops = {(r["edge_dst"], r["principal"]): r for r in check_operations}
    plan.verdicts = dry_run(plan, (checked or learned).edges, check_ops)
    return plan


def _lookup(index: dict[tuple[str, str | None], TargetPolicy],
            edge: EdgeView) -> TargetPolicy | None:
    where = target_of(edge)
    if where is None:
        return None
    return index.get(where) or index.get((where[0], None))


def dry_run(plan: PolicyPlan, edges: Iterable[EdgeView],
            check_ops: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[EdgeVerdict]:
    """What the plan's policies would do to each edge, most denied requests first."""
    index = {(t.namespace, t.workload): t for t in plan.targets}
    out = []
    for edge in edges:
        target = _lookup(index, edge)
        verdict = EdgeVerdict(edge.src, edge.dst, edge.requests, "allow")
        out.append(verdict)
        if target is None:
            verdict.verdict = "uncovered"
            verdict.reasons.append("destination is not a mesh workload with a known namespace")
            continue
        verdict.policy = f"{target.namespace}/{target.name}" if target.has_policy else None
        if target.strict and edge.mtls_false:
            verdict.reasons.append(f"{edge.mtls_false:,} plaintext requests rejected by "
                                   "PeerAuthentication STRICT")
        if not target.has_policy:
            if verdict.reasons:
                verdict.verdict, verdict.denied_requests = "deny", edge.mtls_false
            else:
                verdict.verdict = "uncovered"
                verdict.reasons.append("no AuthorizationPolicy: no caller of this workload "
                                       "presented a verified principal")
            continue
        denied = 0
        if edge.mtls_false:
            denied = edge.mtls_false
            verdict.reasons.append(f"{edge.mtls_false:,} plaintext requests carry no principal")
        missing = sorted(p for p in edge.peer_principals if p not in target.principals)
        if missing:
            denied = edge.requests
            verdict.reasons.append(f"caller principal not allowed: {', '.join(missing)}")
        if check_ops is not None and plan.options.operations:
            for principal in edge.peer_principals:
                problem = _ops_problem(plan.options, target.operations.get(principal),
                                       check_ops.get((edge.dst, principal)))
                if problem:
                    denied = edge.requests
                    verdict.reasons.append(f"{istio_principal(principal)}: {problem}")
        if denied:
            verdict.verdict, verdict.denied_requests = "deny", min(denied, edge.requests)
        elif edge.mtls_true == 0:
            verdict.verdict = "unverified"
            verdict.reasons.append("no destination-side record: the caller's certificate was "
                                   "never seen, so it may be denied")
        elif edge.mtls_unknown:
            verdict.reasons.append(f"{edge.mtls_unknown:,} requests lacked destination-side "
                                   "evidence")
    out.sort(key=lambda v: (-v.denied_requests, v.verdict != "unverified", v.src, v.dst))
    return out


def _ops_problem(options: PolicyOptions, allowed: Operations | None,
                 seen: dict[str, Any] | None) -> str | None:
    if allowed is None or seen is None:
        return None
    problems = []
    if options.methods and allowed.methods:
        extra = sorted({m.upper() for m in seen["methods"]} - allowed.methods)
        if extra:
            problems.append(f"methods {', '.join(extra)}")
    if options.paths and allowed.paths:
        extra = sorted(set(seen["paths"]) - allowed.paths)
        if extra:
            problems.append(f"paths {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    if options.ports and allowed.ports:
        extra = sorted({int(p) for p in seen["ports"]} - allowed.ports)
        if extra:
            problems.append(f"ports {', '.join(map(str, extra))}")
    return "not allowed: " + "; ".join(problems) if problems else None


# -- YAML ------------------------------------------------------------------------------------


def _rules(target: TargetPolicy, options: PolicyOptions) -> tuple[list[dict[str, Any]],
                                                                   list[str]]:
    principals = sorted(target.principals)
    notes: list[str] = []
    if not options.operations:
        return [{"from": [{"source": {"principals": [istio_principal(p)
                                                     for p in principals]}}]}], notes
    rules = []
    for principal in principals:
        rule: dict[str, Any] = {"from": [{"source": {"principals": [istio_principal(principal)]}}]}
        ops = target.operations.get(principal)
        operation: dict[str, Any] = {}
        if ops is None:
            notes.append(f"{istio_principal(principal)}: no destination-side raw events stored "
                         "for the period; all operations allowed")
        else:
            if options.methods and ops.methods:
                operation["methods"] = sorted(ops.methods)
            if options.paths:
                if ops.paths_overflow:
                    notes.append(f"{istio_principal(principal)}: more than {options.max_paths} "
                                 "distinct paths; paths not restricted")
                elif ops.paths:
                    operation["paths"] = sorted(ops.paths)
            if options.ports and ops.ports:
                operation["ports"] = [str(p) for p in sorted(ops.ports)]
        if operation:
            rule["to"] = [{"operation": operation}]
        rules.append(rule)
    return rules, notes


def _comment(lines: Iterable[str]) -> str:
    return "".join("# " + " ".join(line.splitlines()).rstrip() + "\n" for line in lines)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)


def _metadata(plan: PolicyPlan, name: str, namespace: str) -> dict[str, Any]:
    r = plan.learned.range.to_dict()
    return {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY),
            "annotations": {"meshwatch.io/observed-from": r["start"],
                            "meshwatch.io/observed-until": r["end"]}}


def render_yaml(plan: PolicyPlan) -> str:
    """Multi-document YAML (valid for ``kubectl apply``) with comments that say what each policy
    was derived from and which observed edges it would deny."""
    learned, checked = plan.learned, plan.checked or plan.learned
    counts = plan.verdict_counts()
    edges_n = len(learned.edges)
    header = [
        "Zero-trust policies generated by meshwatch from observed traffic.",
        "Derived only from destination-side records (the client certificate each callee "
        "verified),",
        f"observed {learned.range}"
        + (f" in namespace {learned.namespace}" if learned.namespace else "")
        + f": {edges_n:,} edges, {sum(e.requests for e in learned.edges):,} requests.",
        f"Dry run against {checked.range}: {counts['allow']} edges allowed, "
        f"{counts['deny']} DENIED, {counts['unverified']} unverified, "
        f"{counts['uncovered']} not covered.",
        "Review every DENIED edge before applying: enforcing would break that traffic.",
        "Selectors assume each pod's `app` label equals its workload name; check before "
        "applying.",
    ]
    if plan.options.operations and not plan.operations_available:
        header.append("Methods/paths/ports were requested but no destination-side raw events "
                      "are stored for the period; rules allow any operation.")
    if plan.options.ports:
        header.append("Ports are the ports the callee's sidecar saw (workload target ports), "
                      "which is what AuthorizationPolicy matches.")
    skipped = [t for t in plan.targets if not t.has_policy]
    for t in skipped:
        header.append(f"No AuthorizationPolicy for {t.describe()}: no caller presented a "
                      f"verified principal ({t.requests:,} requests).")
    header.extend(f"Not STRICT: {t.describe()}: {t.strict_reason}."
                  for t in plan.targets if not t.strict)
    docs: list[str] = []
    by_policy: dict[str, list[EdgeVerdict]] = {}
    for v in plan.verdicts:
        if v.policy:
            by_policy.setdefault(v.policy, []).append(v)
    for target in plan.targets:
        if not target.has_policy:
            continue
        rules, notes = _rules(target, plan.options)
        lines = [f"AuthorizationPolicy {target.namespace}/{target.name}: allows the "
                 f"{len(target.principals)} principal(s) observed calling {target.describe()}:"]
        for e in sorted(target.edges, key=lambda e: e.key):
            lines.append(f"  {e.src} -> {e.dst}: {e.requests:,} requests, {e.mtls_status}")
        lines.extend(notes)
        for v in by_policy.get(f"{target.namespace}/{target.name}", []):
            if v.verdict in ("deny", "unverified"):
                lines.append(f"  {v.verdict.upper()}: {v.src} -> {v.dst}: "
                             f"{'; '.join(v.reasons)}")
        spec: dict[str, Any] = {}
        if target.workload:
            spec["selector"] = {"matchLabels": {"app": target.workload}}
        spec["action"] = "ALLOW"
        spec["rules"] = rules
        doc = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": _metadata(plan, target.name, target.namespace), "spec": spec}
        docs.append(_comment(lines) + _dump(doc))
    for target in plan.targets:
        name = f"meshwatch-strict-{dns_label(target.workload, 46)}" if target.workload \
            else "meshwatch-strict-namespace"
        if not target.strict:
            continue
        spec = {"mtls": {"mode": "STRICT"}}
        if target.workload:
            spec = {"selector": {"matchLabels": {"app": target.workload}}, **spec}
        lines = [f"PeerAuthentication {target.namespace}/{name}: STRICT mTLS for "
                 f"{target.describe()}: {target.strict_reason} over {learned.range}."]
        doc = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": _metadata(plan, name, target.namespace), "spec": spec}
        docs.append(_comment(lines) + _dump(doc))
    if not docs:
        header.append("No policy generated: no destination-side principal observed.")
    # The header rides on the first document so every document parses as a policy.
    return _comment(header) + "---\n".join(docs)
