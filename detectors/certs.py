"""Workload certificates that expired or stopped rotating (detector ``cert_expiry``).

Istio's workload certificates are short-lived (24 h by default) and istio-agent renews them at
about half their lifetime (``SECRET_GRACE_PERIOD_RATIO`` 0.5, jitter 1 %). So a healthy peer
certificate always has more than ``lifetime * (1 - rotate_at)`` left, 12 h by default, and
"expires in N days" is the wrong test: a certificate 11 h from expiry is already overdue.

The test here is relative to the lifetime. For each pod (principal + address) the newest
``NotAfter`` it presented is kept; it is *not rotating* when that newest certificate has less than
``lifetime * (1 - rotate_at) - grace`` left, i.e. its age passed the rotation point by more than
``grace`` while no newer certificate appeared (``grace`` covers Istio's jitter and connections
opened just before a rotation), and *expired* when the newest certificate's NotAfter is past.
Keeping the newest per pod means a long-lived connection still carrying an old certificate does
not count as long as the pod presents its new one elsewhere.

Only destination-side records carry the peer certificate (``DOWNSTREAM_PEER_CERT_V_END``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_source,
    destination_endpoint,
    evidence,
    observed_at,
    source_endpoint,
)
from detectors.observations import (
    is_destination_evidence,
    source_address,
    source_principal,
    ts_of,
)
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity, format_ts
from meshwatch.settings import parse_duration

_NOTES = (None, "cert", "new_address")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


@DETECTORS.register("cert_expiry")
class CertExpiry(Detector):
    """A peer certificate that expired, or whose age passed the rotation point.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = CertExpiry()
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> x = {"reporter": "destination", "mtls": True, "source_address": "10.0.0.5",
    ...      "source_principal": "spiffe://cluster.local/ns/shop/sa/cart", "ts": t}
    >>> det.score_one({**x, "peer_cert_not_after": t + timedelta(hours=20)})  # healthy
    0.0
    >>> det.score_one({**x, "peer_cert_not_after": t + timedelta(hours=5)})   # not rotated
    0.8
    >>> det.score_one({**x, "peer_cert_not_after": t - timedelta(minutes=1)})  # expired
    1.0
    """

    name: ClassVar[str] = "cert_expiry"
    family: ClassVar[str] = "non_mtls"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0005", "T1078", "TA0006", "T1557")
    default_severity: ClassVar[Severity] = "high"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({"max_pods": 10}, 10)

    def __init__(self, lifetime: float = 86400.0, rotate_at: float = 0.5,
                 grace: float = 1800.0, max_pods: int = 100_000,
                 state_ttl: float = 2 * 86400.0) -> None:
        self.lifetime = lifetime
        self.rotate_at = rotate_at
        self.grace = grace
        self.max_pods = max_pods
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("lifetime", "grace", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        rotate_at = params.get("rotate_at", 0.5)
        if not isinstance(rotate_at, int | float) or not 0.0 < rotate_at < 1.0:
            raise ValueError("rotate_at: must be a fraction of the lifetime in (0, 1)")
        lifetime = params.get("lifetime", 86400.0)
        grace = params.get("grace", 1800.0)
        if grace >= lifetime * (1.0 - rotate_at):
            raise ValueError("grace: must be shorter than the time left at rotation "
                             "(lifetime * (1 - rotate_at))")
        max_pods = params.get("max_pods", 1)
        if not isinstance(max_pods, int) or max_pods < 1:
            raise ValueError("max_pods: must be a positive integer")
        return params

    def learned_size(self) -> int:
        return len(self.newest_) if hasattr(self, "newest_") else 0

    @staticmethod
    def _cert(x: Mapping[str, Any]) -> tuple[str, float] | None:
        # "cert": a bucket's first (or an older) certificate; "new_address": each pod's own,
        # so a pod's newest certificate is seen every window. Other notes repeat these.
        if x.get("note") not in _NOTES or not is_destination_evidence(x):
            return None
        not_after = x.get("peer_cert_not_after")
        if isinstance(not_after, datetime):
            value = not_after.timestamp()
        elif isinstance(not_after, int | float) and not isinstance(not_after, bool):
            value = float(not_after)
        else:
            return None
        pod = f"{source_principal(x) or '?'}@{source_address(x) or x.get('edge_src') or '?'}"
        return pod, value

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_last"}

    def _newest(self, x: Mapping[str, Any]) -> tuple[str, float, float] | None:
        """(pod, this NotAfter, newest NotAfter), memoised for the learn_one that follows
        score_one on the same input (a transient cache, never pickled)."""
        last = self.__dict__.get("_last")
        if last is not None and last[0] is x:
            return last[1]
        newest = self._compute_newest(x)
        self.__dict__["_last"] = (x, newest)
        return newest

    def _compute_newest(self, x: Mapping[str, Any]) -> tuple[str, float, float] | None:
        cert = self._cert(x)
        if cert is None:
            return None
        pod, not_after = cert
        known = self.newest_.get(pod) if hasattr(self, "newest_") else None
        return pod, not_after, not_after if known is None else max(known[0], not_after)

    def _left(self, x: Mapping[str, Any]) -> float | None:
        newest = self._newest(x)
        return None if newest is None else newest[2] - ts_of(x)

    def score_one(self, x: Mapping[str, Any]) -> float:
        left = self._left(x)
        if left is None:
            return 0.0
        if left <= 0:
            return 1.0
        if left < self.lifetime * (1.0 - self.rotate_at) - self.grace:
            return 0.8
        return 0.0

    def learn_one(self, x: Mapping[str, Any]) -> None:
        newest = self._newest(x)
        self.__dict__.pop("_last", None)
        if newest is None:
            return
        if not hasattr(self, "newest_"):
            # pod -> (newest NotAfter, when stored)
            self.newest_: BoundedMap[str, tuple[float, float]] = BoundedMap(self.max_pods,
                                                                           self.state_ttl)
            self.next_expiry_ = 0.0
        now = ts_of(x)
        known = self.newest_.get(newest[0])
        if known is None or known[0] != newest[2] or now - known[1] >= 600.0:
            self.newest_.put(newest[0], (newest[2], now), now)
        if now >= self.next_expiry_:  # pods come and go: forget them on event time
            self.newest_.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        newest = self._newest(x)
        if newest is None:
            return None
        pod, _, not_after = newest
        left = not_after - ts_of(x)
        expiry = format_ts(datetime.fromtimestamp(not_after, UTC))
        rotation_left = self.lifetime * (1.0 - self.rotate_at)
        src = describe_source(x)
        if left <= 0:
            severity: Severity = "critical"
            title = f"Expired workload certificate in use: {src}"
            what = (f"The newest certificate {src} presented expired at {expiry} and it is "
                    "still being accepted")
        else:
            severity = "high" if left < self.lifetime * 0.25 else "medium"
            title = f"Workload certificate stopped rotating: {src}"
            what = (f"The newest certificate {src} presented ends {expiry}, {_hours(left)} from "
                    f"now; a rotating {_hours(self.lifetime)} certificate is renewed with "
                    f"{_hours(rotation_left)} left, so this one is overdue by "
                    f"{_hours(rotation_left - left)}")
        return Finding(
            detector=self.name, entity=pod, ts=observed_at(x), score=score, severity=severity,
            title=title,
            summary=(f"{what} (seen by {x.get('destination_service') or x.get('edge_dst')}'s "
                     "proxy). istio-agent may have lost istiod, the certificate may be "
                     "file-mounted, or the key pair was copied and is used outside its pod."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x),),
        )
