"""Fan-out and scanning bursts from one source (detector ``fanout_scan``).

A workload's set of destinations is stable; discovery (T1046) is a burst of destinations it never
called, many of them refused: 404 from services that do not serve the probed path, 403/RBAC from
AuthorizationPolicy, connection failures and ``NR`` from ports nobody listens on. The detector
counts, per source and over a sliding ``window``, the distinct destinations (service:port) that
are new for the source, and how many of those first calls failed. Destinations that are new to
the whole mesh (a rollout, within ``rollout_grace``) do not count unless they failed; a source
still in its ``learning_period`` is not judged.

It reads edge notes (one per edge and window, plus denials), so its cost follows edges, not
requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_source,
    destination_endpoint,
    evidence,
    observed_at,
    source_endpoint,
)
from detectors.observations import failed, source_aliases, source_key, ts_of
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity
from meshwatch.settings import parse_duration

_NOTES = (None, "first", "denied")  # every edge starts with a "first" note per window
Recent = list[tuple[float, str, bool]]  # (ts, destination, failed)


@DETECTORS.register("fanout_scan")
class FanoutScan(Detector):
    """Many new destinations from one source in a short window, most of them refused.

    Score: below ``min_destinations`` new destinations it is 0; at the minimum it is 0.45 plus
    0.05 per extra destination (up to +0.25), plus half the share of failed first calls. With
    the default threshold (0.6) a burst of six new destinations needs about a third of them to
    fail; eleven or more fire on their own.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = FanoutScan(learning_period=60, min_destinations=3)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def note(dst, s, code=200):
    ...     return {"note": "first", "edge_src": "web", "edge_dst": dst, "response_code": code,
    ...             "ts": t0 + timedelta(seconds=s)}
    >>> for x in [note("db:5432", 0), note("db:5432", 120)]:
    ...     det.learn_one(x)
    >>> scores = []
    >>> for i, dst in enumerate(["a:80", "b:80", "c:80"]):
    ...     x = note(dst, 200 + i, code=403)
    ...     scores.append(det.score_one(x)); det.learn_one(x)
    >>> scores
    [0.0, 0.0, 0.95]
    """

    name: ClassVar[str] = "fanout_scan"
    family: ClassVar[str] = "lateral_movement"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0007", "T1046")
    default_severity: ClassVar[Severity] = "high"
    default_threshold: ClassVar[float] = 0.6
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_sources": 10, "max_destinations": 5}, 45)

    def __init__(self, window: float = 300.0, min_destinations: int = 6,
                 learning_period: float = 1800.0, rollout_grace: float = 1800.0,
                 max_sources: int = 50_000, max_destinations: int = 50_000,
                 max_destinations_per_source: int = 1024,
                 state_ttl: float = 14 * 86400.0) -> None:
        self.window = window
        self.min_destinations = min_destinations
        self.learning_period = learning_period
        self.rollout_grace = rollout_grace
        self.max_sources = max_sources
        self.max_destinations = max_destinations
        self.max_destinations_per_source = max_destinations_per_source
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("window", "learning_period", "rollout_grace", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("min_destinations", "max_sources", "max_destinations",
                    "max_destinations_per_source"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        return params

    def _state(self) -> None:
        if not hasattr(self, "known_"):
            # alias -> {destination: last seen}; identity -> first seen; destination -> first
            # seen; source key -> recent new destinations.
            self.known_: BoundedMap[str, dict[str, float]] = BoundedMap(self.max_sources,
                                                                       self.state_ttl)
            self.identities_: BoundedMap[str, float] = BoundedMap(self.max_sources,
                                                                 self.state_ttl)
            self.destinations_: BoundedMap[str, float] = BoundedMap(self.max_destinations,
                                                                   self.state_ttl)
            self.recent_: BoundedMap[str, Recent] = BoundedMap(self.max_sources, self.window)

    def learned_size(self) -> int:
        if not hasattr(self, "known_"):
            return 0
        return (len(self.known_) + len(self.identities_) + len(self.destinations_)
                + len(self.recent_))

    def _fresh(self, aliases: list[str], dst: str, now: float) -> bool:
        for alias in aliases:
            known = self.known_.get(alias)
            seen = known.get(dst) if known is not None else None
            if seen is None or now - seen > 300.0:
                return False
        return True

    def _is_new(self, x: Mapping[str, Any], now: float) -> tuple[str, bool] | None:
        """(destination, failed) when ``x`` is a judged source's first call to somewhere new."""
        if x.get("note") not in _NOTES:
            return None
        dst = x.get("edge_dst")
        aliases = source_aliases(x)
        if not dst or not aliases or not hasattr(self, "known_"):
            return None
        seen = [self.identities_.get(a) for a in aliases]
        first = min((t for t in seen if t is not None), default=None)
        if first is None or now - first < self.learning_period:
            return None
        for alias in aliases:
            known = self.known_.get(alias)
            if known is not None and dst in known:
                return None
        bad = failed(x)
        born = self.destinations_.get(dst)
        if not bad and (born is None or now - born < self.rollout_grace):
            return None  # a destination new to the whole mesh that answers: a rollout
        return dst, bad

    def _burst(self, x: Mapping[str, Any]) -> tuple[int, int, list[str]]:
        now = ts_of(x)
        new = self._is_new(x, now)
        if new is None:
            return 0, 0, []
        recent = self.recent_.get(source_key(x)) or []
        outcome: dict[str, bool] = {}
        for ts, dst, bad in recent:
            if now - ts <= self.window:
                outcome[dst] = outcome.get(dst, False) or bad
        outcome[new[0]] = outcome.get(new[0], False) or new[1]
        return len(outcome), sum(outcome.values()), list(outcome)

    def score_one(self, x: Mapping[str, Any]) -> float:
        n, bad, _ = self._burst(x)
        if n < self.min_destinations:
            return 0.0
        base = 0.45 + 0.05 * min(n - self.min_destinations, 5)
        return round(min(1.0, base + 0.5 * bad / n), 4)

    def learn_one(self, x: Mapping[str, Any]) -> None:
        if x.get("note") not in _NOTES:
            return
        dst = x.get("edge_dst")
        aliases = source_aliases(x)
        if not dst or not aliases:
            return
        self._state()
        now = ts_of(x)
        if now >= getattr(self, "next_expiry_", 0.0):  # TTL on event time
            for store in (self.known_, self.identities_, self.destinations_, self.recent_):
                store.expire(now)
            self.next_expiry_ = now + min(self.state_ttl / 10, 3600.0)
        if self._fresh(aliases, dst, now):
            return  # learned under every name within the last minutes
        new = self._is_new(x, now)
        if new is not None:
            key = source_key(x)
            recent = [r for r in (self.recent_.get(key) or []) if now - r[0] <= self.window]
            recent.append((now, new[0], new[1]))
            self.recent_.put(key, recent[-4 * self.max_destinations_per_source:], now)
        for alias in aliases:
            first = self.identities_.get(alias)
            self.identities_.put(alias, now if first is None else min(first, now), now)
            known = self.known_.get(alias)
            if known is None:
                known = {}
            elif dst not in known and len(known) >= self.max_destinations_per_source:
                known.pop(next(iter(known)))
            known[dst] = now
            self.known_.put(alias, known, now)
        # A callee is an identity too: a service that was only ever called is not new when it
        # starts calling others.
        for callee in (x.get("destination_principal"), x.get("destination_workload")
                       and f"{x.get('destination_namespace') or '-'}/"
                           f"{x.get('destination_workload')}"):
            if callee and callee not in self.identities_:
                self.identities_.put(callee, now, now)
        if dst not in self.destinations_:
            self.destinations_.put(dst, now, now)
        else:
            self.destinations_.touch(dst, now)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        n, bad, dsts = self._burst(x)
        src = describe_source(x)
        minutes = self.window / 60
        shown = ", ".join(dsts[:12]) + (" ..." if len(dsts) > 12 else "")
        return Finding(
            detector=self.name, entity=source_key(x), ts=observed_at(x), score=score,
            severity=self.default_severity,
            title=f"Fan-out scan from {src}: {n} new destinations in {minutes:.0f} min",
            summary=(f"{src} made first calls to {n} destinations it had never called within "
                     f"{minutes:.0f} minutes; {bad} of them failed (404/403/RBAC, no route, "
                     f"connection failure). Destinations: {shown}. Service discovery from a "
                     "compromised workload looks like this."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x), {"new_destinations": dsts[:50], "failed": bad}),
        )
