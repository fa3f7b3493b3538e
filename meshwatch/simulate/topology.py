"""The simulated mesh: namespaces, services, workloads, pods, identities and certificates.

Built from `catalog` with a seeded RNG so the same seed gives the same pod names and IPs. What
detectors and parsers meet in real clusters is imitated on purpose: ReplicaSet-hashed pod names,
pod IPs from per-node CIDRs, ClusterIP VIPs, one SPIFFE principal per service account, and
workload certificates that live 24 h and rotate at half-life (so a healthy peer certificate is
always 12-24 h from expiry).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from meshwatch.records import format_ts
from meshwatch.simulate.catalog import (
    BACKGROUND,
    CORE,
    ENTRIES,
    EXTRAS,
    INGRESS,
    MAX_SERVICES,
    MIN_SERVICES,
    NAMESPACES,
    Background,
    Child,
    Entry,
    NamespaceSpec,
    OpSpec,
    ServiceSpec,
)
from meshwatch.simulate.seeding import stream

TRUST_DOMAIN = "cluster.local"
CLUSTER_NAME = "prod-eu-west1"
CERT_TTL_S = 24 * 3600  # Istio's default workload certificate lifetime
CERT_ROTATE_S = CERT_TTL_S // 2  # istio-agent renews at half-life
US = 1_000_000

# Kubernetes' rand.SafeEncodeString alphabet (no vowels, no confusable characters).
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def principal(namespace: str, service_account: str) -> str:
    """The SPIFFE identity Istio issues to a service account."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def _k8s_suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_K8S_ALPHABET) for _ in range(n))


@dataclass(eq=False, slots=True)
class Node:
    name: str
    ip: str
    index: int
    next_host: int = 2


@dataclass(eq=False, slots=True)
class Pod:
    """One pod; its certificate follows Istio's rotation unless a scenario freezes it."""

    name: str
    ip: str
    node: Node
    workload: Workload
    created_us: int
    deleted_us: int | None = None
    cert_anchor_s: int = 0  # when its first certificate was issued
    cert_fixed_v_end_s: int | None = None  # a certificate that never rotates
    cert_stall_s: int | None = None  # rotation stops after this time

    def alive(self, t_us: int) -> bool:
        return self.created_us <= t_us and (self.deleted_us is None or t_us < self.deleted_us)

    def cert_v_end_s(self, t_s: float) -> int:
        """NotAfter of the certificate this pod presents at ``t_s`` (epoch seconds)."""
        if self.cert_fixed_v_end_s is not None:
            return self.cert_fixed_v_end_s
        k = max(0, math.floor((t_s - self.cert_anchor_s) / CERT_ROTATE_S))
        if self.cert_stall_s is not None:
            k = min(k, max(0, math.floor((self.cert_stall_s - self.cert_anchor_s)
                                         / CERT_ROTATE_S)))
        return self.cert_anchor_s + k * CERT_ROTATE_S + CERT_TTL_S

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": self.ip,
            "node": self.node.name,
            "node_ip": self.node.ip,
            "created_at": format_ts_us(self.created_us),
            "deleted_at": format_ts_us(self.deleted_us) if self.deleted_us else None,
        }


@dataclass(eq=False, slots=True)
class Workload:
    """A Deployment: pods sharing a version label and a service account."""

    name: str
    namespace: str
    service: Service | None
    version: str
    service_account: str | None  # None: not in the mesh's identity system at all
    sidecar: bool
    language: str
    instrumented: bool
    old_semconv: bool
    pod_hash: str
    pods: list[Pod] = field(default_factory=list)
    created_us: int | None = None  # None: existed before the run

    @property
    def principal(self) -> str | None:
        if self.service_account is None or not self.sidecar:
            return None
        return principal(self.namespace, self.service_account)

    def alive_pods(self, t_us: int) -> list[Pod]:
        return [p for p in self.pods if p.alive(t_us)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "service": self.service.name if self.service else None,
            "version": self.version,
            "service_account": self.service_account,
            "principal": self.principal,
            "sidecar": self.sidecar,
            "instrumented": self.instrumented,
            "created_at": format_ts_us(self.created_us) if self.created_us else None,
            "pods": [p.to_dict() for p in self.pods],
        }


@dataclass(eq=False, slots=True)
class ChildCall:
    """A resolved `catalog.Child`: the downstream operation, live from ``active_from_us``."""

    op: Operation
    prob: float
    count: tuple[int, int]
    versions: tuple[str, ...] | None
    active_from_us: int | None = None


@dataclass(eq=False, slots=True)
class Operation:
    spec: OpSpec
    service: Service
    children: list[ChildCall] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Service:
    """A Kubernetes Service (ClusterIP) with the workloads behind it."""

    spec: ServiceSpec
    vip: str
    workloads: list[Workload] = field(default_factory=list)
    ops: dict[str, Operation] = field(default_factory=dict)
    allowed_principals: set[str] = field(default_factory=set)
    # Subset routing (VirtualService weights) as (effective from, {version: weight}).
    routes: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    created_us: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def fqdn(self) -> str:
        return f"{self.spec.name}.{self.spec.namespace}.svc.{TRUST_DOMAIN}"

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def target_port(self) -> int:
        return self.spec.target_port

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    def weights_at(self, t_us: int) -> dict[str, float] | None:
        current = None
        for since, weights in self.routes:
            if since <= t_us:
                current = weights
        return current

    def to_dict(self) -> dict[str, Any]:
        port_name = {"http": "http", "grpc": "grpc", "tcp": "tcp"}[self.protocol]
        return {
            "name": self.name,
            "namespace": self.namespace,
            "fqdn": self.fqdn,
            "cluster_ip": self.vip,
            "ports": [{"name": f"{port_name}-{self.name}" if port_name == "tcp" else port_name,
                       "port": self.port, "target_port": self.target_port,
                       "app_protocol": self.protocol}],
            "app": self.spec.app,
            "description": self.spec.description,
            "sensitive": self.spec.sensitive,
            "authorization_policy": (sorted(self.allowed_principals)
                                     if self.spec.authz else None),
            "subset_routes": [{"from": format_ts_us(since), "weights": weights}
                              for since, weights in self.routes],
            "operations": [op.spec.path for op in self.ops.values()],
            "workloads": [w.name for w in self.workloads],
            "created_at": format_ts_us(self.created_us) if self.created_us else None,
        }


@dataclass(eq=False, slots=True)
class Mesh:
    """Everything the traffic generator and the scenarios need to know about the cluster."""

    seed: int
    start_us: int
    rng: random.Random
    namespaces: dict[str, NamespaceSpec]
    nodes: list[Node]
    services: dict[str, Service]
    app_services: list[str]  # the --services ones, in catalog order
    workloads: list[Workload] = field(default_factory=list)
    entries: list[tuple[Entry, Operation]] = field(default_factory=list)
    backgrounds: list[tuple[Background, Workload, Operation]] = field(default_factory=list)
    pooled: list[tuple[Workload, Service]] = field(default_factory=list)
    pods_by_ip: dict[str, Pod] = field(default_factory=dict)
    _vips: set[str] = field(default_factory=set)

    # -- queries -----------------------------------------------------------------------------
    @property
    def gateway(self) -> Service:
        return self.services[INGRESS.name]

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)

    def has(self, service: str) -> bool:
        return service in self.services

    def peer_authentication(self, namespace: str) -> str:
        return self.namespaces[namespace].peer_authentication

    def all_pods(self) -> list[Pod]:
        return [p for w in self.workloads for p in w.pods]

    # -- growth (also used by scenarios) -------------------------------------------------------
    def new_vip(self) -> str:
        while True:
            vip = f"10.0.{self.rng.randrange(0, 256)}.{self.rng.randrange(2, 255)}"
            if vip not in self._vips:
                self._vips.add(vip)
                return vip

    def new_pod_ip(self, node: Node) -> str:
        ip = f"10.44.{node.index}.{node.next_host}"
        node.next_host += 1
        if node.next_host > 254:
            raise ValueError(f"node {node.name} ran out of pod IPs")
        return ip

    def add_workload(self, *, name: str, namespace: str, service: Service | None, version: str,
                     service_account: str | None, sidecar: bool, language: str,
                     instrumented: bool, old_semconv: bool, replicas: int,
                     created_us: int | None = None) -> Workload:
        wl = Workload(name=name, namespace=namespace, service=service, version=version,
                      service_account=service_account, sidecar=sidecar, language=language,
                      instrumented=instrumented, old_semconv=old_semconv,
                      pod_hash=_k8s_suffix(self.rng, self.rng.choice((9, 10))),
                      created_us=created_us)
        self.workloads.append(wl)
        if service is not None:
            service.workloads.append(wl)
        for _ in range(replicas):
            self.add_pod(wl, created_us=created_us)
        return wl

    def add_pod(self, wl: Workload, *, created_us: int | None = None,
                deleted_us: int | None = None, bare_name: bool = False) -> Pod:
        node = self.nodes[self.rng.randrange(len(self.nodes))]
        if created_us is None:  # running for days already
            created_us = self.start_us - self.rng.randrange(2 * 3600, 14 * 86400) * US
        name = wl.name if bare_name else f"{wl.name}-{wl.pod_hash}-{_k8s_suffix(self.rng, 5)}"
        pod = Pod(name=name,
                  ip=self.new_pod_ip(node), node=node, workload=wl, created_us=created_us,
                  deleted_us=deleted_us,
                  cert_anchor_s=created_us // US + self.rng.randrange(1, 30))
        wl.pods.append(pod)
        self.pods_by_ip[pod.ip] = pod
        return pod

    def add_service(self, spec: ServiceSpec, created_us: int | None = None) -> Service:
        svc = Service(spec=spec, vip=self.new_vip(), created_us=created_us)
        self.services[spec.name] = svc
        for op in spec.ops:
            svc.ops[op.name] = Operation(spec=op, service=svc)
        for version in spec.versions:
            wl_name = f"{spec.name}-{version}" if spec.versioned_workloads else spec.name
            self.add_workload(name=wl_name, namespace=spec.namespace, service=svc,
                              version=version, service_account=spec.service_account or spec.name,
                              sidecar=True, language=spec.language,
                              instrumented=spec.instrumented, old_semconv=spec.old_semconv,
                              replicas=spec.replicas, created_us=created_us)
        if spec.subsets:
            weights = {"v1": 40.0, "v2": 30.0, "v3": 30.0}
            svc.routes.append((self.start_us - 86400 * US,
                               {v: weights.get(v, 0.0) for v in spec.versions}))
        return svc

    def link(self, caller: Operation, child: Child, active_from_us: int | None = None) -> None:
        """Make ``caller`` call ``child`` while serving (and allow it through authz)."""
        target = self.services[child.service]
        caller.children.append(ChildCall(op=target.ops[child.op], prob=child.prob,
                                         count=child.count, versions=child.versions,
                                         active_from_us=active_from_us))
        for wl in caller.service.workloads:
            if wl.principal:
                target.allowed_principals.add(wl.principal)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": CLUSTER_NAME,
            "trust_domain": TRUST_DOMAIN,
            "seed": self.seed,
            "certificate_ttl_seconds": CERT_TTL_S,
            "certificate_rotation_seconds": CERT_ROTATE_S,
            "outbound_traffic_policy": "ALLOW_ANY",
            "nodes": [{"name": n.name, "ip": n.ip, "pod_cidr": f"10.44.{n.index}.0/24"}
                      for n in self.nodes],
            "namespaces": [
                {"name": ns.name, "peer_authentication": ns.peer_authentication,
                 "istio_injection": ns.istio_injection, "description": ns.description}
                for ns in self.namespaces.values()
            ],
            "app_services": list(self.app_services),
            "services": [s.to_dict() for s in self.services.values()],
            "workloads": [w.to_dict() for w in self.workloads],
            "service_accounts": sorted(
                {(w.namespace, w.service_account, w.principal) for w in self.workloads
                 if w.principal},
            ),
        }


def format_ts_us(t_us: int) -> str:
    """RFC 3339 (ms, Z) of an epoch-microsecond time."""
    return format_ts(datetime.fromtimestamp(t_us / US, tz=UTC))


def _extra_spec(extra: tuple[Any, ...]) -> ServiceSpec:
    name, namespace, protocol, port, language, method, path, _callers, instrumented = extra
    ops: tuple[OpSpec, ...] = ()
    if protocol != "tcp":
        ops = (OpSpec("op", method, path, latency_ms=3.0, resp_bytes=400,
                      req_bytes=150 if method in ("POST", "PUT") else 0,
                      status=201 if method == "PUT" else 200),)
    return ServiceSpec(
        name=name, namespace=namespace, protocol=protocol, port=port, target_port=port,
        language=language, ops=ops, replicas=1 if protocol == "tcp" else 2,
        instrumented=instrumented, old_semconv=language == "java8",
        service_account="default" if namespace == "legacy" else name,
        http_version="HTTP/2" if protocol == "grpc" else "HTTP/1.1", app=namespace,
        sensitive=namespace == "payments" and protocol == "tcp",
        authz=namespace in ("payments", "security"),
        pooled_clients=tuple(c[0] for c in _callers) if protocol == "tcp" else (),
    )


def build_mesh(services: int, seed: int, start_us: int) -> Mesh:
    """Build a mesh of ``services`` application services (plus the ingress gateway)."""
    if not MIN_SERVICES <= services <= MAX_SERVICES:
        raise ValueError(f"services must be between {MIN_SERVICES} and {MAX_SERVICES}")
    rng = stream(seed, "mesh")
    specs = list(CORE[:services])
    extras = EXTRAS[: max(0, services - len(CORE))]
    specs += [_extra_spec(e) for e in extras]
    old_pool = [s.name for s in specs[len(CORE):] if s.protocol != "tcp"]
    old_names = set(rng.sample(old_pool, k=len(old_pool) // 5)) if old_pool else set()
    specs = [replace(s, old_semconv=True) if s.name in old_names else s for s in specs]

    used_ns = {INGRESS.namespace, "default"} | {s.namespace for s in specs}
    n_pods = sum(s.replicas * len(s.versions) for s in specs) + INGRESS.replicas
    nodes = []
    for i in range(max(3, math.ceil(n_pods / 18))):
        pool = f"{rng.getrandbits(32):08x}"
        nodes.append(Node(name=f"gke-{CLUSTER_NAME}-default-pool-{pool}-{_k8s_suffix(rng, 4)}",
                          ip=f"10.128.0.{10 + i}", index=i + 1))
    mesh = Mesh(seed=seed, start_us=start_us, rng=rng,
                namespaces={ns.name: ns for ns in NAMESPACES if ns.name in used_ns},
                nodes=nodes, services={}, app_services=[s.name for s in specs])
    mesh.add_service(INGRESS)
    for spec in specs:
        mesh.add_service(spec)

    # Wire the call graph: catalog children, extras' callers, pooled TCP clients.
    for svc in list(mesh.services.values()):
        for op in svc.ops.values():
            for child in op.spec.children:
                if mesh.has(child.service):
                    mesh.link(op, child)
    for extra in extras:
        name, _ns, protocol, *_rest = extra
        callers = extra[7]
        if protocol == "tcp":
            continue
        for caller, caller_op, prob in callers:
            if mesh.has(caller):
                caller_svc = mesh.services[caller]
                mesh.link(caller_svc.ops[caller_op], Child(name, "op", prob=prob))
    for svc in mesh.services.values():
        for client in svc.spec.pooled_clients:
            if mesh.has(client):
                for wl in mesh.services[client].workloads:
                    mesh.pooled.append((wl, svc))
                    if wl.principal:
                        svc.allowed_principals.add(wl.principal)

    gw_principal = mesh.gateway.workloads[0].principal
    for entry in ENTRIES:
        if mesh.has(entry.service):
            target = mesh.services[entry.service]
            mesh.entries.append((entry, target.ops[entry.op]))
            if gw_principal:
                target.allowed_principals.add(gw_principal)
    for bg in BACKGROUND:
        if mesh.has(bg.caller) and mesh.has(bg.service):
            target = mesh.services[bg.service]
            for wl in mesh.services[bg.caller].workloads:
                mesh.backgrounds.append((bg, wl, target.ops[bg.op]))
                if wl.principal:
                    target.allowed_principals.add(wl.principal)
    return mesh
