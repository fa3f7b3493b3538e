"""Non-mTLS family: plaintext calls into the mesh, judged on destination-side evidence only.

STRICT can be declared two ways: ``strict_namespaces`` (names) or the PeerAuthentication files in
``policy_files`` (per workload and port, Istio precedence; see `detectors.istio_policy`).
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
from detectors.observations import destination_namespace, destination_port, destination_workload
from detectors.policy import PolicyAware
from meshwatch.records import Finding, Severity


@DETECTORS.register("plaintext_edge")
class PlaintextEdge(PolicyAware, Detector):
    """A caller reached a workload without presenting a client certificate.

    Only destination-side records can say that (the receiving sidecar saw no peer certificate);
    a source-side record's unknown mTLS never scores. Severity is raised for sensitive services
    (critical) and for workloads declared STRICT (high: plaintext should be impossible there).
    One alert per edge; the graph builder notes each new plaintext path once per window, so an
    allowlisted probe path cannot hide other plaintext calls on the same edge.

    >>> from datetime import datetime, UTC
    >>> det = PlaintextEdge(sensitive_services=["vault.*"])
    >>> x = {"reporter": "destination", "mtls": False, "edge_src": "10.0.0.7",
    ...      "edge_dst": "vault.sec.svc.cluster.local:8200", "destination_service":
    ...      "vault.sec.svc.cluster.local", "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    >>> det.score_one(x), det.score_one({**x, "reporter": "source", "mtls": None})
    (1.0, 0.0)
    >>> det.explain(x, 1.0).severity
    'critical'
    """

    name: ClassVar[str] = "plaintext_edge"
    family: ClassVar[str] = "non_mtls"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0006", "T1040", "TA0008", "T1557")
    default_severity: ClassVar[Severity] = "medium"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({}, 0)

    def __init__(
        self,
        sensitive_services: Sequence[str] = (),
        strict_namespaces: Sequence[str] = (),
        policy_files: Sequence[str] = (),
        root_namespace: str = "istio-system",
        workload_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.sensitive_services = sensitive_services
        self.strict_namespaces = strict_namespaces
        self.policy_files = policy_files
        self.root_namespace = root_namespace
        self.workload_labels = workload_labels or {}

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("sensitive_services", "strict_namespaces"):
            value = params.get(key, ())
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key}: must be a list of names or globs")
        cls.check_policy_params(params)
        return params

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Stateless: plaintext is judged on the record itself."""

    def score_one(self, x: Mapping[str, Any]) -> float:
        if x.get("reporter") == "destination" and x.get("mtls") is False:
            return 1.0
        return 0.0

    def _severity(self, x: Mapping[str, Any]) -> Severity:
        service = x.get("destination_service") or x.get("dst_service") or ""
        if any(fnmatch.fnmatch(service, pattern) for pattern in self.sensitive_services):
            return "critical"
        namespace = destination_namespace(x)
        if namespace and namespace in self.strict_namespaces:
            return "high"
        if self.policy_files and self.policies().mtls_mode(
                namespace, destination_workload(x), destination_port(x)) == "STRICT":
            return "high"
        return self.default_severity

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        src, dst = describe_source(x), describe_destination(x)
        return Finding(
            detector=self.name,
            entity=edge_entity(x),
            ts=observed_at(x),
            score=score,
            severity=self._severity(x),
            title=f"Plaintext call {src} -> {dst}",
            summary=(
                f"{dst} received a request from {src} without a client certificate "
                f"(destination-side evidence: no peer identity, no TLS). Traffic on this edge "
                "can be read or forged on the network, and the caller's identity is unproven."
            ),
            source=source_endpoint(x),
            destination=destination_endpoint(x),
            mitre=self.mitre,
            evidence=(evidence(x),),
        )
