"""How one call comes to be: endpoints, identities, Envoy's retries, timings and call trees.

Benign traffic and attack scenarios both build calls here, so a scanner's 403 and a shopper's 200
follow the same rules (Istio auto-mTLS from sidecars, RBAC answered by the callee's sidecar,
connection failures retried by the client's sidecar, durations that nest: inbound <= outbound,
a parent's server time covers its children).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from meshwatch.simulate.calls import Attempt, Call, CallKind, inbound_sni
from meshwatch.simulate.catalog import PRODUCT_IDS, USER_AGENTS
from meshwatch.simulate.topology import US, Mesh, Operation, Pod, Service

# Rates of the failure modes a healthy mesh still shows.
P_CONNECT_FAILURE = 0.0012  # first attempt cannot connect (pod restarting, conntrack...)
P_CONNECT_RETRY_OK = 0.75  # ...and a retry to another host succeeds
P_APP_UNAVAILABLE = 0.0008  # the app answers 503 (Envoy retries it)
RETRY_ATTEMPTS = 3  # Istio's default: 1 try + 2 retries
RETRY_BACKOFF_US = 25_000  # Envoy's base retry interval

CONNECT_REFUSED = "delayed_connect_error:_Connection_refused"
CONNECT_FAILURE_DETAILS = (
    "upstream_reset_before_response_started{remote_connection_failure,"
    "delayed_connect_error:_Connection_refused}"
)
RBAC_DENIED = "rbac_access_denied_matched_policy[none]"
GRPC_OK, GRPC_NOT_FOUND, GRPC_PERMISSION_DENIED, GRPC_UNIMPLEMENTED = 0, 5, 7, 12
GRPC_INTERNAL, GRPC_UNAVAILABLE = 13, 14

# A hook sees every benign call before its outcome is decided; returning True means the hook
# decided the outcome itself (e.g. a TLS failure) and the call has no attempts of its own.
Hook = Callable[[Call, "CallBuilder"], bool]


@dataclass(slots=True)
class Counter:
    """Call sequence numbers shared by all builders of a run (a stable sort tie-breaker)."""

    _it: Iterator[int]

    @classmethod
    def new(cls) -> Counter:
        return cls(itertools.count())

    def next(self) -> int:
        return next(self._it)


class CallBuilder:
    """Builds calls into ``sink``, drawing every random choice from its own ``rng``."""

    def __init__(self, mesh: Mesh, rng: random.Random, counter: Counter) -> None:
        self.mesh = mesh
        self.rng = rng
        self.counter = counter
        self.sink: list[Call] = []
        self.hooks: list[Hook] = []

    # -- small random facts --------------------------------------------------------------------
    def request_id(self) -> str:
        """A UUID4 as Envoy generates for x-request-id."""
        h = f"{self.rng.getrandbits(128):032x}"
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

    def eph(self) -> int:
        return self.rng.randrange(32768, 61000)

    def lognormal_us(self, median_ms: float, sigma: float = 0.45) -> int:
        return max(50, int(self.rng.lognormvariate(math.log(median_ms * 1000), sigma)))

    def size(self, median: int, sigma: float = 0.3) -> int:
        if median <= 0:
            return 0
        return max(1, int(self.rng.lognormvariate(math.log(median), sigma)))

    # -- routing ---------------------------------------------------------------------------------
    def pick_pod(self, service: Service, t_us: int) -> tuple[Pod | None, str]:
        """Load balancing as Istio does it: subset by VirtualService weight, then a pod."""
        weights = service.weights_at(t_us)
        subset = ""
        candidates: list[Pod]
        if weights:
            live = {w.version: w.alive_pods(t_us) for w in service.workloads}
            options = [(v, wt) for v, wt in weights.items() if wt > 0 and live.get(v)]
            if options:
                total = sum(wt for _, wt in options)
                r = self.rng.random() * total
                for subset, wt in options:  # noqa: B007 - the loop variable is the choice
                    r -= wt
                    if r <= 0:
                        break
                candidates = live[subset]
            else:
                candidates = []
        else:
            candidates = [p for w in service.workloads for p in w.alive_pods(t_us)]
        t_s = t_us / US
        candidates = [p for p in candidates
                      if p.cert_fixed_v_end_s is None or p.cert_fixed_v_end_s > t_s]
        if not candidates:
            return None, subset
        return candidates[self.rng.randrange(len(candidates))], subset

    # -- construction ----------------------------------------------------------------------------
    def new_call(self, t_us: int, *, service: Service, src_pod: Pod | None = None,
                 src_ip: str | None = None, sidecar: bool | None = None,
                 instrumented: bool | None = None, op: Operation | None = None,
                 method: str | None = None, path: str | None = None,
                 dst_pod: Pod | None = None, subset: str | None = None,
                 port: int | None = None, parent: Call | None = None,
                 user_agent: str | None = None, authority: str | None = None,
                 xff: str | None = None, label: str | None = None,
                 kind: CallKind | None = None) -> Call | None:
        """A call with its request and transport security decided, its outcome not yet.

        Returns None when the service has no live endpoint (the caller's DNS/endpoint lookup
        would fail before any proxy logs anything).
        """
        if dst_pod is None:
            dst_pod, picked_subset = self.pick_pod(service, t_us)
            if dst_pod is None:
                return None
            subset = picked_subset if subset is None else subset
        subset = subset or ""
        wl = src_pod.workload if src_pod else None
        if sidecar is None:
            sidecar = bool(wl and wl.sidecar)
        if instrumented is None:
            instrumented = bool(wl and wl.instrumented)
        kind = kind or service.protocol
        if op is not None:
            method = method or op.spec.method
            path = path or op.spec.path
        if path and "{" in path:
            path = self._fill(path)
        port = port or service.port
        protocol = None
        if kind != "tcp":
            protocol = "HTTP/2" if kind == "grpc" else service.spec.http_version
        if authority is None and kind != "tcp":
            host = service.name if wl is None or wl.namespace == service.namespace \
                else f"{service.name}.{service.namespace}"
            authority = host if port == 80 else f"{host}:{port}"
        if kind == "tcp":
            user_agent = authority = None  # no HTTP headers on a TCP connection
        elif user_agent is None and wl is not None:
            user_agent = USER_AGENTS.get((wl.language, "grpc" if kind == "grpc" else "http"))
        call = Call(
            seq=self.counter.next(), start_us=t_us, kind=kind,
            src_ip=src_ip or (src_pod.ip if src_pod else "0.0.0.0"),  # noqa: S104 - unknown
            src_pod=src_pod, src_sidecar=sidecar, src_instrumented=instrumented,
            src_port=self.eph(), upstream_port=self.eph(),
            service=service, port=port, subset=subset, dst_ip=service.vip, op=op,
            route=None if kind == "tcp" else "default",
            method=method if kind != "tcp" else None, path=path if kind != "tcp" else None,
            protocol=protocol, authority=authority, user_agent=user_agent, xff=xff,
            request_id=self.request_id() if kind != "tcp" else None,
            req_bytes=self.size(op.spec.req_bytes) if op else 0,
            parent=parent, label=label,
        )
        call.attempts = [Attempt(offset_us=0, duration_us=0, code=0, pod=dst_pod)]
        self.secure(call)
        self.sink.append(call)
        return call

    def secure(self, call: Call) -> None:
        """Istio auto-mTLS: a client sidecar always originates mTLS with its pod's identity."""
        pod = call.src_pod
        if call.src_sidecar and pod is not None and pod.workload.principal:
            call.mtls = True
            call.peer_principal = pod.workload.principal
            call.peer_v_end_s = pod.cert_v_end_s(call.start_us / US)
            call.tls_version = "TLSv1.3"
            assert call.service is not None
            call.sni = inbound_sni(call.port, call.subset, call.service.fqdn)
            dst = call.attempts[0].pod if call.attempts else None
            call.upstream_peer = dst.workload.principal if dst else None
        else:
            self.plaintext(call)

    @staticmethod
    def plaintext(call: Call) -> None:
        call.mtls = False
        call.peer_principal = None
        call.peer_v_end_s = None
        call.tls_version = None
        call.sni = None

    def _fill(self, path: str) -> str:
        rng = self.rng
        return (path.replace("{product}", PRODUCT_IDS[rng.randrange(len(PRODUCT_IDS))])
                .replace("{user}", str(rng.randrange(10_000, 99_999)))
                .replace("{order}", f"{rng.getrandbits(40):010x}"))

    # -- outcomes ------------------------------------------------------------------------------
    def _net(self) -> int:
        return self.rng.randrange(200, 900)

    def finish(self, call: Call, *, code: int | None = None, app_us: int | None = None,
               resp_bytes: int | None = None, grpc_status: int = GRPC_OK,
               children: bool = True, flags: str = "-") -> None:
        """One attempt served by the callee's app (plus its child calls)."""
        attempt = call.attempts[0]
        attempt.offset_us = self._net()
        self._serve(call, attempt, code=code, app_us=app_us, resp_bytes=resp_bytes,
                    grpc_status=grpc_status, children=children)
        self._close(call, flags=flags)

    def _serve(self, call: Call, attempt: Attempt, *, code: int | None, app_us: int | None,
               resp_bytes: int | None, grpc_status: int, children: bool) -> None:
        op = call.op
        spec = op.spec if op else None
        if code is None:
            code = spec.status if spec else 200
        if call.kind == "grpc":
            attempt.grpc_status = grpc_status
        app_start = call.start_us + attempt.offset_us + 120
        if app_us is None:
            own = self.lognormal_us(spec.latency_ms if spec else 2.0)
            t = app_start + own * 3 // 10
            if children and op is not None and attempt.pod is not None and code < 400 \
                    and grpc_status == GRPC_OK:
                t = self._children(call, op, attempt.pod, t)
            app_us = t - app_start + own * 7 // 10
        attempt.code = code
        attempt.app_us = app_us
        attempt.details = "via_upstream"
        attempt.duration_us = app_us + 250
        if resp_bytes is None:
            resp_bytes = self.size(spec.resp_bytes) if spec else 0
            if code >= 400 and call.kind == "http":
                resp_bytes = self.size(90)
        attempt.resp_bytes = resp_bytes
        attempt.remote_port = call.upstream_port
        attempt.local_port = self.eph()

    def _children(self, call: Call, op: Operation, pod: Pod, t: int) -> int:
        version = pod.workload.version
        for child in op.children:
            if child.active_from_us is not None and t < child.active_from_us:
                continue
            if child.versions is not None and version not in child.versions:
                continue
            if child.prob < 1.0 and self.rng.random() >= child.prob:
                continue
            lo, hi = child.count
            for _ in range(lo if lo == hi else self.rng.randint(lo, hi)):
                sub = self.benign(t, pod, child.op, parent=call)
                if sub is not None:
                    t = sub.end_us + self.rng.randrange(30, 300)
        return t

    def _close(self, call: Call, *, flags: str = "-") -> None:
        """Caller-side view from the final attempt."""
        last = call.attempts[-1]
        call.code = last.code
        call.grpc_status = last.grpc_status
        call.flags = flags
        call.details = last.details
        call.resp_bytes = last.resp_bytes
        call.duration_us = last.offset_us + last.duration_us + self._net()
        call.service_time_us = (last.duration_us + 300) if last.app_us is not None else None

    def tcp_session(self, call: Call, duration_us: int, *, sent: int, received: int) -> None:
        """A TCP connection that lived ``duration_us`` (Envoy logs it once, when it closes)."""
        attempt = call.attempts[0]
        attempt.offset_us = self._net() + 200
        attempt.duration_us = max(100, duration_us - attempt.offset_us - 300)
        attempt.code, attempt.details = 0, None
        attempt.app_us = attempt.duration_us
        attempt.resp_bytes = sent
        attempt.remote_port = call.upstream_port
        attempt.local_port = self.eph()
        call.req_bytes = received
        call.code, call.details, call.flags, call.route = 0, None, "-", None
        call.resp_bytes = sent
        call.duration_us = duration_us
        call.service_time_us = None

    def deny(self, call: Call) -> None:
        """The callee's sidecar refuses the caller by AuthorizationPolicy (RBAC)."""
        attempt = call.attempts[0]
        attempt.offset_us = self._net()
        attempt.duration_us = self.rng.randrange(60, 400)
        attempt.app_us = None
        attempt.remote_port = call.upstream_port
        if call.kind == "tcp":
            attempt.code, attempt.details = 0, None
            attempt.termination = RBAC_DENIED
            call.route = None
        else:
            attempt.code, attempt.details = 403, RBAC_DENIED
            attempt.resp_bytes = 19  # "RBAC: access denied"
            if call.kind == "grpc":
                attempt.code, attempt.grpc_status = 200, GRPC_PERMISSION_DENIED
                attempt.resp_bytes = 0
        call.code = attempt.code
        call.grpc_status = attempt.grpc_status
        call.details = "via_upstream" if call.kind != "tcp" else None
        call.flags = "-"
        call.resp_bytes = attempt.resp_bytes
        call.duration_us = attempt.offset_us + attempt.duration_us + self._net()
        call.service_time_us = attempt.duration_us + 200 if call.kind != "tcp" else None

    def connect_failure(self, call: Call, *, reason: str | None = CONNECT_REFUSED,
                        details: str = CONNECT_FAILURE_DETAILS, flags: str = "UF,URX",
                        tries: int = RETRY_ATTEMPTS) -> None:
        """No connection to the upstream: only the caller's sidecar logs it (503 UF,URX)."""
        elapsed = 0
        for i in range(tries):
            elapsed += self.rng.randrange(300, 1500)
            if i < tries - 1:
                elapsed += RETRY_BACKOFF_US * (i + 1) + self.rng.randrange(0, 10_000)
        if call.attempts and call.attempts[0].pod is not None and call.service is not None:
            call.failed_host = f"{call.attempts[0].pod.ip}:{call.service.target_port}"
        call.attempts = []
        call.transport_failure = reason
        call.upstream_peer = None
        call.flags = flags if call.kind != "tcp" else "UF"
        call.resp_bytes = 0
        call.service_time_us = None
        call.duration_us = elapsed
        if call.kind == "tcp":
            call.code, call.details = 0, None
        elif call.kind == "grpc":
            # Envoy's local reply to a gRPC request is HTTP 200 carrying grpc-status 14.
            call.code, call.grpc_status, call.details = 200, GRPC_UNAVAILABLE, details
            call.resp_bytes = 0
        else:
            call.code, call.details, call.resp_bytes = 503, details, 91

    def benign(self, t_us: int, src_pod: Pod, op: Operation, *, parent: Call | None = None,
               authority: str | None = None, user_agent: str | None = None,
               xff: str | None = None) -> Call | None:
        """An ordinary call with the error and retry behaviour of a healthy mesh."""
        call = self.new_call(t_us, service=op.service, src_pod=src_pod, op=op, parent=parent,
                             authority=authority, user_agent=user_agent, xff=xff)
        if call is None:
            return None
        for hook in self.hooks:
            if hook(call, self):
                return call
        rng = self.rng
        r = rng.random()
        spec = op.spec
        if r < P_CONNECT_FAILURE:
            if rng.random() >= P_CONNECT_RETRY_OK:
                self.connect_failure(call)
                return call
            # The failed first try leaves only a delay; the retry is served normally.
            first = call.attempts[0]
            first.offset_us = RETRY_BACKOFF_US + rng.randrange(500, 10_000)
            self._serve(call, first, code=None, app_us=None, resp_bytes=None,
                        grpc_status=GRPC_OK, children=True)
            self._close(call)
            return call
        r -= P_CONNECT_FAILURE
        if r < P_APP_UNAVAILABLE:
            self._unavailable(call)
            return call
        r = rng.random()
        if r < spec.error_rate:
            if call.kind == "grpc":
                self.finish(call, code=200, grpc_status=GRPC_INTERNAL, children=False,
                            app_us=self.lognormal_us(spec.latency_ms / 2))
            else:
                self.finish(call, code=500, children=False,
                            app_us=self.lognormal_us(spec.latency_ms / 2))
        elif r < spec.error_rate + spec.not_found_rate:
            if call.kind == "grpc":
                self.finish(call, code=200, grpc_status=GRPC_NOT_FOUND, children=False)
            else:
                self.finish(call, code=404, children=False)
        else:
            self.finish(call)
        return call

    def _unavailable(self, call: Call) -> None:
        """The app answers 503; Envoy retries it up to twice (each try is an inbound record)."""
        attempts: list[Attempt] = []
        offset = self._net()
        pod = call.attempts[0].pod
        for i in range(RETRY_ATTEMPTS):
            if i and pod is not None:  # a retry: new connection, maybe another pod (same subset)
                peers = pod.workload.alive_pods(call.start_us + offset)
                pod = peers[self.rng.randrange(len(peers))] if peers else pod
                call.upstream_port = self.eph()
            attempt = Attempt(offset_us=offset, duration_us=0, code=0, pod=pod)
            failed = i == 0 or self.rng.random() < 0.5
            if failed:
                app = self.lognormal_us(0.5)
                if call.kind == "grpc":
                    self._serve(call, attempt, code=200, app_us=app, resp_bytes=0,
                                grpc_status=GRPC_UNAVAILABLE, children=False)
                else:
                    self._serve(call, attempt, code=503, app_us=app, resp_bytes=None,
                                grpc_status=GRPC_OK, children=False)
            else:
                self._serve(call, attempt, code=None, app_us=None, resp_bytes=None,
                            grpc_status=GRPC_OK, children=True)
            attempts.append(attempt)
            if not failed:
                break
            offset += attempt.duration_us + RETRY_BACKOFF_US * (i + 1) + self._net()
        call.attempts = attempts
        exhausted = attempts[-1].code == 503 or attempts[-1].grpc_status == GRPC_UNAVAILABLE
        self._close(call, flags="URX" if exhausted else "-")
