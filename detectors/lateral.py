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
from detectors.observations import failed as call_failed
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity

_VERSION_SUFFIX = re.compile(r"(-v\d+[a-z0-9]*|-canary|-stable|-primary|-blue|-green)$")
_MAX_GROUPS_PER_DESTINATION = 256
# Every edge's first observation in a window is a "first" note (denials get their own); the
# other notes repeat an edge already seen, so they are skipped (cost follows edges).
_EDGE_NOTES = (None, "first", "denied")
_REFRESH = 300.0  # an edge learned this recently under every name is not learned again


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
    windows: int = 0  # windows in which anyone called it
    last_window: float = -1.0


def _window_of(x: Mapping[str, Any], now: float) -> float:
    start = x.get("window_start")
    return start.timestamp() if isinstance(start, datetime) else now - now % 60.0


# identities_ values: [first seen, windows active at either end of an edge, last window]. Older
# checkpoints hold a bare first-seen float: treated as an identity active long enough.
_Identity = list[float]


@DETECTORS.register("first_seen_edge")
class FirstSeenEdge(Detector):
    """First call from a source to a destination after the source's learning period.

    Not a flat "new edge" alarm: the score says how unusual the destination is for this source
    and its peers. A source is judged once its identity is older than ``learning_period`` and
    was active (at either end of an edge) in at least ``min_active_windows`` windows: a
    workload that ran twice in an hour has not shown its habits yet. A destination active in
    fewer windows is too sparse to know its callers, and is treated like a rollout.

    Siblings (other versions of the same app, or the same workload identity)
    already calling the destination make it a canary, not an attack; a destination that is
    itself brand new and answers successfully looks like a rollout; many peers in the source's
    namespace calling it make it ordinary. A denied first call (403/RBAC) raises the score.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = FirstSeenEdge(learning_period=60, min_active_windows=1)
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
        min_active_windows: int = 10,
    ) -> None:
        self.learning_period = learning_period
        self.rollout_grace = rollout_grace
        self.max_sources = max_sources
        self.max_destinations = max_destinations
        self.max_destinations_per_source = max_destinations_per_source
        self.state_ttl = state_ttl
        self.min_active_windows = min_active_windows

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        from meshwatch.settings import parse_duration

        for key in ("learning_period", "rollout_grace", "state_ttl"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("max_sources", "max_destinations", "max_destinations_per_source",
                    "min_active_windows"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        return params

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> None:
        if not hasattr(self, "sources_"):
            self.sources_: BoundedMap[str, _Source] = BoundedMap(self.max_sources, self.state_ttl)
            # When each identity (principal, namespace/workload) was first seen at either end of
            # an edge: a service that has only ever been called is not new when it first calls.
            self.identities_: BoundedMap[str, _Identity | float] = BoundedMap(
                self.max_sources, self.state_ttl)
            self.destinations_: BoundedMap[str, _Destination] = BoundedMap(
                self.max_destinations, self.state_ttl
            )
            self.namespace_sources_: dict[str, int] = {}
            self.destination_overflow_ = 0

    def learned_size(self) -> int:
        if not hasattr(self, "sources_"):
            return 0
        return len(self.sources_) + len(self.destinations_) + len(self.identities_)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before ``min_active_windows`` existed restore with the default
        # (their identities count as active enough, see `_active`).
        self.__dict__.update({"min_active_windows": 10, **state})

    # -- protocol --------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any]) -> None:
        if x.get("note") not in _EDGE_NOTES:
            return
        self._state()
        src, dst, now = x.get("edge_src"), x.get("edge_dst"), _ts(x)
        if not src or not dst:
            return
        if now >= getattr(self, "next_expiry_", 0.0):  # TTL on event time
            for store in (self.sources_, self.identities_, self.destinations_):
                store.expire(now)
            self.next_expiry_ = now + self.state_ttl / 10
        namespace = x.get("source_namespace") or x.get("src_namespace")
        aliases = self._source_identities(x, src)
        window = _window_of(x, now)
        for identity in (*aliases, *self._destination_identities(x)):
            self._active(identity, now, window)
        known_dst = self.destinations_.get(dst)
        if known_dst is not None and getattr(known_dst, "last_window", -1.0) != window:
            known_dst.windows = getattr(known_dst, "windows", 0) + 1
            known_dst.last_window = window
        if self._fresh(aliases, dst, now):
            return  # this edge was learned under every name within the last minutes
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
            if dst not in source.destinations and (
                    len(source.destinations) >= self.max_destinations_per_source):
                source.destinations.pop(next(iter(source.destinations)))
                self.destination_overflow_ += 1
            source.destinations[dst] = now  # last seen (membership is what scoring uses)
            self.sources_.put(alias, source, now)
        destination = self.destinations_.get(dst)
        if destination is None:
            destination = _Destination(first_seen=now, windows=1, last_window=window)
        if namespace and peer not in destination.groups:
            destination.namespaces[namespace] = destination.namespaces.get(namespace, 0) + 1
        for group in (peer, *self._groups(x, src)):
            if len(destination.groups) < _MAX_GROUPS_PER_DESTINATION:
                destination.groups.add(group)
        self.destinations_.put(dst, destination, now)

    def _active(self, identity: str, now: float, window: float) -> None:
        """Count the windows an identity is active in (and keep its first sighting)."""
        entry = self.identities_.get(identity)
        if entry is None:
            self.identities_.put(identity, [now, 1.0, window], now)
        elif not isinstance(entry, list):  # an older checkpoint's first-seen time
            self.identities_.put(identity, [entry, float(self.min_active_windows), window], now)
        elif entry[2] != window:
            entry[0] = min(entry[0], now)
            entry[1] += 1.0
            entry[2] = window
            self.identities_.put(identity, entry, now)

    def _fresh(self, aliases: list[str], dst: str, now: float) -> bool:
        for alias in aliases:
            source = self.sources_.get(alias)
            if source is None:
                return False
            seen = source.destinations.get(dst)
            if seen is None or now - seen > _REFRESH:
                return False
        return True

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
        """How long this caller's identity has been known, at either end of any edge; 0 while it
        has been active in fewer than ``min_active_windows`` windows."""
        first: float | None = None
        active = 0.0
        for identity in self._source_identities(x, src):
            entry = self.identities_.get(identity)
            if entry is None:
                continue
            seen, windows = (entry[0], entry[1]) if isinstance(entry, list) else (
                entry, float(self.min_active_windows))
            first = seen if first is None else min(first, seen)
            active = max(active, windows)
        if first is None or active < self.min_active_windows:
            return 0.0
        return now - first

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
        if not hasattr(self, "sources_") or x.get("note") not in _EDGE_NOTES:
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
        failed = call_failed(x)  # TCP proxies log code 0 on success
        destination = self.destinations_.get(dst)
        score = 1.0
        if (destination is None or now - destination.first_seen < self.rollout_grace
                or getattr(destination, "windows", self.min_active_windows)
                < self.min_active_windows):
            # A destination new to the whole mesh that answers is most likely a rollout; one
            # called so rarely that its callers are not known yet gets the same benefit.
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
