"""Multi-hop lateral movement: new edge A->B, then new edge B->C (detector ``lateral_chain``).

Research on lateral movement in authentication graphs looks for *paths* of unusual logins rather
than single ones: an attacker who lands on A reaches B, takes B's credentials, and goes on from
B. Here a hop is a first-seen edge that `FirstSeenEdge` scores as unusual (same peer and
sibling discounting, so canaries and rollouts are not hops), and that succeeded at least once
(nobody pivots through a service that refused them). Recent hops form a graph whose nodes are
hops (a line graph: hop i -> hop j when i's callee is j's caller and i came first); a new hop
that extends a path of at least ``min_hops`` hops within ``window`` is a chain. networkx finds
the longest such path, so A->B->C->D is reported as one chain from its origin A.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import networkx as nx

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_destination,
    describe_source,
    destination_endpoint,
    evidence,
    observed_at,
    source_endpoint,
)
from detectors.lateral import FirstSeenEdge
from detectors.observations import (
    destination_group,
    failed,
    source_group,
    source_principal,
    ts_of,
)
from meshwatch.records import Finding, Severity
from meshwatch.settings import parse_duration

_EDGE_NOTES = (None, "first", "denied")  # every edge starts with a "first" note per window


class Hop(NamedTuple):
    ts: float
    src: tuple[str, ...]  # names of the caller (app group, principal, edge source)
    dst: tuple[str, ...]  # names of the callee (app group, principal)
    label: str  # "caller -> callee" for people
    score: float
    ok: bool  # at least one call on the hop succeeded


def _src_names(x: Mapping[str, Any]) -> tuple[str, ...]:
    names = [n for n in (source_group(x), source_principal(x), x.get("edge_src")) if n]
    return tuple(dict.fromkeys(names))


def _dst_names(x: Mapping[str, Any]) -> tuple[str, ...]:
    names = [n for n in (destination_group(x),
                         x.get("destination_principal") or x.get("dst_principal")) if n]
    return tuple(dict.fromkeys(names))


@DETECTORS.register("lateral_chain")
class LateralChain(Detector):
    """A path of unusual first-seen edges: A->B followed by B->C within ``window``.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = LateralChain(learning_period=60, rollout_grace=60, min_active_windows=1)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def note(src, dst, minutes, code=200):
    ...     return {"note": "first", "edge_src": src, "edge_dst": f"{dst}.ns.svc.cluster.local:80",
    ...             "source_workload": src, "source_namespace": "ns",
    ...             "destination_service": f"{dst}.ns.svc.cluster.local",
    ...             "destination_workload": dst, "destination_namespace": "ns",
    ...             "response_code": code, "ts": t0 + timedelta(minutes=minutes)}
    >>> for src, dst in [("a", "x"), ("b", "y"), ("c", "z"), ("x", "b"), ("y", "c")]:
    ...     det.learn_one(note(src, dst, 0))
    >>> hop1, hop2 = note("a", "b", 10), note("b", "c", 12)
    >>> det.score_one(hop1)          # one unusual edge is not a chain
    0.0
    >>> det.learn_one(hop1); det.score_one(hop2) >= 0.5
    True
    """

    name: ClassVar[str] = "lateral_chain"
    family: ClassVar[str] = "lateral_movement"
    consumes = "events"
    mitre: ClassVar[tuple[str, ...]] = ("TA0008", "T1021", "T1210")
    default_severity: ClassVar[Severity] = "critical"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_hops": 8, "max_sources": 10, "max_destinations": 3}, 31)

    def __init__(self, window: float = 3600.0, min_hops: int = 2, min_hop_score: float = 0.5,
                 learning_period: float = 1800.0, rollout_grace: float = 1800.0,
                 max_hops: int = 512, max_sources: int = 50_000,
                 max_destinations: int = 50_000, min_active_windows: int = 10) -> None:
        self.window = window
        self.min_hops = min_hops
        self.min_hop_score = min_hop_score
        self.learning_period = learning_period
        self.rollout_grace = rollout_grace
        self.max_hops = max_hops
        self.max_sources = max_sources
        self.max_destinations = max_destinations
        self.min_active_windows = min_active_windows

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("window", "learning_period", "rollout_grace"):
            if key in params:
                params[key] = parse_duration(params[key])
        for key in ("min_hops", "max_hops", "max_sources", "max_destinations",
                    "min_active_windows"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        if params.get("min_hops", 2) < 2:
            raise ValueError("min_hops: a chain has at least 2 hops")
        score = params.get("min_hop_score", 0.5)
        if not isinstance(score, int | float) or not 0.0 < score <= 1.0:
            raise ValueError("min_hop_score: must be in (0, 1]")
        return params

    def _state(self) -> None:
        if not hasattr(self, "edges_"):
            self.edges_ = FirstSeenEdge(learning_period=self.learning_period,
                                        rollout_grace=self.rollout_grace,
                                        max_sources=self.max_sources,
                                        max_destinations=self.max_destinations,
                                        min_active_windows=self.min_active_windows)
            self.hops_: list[Hop] = []

    def learned_size(self) -> int:
        if not hasattr(self, "edges_"):
            return 0
        return self.edges_.learned_size() + len(self.hops_)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_last"}

    def _hop_score(self, x: Mapping[str, Any]) -> float:
        """`FirstSeenEdge` novelty of ``x``, memoised for the learn_one that follows score_one
        on the same input (a transient cache, never pickled)."""
        last = self.__dict__.get("_last")
        if last is not None and last[0] is x:
            return last[1]
        score = self.edges_.score_one(x)
        self.__dict__["_last"] = (x, score)
        return score

    def _chain(self, x: Mapping[str, Any]) -> tuple[float, list[Hop]]:
        """The best chain ``x`` completes: (score, hops in order), or (0.0, [])."""
        if not hasattr(self, "edges_") or x.get("note") not in _EDGE_NOTES:
            return 0.0, []
        score = self._hop_score(x)
        if score < self.min_hop_score:
            return 0.0, []
        now = ts_of(x)
        names = set(_src_names(x))
        here = Hop(now, tuple(names), _dst_names(x), self._label(x), score, not failed(x))
        recent = [h for h in self.hops_ if 0 <= now - h.ts <= self.window]
        if not any(h.ok and names & set(h.dst) for h in recent):
            return 0.0, []  # cheap exit: nothing leads here
        graph = nx.DiGraph()
        hops = [*recent, here]
        graph.add_nodes_from(range(len(hops)))
        for i, a in enumerate(hops):
            if not a.ok and i != len(hops) - 1:
                continue
            for j, b in enumerate(hops):
                if i != j and (a.ts, i) < (b.ts, j) and set(a.dst) & set(b.src) and a.ok:
                    graph.add_edge(i, j)
        end = len(hops) - 1
        sub = graph.subgraph(nx.ancestors(graph, end) | {end})
        path = nx.dag_longest_path(sub)
        if len(path) < self.min_hops or path[-1] != end:
            return 0.0, []
        chain = [hops[i] for i in path]
        mean = sum(h.score for h in chain) / len(chain)
        return round(min(1.0, mean + 0.1 * (len(chain) - self.min_hops)), 4), chain

    @staticmethod
    def _label(x: Mapping[str, Any]) -> str:
        return f"{describe_source(x)} -> {describe_destination(x)}"

    def score_one(self, x: Mapping[str, Any]) -> float:
        return self._chain(x)[0]

    def learn_one(self, x: Mapping[str, Any]) -> None:
        if x.get("note") not in _EDGE_NOTES or not x.get("edge_src") or not x.get("edge_dst"):
            return
        self._state()
        score = self._hop_score(x)
        self.__dict__.pop("_last", None)
        now = ts_of(x)
        if score >= self.min_hop_score:
            hop = Hop(now, _src_names(x), _dst_names(x), self._label(x), score, not failed(x))
            for i, old in enumerate(self.hops_):
                if old.src == hop.src and old.dst == hop.dst:
                    self.hops_[i] = old._replace(ok=old.ok or hop.ok)
                    break
            else:
                self.hops_.append(hop)
        elif not failed(x) and self.hops_:
            # A later successful call on a recent hop makes it one an attacker got through.
            src, dst = set(_src_names(x)), set(_dst_names(x))
            for i, old in enumerate(self.hops_):
                if not old.ok and src & set(old.src) and dst & set(old.dst):
                    self.hops_[i] = old._replace(ok=True)
        if self.hops_:
            self.hops_ = [h for h in self.hops_ if now - h.ts <= self.window][-self.max_hops:]
        self.edges_.learn_one(x)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        score, chain = self._chain(x)
        if not chain:
            return None
        path = " => ".join(h.label for h in chain)
        origin = chain[0].src[0]
        minutes = (chain[-1].ts - chain[0].ts) / 60
        return Finding(
            detector=self.name, entity=origin, ts=observed_at(x), score=score,
            severity=self.default_severity,
            title=f"Lateral movement chain of {len(chain)} new edges from {origin}",
            summary=(f"A path of unusual first-seen edges within {minutes:.0f} min: {path}. "
                     "Each hop is an edge its caller (and its peers) never used before, and "
                     "each callee went on to open a new edge of its own: the shape of an "
                     "attacker pivoting through the mesh."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=(evidence(x), {"chain": [{"hop": h.label, "score": h.score,
                                              "ts": h.ts} for h in chain]}),
        )
