"""Labelled attacks and benign look-alikes, and the named scenarios that combine them.

Every instance writes its ground truth into labels.json (who, what, when, which detectors should
fire) and marks its calls, so evaluations can score detectors against it. Attacks start after
the learning period (the first 40 % of the run by default), so baselines exist. Look-alikes are
the things a naive detector pages on and a good one does not: a canary version with the same
service account, a new service called by its intended client, plaintext kubelet probes.

An instance changes the run in up to three ways: it adds pods/services/routes to the mesh, it
adds its own calls (the attacker's traffic), or it hooks benign calls (a pod whose sidecar is
bypassed from some time on, a pod whose certificate expires).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshwatch.simulate.builder import (
    CONNECT_FAILURE_DETAILS,
    GRPC_UNIMPLEMENTED,
    CallBuilder,
    Counter,
    Hook,
)
from meshwatch.simulate.calls import Call, inbound_sni
from meshwatch.simulate.catalog import (
    ROLLOUT_CALLER,
    ROLLOUT_CALLER_OP,
    ROLLOUT_CALLER_SERVICE,
    ROLLOUT_SERVICE,
)
from meshwatch.simulate.seeding import stream
from meshwatch.simulate.topology import (
    CERT_ROTATE_S,
    US,
    Mesh,
    Pod,
    Service,
    Workload,
    format_ts_us,
)

DETECTORS = ("plaintext_edge", "mtls_downgrade", "first_seen_edge", "fanout_scan",
             "cert_expiry", "identity_misuse", "lateral_chain")
ATTACK_KINDS = ("plaintext_caller", "mtls_downgrade", "lateral_movement", "service_scan",
                "cert_expiry", "identity_misuse")
BENIGN_KINDS = ("canary_rollout", "service_rollout", "kubelet_probe")
MINUTE = 60 * US
NMAP_AGENT = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
TLS_EXPIRED = ("TLS_error:|268436498:SSL_routines:OPENSSL_internal:"
               "SSLV3_ALERT_CERTIFICATE_EXPIRED:TLS_error_end")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    attacks: tuple[tuple[str, str], ...]  # (kind, variant)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("mixed", "every attack kind once, plus every benign look-alike (default)", (
        ("service_scan", ""), ("plaintext_caller", ""), ("lateral_movement", ""),
        ("identity_misuse", "pod"), ("mtls_downgrade", ""), ("cert_expiry", "expired"))),
    Scenario("baseline", "no attacks: healthy traffic and the benign look-alikes only", ()),
    Scenario("plaintext-caller",
             "a pod without a sidecar calls a PERMISSIVE-namespace service in plaintext",
             (("plaintext_caller", ""),)),
    Scenario("mtls-downgrade",
             "an mTLS edge turns plaintext when the caller's sidecar is bypassed",
             (("mtls_downgrade", ""),)),
    Scenario("lateral-movement",
             "a compromised workload probes new destinations and pivots (A->B->C)",
             (("lateral_movement", ""),)),
    Scenario("service-scan", "a fan-out burst over many services and ports in ~2 minutes",
             (("service_scan", ""),)),
    Scenario("cert-expiry",
             "a workload certificate that expires, and one that stopped rotating",
             (("cert_expiry", "expired"), ("cert_expiry", "stalled"))),
    Scenario("identity-misuse",
             "a stolen service-account identity used from another pod and from outside",
             (("identity_misuse", "pod"), ("identity_misuse", "foreign"))),
)}


@dataclass(slots=True)
class Instance:
    """One labelled attack or look-alike: the ground truth for evaluations."""

    id: str
    kind: str
    label: str  # "attack" | "benign"
    source: dict[str, Any]
    destination: dict[str, Any] | list[dict[str, Any]]
    start_us: int
    end_us: int
    description: str
    expected_detectors: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "source": self.source,
            "destination": self.destination,
            "start": format_ts_us(self.start_us),
            "end": format_ts_us(self.end_us),
            "description": self.description,
            "expected_detectors": list(self.expected_detectors),
            **self.extra,
            "calls": self.calls,
            "envoy_records": self.records,
        }


@dataclass(slots=True)
class Plan:
    """What a scenario adds to a run."""

    instances: list[Instance] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)


@dataclass(slots=True)
class Context:
    mesh: Mesh
    seed: int
    start_us: int
    end_us: int
    learn_end_us: int
    counter: Counter

    def builder(self, name: str) -> CallBuilder:
        return CallBuilder(self.mesh, stream(self.seed, f"scenario:{name}"), self.counter)


def _endpoint_src(wl: Workload | None, address: str, *, name: str | None = None,
                  namespace: str | None = None, principal: str | None = None) -> dict[str, Any]:
    return {
        "workload": wl.name if wl else name,
        "namespace": wl.namespace if wl else namespace,
        "principal": principal if principal is not None else (wl.principal if wl else None),
        "address": address,
    }


def _endpoint_dst(svc: Service, port: int | None = None) -> dict[str, Any]:
    return {
        "service": svc.name,
        "fqdn": svc.fqdn,
        "workload": svc.workloads[0].name if svc.workloads else None,
        "namespace": svc.namespace,
        "port": port or svc.port,
    }


def _first(mesh: Mesh, *names: str) -> Service:
    for name in names:
        if mesh.has(name):
            return mesh.services[name]
    raise LookupError(f"none of {names} is in the mesh")


def _callees(svc: Service) -> list[dict[str, Any]]:
    """Where a workload's own calls go: the destinations its peer certificate is shown to."""
    seen: dict[str, Service] = {}
    for op in svc.ops.values():
        for child in op.children:
            seen.setdefault(child.op.service.name, child.op.service)
    return [_endpoint_dst(s) for s in seen.values()]


def _pod(wl: Workload, t_us: int) -> Pod:
    pods = wl.alive_pods(t_us)
    return pods[0] if pods else wl.pods[0]


# -- attacks -----------------------------------------------------------------------------------
def plaintext_caller(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """A debug pod without a sidecar reads the legacy billing API in plaintext."""
    mesh, b = ctx.mesh, ctx.builder(iid)
    target = _first(mesh, "legacy-billing")
    assert mesh.peer_authentication(target.namespace) == "PERMISSIVE"
    start = s + (e - s) // 10
    end = min(e, start + 25 * MINUTE)
    wl = mesh.add_workload(name="tmp-shell", namespace="default", service=None, version="",
                           service_account="default", sidecar=False, language="none",
                           instrumented=False, old_semconv=False, replicas=0)
    pod = mesh.add_pod(wl, created_us=start - 2 * MINUTE, bare_name=True)
    paths = (("GET", "/api/v1/invoices/pending", 200, 2300), ("GET", "/api/v1/invoices", 200,
             14800), ("GET", "/api/v1/customers", 200, 22100), ("GET", "/actuator/env", 200,
             5100), ("GET", "/actuator/heapdump", 200, 48_000_000), ("GET", "/admin", 404, 120),
             ("GET", "/api/v1/invoices?page=2", 200, 14650), ("POST", "/api/v1/invoices", 201,
             410))
    gap = max(2 * US, min(20 * US, (end - start) // 60))
    t = start
    agents = ("curl/8.5.0", "python-requests/2.31.0")
    while t < end:
        method, path, code, size = paths[b.rng.randrange(len(paths))]
        call = b.new_call(t, service=target, src_pod=pod, sidecar=False, instrumented=False,
                          method=method, path=path, label=iid,
                          user_agent=agents[b.rng.random() < 0.3])
        if call is not None:
            b.finish(call, code=code, resp_bytes=b.size(size, 0.05), children=False,
                     app_us=b.lognormal_us(30 if size > 1_000_000 else 8))
        t += int(b.rng.expovariate(1 / gap))
    inst = Instance(
        id=iid, kind="plaintext_caller", label="attack",
        source=_endpoint_src(wl, pod.ip, principal=None), destination=_endpoint_dst(target),
        start_us=start, end_us=end,
        description=(f"pod {pod.name} (namespace default, no sidecar) calls {target.fqdn} in "
                     f"plaintext; the PERMISSIVE namespace accepts it: inbound records without "
                     f"peer SAN, TLS version or SNI, and no outbound records"),
        expected_detectors=["plaintext_edge", "first_seen_edge"])
    return Plan([inst], b.sink)


def mtls_downgrade(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """A caller's sidecar is bypassed for one edge: that edge turns plaintext from then on."""
    mesh = ctx.mesh
    target = _first(mesh, "legacy-billing")
    caller = _first(mesh, "checkoutservice")
    wl = caller.workloads[0]
    start = s + (e - s) // 10
    pod = _pod(wl, start)

    def hook(call: Call, b: CallBuilder) -> bool:
        if call.src_pod is pod and call.service is target and call.start_us >= start:
            call.src_sidecar = False
            call.upstream_peer = None
            b.plaintext(call)
            call.label = iid
        return False

    inst = Instance(
        id=iid, kind="mtls_downgrade", label="attack",
        source=_endpoint_src(wl, pod.ip), destination=_endpoint_dst(target),
        start_us=start, end_us=ctx.end_us,
        description=(f"{pod.name} called {target.fqdn} over mTLS; from the start time its "
                     f"traffic to port {target.port} bypasses its sidecar (outbound capture "
                     f"excluded), so only plaintext inbound records from {pod.ip} remain"),
        expected_detectors=["mtls_downgrade", "plaintext_edge"])
    return Plan([inst], [], [hook])


def lateral_movement(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """A compromised ratings pod probes new destinations, then pivots through legacy billing."""
    mesh, b = ctx.mesh, ctx.builder(iid)
    ratings = _first(mesh, "ratings")
    wl = ratings.workloads[0]
    start = s + (e - s) // 10
    span = max(3 * MINUTE, min(15 * MINUTE, (e - start) * 9 // 10))
    step = span // 10
    pod = _pod(wl, start)
    agent = "curl/7.88.1"
    t = start
    dests: list[dict[str, Any]] = []

    def probe(at: int, svc: Service, method: str, path: str | None, src: Pod) -> Call | None:
        call = b.new_call(at, service=svc, src_pod=src, instrumented=False, method=method,
                          path=path, user_agent=agent, label=iid)
        if call is None:
            return None
        if svc.spec.authz and src.workload.principal not in svc.allowed_principals:
            b.deny(call)
        elif call.kind == "tcp":
            b.tcp_session(call, b.rng.randrange(5, 40) * 1000, sent=b.rng.randrange(300, 900),
                          received=b.rng.randrange(100, 400))
        else:
            b.finish(call, children=False, code=200, resp_bytes=b.size(2000))
        return call

    plan_steps: list[tuple[Service, str, str | None, int]] = []
    details = _first(mesh, "details")
    vault = _first(mesh, "vault")
    db = _first(mesh, "payments-db")
    billing = _first(mesh, "legacy-billing")
    plan_steps += [(details, "GET", "/details/0", 3)]
    plan_steps += [(vault, "GET", "/v1/sys/mounts", 2),
                   (vault, "GET", "/v1/secret/data/payments/stripe", 3)]
    plan_steps += [(db, "", None, 3)]
    plan_steps += [(billing, "GET", "/api/v1/invoices/pending", 2),
                   (billing, "GET", "/actuator/env", 1)]
    hop1_start = 0
    for svc, method, path, tries in plan_steps:
        for _ in range(tries):
            if svc is billing and not hop1_start:
                hop1_start = t
            probe(t, svc, method, path, pod)
            t += b.rng.randrange(2, 15) * US
        if _endpoint_dst(svc) not in dests:
            dests.append(_endpoint_dst(svc))
        t += step // 2
    # The pivot: from a legacy-billing pod (its credentials leaked via /actuator/env) to vault.
    bpod = _pod(billing.workloads[0], t)
    hop2_start = t
    for path in ("/v1/sys/mounts", "/v1/secret/data/payments/stripe",
                 "/v1/secret/data/payments/db", "/v1/secret/data/payments/db"):
        probe(t, vault, "GET", path, bpod)
        t += b.rng.randrange(3, 20) * US
    end = t + US
    chain = [
        {"source": _endpoint_src(wl, pod.ip), "destination": _endpoint_dst(billing),
         "start": format_ts_us(hop1_start)},
        {"source": _endpoint_src(bpod.workload, bpod.ip), "destination": _endpoint_dst(vault),
         "start": format_ts_us(hop2_start)},
    ]
    inst = Instance(
        id=iid, kind="lateral_movement", label="attack",
        source=_endpoint_src(wl, pod.ip), destination=dests, start_us=start, end_us=end,
        description=(f"{pod.name} is compromised: it calls destinations ratings never calls "
                     f"(mostly denied by AuthorizationPolicy: 403 "
                     f"rbac_access_denied_matched_policy[none]), reaches the legacy billing "
                     f"API, and from {bpod.name} goes on to vault minutes later (A->B->C)"),
        expected_detectors=["first_seen_edge", "lateral_chain"],
        extra={"chain": chain})
    return Plan([inst], b.sink)


def service_scan(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """A fan-out burst: every service's port and some common ports, in a minute or two."""
    mesh, b = ctx.mesh, ctx.builder(iid)
    scanner_svc = _first(mesh, "currencyservice", "frontend")
    wl = scanner_svc.workloads[0]
    start = s + (e - s) // 10
    duration = min(100 * US, (e - start) * 9 // 10)
    pod = _pod(wl, start)
    common = (22, 80, 443, 3306, 5432, 6379, 8080, 8443, 9200, 27017)
    targets: list[tuple[Service, int]] = []
    for svc in mesh.services.values():
        if svc is scanner_svc or svc is mesh.gateway or \
                (svc.created_us is not None and svc.created_us > start):
            continue  # (the gateway is no sidecar: it would log such calls differently)
        targets.append((svc, svc.port))
        if b.rng.random() < 0.4:
            for port in b.rng.sample(common, 2):
                if port != svc.port:
                    targets.append((svc, port))
    b.rng.shuffle(targets)
    gap = duration // max(1, len(targets))
    t = start
    dests: list[dict[str, Any]] = []
    for svc, port in targets:
        t += b.rng.randrange(gap // 2 + 1, gap * 3 // 2 + 2)
        dests.append(_endpoint_dst(svc, port))
        allowed = not svc.spec.authz or wl.principal in svc.allowed_principals
        if port != svc.port:
            if port == 80:  # an HTTP request on the port-80 listener for an unknown host
                call = b.new_call(t, service=svc, src_pod=pod, instrumented=False,
                                  method="GET", path="/", port=80, kind="http",
                                  authority=svc.vip, user_agent=NMAP_AGENT,
                                  label=iid)
                if call is not None:
                    call.protocol = "HTTP/1.1"
                    call.cluster, call.route, call.attempts = "", None, []
                    call.code, call.flags, call.details = 404, "NR", "route_not_found"
                    call.duration_us, call.resp_bytes, call.upstream_peer = 0, 0, None
                continue
            call = b.new_call(t, service=svc, src_pod=pod, instrumented=False, port=port,
                              kind="tcp", label=iid)
            if call is not None:
                call.cluster, call.route = "PassthroughCluster", None
                b.connect_failure(call, reason=None, tries=1)
                call.duration_us = 10_000 * 1000 + b.rng.randrange(0, 5000)  # connect timeout
            continue
        if svc.protocol == "grpc":
            call = b.new_call(t, service=svc, src_pod=pod, instrumented=False, method="POST",
                              path="/grpc.reflection.v1alpha.ServerReflection/"
                                   "ServerReflectionInfo",
                              user_agent="grpcurl/v1.8.9 grpc-go/1.57.0", label=iid)
            if call is not None:
                if allowed:
                    b.finish(call, code=200, grpc_status=GRPC_UNIMPLEMENTED, children=False,
                             resp_bytes=0)
                else:
                    b.deny(call)
        elif svc.protocol == "tcp":
            call = b.new_call(t, service=svc, src_pod=pod, instrumented=False, label=iid)
            if call is not None:
                if allowed:
                    b.tcp_session(call, b.rng.randrange(2, 30) * 1000, sent=0,
                                  received=b.rng.randrange(0, 60))
                else:
                    b.deny(call)
        else:
            call = b.new_call(t, service=svc, src_pod=pod, instrumented=False, method="GET",
                              path=b.rng.choice(("/", "/admin", "/.env", "/metrics")),
                              user_agent=NMAP_AGENT, label=iid)
            if call is not None:
                if allowed:
                    b.finish(call, code=404, children=False, resp_bytes=b.size(120))
                else:
                    b.deny(call)
    inst = Instance(
        id=iid, kind="service_scan", label="attack", source=_endpoint_src(wl, pod.ip),
        destination=dests, start_us=start, end_us=t + US,
        description=(f"{pod.name} scans {len({d['service'] for d in dests})} services on "
                     f"{len(dests)} service:port pairs: 404/403 from live ports, 404 NR and "
                     f"connect timeouts (UF, PassthroughCluster) from closed ones"),
        expected_detectors=["fanout_scan", "first_seen_edge"])
    return Plan([inst], b.sink)


def cert_expiry(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """A certificate that runs out: a pod with a stale one, or a pod whose rotation stalls."""
    mesh = ctx.mesh
    if variant == "stalled":
        svc = _first(mesh, "productpage")
        wl = svc.workloads[0]
        stall = s + (e - s) // 10
        pod = _pod(wl, stall)
        stall_s = stall // US
        # Put a regular rotation exactly at `stall`, then let it not happen.
        pod.cert_anchor_s = stall_s - 2 * CERT_ROTATE_S
        pod.created_us = min(pod.created_us, (pod.cert_anchor_s - 20) * US)
        pod.cert_stall_s = stall_s - 1
        v_end = pod.cert_v_end_s(stall_s)

        def stalled_hook(call: Call, b: CallBuilder) -> bool:
            if call.src_pod is pod and call.start_us >= stall:
                call.label = iid
            return False

        inst = Instance(
            id=iid, kind="cert_expiry", label="attack", source=_endpoint_src(wl, pod.ip),
            destination=_callees(svc), start_us=stall, end_us=ctx.end_us,
            description=(f"istio-agent in {pod.name} stops rotating its workload certificate "
                         f"at the start time (it lost istiod): the peer certificate its calls "
                         f"present stays at NotAfter {format_ts_us(v_end * US)} and drops below "
                         f"the 12 h half-life that healthy certificates never go under"),
            expected_detectors=["cert_expiry"],
            extra={"peer_cert_not_after": format_ts_us(v_end * US)})
        return Plan([inst], [], [stalled_hook])

    svc = _first(mesh, "recommendationservice", "checkoutservice")
    wl = svc.workloads[0]
    start = s + (e - s) // 20
    end = min(ctx.end_us, e - (e - s) // 20)
    v_end_s = (start + (end - start) * 45 // 100) // US
    pod = mesh.add_pod(wl, created_us=start, deleted_us=end)
    pod.cert_fixed_v_end_s = v_end_s

    def hook(call: Call, b: CallBuilder) -> bool:
        if call.src_pod is not pod:
            return False
        call.label = iid
        if call.start_us >= v_end_s * US:
            b.connect_failure(call, reason=TLS_EXPIRED, details=CONNECT_FAILURE_DETAILS.replace(
                "delayed_connect_error:_Connection_refused", TLS_EXPIRED))
            return True
        return False

    inst = Instance(
        id=iid, kind="cert_expiry", label="attack", source=_endpoint_src(wl, pod.ip),
        destination=_callees(svc), start_us=start, end_us=end,
        description=(f"{pod.name} starts with a file-mounted certificate that is not rotated "
                     f"(NotAfter {format_ts_us(v_end_s * US)}, far below the 12-24 h a healthy "
                     f"workload shows); after it expires the pod's mTLS handshakes fail "
                     f"(503 UF,URX, SSLV3_ALERT_CERTIFICATE_EXPIRED) and it is ejected"),
        expected_detectors=["cert_expiry"],
        extra={"peer_cert_not_after": format_ts_us(v_end_s * US)})
    return Plan([inst], [], [hook])


def identity_misuse(ctx: Context, iid: str, s: int, e: int, variant: str) -> Plan:
    """paymentservice's stolen certificate used from another pod (or from outside the mesh)."""
    mesh, b = ctx.mesh, ctx.builder(iid)
    owner = _first(mesh, "paymentservice")
    owner_wl = owner.workloads[0]
    vault = _first(mesh, "vault")
    db = _first(mesh, "payments-db")
    start = s + (e - s) // 10
    span = max(2 * MINUTE, min(10 * MINUTE, (e - start) * 9 // 10))
    stolen_at = start - 40 * MINUTE
    v_end_s = _pod(owner_wl, stolen_at).cert_v_end_s(stolen_at / US)
    if variant == "foreign":
        thief_wl, address, thief = None, "10.128.0.231", None
        source = _endpoint_src(None, address, name=None, namespace=None,
                               principal=owner_wl.principal)
        where = f"{address}, a host in the node subnet that is no pod"
    else:
        thief_svc = _first(mesh, "adservice", "details")
        thief_wl = thief_svc.workloads[0]
        thief = _pod(thief_wl, start)
        address = thief.ip
        source = _endpoint_src(thief_wl, address, principal=owner_wl.principal)
        where = f"pod {thief.name} ({thief_wl.name})"
    steps = [(vault, "GET", "/v1/secret/data/payments/stripe"), (db, "", None),
             (vault, "GET", "/v1/secret/data/payments/db"), (db, "", None), (db, "", None),
             (vault, "LIST", "/v1/secret/metadata/payments")]
    t = start
    for i in range(8 if variant != "foreign" else 5):
        svc, method, path = steps[i % len(steps)]
        call = b.new_call(t, service=svc, src_pod=thief, src_ip=address, sidecar=False,
                          instrumented=False, method=method, path=path,
                          user_agent="Go-http-client/1.1", label=iid)
        if call is not None:
            # The thief dials with the stolen key pair, mimicking Istio's SNI.
            call.mtls, call.peer_principal, call.peer_v_end_s = True, owner_wl.principal, v_end_s
            call.tls_version = "TLSv1.2"
            call.sni = inbound_sni(svc.port, "", svc.fqdn)
            if call.kind == "tcp":
                b.tcp_session(call, b.rng.randrange(2_000, 40_000) * 1000,
                              sent=b.rng.randrange(2_000_000, 40_000_000),
                              received=b.rng.randrange(2_000, 9_000))
            else:
                b.finish(call, code=200, children=False, resp_bytes=b.size(650))
        t += span // 8
    inst = Instance(
        id=iid, kind="identity_misuse", label="attack", source=source,
        destination=[_endpoint_dst(vault), _endpoint_dst(db)], start_us=start, end_us=t,
        description=(f"the key pair of {owner_wl.principal} (copied from a paymentservice pod) "
                     f"is used from {where} to read vault secrets and dump payments-db; the "
                     f"certificate's NotAfter stays frozen and the client negotiates TLSv1.2"),
        expected_detectors=["identity_misuse"],
        extra={"claimed_principal": owner_wl.principal})
    return Plan([inst], b.sink)


# -- benign look-alikes -------------------------------------------------------------------------
def canary_rollout(ctx: Context, iid: str) -> Plan:
    """reviews-v4 joins with the same service account and gets 10 % of reviews traffic."""
    mesh = ctx.mesh
    reviews = _first(mesh, "reviews")
    ratings = _first(mesh, "ratings")
    t = ctx.learn_end_us + (ctx.end_us - ctx.learn_end_us) // 4
    spec = reviews.spec
    wl = mesh.add_workload(name="reviews-v4", namespace=reviews.namespace, service=reviews,
                           version="v4", service_account=spec.service_account or spec.name,
                           sidecar=True, language=spec.language, instrumented=True,
                           old_semconv=False, replicas=1, created_us=t - 30 * US)
    reviews.routes.append((t, {"v1": 30.0, "v2": 30.0, "v3": 30.0, "v4": 10.0}))

    def hook(call: Call, b: CallBuilder) -> bool:
        dst = call.attempts[0].pod if call.attempts else None
        if (call.src_pod is not None and call.src_pod.workload is wl) or \
                (dst is not None and dst.workload is wl):
            call.label = iid
        return False

    pod = wl.pods[0]
    inst = Instance(
        id=iid, kind="canary_rollout", label="benign", source=_endpoint_src(wl, pod.ip),
        destination=_endpoint_dst(ratings), start_us=t, end_us=ctx.end_us,
        description=("canary reviews-v4 (service account bookinfo-reviews, like v1-v3) gets "
                     "10 % of reviews traffic via the VirtualService and calls ratings as v2/v3 "
                     "do: new pods, known identity and edges"),
        expected_detectors=[])
    return Plan([inst], [], [hook])


def service_rollout(ctx: Context, iid: str) -> Plan:
    """A brand-new service, deployed and then called by the client it was built for."""
    mesh = ctx.mesh
    caller = _first(mesh, ROLLOUT_CALLER_SERVICE)
    t = ctx.learn_end_us + (ctx.end_us - ctx.learn_end_us) * 55 // 100
    svc = mesh.add_service(ROLLOUT_SERVICE, created_us=t - MINUTE)
    mesh.link(caller.ops[ROLLOUT_CALLER_OP], ROLLOUT_CALLER, active_from_us=t)

    def hook(call: Call, b: CallBuilder) -> bool:
        if call.service is svc:
            call.label = iid
        return False

    wl = caller.workloads[0]
    inst = Instance(
        id=iid, kind="service_rollout", label="benign",
        source=_endpoint_src(wl, _pod(wl, t).ip), destination=_endpoint_dst(svc),
        start_us=t, end_us=ctx.end_us,
        description=(f"{svc.name} is deployed (new Service, Deployment and service account) "
                     f"and {caller.name} starts calling it (loyalty points on the home page), "
                     f"as designed"),
        expected_detectors=[])
    return Plan([inst], [], [hook])


def kubelet_probes(ctx: Context, iid: str) -> Plan:
    """Plaintext HTTP liveness probes from each node's kubelet to the legacy pods."""
    mesh, b = ctx.mesh, ctx.builder(iid)
    svc = _first(mesh, "legacy-billing")
    plan = Plan()
    period = 10 * US
    for n, wl in enumerate(svc.workloads):
        for m, pod in enumerate(wl.pods):
            pid = f"{iid}-{n + 1 + m}"
            t = ctx.start_us + b.rng.randrange(0, period)
            first = t
            b.sink = []
            while t < ctx.end_us:
                call = b.new_call(t, service=svc, dst_pod=pod, src_ip=pod.node.ip,
                                  sidecar=False, instrumented=False, op=svc.ops["health"],
                                  authority=f"{pod.ip}:{svc.target_port}",
                                  user_agent="kube-probe/1.30", label=pid)
                if call is not None:
                    call.traced = False
                    b.finish(call, app_us=b.rng.randrange(200, 900), resp_bytes=2)
                t += period
            plan.calls += b.sink
            plan.instances.append(Instance(
                id=pid, kind="kubelet_probe", label="benign",
                source={"workload": "kubelet", "namespace": None, "principal": None,
                        "address": pod.node.ip},
                destination={**_endpoint_dst(svc), "pod": pod.name},
                start_us=first, end_us=ctx.end_us,
                description=(f"kubelet on {pod.node.name} probes GET /healthz on {pod.name} "
                             f"every 10 s in plaintext (sidecar probe rewrite disabled in the "
                             f"PERMISSIVE legacy namespace): known plaintext an allowlist "
                             f"covers"),
                expected_detectors=[]))
    b.sink = []
    return plan


AttackFn = Callable[[Context, str, int, int, str], Plan]
ATTACKS: dict[str, AttackFn] = {
    "plaintext_caller": plaintext_caller,
    "mtls_downgrade": mtls_downgrade,
    "lateral_movement": lateral_movement,
    "service_scan": service_scan,
    "cert_expiry": cert_expiry,
    "identity_misuse": identity_misuse,
}
BENIGN: dict[str, Callable[[Context, str], Plan]] = {
    "canary_rollout": canary_rollout,
    "service_rollout": service_rollout,
    "kubelet_probe": kubelet_probes,
}


def build(name: str, ctx: Context) -> Plan:
    """Apply scenario ``name`` to the run: mesh changes, attack calls, hooks, labels."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None
    plan = Plan()
    # Look-alikes first: they change the mesh the attacks then see (e.g. the new service).
    for kind, fn in BENIGN.items():
        _merge(plan, fn(ctx, kind.replace("_", "-")))
    n = len(scenario.attacks)
    window = ctx.end_us - ctx.learn_end_us
    for i, (kind, variant) in enumerate(scenario.attacks):
        iid = kind.replace("_", "-") + (f"-{variant}" if variant else "")
        s = ctx.learn_end_us + window * i // n
        e = ctx.learn_end_us + window * (i + 1) // n
        _merge(plan, ATTACKS[kind](ctx, iid, s, e, variant))
    plan.calls.sort(key=lambda c: (c.start_us, c.seq))
    return plan


def _merge(plan: Plan, part: Plan) -> None:
    plan.instances += part.instances
    plan.calls += part.calls
    plan.hooks += part.hooks
