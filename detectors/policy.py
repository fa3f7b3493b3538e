"""Declared policy vs observed traffic: plaintext where STRICT is declared, and calls from
principals that no AuthorizationPolicy allows (detector ``policy_violation``).

`PolicyAware` is the mixin every policy-backed detector uses: ``policy_files`` (Istio YAML,
checked when the configuration loads), ``root_namespace`` (mesh-wide policies) and
``workload_labels`` (pod labels per ``namespace/workload`` when the name-derived ``app``/``version``
labels are not enough; see `detectors.istio_policy`). The parsed policies are a cache, not
learned state: they are re-read after a restore and never pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_destination,
    describe_source,
    destination_endpoint,
    evidence,
    observed_at,
    source_endpoint,
)
from detectors.istio_policy import IstioPolicies, PolicyError, Request, load_policy_files
from detectors.observations import (
    denied,
    destination_namespace,
    destination_port,
    destination_workload,
    is_destination_evidence,
    source_key,
)
from meshwatch.records import Finding, Severity

_TRANSIENT = ("_policies",)


def _outcome_visible(x: Mapping[str, Any]) -> bool:
    """Whether a successful response code proves the call was served.

    An HTTP RBAC denial is a 403; a gRPC one is HTTP 200 with grpc-status 7 and a TCP one a
    closed connection, neither visible in the response code. gRPC is recognised by its path
    (``/package.Service/Method``) on HTTP/2.
    """
    code = x.get("response_code")
    if not isinstance(code, int) or code == 0 or code >= 400:
        return False
    path = x.get("path") or ""
    grpc = x.get("protocol") == "HTTP/2" and path.count("/") == 2 and "." in path.split("/")[1]
    return not grpc


class PolicyAware:
    """Parameters and lazy loading of declared Istio policy (mixin for detectors)."""

    policy_files: Sequence[str]
    root_namespace: str
    workload_labels: Mapping[str, Mapping[str, str]]

    @staticmethod
    def check_policy_params(params: dict[str, Any]) -> None:
        files = params.get("policy_files", ())
        if isinstance(files, str) or not all(isinstance(f, str) for f in files):
            raise ValueError("policy_files: must be a list of paths")
        labels = params.get("workload_labels", {})
        if not isinstance(labels, Mapping) or not all(
                isinstance(v, Mapping) for v in labels.values()):
            raise ValueError("workload_labels: must map 'namespace/workload' to {label: value}")
        root = params.get("root_namespace", "istio-system")
        if not isinstance(root, str) or not root:
            raise ValueError("root_namespace: must be a namespace name")
        try:
            load_policy_files(files, root, labels)
        except PolicyError as exc:
            raise ValueError(f"policy_files: {exc}") from None

    def policies(self) -> IstioPolicies:
        cached: IstioPolicies | None = self.__dict__.get("_policies")
        if cached is None:
            try:
                cached = load_policy_files(self.policy_files, self.root_namespace,
                                           self.workload_labels)
            except PolicyError:
                cached = IstioPolicies()  # validated at start-up; a file gone since: no policy
            self.__dict__["_policies"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before a detector took policy files restore with none (a list,
        # as the YAML configuration gives it, so the restored parameters compare equal).
        self.__dict__.update({"policy_files": [], "root_namespace": "istio-system",
                              "workload_labels": {}, **state})


@DETECTORS.register("policy_violation")
class PolicyViolation(PolicyAware, Detector):
    """Traffic the declared Istio policy says cannot happen.

    * plaintext received on a workload port whose PeerAuthentication is STRICT (the policy is not
      applied, or a port is excluded from the sidecar);
    * a call from a principal (or a plaintext caller) that no AuthorizationPolicy allows: if the
      callee's proxy served it, the declared policy is not enforced (high); if it answered 403,
      enforcement works but someone tried (medium).

    Judged on destination-side notes only, and only the first observation of each caller per
    edge and window is checked (notes), so the cost follows edges, not requests. Without
    ``policy_files`` the detector stays silent.

    >>> import tempfile, pathlib
    >>> from datetime import datetime, UTC
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pa.yaml"
    >>> _ = path.write_text("apiVersion: security.istio.io/v1\\nkind: PeerAuthentication\\n"
    ...                     "metadata: {name: default, namespace: pay}\\n"
    ...                     "spec: {mtls: {mode: STRICT}}\\n")
    >>> det = PolicyViolation(policy_files=[str(path)])
    >>> x = {"note": "plaintext", "reporter": "destination", "mtls": False,
    ...      "destination_namespace": "pay", "destination_workload": "db", "edge_src": "10.0.0.9",
    ...      "edge_dst": "db.pay.svc.cluster.local:5432", "destination_port": 5432,
    ...      "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    >>> det.score_one(x), det.explain(x, 1.0).severity
    (1.0, 'high')
    """

    name: ClassVar[str] = "policy_violation"
    family: ClassVar[str] = "non_mtls"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0005", "T1078", "TA0006", "T1040")
    default_severity: ClassVar[Severity] = "high"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({}, 0)

    def __init__(self, policy_files: Sequence[str] = (), root_namespace: str = "istio-system",
                 workload_labels: Mapping[str, Mapping[str, str]] | None = None,
                 report_denied: bool = True) -> None:
        self.policy_files = policy_files
        self.root_namespace = root_namespace
        self.workload_labels = workload_labels or {}
        self.report_denied = report_denied

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        cls.check_policy_params(params)
        if not isinstance(params.get("report_denied", True), bool):
            raise ValueError("report_denied: must be true or false")
        return params

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Stateless: the declared policy is the baseline."""

    def _verdict(self, x: Mapping[str, Any]) -> tuple[float, str, str] | None:
        if not is_destination_evidence(x) or not self.policy_files:
            return None
        policies = self.policies()
        if not policies:
            return None
        namespace = destination_namespace(x)
        workload = destination_workload(x)
        port = destination_port(x)
        if x.get("mtls") is False and policies.mtls_mode(namespace, workload, port) == "STRICT":
            return 1.0, "strict", (f"PeerAuthentication declares STRICT mTLS for {namespace}/"
                                   f"{workload or '*'} port {port}, yet it received plaintext")
        if x.get("note") not in ("first", "new_principal", "new_address", "plaintext", "denied"):
            return None
        principal = x.get("source_principal") if x.get("mtls") is not False else None
        request = Request(principal, x.get("source_address"), port, x.get("method"),
                          x.get("path"))
        decision = policies.authorize(namespace, workload, request)
        if decision is None or decision.allowed:
            return None
        caller = principal or "a caller without a client certificate"
        why = f"{caller} is not allowed by the declared AuthorizationPolicy ({decision.reason})"
        if denied(x):
            if not self.report_denied:
                return None
            return 0.6, "denied", f"{why}; the proxy denied the call"
        if _outcome_visible(x):
            return 1.0, "served", (f"{why}, yet the call was served: the declared policy is "
                                   "not what the proxy enforces")
        return 0.6, "attempt", (f"{why}; whether the proxy refused it is not in the log (gRPC "
                                "and TCP denials carry no 403: log RESPONSE_CODE_DETAILS / "
                                "CONNECTION_TERMINATION_DETAILS to tell)")

    def score_one(self, x: Mapping[str, Any]) -> float:
        verdict = self._verdict(x)
        return verdict[0] if verdict else 0.0

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        verdict = self._verdict(x)
        if verdict is None:
            return None
        _, kind, why = verdict
        src, dst = describe_source(x), describe_destination(x)
        severity: Severity = "medium" if kind in ("denied", "attempt") else self.default_severity
        title = {"strict": f"Plaintext into STRICT mTLS workload {dst} from {src}",
                 "denied": f"Calls outside AuthorizationPolicy from {src} (denied)",
                 "attempt": f"Calls outside AuthorizationPolicy from {src}",
                 "served": f"AuthorizationPolicy not enforced on {dst}"}[kind]
        # Attempts are one story per caller; a policy that is not enforced, or plaintext into
        # STRICT, is one story per destination.
        entity = (f"outside-policy:{source_key(x)}" if kind in ("denied", "attempt")
                  else f"{kind}:{x.get('edge_dst')}")
        return Finding(
            detector=self.name,
            entity=entity,
            ts=observed_at(x), score=score, severity=severity, title=title,
            summary=f"{why}. Evidence is the callee's own access log (destination side).",
            source=source_endpoint(x), destination=destination_endpoint(x),
            mitre=self.mitre, evidence=(evidence(x),),
        )
