"""Import Istio security policy (PeerAuthentication, AuthorizationPolicy) from YAML files.

The detectors compare what the mesh *declares* with what its proxies *report*: plaintext where
STRICT mTLS is declared, calls from principals that no AuthorizationPolicy allows. This module
reads the declarations (multi-document YAML, ``security.istio.io/v1`` or ``v1beta1``), checks
them when the configuration loads (`PolicyError` names the file and the problem) and answers two
questions with Istio's precedence rules:

* `IstioPolicies.mtls_mode` - the effective PeerAuthentication mode of a workload port:
  workload selector > namespace-wide > mesh-wide (root namespace) ; ``portLevelMtls`` overrides
  a selector policy's mode for its port; ``UNSET`` inherits. ``None`` when nothing is declared
  (Istio then behaves as PERMISSIVE).
* `IstioPolicies.authorize` - ALLOW/DENY AuthorizationPolicy evaluation: any matching DENY
  denies; no ALLOW policy selecting the workload allows; otherwise a matching ALLOW rule is
  needed. ``None`` when no policy selects the workload.

**Selectors.** Access logs name workloads (``reviews-v2`` in ``bookinfo``), not pod labels. A
``matchLabels`` selector matches a workload when every label is known for it: explicit labels
from ``workload_labels`` (``{"bookinfo/reviews-v2": {"app": "reviews", "tier": "web"}}``) win;
otherwise ``app`` is the workload name without its version suffix (``reviews``) and ``version``
that suffix (``v2``). A selector on any other, unknown label does not match (so meshwatch never
assumes a STRICT mode or an allow-list it cannot attribute).

**What cannot be judged from logs** is treated in the caller's favour: ``when`` conditions,
``requestPrincipals``, ``remoteIpBlocks`` and ``hosts`` make an ALLOW rule match and a DENY rule
not match; ``targetRef(s)`` (Gateway API attachment) is rejected as unsupported. Ports are the
workload's (target) ports, as the destination's inbound records report them.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

API_GROUP = "security.istio.io"
API_VERSIONS = ("v1", "v1beta1")
MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
_VERSION = re.compile(r"^(.+?)-(v\d+[a-z0-9]*)$")
_SOURCE_KEYS = {"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks",
                "notIpBlocks", "requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts"}
_OPERATION_KEYS = {"ports", "notPorts", "paths", "notPaths", "methods", "notMethods", "hosts",
                   "notHosts"}
_UNJUDGED_SOURCE = {"requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                    "notRemoteIpBlocks"}

Mode = Literal["DISABLE", "PERMISSIVE", "STRICT"]
_MEMO = 20_000  # memoised verdicts per policy set


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the problem."""


def workload_labels(workload: str) -> dict[str, str]:
    """The labels assumed for a workload: ``app`` (name minus version) and ``version``.

    >>> workload_labels("reviews-v2"), workload_labels("ratings")
    ({'app': 'reviews', 'version': 'v2'}, {'app': 'ratings'})
    """
    match = _VERSION.match(workload)
    if match:
        return {"app": match.group(1), "version": match.group(2)}
    return {"app": workload}


def _istio_principal(principal: str) -> str:
    return principal[len("spiffe://"):] if principal.startswith("spiffe://") else principal


def _principal_namespace(principal: str | None) -> str | None:
    if not principal:
        return None
    parts = _istio_principal(principal).split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[2]
    return None


def _match_value(pattern: str, value: str) -> bool:
    """Istio string match: exact, ``*`` (any), ``prefix*`` or ``*suffix``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _any(patterns: Sequence[str], value: str | None) -> bool:
    return value is not None and any(_match_value(p, value) for p in patterns)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ValueError(f"{where}: must be a list of strings")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class Selector:
    """``matchLabels`` of a policy (None selects the whole namespace)."""

    labels: tuple[tuple[str, str], ...]

    def matches(self, known: Mapping[str, str]) -> bool:
        return all(known.get(k) == v for k, v in self.labels)


def _selector(spec: Mapping[str, Any], where: str) -> Selector | None:
    if spec.get("targetRef") is not None or spec.get("targetRefs") is not None:
        raise ValueError(f"{where}: targetRef(s) is not supported (use a selector)")
    selector = spec.get("selector")
    if selector is None:
        return None
    if not isinstance(selector, Mapping):
        raise ValueError(f"{where}.selector: must be a mapping")
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in labels.items()):
        raise ValueError(f"{where}.selector.matchLabels: must map label names to values")
    return Selector(tuple(sorted((k, str(v)) for k, v in labels.items())))


@dataclass(frozen=True)
class PeerAuthentication:
    namespace: str
    name: str
    selector: Selector | None
    mode: str  # one of MODES
    ports: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Source:
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    not_ip_blocks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    unjudged: bool = False


@dataclass(frozen=True)
class Operation:
    ports: tuple[str, ...] | None = None
    not_ports: tuple[str, ...] = ()
    paths: tuple[str, ...] | None = None
    not_paths: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None
    not_methods: tuple[str, ...] = ()
    unjudged: bool = False


@dataclass(frozen=True)
class Rule:
    sources: tuple[Source, ...] | None  # None: any source
    operations: tuple[Operation, ...] | None  # None: any operation
    unjudged: bool = False  # has `when` conditions


@dataclass(frozen=True)
class AuthorizationPolicy:
    namespace: str
    name: str
    selector: Selector | None
    action: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Request:
    """What one observed call says, in the terms AuthorizationPolicy speaks."""

    principal: str | None
    address: str | None
    port: int | None
    method: str | None
    path: str | None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: str  # namespace/name of the deciding policy, or "" (no ALLOW matched)
    reason: str


def _networks(values: tuple[str, ...], where: str
              ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _source(raw: Any, where: str) -> Source:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("source", {}), Mapping):
        raise ValueError(f"{where}: must be a mapping with a 'source' mapping")
    src = raw.get("source") or {}
    unknown = set(src) - _SOURCE_KEYS
    if unknown:
        raise ValueError(f"{where}.source: unknown field {sorted(unknown)[0]!r}")
    lists = {k: _str_list(v, f"{where}.source.{k}") for k, v in src.items()}
    principals = lists.get("principals")
    not_principals = lists.get("notPrincipals", ())
    # Istio >= 1.24 serviceAccounts: "ns/sa" is shorthand for a principal.
    if "serviceAccounts" in lists:
        principals = (*(principals or ()), *(f"*/ns/{s.split('/')[0]}/sa/{s.split('/')[-1]}"
                                             for s in lists["serviceAccounts"]))
    if "notServiceAccounts" in lists:
        not_principals = (*not_principals, *(f"*/ns/{s.split('/')[0]}/sa/{s.split('/')[-1]}"
                                             for s in lists["notServiceAccounts"]))
    return Source(
        principals=tuple(_istio_principal(p) for p in principals) if principals is not None
        else None,
        not_principals=tuple(_istio_principal(p) for p in not_principals),
        namespaces=lists.get("namespaces"),
        not_namespaces=lists.get("notNamespaces", ()),
        ip_blocks=_networks(lists["ipBlocks"], f"{where}.source.ipBlocks")
        if "ipBlocks" in lists else None,
        not_ip_blocks=_networks(lists.get("notIpBlocks", ()), f"{where}.source.notIpBlocks"),
        unjudged=bool(set(src) & _UNJUDGED_SOURCE),
    )


def _operation(raw: Any, where: str) -> Operation:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("operation", {}), Mapping):
        raise ValueError(f"{where}: must be a mapping with an 'operation' mapping")
    op = raw.get("operation") or {}
    unknown = set(op) - _OPERATION_KEYS
    if unknown:
        raise ValueError(f"{where}.operation: unknown field {sorted(unknown)[0]!r}")
    lists = {k: _str_list(v, f"{where}.operation.{k}") for k, v in op.items()}
    for key in ("ports", "notPorts"):
        for port in lists.get(key, ()):
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{where}.operation.{key}: {port!r} is not a port number")
    return Operation(
        ports=lists.get("ports"), not_ports=lists.get("notPorts", ()),
        paths=lists.get("paths"), not_paths=lists.get("notPaths", ()),
        methods=lists.get("methods"), not_methods=lists.get("notMethods", ()),
        unjudged=bool(set(op) & {"hosts", "notHosts"}),
    )


def _rule(raw: Any, where: str) -> Rule:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    unknown = set(raw) - {"from", "to", "when"}
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    froms = raw.get("from")
    tos = raw.get("to")
    for key, value in (("from", froms), ("to", tos), ("when", raw.get("when"))):
        if value is not None and not isinstance(value, list):
            raise ValueError(f"{where}.{key}: must be a list")
    return Rule(
        sources=tuple(_source(s, f"{where}.from[{i}]") for i, s in enumerate(froms))
        if froms else None,
        operations=tuple(_operation(o, f"{where}.to[{i}]") for i, o in enumerate(tos))
        if tos else None,
        unjudged=bool(raw.get("when")),
    )


def _metadata(doc: Mapping[str, Any], where: str) -> tuple[str, str]:
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise ValueError(f"{where}: metadata.name is required")
    return str(meta.get("namespace") or "default"), str(meta["name"])


def _peer_authentication(doc: Mapping[str, Any], where: str) -> PeerAuthentication:
    namespace, name = _metadata(doc, where)
    spec = doc.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}.spec: must be a mapping")
    mode = (spec.get("mtls") or {}).get("mode", "UNSET") if isinstance(
        spec.get("mtls") or {}, Mapping) else None
    if mode not in MODES:
        raise ValueError(f"{where}.spec.mtls.mode: {mode!r} is not one of {', '.join(MODES)}")
    selector = _selector(spec, f"{where}.spec")
    ports: list[tuple[int, str]] = []
    port_level = spec.get("portLevelMtls") or {}
    if not isinstance(port_level, Mapping):
        raise ValueError(f"{where}.spec.portLevelMtls: must map ports to {{mode: ...}}")
    if port_level and selector is None:
        raise ValueError(f"{where}.spec.portLevelMtls: needs a workload selector (Istio "
                         "ignores port-level mTLS on namespace-wide policies)")
    for port, setting in port_level.items():
        port_mode = setting.get("mode", "UNSET") if isinstance(setting, Mapping) else None
        if not str(port).isdigit() or port_mode not in MODES:
            raise ValueError(f"{where}.spec.portLevelMtls.{port}: needs a port number and a "
                             f"mode in {', '.join(MODES)}")
        ports.append((int(port), port_mode))
    return PeerAuthentication(namespace, name, selector, mode, tuple(sorted(ports)))


def _authorization_policy(doc: Mapping[str, Any], where: str) -> AuthorizationPolicy | None:
    namespace, name = _metadata(doc, where)
    spec = doc.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}.spec: must be a mapping")
    action = spec.get("action", "ALLOW")
    if action not in ACTIONS:
        raise ValueError(f"{where}.spec.action: {action!r} is not one of {', '.join(ACTIONS)}")
    selector = _selector(spec, f"{where}.spec")
    rules = spec.get("rules")
    if rules is not None and not isinstance(rules, list):
        raise ValueError(f"{where}.spec.rules: must be a list")
    parsed = tuple(_rule(r, f"{where}.spec.rules[{i}]") for i, r in enumerate(rules or ()))
    if action in ("AUDIT", "CUSTOM"):
        return None  # neither allows nor denies by itself
    return AuthorizationPolicy(namespace, name, selector, action, parsed)


def parse_documents(docs: Iterable[Any], source: str
                    ) -> tuple[list[PeerAuthentication], list[AuthorizationPolicy]]:
    """Policies from parsed YAML documents; other kinds (Deployments, ...) are skipped."""
    peers: list[PeerAuthentication] = []
    authz: list[AuthorizationPolicy] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"{source}: document {i + 1}"
        if not isinstance(doc, Mapping):
            raise PolicyError(f"{where}: not a mapping")
        api = str(doc.get("apiVersion") or "")
        kind = doc.get("kind")
        if kind not in ("PeerAuthentication", "AuthorizationPolicy"):
            continue
        group, _, version = api.partition("/")
        if group != API_GROUP or version not in API_VERSIONS:
            raise PolicyError(f"{where} ({kind}): apiVersion {api!r} is not "
                              f"{API_GROUP}/{' or '.join(API_VERSIONS)}")
        try:
            if kind == "PeerAuthentication":
                peers.append(_peer_authentication(doc, f"{where} ({kind})"))
            else:
                policy = _authorization_policy(doc, f"{where} ({kind})")
                if policy is not None:
                    authz.append(policy)
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
    return peers, authz


def load_policy_files(paths: Sequence[str | Path], root_namespace: str = "istio-system",
                      labels: Mapping[str, Mapping[str, str]] | None = None) -> IstioPolicies:
    """Read and check policy files; `PolicyError` names the file and the problem."""
    peers: list[PeerAuthentication] = []
    authz: list[AuthorizationPolicy] = []
    for path in paths:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        p, a = parse_documents(docs, str(path))
        peers += p
        authz += a
    return IstioPolicies(peers, authz, root_namespace, labels)


class IstioPolicies:
    """Declared PeerAuthentication and AuthorizationPolicy, queried per workload.

    >>> docs = list(yaml.safe_load_all('''
    ... apiVersion: security.istio.io/v1
    ... kind: PeerAuthentication
    ... metadata: {name: default, namespace: shop}
    ... spec: {mtls: {mode: STRICT}}
    ... ---
    ... apiVersion: security.istio.io/v1
    ... kind: PeerAuthentication
    ... metadata: {name: legacy-port, namespace: shop}
    ... spec:
    ...   selector: {matchLabels: {app: billing}}
    ...   portLevelMtls: {"8081": {mode: PERMISSIVE}}
    ... ---
    ... apiVersion: security.istio.io/v1
    ... kind: AuthorizationPolicy
    ... metadata: {name: db, namespace: shop}
    ... spec:
    ...   selector: {matchLabels: {app: db}}
    ...   rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/api"]}}]}]
    ... '''))
    >>> pol = IstioPolicies(*parse_documents(docs, "inline"))
    >>> pol.mtls_mode("shop", "billing-v1", 8080), pol.mtls_mode("shop", "billing-v1", 8081)
    ('STRICT', 'PERMISSIVE')
    >>> pol.mtls_mode("other", "x", 80) is None
    True
    >>> req = Request("spiffe://cluster.local/ns/shop/sa/web", "10.0.0.1", 5432, None, None)
    >>> pol.authorize("shop", "db", req).allowed
    False
    """

    def __init__(self, peers: Sequence[PeerAuthentication] = (),
                 authz: Sequence[AuthorizationPolicy] = (), root_namespace: str = "istio-system",
                 labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.peers = list(peers)
        self.authz = list(authz)
        self.root_namespace = root_namespace
        self.labels = {k: dict(v) for k, v in (labels or {}).items()}
        # The same few workloads and callers repeat: memoise (bounded, cleared when full).
        self._modes: dict[tuple[str, str | None, int | None], Mode | None] = {}
        self._decisions: dict[tuple[Any, ...], Decision | None] = {}

    def __bool__(self) -> bool:
        return bool(self.peers or self.authz)

    def _labels(self, namespace: str, workload: str | None) -> dict[str, str]:
        if not workload:
            return {}
        explicit = self.labels.get(f"{namespace}/{workload}")
        return dict(explicit) if explicit is not None else workload_labels(workload)

    def _selects(self, selector: Selector | None, labels: Mapping[str, str]) -> bool:
        return selector is None or (bool(labels) and selector.matches(labels))

    # -- PeerAuthentication ----------------------------------------------------------------

    def mtls_mode(self, namespace: str | None, workload: str | None,
                  port: int | None) -> Mode | None:
        """Effective mTLS mode of a workload's port; None when nothing is declared."""
        if not namespace:
            return None
        key = (namespace, workload, port)
        if key not in self._modes:
            if len(self._modes) >= _MEMO:
                self._modes.clear()
            self._modes[key] = self._mtls_mode(namespace, workload, port)
        return self._modes[key]

    def _mtls_mode(self, namespace: str, workload: str | None, port: int | None) -> Mode | None:
        labels = self._labels(namespace, workload)
        workload_level = [p for p in self.peers if p.namespace == namespace
                          and p.selector is not None and self._selects(p.selector, labels)]
        namespace_level = [p for p in self.peers if p.namespace == namespace
                           and p.selector is None]
        mesh_level = [p for p in self.peers if p.namespace == self.root_namespace
                      and p.selector is None]
        for candidates in (workload_level, namespace_level, mesh_level):
            # Several policies at one level: Istio uses the oldest; files give no age, so
            # the first one read wins (documented order).
            for policy in candidates[:1]:
                mode = policy.mode
                if port is not None:
                    mode = dict(policy.ports).get(port, mode)
                if mode != "UNSET":
                    return mode  # type: ignore[return-value]
        return None

    # -- AuthorizationPolicy ---------------------------------------------------------------

    def policies_for(self, namespace: str, workload: str | None) -> list[AuthorizationPolicy]:
        labels = self._labels(namespace, workload)
        return [p for p in self.authz
                if (p.namespace == namespace and self._selects(p.selector, labels))
                or (p.namespace == self.root_namespace and p.selector is None)]

    def authorize(self, namespace: str | None, workload: str | None,
                  request: Request) -> Decision | None:
        """Istio's verdict for a call to ``namespace/workload``; None when no policy applies."""
        if not namespace:
            return None
        key = (namespace, workload, request)
        if key not in self._decisions:
            if len(self._decisions) >= _MEMO:
                self._decisions.clear()
            self._decisions[key] = self._authorize(namespace, workload, request)
        return self._decisions[key]

    def _authorize(self, namespace: str, workload: str | None,
                   request: Request) -> Decision | None:
        policies = self.policies_for(namespace, workload)
        if not policies:
            return None
        for policy in policies:
            if policy.action == "DENY" and any(_rule_matches(r, request, deny=True)
                                               for r in policy.rules):
                return Decision(False, f"{policy.namespace}/{policy.name}",
                                "matches a DENY rule")
        allows = [p for p in policies if p.action == "ALLOW"]
        if not allows:
            return Decision(True, "", "no ALLOW policy selects the workload")
        for policy in allows:
            if any(_rule_matches(r, request, deny=False) for r in policy.rules):
                return Decision(True, f"{policy.namespace}/{policy.name}", "allowed by a rule")
        names = ", ".join(f"{p.namespace}/{p.name}" for p in allows)
        return Decision(False, "", f"no rule of the ALLOW policies ({names}) matches")


def _source_matches(src: Source, request: Request, deny: bool) -> bool:
    if src.unjudged and not deny:
        return True
    principal = _istio_principal(request.principal) if request.principal else None
    namespace = _principal_namespace(request.principal)
    if src.principals is not None and not _any(src.principals, principal):
        return False
    if src.not_principals and _any(src.not_principals, principal):
        return False
    if src.namespaces is not None and not _any(src.namespaces, namespace):
        return False
    if src.not_namespaces and _any(src.not_namespaces, namespace):
        return False
    ip = None
    if request.address:
        try:
            ip = ipaddress.ip_address(request.address)
        except ValueError:
            ip = None
    if src.ip_blocks is not None and (ip is None or not any(ip in n for n in src.ip_blocks)):
        return False
    if src.not_ip_blocks and ip is not None and any(ip in n for n in src.not_ip_blocks):
        return False
    return not (src.unjudged and deny)


def _operation_matches(op: Operation, request: Request, deny: bool) -> bool:
    if op.unjudged and not deny:
        return True
    port = str(request.port) if request.port is not None else None
    if op.ports is not None and port not in op.ports:
        return False
    if op.not_ports and port in op.not_ports:
        return False
    # HTTP-only fields on a TCP call: an ALLOW rule cannot match, a DENY rule ignores them.
    path = (request.path or "").split("?", 1)[0] or None
    for patterns, value, negate in ((op.paths, path, False), (op.not_paths, path, True),
                                    (op.methods, request.method, False),
                                    (op.not_methods, request.method, True)):
        if not patterns:
            continue
        if value is None:
            if deny:
                continue
            return False
        hit = any(fnmatch.fnmatchcase(value, p) if "*" in p[1:-1] else _match_value(p, value)
                  for p in patterns)
        if hit == negate:
            return False
    return not (op.unjudged and deny)


def _rule_matches(rule: Rule, request: Request, deny: bool) -> bool:
    if rule.unjudged and deny:
        return False
    if rule.sources is not None and not any(_source_matches(s, request, deny)
                                            for s in rule.sources):
        return False
    return rule.operations is None or any(_operation_matches(o, request, deny)
                                          for o in rule.operations)
