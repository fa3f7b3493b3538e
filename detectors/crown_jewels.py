"""Access to declared crown-jewel services from outside their usual callers
(detector ``crown_jewel_access``).

Secret stores, payment databases and identity providers have a short, stable list of callers.
Declare them (``services``: globs over the service FQDN, its short name or ``namespace/workload``)
and every caller outside the learned set is reported, whatever its peers do: unlike
`first_seen_edge`, nothing is discounted because other workloads in the namespace already call
the jewel. Each jewel learns its callers for ``learning_period`` after it is first seen.
Without declared services the detector stays silent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from detectors.observations import (
    denied,
    destination_namespace,
    destination_service,
    destination_workload,
    source_group,
    source_principal,
    ts_of,
)
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity
from meshwatch.settings import parse_duration


@dataclass
class _Jewel:
    first_seen: float
    callers: dict[str, float] = field(default_factory=dict)


def _callers(x: Mapping[str, Any]) -> list[str]:
    return [n for n in dict.fromkeys((source_group(x), source_principal(x), x.get("edge_src")))
            if n]


@DETECTORS.register("crown_jewel_access")
class CrownJewelAccess(Detector):
    """A caller outside a crown jewel's learned set of callers.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = CrownJewelAccess(services=["vault.*"], learning_period=60)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def note(src, minutes):
    ...     return {"note": "first", "edge_src": src, "source_workload": src,
    ...             "source_namespace": "shop", "edge_dst": "vault.sec.svc.cluster.local:8200",
    ...             "destination_service": "vault.sec.svc.cluster.local",
    ...             "ts": t0 + timedelta(minutes=minutes), "response_code": 200}
    >>> det.learn_one(note("payments", 0))
    >>> det.score_one(note("payments", 5)), det.score_one(note("ratings", 5))
    (0.0, 1.0)
    """

    name: ClassVar[str] = "crown_jewel_access"
    family: ClassVar[str] = "lateral_movement"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0008", "T1021", "TA0006", "T1078")
    default_severity: ClassVar[Severity] = "high"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"services": ["svc*"], "max_jewels": 3}, 3)

    def __init__(self, services: Sequence[str] = (), learning_period: float = 1800.0,
                 max_jewels: int = 1000, max_callers: int = 1000,
                 state_ttl: float = 30 * 86400.0) -> None:
        self.services = services
        self.learning_period = learning_period
        self.max_jewels = max_jewels
        self.max_callers = max_callers
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        services = params.get("services", ())
        if isinstance(services, str) or not all(isinstance(s, str) for s in services):
            raise ValueError("services: must be a list of names or globs")
        for key in ("learning_period", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("max_jewels", "max_callers"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        return params

    def learned_size(self) -> int:
        return len(self.jewels_) if hasattr(self, "jewels_") else 0

    def _jewel(self, x: Mapping[str, Any]) -> str | None:
        if not self.services:
            return None
        service = destination_service(x)
        workload = destination_workload(x)
        names = []
        if service:
            names += [service, service.split(".", 1)[0]]
        if workload:
            names.append(f"{destination_namespace(x) or '-'}/{workload}")
        for name in names:
            if any(fnmatch.fnmatchcase(name, p) for p in self.services):
                return service or names[-1]
        return None

    def _outsider(self, x: Mapping[str, Any]) -> str | None:
        jewel = self._jewel(x)
        if jewel is None or not hasattr(self, "jewels_"):
            return None
        known = self.jewels_.get(jewel)
        if known is None or ts_of(x) - known.first_seen < self.learning_period:
            return None
        callers = _callers(x)
        if not callers or any(c in known.callers for c in callers):
            return None
        return jewel

    def score_one(self, x: Mapping[str, Any]) -> float:
        return 1.0 if self._outsider(x) else 0.0

    def learn_one(self, x: Mapping[str, Any]) -> None:
        jewel = self._jewel(x)
        if jewel is None:
            return
        if not hasattr(self, "jewels_"):
            self.jewels_: BoundedMap[str, _Jewel] = BoundedMap(self.max_jewels, self.state_ttl)
        now = ts_of(x)
        if now >= getattr(self, "next_expiry_", 0.0):  # TTL on event time
            self.jewels_.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10
        known = self.jewels_.get(jewel) or _Jewel(first_seen=now)
        for caller in _callers(x):
            if caller in known.callers or len(known.callers) < self.max_callers:
                known.callers[caller] = now
        self.jewels_.put(jewel, known, now)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        jewel = self._outsider(x)
        if jewel is None:
            return None
        src, dst = describe_source(x), describe_destination(x)
        known = self.jewels_.get(jewel)
        usual = sorted(known.callers if known else {})[:10]
        refused = denied(x)
        outcome = "was refused (403/RBAC)" if refused else "was served"
        return Finding(
            # One story per caller: its first unusual jewel opens it, the others add to it.
            detector=self.name, entity=_callers(x)[0], ts=observed_at(x),
            score=score, severity="high" if refused else "critical",
            title=f"Crown jewel {dst} called by an unusual caller: {src}",
            summary=(f"{src} called the crown-jewel service {dst} and {outcome}. Its usual "
                     f"callers are: {', '.join(usual) or 'none learned'}. Anyone reaching a "
                     "crown jewel outside that set needs an explanation."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x),),
        )
