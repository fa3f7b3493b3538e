"""Non-mTLS family beyond plain plaintext: downgrades, PERMISSIVE migration tracking, weak TLS.

All three judge destination-side evidence only (DESIGN.md, "the mTLS-evidence trap"): the
callee's proxy is the only one that knows whether the caller presented a client certificate and
which TLS version it negotiated. Source-side records never score here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_destination,
    describe_source,
    destination_endpoint,
    edge_entity,
    evidence,
    observed_at,
    source_endpoint,
)
from detectors.observations import (
    destination_namespace,
    destination_port,
    destination_service,
    destination_workload,
    is_destination_evidence,
    source_address,
    source_workload,
    ts_of,
)
from detectors.policy import PolicyAware
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity
from meshwatch.settings import parse_duration

_REFRESH = 60.0  # seconds between refreshes of a remembered (destination, caller)
# Notes naming each caller address of an edge once per window (the others repeat them).
_CALLER_NOTES = (None, "first", "new_address", "new_principal")
TLS_ORDER = {"SSLv3": 0, "TLSv1": 1, "TLSv1.0": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


def _positive_int(params: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool)
                              or params[key] < 1):
            raise ValueError(f"{key}: must be a positive integer")


def _durations(params: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in params:
            params[key] = parse_duration(params[key])


def _globs(params: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = params.get(key, ())
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a list of names or globs")


def _caller_ids(x: Mapping[str, Any]) -> list[str]:
    """Names a plaintext caller can still be recognised by (no principal without a cert)."""
    ids = []
    workload = source_workload(x)
    if workload:
        ids.append("w:" + workload)
    address = source_address(x)
    if address:
        ids.append("a:" + address)
    return ids


@DETECTORS.register("mtls_downgrade")
class MtlsDowngrade(Detector):
    """An edge that was mTLS now receives plaintext from the same caller (downgrade).

    The callee's proxy logged mutual TLS from this caller (same workload, or same pod address)
    before; now it logs a call without a client certificate. Typical causes: the caller's sidecar
    was bypassed (outbound capture excluded, ``traffic.sidecar.istio.io/excludeOutboundPorts``),
    a DestinationRule set ``tls: DISABLE``, or an attacker in the caller's pod talking to the
    service directly. A caller that uses mTLS to *other* destinations but never did to this one
    scores lower (``other_edges_score``): its sidecar works, yet this edge is plaintext.

    >>> from datetime import datetime, UTC
    >>> det = MtlsDowngrade()
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> seen = {"reporter": "destination", "mtls": True, "source_workload": "cart",
    ...         "source_namespace": "shop", "source_address": "10.0.0.5", "edge_dst": "db:5432",
    ...         "ts": t}
    >>> det.learn_one(seen)
    >>> det.score_one({**seen, "mtls": False}), det.score_one({**seen, "reporter": "source",
    ...                                                        "mtls": None})
    (1.0, 0.0)
    """

    name: ClassVar[str] = "mtls_downgrade"
    family: ClassVar[str] = "non_mtls"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0006", "T1040", "TA0008", "T1557")
    default_severity: ClassVar[Severity] = "high"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_edges": 20, "max_callers": 10}, 30)

    def __init__(self, sensitive_services: Sequence[str] = (), other_edges_score: float = 0.7,
                 max_edges: int = 200_000, max_callers: int = 100_000,
                 state_ttl: float = 7 * 86400.0) -> None:
        self.sensitive_services = sensitive_services
        self.other_edges_score = other_edges_score
        self.max_edges = max_edges
        self.max_callers = max_callers
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        _globs(params, "sensitive_services")
        _positive_int(params, "max_edges", "max_callers")
        _durations(params, "state_ttl")
        score = params.get("other_edges_score", 0.7)
        if not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            raise ValueError("other_edges_score: must be between 0 and 1")
        return params

    def _state(self) -> None:
        if not hasattr(self, "edges_"):
            # (destination, caller id) -> last mTLS call; caller id -> last mTLS call anywhere.
            self.edges_: BoundedMap[tuple[str, str], float] = BoundedMap(self.max_edges,
                                                                        self.state_ttl)
            self.callers_: BoundedMap[str, float] = BoundedMap(self.max_callers, self.state_ttl)

    def learned_size(self) -> int:
        return len(self.edges_) + len(self.callers_) if hasattr(self, "edges_") else 0

    def learn_one(self, x: Mapping[str, Any]) -> None:
        if (x.get("mtls") is not True or x.get("note") not in _CALLER_NOTES
                or not is_destination_evidence(x)):
            return
        dst = x.get("edge_dst")
        if not dst:
            return
        self._state()
        now = ts_of(x)
        if now >= getattr(self, "next_expiry_", 0.0):  # TTL on event time
            self.edges_.expire(now)
            self.callers_.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10
        for caller in _caller_ids(x):
            last = self.edges_.get((dst, caller))
            if last is not None and now - last < _REFRESH:
                continue  # seen this window already: the notes repeat per address
            self.edges_.put((dst, caller), now, now)
            self.callers_.put(caller, now, now)

    def _judge(self, x: Mapping[str, Any]) -> tuple[float, str | None]:
        if x.get("mtls") is not False or not is_destination_evidence(x):
            return 0.0, None
        if not hasattr(self, "edges_"):
            return 0.0, None
        dst = x.get("edge_dst")
        callers = _caller_ids(x)
        for caller in callers:
            if (dst, caller) in self.edges_:
                return 1.0, caller
        for caller in callers:
            if caller in self.callers_:
                return float(self.other_edges_score), None
        return 0.0, None

    def score_one(self, x: Mapping[str, Any]) -> float:
        return self._judge(x)[0]

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        _, caller = self._judge(x)
        src, dst = describe_source(x), describe_destination(x)
        service = destination_service(x) or ""
        sensitive = any(fnmatch.fnmatch(service, p) for p in self.sensitive_services)
        if caller is not None:
            how = ("pod address " if caller.startswith("a:") else "workload ") + caller[2:]
            summary = (f"{dst} had received mutual-TLS calls from {src} ({how}); it now receives "
                       "calls from the same caller without a client certificate "
                       "(destination-side evidence). The caller's sidecar is bypassed for this "
                       "edge or its TLS origination was disabled: traffic is readable on the "
                       "wire and the caller's identity is no longer proven.")
            title = f"mTLS downgraded to plaintext: {src} -> {dst}"
        else:
            summary = (f"{src} calls other services over mutual TLS, but {dst} receives its calls "
                       "without a client certificate (destination-side evidence): its sidecar is "
                       "bypassed or TLS is disabled for this destination.")
            title = f"Plaintext from a mesh workload: {src} -> {dst}"
        severity: Severity = "critical" if sensitive else (
            self.default_severity if caller is not None else "medium")
        return Finding(
            detector=self.name, entity=edge_entity(x), ts=observed_at(x), score=score,
            severity=severity, title=title, summary=summary, source=source_endpoint(x),
            destination=destination_endpoint(x), mitre=self.mitre, evidence=(evidence(x),),
        )


@DETECTORS.register("plaintext_permissive")
class PlaintextPermissive(PolicyAware, Detector):
    """Migration tracking: plaintext callers of workloads declared PERMISSIVE.

    PERMISSIVE mode accepts plaintext on purpose while a namespace migrates to mTLS; the question
    is *who still sends it*. One low-severity alert per destination workload lists each new
    plaintext caller (a caller is reported again after ``report_every``). PERMISSIVE comes from
    ``permissive_namespaces`` or the PeerAuthentication files in ``policy_files``; without either
    the detector stays silent (nothing is declared, so there is nothing to track).

    >>> from datetime import datetime, UTC
    >>> det = PlaintextPermissive(permissive_namespaces=["legacy"])
    >>> x = {"note": "plaintext", "reporter": "destination", "mtls": False,
    ...      "destination_namespace": "legacy", "destination_workload": "billing",
    ...      "source_address": "10.0.0.9", "edge_src": "10.0.0.9", "edge_dst": "billing:8080",
    ...      "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    >>> det.score_one(x)
    1.0
    >>> det.learn_one(x); det.score_one(x)
    0.0
    """

    name: ClassVar[str] = "plaintext_permissive"
    family: ClassVar[str] = "non_mtls"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0006", "T1040")
    default_severity: ClassVar[Severity] = "low"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_pairs": 10, "permissive_namespaces": ["ns0", "ns1", "ns2"]}, 10)

    def __init__(self, permissive_namespaces: Sequence[str] = (),
                 policy_files: Sequence[str] = (), root_namespace: str = "istio-system",
                 workload_labels: Mapping[str, Mapping[str, str]] | None = None,
                 report_every: float = 86400.0, max_pairs: int = 100_000) -> None:
        self.permissive_namespaces = permissive_namespaces
        self.policy_files = policy_files
        self.root_namespace = root_namespace
        self.workload_labels = workload_labels or {}
        self.report_every = report_every
        self.max_pairs = max_pairs

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        _globs(params, "permissive_namespaces")
        _durations(params, "report_every")
        _positive_int(params, "max_pairs")
        cls.check_policy_params(params)
        return params

    def learned_size(self) -> int:
        return len(self.reported_) if hasattr(self, "reported_") else 0

    def _pair(self, x: Mapping[str, Any]) -> tuple[str, str] | None:
        if x.get("mtls") is not False or not is_destination_evidence(x):
            return None
        namespace = destination_namespace(x)
        if not namespace:
            return None
        if namespace in self.permissive_namespaces:
            permissive = True
        elif self.policy_files:
            permissive = self.policies().mtls_mode(namespace, destination_workload(x),
                                                   destination_port(x)) == "PERMISSIVE"
        else:
            permissive = False
        if not permissive:
            return None
        target = f"{namespace}/{destination_workload(x) or destination_service(x) or '?'}"
        caller = source_workload(x) or source_address(x) or str(x.get("edge_src"))
        return target, caller

    def score_one(self, x: Mapping[str, Any]) -> float:
        pair = self._pair(x)
        if pair is None:
            return 0.0
        last = self.reported_.get(pair) if hasattr(self, "reported_") else None
        if last is not None and ts_of(x) - last < self.report_every:
            return 0.0
        return 1.0

    def learn_one(self, x: Mapping[str, Any]) -> None:
        pair = self._pair(x)
        if pair is None:
            return
        if not hasattr(self, "reported_"):
            self.reported_: BoundedMap[tuple[str, str], float] = BoundedMap(
                self.max_pairs, max(self.report_every, 1.0))
        now = ts_of(x)
        last = self.reported_.get(pair)
        if last is None or now - last >= self.report_every:
            self.reported_.expire(now)  # plaintext is rare: expire on each report
            self.reported_.put(pair, now, now)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        pair = self._pair(x)
        if pair is None:
            return None
        target, caller = pair
        return Finding(
            detector=self.name, entity=target, ts=observed_at(x), score=score,
            severity=self.default_severity,
            title=f"PERMISSIVE workload {target} still receives plaintext",
            summary=(f"{target} is declared PERMISSIVE and received plaintext from {caller} "
                     f"({describe_source(x)}). Before switching it to STRICT, every caller in this "
                     "alert's evidence must get a sidecar (or be allowlisted, e.g. kubelet "
                     "probes). This alert tracks the migration; each new caller adds to it."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x),),
        )


@DETECTORS.register("weak_tls")
class WeakTls(Detector):
    """A caller negotiated a TLS version below ``min_version`` with the callee's proxy.

    Istio's sidecars negotiate TLS 1.3 (1.2 at least) with each other; an older version means a
    client outside the mesh's own proxies (a hand-rolled client using a workload certificate, a
    legacy library) or a downgraded connection. Judged per closed window on the versions the
    callee's proxy logged (``DOWNSTREAM_TLS_VERSION``: destination-side only).

    >>> det = WeakTls()
    >>> det.score_one({"tls_versions": ["TLSv1.3"]}), det.score_one({"tls_versions": ["TLSv1.1"]})
    (0.0, 1.0)
    """

    name: ClassVar[str] = "weak_tls"
    family: ClassVar[str] = "non_mtls"
    consumes = "windows"
    mitre: ClassVar[tuple[str, ...]] = ("TA0006", "T1040", "T1557")
    default_severity: ClassVar[Severity] = "medium"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({}, 0)

    def __init__(self, min_version: str = "TLSv1.2", sensitive_services: Sequence[str] = ()
                 ) -> None:
        self.min_version = min_version
        self.sensitive_services = sensitive_services

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        if params.get("min_version", "TLSv1.2") not in TLS_ORDER:
            raise ValueError(f"min_version: one of {', '.join(TLS_ORDER)}")
        _globs(params, "sensitive_services")
        return params

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Stateless: the floor is configured, not learned."""

    def _weak(self, x: Mapping[str, Any]) -> list[str]:
        floor = TLS_ORDER[self.min_version]
        versions = x.get("tls_versions") or ()
        if isinstance(versions, str):
            versions = (versions,)
        return [v for v in versions if TLS_ORDER.get(v, floor) < floor]

    def score_one(self, x: Mapping[str, Any]) -> float:
        return 1.0 if self._weak(x) else 0.0

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        weak = self._weak(x)
        if not weak:
            return None
        src, dst = describe_source(x), describe_destination(x)
        service = destination_service(x) or ""
        severity: Severity = "high" if any(fnmatch.fnmatch(service, p)
                                           for p in self.sensitive_services) else "medium"
        return Finding(
            detector=self.name, entity=edge_entity(x), ts=observed_at(x), score=score,
            severity=severity, title=f"Weak TLS ({', '.join(sorted(weak))}) {src} -> {dst}",
            summary=(f"{dst}'s proxy negotiated {', '.join(sorted(weak))} with {src} (below "
                     f"{self.min_version}). Mesh sidecars do not do that: look for a client "
                     "outside the proxies, or a downgrade in between."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=({"window_start": str(x.get("window_start")), "edge_src": x.get("edge_src"),
                       "edge_dst": x.get("edge_dst"), "tls_versions": list(x.get("tls_versions")
                                                                         or ()),
                       "requests": x.get("requests")},),
        )


@DETECTORS.register("transport_failures")
class TransportFailures(Detector):
    """A spike of connection / TLS handshake failures on an edge.

    Envoy logs a call that never reached a working upstream with ``UF``/``URX``/``UH``/``UC``
    (``conn_failures`` in the window): an expired or rejected client certificate, a peer that
    stopped speaking mTLS, a port scan. A healthy edge shows a failure now and then; this fires
    when a window has at least ``min_failures`` failures, at least ``min_ratio`` of its calls,
    and ``factor`` times the edge's own long-run failure ratio. Handshake failures are only
    visible to the *calling* proxy, so this detector reads both sides and is not part of the
    destination-side-only non-mTLS family.

    >>> det = TransportFailures()
    >>> w = {"edge_src": "a", "edge_dst": "b:80", "requests": 100, "conn_failures": 0}
    >>> det.learn_one(w)
    >>> det.score_one({**w, "conn_failures": 30}) >= 0.5, det.score_one(w)
    (True, 0.0)
    """

    name: ClassVar[str] = "transport_failures"
    family: ClassVar[str] = "transport"
    consumes = "windows"
    mitre: ClassVar[tuple[str, ...]] = ("TA0006", "T1557", "TA0040", "T1499")
    default_severity: ClassVar[Severity] = "medium"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({"max_edges": 10}, 10)

    def __init__(self, min_failures: int = 5, min_ratio: float = 0.2, factor: float = 5.0,
                 half_life: int = 60, max_edges: int = 200_000,
                 state_ttl: float = 7 * 86400.0) -> None:
        self.min_failures = min_failures
        self.min_ratio = min_ratio
        self.factor = factor
        self.half_life = half_life
        self.max_edges = max_edges
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        _positive_int(params, "min_failures", "half_life", "max_edges")
        _durations(params, "state_ttl")
        for key in ("min_ratio", "factor"):
            value = params.get(key)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{key}: must be a positive number")
        return params

    def learned_size(self) -> int:
        return len(self.edges_) if hasattr(self, "edges_") else 0

    @staticmethod
    def _counts(x: Mapping[str, Any]) -> tuple[int, int]:
        failures = x.get("conn_failures") or 0
        requests = x.get("requests") or 0
        if not isinstance(failures, int) or not isinstance(requests, int):
            return 0, 0
        return failures, requests

    def score_one(self, x: Mapping[str, Any]) -> float:
        failures, requests = self._counts(x)
        if failures < self.min_failures or requests <= 0:
            return 0.0
        ratio = failures / requests
        if ratio < self.min_ratio:
            return 0.0
        key = f"{x.get('edge_src')}->{x.get('edge_dst')}"
        usual = self.edges_.get(key) if hasattr(self, "edges_") else None
        if usual is not None and ratio < self.factor * usual:
            return 0.0
        return round(min(1.0, 0.5 + ratio / 2), 4)

    def learn_one(self, x: Mapping[str, Any]) -> None:
        failures, requests = self._counts(x)
        if requests <= 0:
            return
        if not hasattr(self, "edges_"):
            self.edges_: BoundedMap[str, float] = BoundedMap(self.max_edges, self.state_ttl)
        key = f"{x.get('edge_src')}->{x.get('edge_dst')}"
        ratio = failures / requests
        now = ts_of(x)
        if now >= getattr(self, "next_expiry_", 0.0):  # TTL on event time
            self.edges_.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10
        old = self.edges_.get(key)
        alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        self.edges_.put(key, ratio if old is None else old + alpha * (ratio - old), now)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        failures, requests = self._counts(x)
        src, dst = describe_source(x), describe_destination(x)
        return Finding(
            detector=self.name, entity=edge_entity(x), ts=observed_at(x), score=score,
            severity=self.default_severity,
            title=f"Connection failures spike {src} -> {dst} ({failures}/{requests})",
            summary=(f"{failures} of {requests} calls from {src} to {dst} in one window failed "
                     "to connect (Envoy UF/URX/UH/UC: no working upstream connection). With "
                     "mTLS this is how an expired or rejected certificate, or a peer that "
                     "stopped accepting mTLS, shows up on the caller's side."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=({"window_start": str(x.get("window_start")), "edge_src": x.get("edge_src"),
                       "edge_dst": x.get("edge_dst"), "requests": requests,
                       "conn_failures": failures, "errors_5xx": x.get("errors_5xx")},),
        )
