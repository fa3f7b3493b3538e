"""Lateral-movement family: a known caller reaching somewhere it (and its peers) never did."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity

_VERSION_SUFFIX = re.compile(r"(-v\d+[a-z0-9]*|-canary|-stable|-primary|-blue|-green)$")
_MAX_GROUPS_PER_DESTINATION = 256


def workload_group(namespace: str | None, workload: str | None) -> str | None:
    """Sibling workloads share a group: versions/canaries of one app.

    >>> workload_group("default", "reviews-v3"), workload_group("shop", "cart-canary")
    ('default/reviews', 'shop/cart')
    """
    if not workload:
        return None
    return f"{namespace or '-'}/{_VERSION_SUFFIX.sub('', workload)}"


def _ts(x: Mapping[str, Any]) -> float:
    ts = x.get("ts") or x.get("window_start")
    return ts.timestamp() if isinstance(ts, datetime) else float(ts or 0.0)


@dataclass
class _Source:
    first_seen: float
    namespace: str | None
    destinations: dict[str, float] = field(default_factory=dict)


@dataclass
class _Destination:
    first_seen: float
    groups: set[str] = field(default_factory=set)
    namespaces: dict[str, int] = field(default_factory=dict)


@DETECTORS.register("first_seen_edge")
class FirstSeenEdge(Detector):
    """First call from a source to a destination after the source's learning period.

    Not a flat "new edge" alarm: the score says how unusual the destination is for this source
    and its peers. Siblings (other versions of the same app, or the same workload identity)
    already calling the destination make it a canary, not an attack; a destination that is
    itself brand new and answers successfully looks like a rollout; many peers in the source's
    namespace calling it make it ordinary. A denied first call (403/RBAC) raises the score.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = FirstSeenEdge(learning_period=60)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def obs(src, dst, minutes, code=200, wl="ratings-v1"):
    ...     return {"edge_src": src, "edge_dst": dst, "ts": t0 + timedelta(minutes=minutes),
    ...             "source_workload": wl, "source_namespace": "default", "response_code": code}
    >>> for x in [obs("ratings", "db:5432", 0), obs("web", "secrets:8200", 0, wl="web")]:
    ...     det.learn_one(x)
    >>> det.score_one(obs("ratings", "db:5432", 5))              # known edge
    0.0
    >>> det.score_one(obs("ratings", "secrets:8200", 5, 403)) >= 0.5   # new + denied
    True
    """

    name: ClassVar[str] = "first_seen_edge"
    family: ClassVar[str] = "lateral_movement"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0008", "T1021", "TA0007", "T1046")
    default_severity: ClassVar[Severity] = "medium"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_sources": 10, "max_destinations": 3}, 23)

    def __init__(
        self,
        learning_period: float = 3600.0,
        rollout_grace: float = 1800.0,
        max_sources: int = 50_000,
        max_destinations: int = 50_000,
        max_destinations_per_source: int = 1024,
        state_ttl: float = 14 * 86400.0,
    ) -> None:
        self.learning_period = learning_period
        self.rollout_grace = rollout_grace
        self.max_sources = max_sources
        self.max_destinations = max_destinations
        self.max_destinations_per_source = max_destinations_per_source
        self.state_ttl = state_ttl

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        from meshwatch.settings import parse_duration

        for key in ("learning_period", "rollout_grace", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("max_sources", "max_destinations", "max_destinations_per_source"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        return params

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> None:
        if not hasattr(self, "sources_"):
            self.sources_: BoundedMap[str, _Source] = BoundedMap(self.max_sources, self.state_ttl)
            # When each identity (principal, namespace/workload) was first seen at either end of
            # an edge: a service that has only ever been called is not new when it first calls.
            self.identities_: BoundedMap[str, float] = BoundedMap(self.max_sources,
                                                                 self.state_ttl)
            self.destinations_: BoundedMap[str, _Destination] = BoundedMap(
                self.max_destinations, self.state_ttl
            )
            self.namespace_sources_: dict[str, int] = {}
            self.destination_overflow_ = 0

    def learned_size(self) -> int:
        if not hasattr(self, "sources_"):
            return 0
        return len(self.sources_) + len(self.destinations_) + len(self.identities_)

    # -- protocol --------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self._state()
        src, dst, now = x.get("edge_src"), x.get("edge_dst"), _ts(x)
        if not src or not dst:
            return
        namespace = x.get("source_namespace") or x.get("src_namespace")
        aliases = self._source_identities(x, src)
        for identity in (*aliases, *self._destination_identities(x)):
            first = self.identities_.get(identity)
            self.identities_.put(identity, now if first is None else min(first, now), now)
        # The same caller may be keyed by its principal, its workload or its address depending
        # on what each record knew; an edge is known when any of its names called dst.
        peer = aliases[-1]
        for alias in aliases:
            source = self.sources_.get(alias)
            if source is None:
                source = _Source(first_seen=now, namespace=namespace)
                if alias == peer and namespace:
                    self.namespace_sources_[namespace] = (
                        self.namespace_sources_.get(namespace, 0) + 1)
            if dst not in source.destinations:
                if len(source.destinations) >= self.max_destinations_per_source:
                    source.destinations.pop(next(iter(source.destinations)))
                    self.destination_overflow_ += 1
                source.destinations[dst] = now
            self.sources_.put(alias, source, now)
        destination = self.destinations_.get(dst) or _Destination(first_seen=now)
        if namespace and peer not in destination.groups:
            destination.namespaces[namespace] = destination.namespaces.get(namespace, 0) + 1
        for group in (peer, *self._groups(x, src)):
            if len(destination.groups) < _MAX_GROUPS_PER_DESTINATION:
                destination.groups.add(group)
        self.destinations_.put(dst, destination, now)

    @staticmethod
    def _source_identities(x: Mapping[str, Any], src: str) -> list[str]:
        ids = [src]
        principal = x.get("source_principal") or x.get("src_principal")
        if principal:
            ids.append(principal)
        workload = x.get("source_workload") or x.get("src_workload")
        if workload:
            ids.append(f"{x.get('source_namespace') or x.get('src_namespace') or '-'}/{workload}")
        return ids

    @staticmethod
    def _destination_identities(x: Mapping[str, Any]) -> list[str]:
        ids = []
        principal = x.get("destination_principal") or x.get("dst_principal")
        if principal:
            ids.append(principal)
        workload = x.get("destination_workload") or x.get("dst_workload")
        if workload:
            namespace = x.get("destination_namespace") or x.get("dst_namespace") or "-"
            ids.append(f"{namespace}/{workload}")
        return ids

    def _age(self, x: Mapping[str, Any], src: str, now: float) -> float:
        """How long this caller's identity has been known, at either end of any edge."""
        seen = [self.identities_.get(i) for i in self._source_identities(x, src)]
        known = [t for t in seen if t is not None]
        return now - min(known) if known else 0.0

    def _groups(self, x: Mapping[str, Any], src: str) -> list[str]:
        groups = [src]
        principal = x.get("source_principal") or x.get("src_principal")
        if principal:
            groups.append(principal)
        group = workload_group(
            x.get("source_namespace") or x.get("src_namespace"),
            x.get("source_workload") or x.get("src_workload"),
        )
        if group:
            groups.append(group)
        return groups

    def score_one(self, x: Mapping[str, Any]) -> float:
        if not hasattr(self, "sources_"):
            return 0.0
        src, dst, now = x.get("edge_src"), x.get("edge_dst"), _ts(x)
        if not src or not dst or self._age(x, src, now) < self.learning_period:
            return 0.0
        aliases = self._source_identities(x, src)
        known = [s for s in (self.sources_.get(a) for a in aliases) if s is not None]
        if any(dst in s.destinations for s in known):
            return 0.0
        return self._novelty(x, src, dst, known[0] if known else None, now)

    def _novelty(self, x: Mapping[str, Any], src: str, dst: str, source: _Source | None,
                 now: float) -> float:
        code = x.get("response_code")
        failed = code is not None and (code == 0 or code >= 400)
        destination = self.destinations_.get(dst)
        score = 1.0
        if destination is None or now - destination.first_seen < self.rollout_grace:
            # A destination new to the whole mesh that answers is most likely a rollout.
            score *= 0.9 if failed else 0.3
        if destination is not None:
            if any(g in destination.groups for g in self._groups(x, src)[1:]):
                score *= 0.1  # a sibling/canary or the same identity already calls it
            namespace = source.namespace if source is not None else (
                x.get("source_namespace") or x.get("src_namespace"))
            peers = self.namespace_sources_.get(namespace, 0) if namespace else 0
            if peers > 1:
                share = destination.namespaces.get(namespace, 0) / peers
                score *= 1.0 - min(share, 0.9)
        if code == 403 or (x.get("response_flags") or "").find("RBAC") >= 0:
            score = min(1.0, score + 0.4)
        return round(score, 4)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        src, dst = describe_source(x), describe_destination(x)
        code = x.get("response_code")
        denied = code == 403
        severity: Severity = "high" if denied or score >= 0.9 else self.default_severity
        outcome = f" and was denied ({code})" if denied else (
            f" (response {code})" if code is not None else "")
        # One alert per source: a compromised workload's new edges are one story; each new
        # edge adds to the count and the evidence instead of paging again. The workload name
        # is the stable key (records name the same caller by principal or by workload).
        return Finding(
            detector=self.name,
            entity=self._source_identities(x, str(x.get("edge_src")))[-1],
            ts=observed_at(x),
            score=score,
            severity=severity,
            title=f"Unusual new edges from {src} (first: {dst})",
            summary=(
                f"{src} called {dst} for the first time{outcome}, after its learning period. "
                "Neither its sibling workloads nor most peers in its namespace call this "
                "destination, so this is unusual for it: a compromised workload exploring the "
                "mesh looks like this. Further new edges from this source add to this alert "
                "(see count and evidence)."
            ),
            source=source_endpoint(x),
            destination=destination_endpoint(x),
            mitre=self.mitre,
            evidence=(evidence(x),),
        )
