"""A batch baseline: scikit-learn IsolationForest refit periodically on stored windows
(detector ``window_outlier``).

The streaming models adapt one window at a time; a periodically refit IsolationForest is the
classic batch baseline to compare them with (notebooks and `meshwatch eval` do). It keeps the
feature vectors of the most recent closed edge windows (``reservoir``), refits every
``refit_every`` windows, and scores each window against the last fit. scikit-learn's
``score_samples`` is "lower = more abnormal"; the sign is flipped to River's convention (higher
= more anomalous, ``2 ** (-mean path length / c(n))`` in (0, 1]).

Scoring one window through scikit-learn costs ~5 ms (input validation and per-tree calls), so
each fit is compiled into flat per-tree arrays and walked directly: the same leaves, the same
path lengths and the same score as ``-score_samples`` (a test checks it), ~0.1 ms per window.
A window alerts when its score is above the ``quantile`` of the training scores and something
security-relevant moved (failures, denials, plaintext, bytes well above the edge's maximum).
Disabled by default: it is the yardstick for ``source_behaviour``, not a pager.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

from detectors.base import DETECTORS, Detector
from detectors.findings import (
    describe_destination,
    describe_source,
    destination_endpoint,
    edge_entity,
    observed_at,
    source_endpoint,
)
from detectors.observations import ts_of
from meshwatch.bounded import BoundedMap
from meshwatch.records import Finding, Severity

FEATURES = ("requests", "requests_ratio", "failed", "denied", "errors_5xx", "bytes_per_call",
            "bytes_ratio", "plaintext", "latency_p95")


def average_path_length(n: float) -> float:
    """Expected path length of an unsuccessful search in a binary tree of ``n`` items
    (scikit-learn's ``_average_path_length`` for one value)."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


class CompiledTree(NamedTuple):
    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    leaf: list[float]  # path length credited at a leaf: depth + 1 + c(n_leaf) - 1


def compile_forest(model: Any) -> tuple[list[CompiledTree], float]:
    """Flat trees and the normaliser ``n_trees * c(max_samples)`` of a fitted IsolationForest."""
    trees = []
    for estimator, features in zip(model.estimators_, model.estimators_features_,
                                   strict=True):
        t = estimator.tree_
        left = t.children_left.tolist()
        right = t.children_right.tolist()
        depth = [0] * t.node_count
        for node in range(t.node_count):  # parents precede children in sklearn's layout
            for child in (left[node], right[node]):
                if child != -1:
                    depth[child] = depth[node] + 1
        samples = t.n_node_samples.tolist()
        mapped = [int(features[f]) if f >= 0 else -1 for f in t.feature.tolist()]
        leaf = [depth[n] + 1 + average_path_length(samples[n]) - 1.0
                for n in range(t.node_count)]
        trees.append(CompiledTree(left, right, mapped, t.threshold.tolist(), leaf))
    return trees, len(trees) * average_path_length(model.max_samples_)


def forest_score(trees: list[CompiledTree], norm: float, x: list[float]) -> float:
    """``-IsolationForest.score_samples([x])[0]`` from compiled trees (higher = anomalous)."""
    total = 0.0
    for t in trees:
        node = 0
        left, right, feature, threshold = t.left, t.right, t.feature, t.threshold
        while left[node] != -1:
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        total += t.leaf[node]
    return 2.0 ** (-total / norm) if norm > 0 else 1.0


class _Edge(NamedTuple):
    windows: int
    requests: float
    bytes_max: float
    plaintext: float


def _int(x: Mapping[str, Any], key: str) -> int:
    value = x.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@DETECTORS.register("window_outlier")
class WindowOutlier(Detector):
    """Edge windows an IsolationForest, refit on recent windows, finds isolated.

    >>> from datetime import datetime, timedelta, UTC
    >>> det = WindowOutlier(refit_every=300, reservoir=600, min_windows=5, quantile=0.99)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def window(i, edge, requests=50, failures=0):
    ...     return {"window_start": t0 + timedelta(minutes=i), "edge_src": f"app{edge}",
    ...             "edge_dst": "db:5432", "requests": requests, "conn_failures": failures,
    ...             "bytes_sent": 500 * requests, "mtls_true": requests,
    ...             "latency_p95": 12.0 + edge}
    >>> for i in range(60):
    ...     for e in range(10):
    ...         w = window(i, e, requests=45 + (i * e) % 11, failures=(i + e) % 7 == 0)
    ...         _ = det.score_one(w); det.learn_one(w)
    >>> det.score_one(window(60, 3)) < 0.5       # a usual window
    True
    >>> det.score_one(window(60, 3, requests=400, failures=300)) >= 0.5  # a failure storm
    True
    """

    name: ClassVar[str] = "window_outlier"
    family: ClassVar[str] = "traffic"
    consumes = "windows"
    mitre: ClassVar[tuple[str, ...]] = ("TA0007", "T1046", "TA0010", "T1041")
    default_severity: ClassVar[Severity] = "low"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_edges": 10, "reservoir": 200, "refit_every": 100}, 210)

    def __init__(self, n_estimators: int = 50, max_samples: int = 256, reservoir: int = 4096,
                 refit_every: int = 2000, quantile: float = 0.9995, min_windows: int = 10,
                 max_edges: int = 100_000, seed: int = 7) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.reservoir = reservoir
        self.refit_every = refit_every
        self.quantile = quantile
        self.min_windows = min_windows
        self.max_edges = max_edges
        self.seed = seed

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("n_estimators", "max_samples", "reservoir", "refit_every", "min_windows",
                    "max_edges"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        q = params.get("quantile", 0.9995)
        if not isinstance(q, float) or not 0.5 < q < 1.0:
            raise ValueError("quantile: must be a fraction in (0.5, 1)")
        return params

    def _state(self) -> None:
        if not hasattr(self, "edges_"):
            self.edges_: BoundedMap[str, _Edge] = BoundedMap(self.max_edges, 7 * 86400.0)
            self.samples_: list[list[float]] = []  # ring buffer of recent feature vectors
            self.next_slot_ = 0
            self.since_fit_ = 0
            self.forest_: tuple[list[CompiledTree], float] | None = None
            self.cutoff_ = 1.0
            self.fits_ = 0

    def learned_size(self) -> int:
        return len(self.edges_) + len(self.samples_) if hasattr(self, "edges_") else 0

    @staticmethod
    def _key(x: Mapping[str, Any]) -> str:
        return f"{x.get('edge_src')}->{x.get('edge_dst')}"

    def _features(self, x: Mapping[str, Any]) -> tuple[list[float], _Edge | None] | None:
        requests = _int(x, "requests")
        if requests <= 0:
            return None
        edge = self.edges_.get(self._key(x)) if hasattr(self, "edges_") else None
        traffic = _int(x, "bytes_sent") + _int(x, "bytes_received")
        mtls = _int(x, "mtls_true") + _int(x, "mtls_false")
        plaintext = _int(x, "mtls_false") / mtls if mtls else 0.0
        p95 = x.get("latency_p95")
        vector = [
            math.log1p(requests),
            math.log((requests + 1) / (edge.requests + 1)) if edge else 0.0,
            (_int(x, "errors_4xx") + _int(x, "conn_failures")) / requests,
            _int(x, "denials") / requests,
            _int(x, "errors_5xx") / requests,
            math.log1p(traffic / requests),
            math.log((traffic + 1) / (edge.bytes_max + 1)) if edge else 0.0,
            max(0.0, plaintext - (edge.plaintext if edge else plaintext)),
            math.log1p(p95) if isinstance(p95, int | float) else 0.0,
        ]
        return vector, edge

    @staticmethod
    def _suspicious(v: list[float]) -> bool:
        return v[2] >= 0.2 or v[3] >= 0.1 or v[7] >= 0.5 or v[6] >= math.log(3)

    def score_one(self, x: Mapping[str, Any]) -> float:
        if not hasattr(self, "edges_") or self.forest_ is None:
            return 0.0
        features = self._features(x)
        if features is None:
            return 0.0
        vector, edge = features
        if edge is None or edge.windows < self.min_windows:
            return 0.0
        raw = forest_score(*self.forest_, vector)
        cut = min(self.cutoff_, 1.0 - 1e-6)
        if raw < cut or not self._suspicious(vector):
            return round(0.49 * min(raw / cut, 1.0), 4)
        return round(min(1.0, 0.5 + 0.5 * (raw - cut) / (1.0 - cut)), 4)

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self._state()
        features = self._features(x)
        if features is None:
            return
        vector, edge = features
        if len(self.samples_) < self.reservoir:
            self.samples_.append(vector)
        else:
            self.samples_[self.next_slot_] = vector
            self.next_slot_ = (self.next_slot_ + 1) % self.reservoir
        self.since_fit_ += 1
        if self.since_fit_ >= self.refit_every and len(self.samples_) >= 2 * self.max_samples:
            self._refit()
        requests = _int(x, "requests")
        traffic = _int(x, "bytes_sent") + _int(x, "bytes_received")
        mtls = _int(x, "mtls_true") + _int(x, "mtls_false")
        share = _int(x, "mtls_false") / mtls if mtls else 0.0
        if edge is None:
            edge = _Edge(1, float(requests), float(traffic), share)
        else:
            alpha = 1.0 / min(edge.windows + 1, 60)
            edge = _Edge(edge.windows + 1, edge.requests + alpha * (requests - edge.requests),
                         max(edge.bytes_max * 0.999, float(traffic)),
                         edge.plaintext + alpha * (share - edge.plaintext) if mtls
                         else edge.plaintext)
        self.edges_.put(self._key(x), edge, ts_of(x))

    def _refit(self) -> None:
        from sklearn.ensemble import IsolationForest

        data = np.asarray(self.samples_, dtype=float)
        model = IsolationForest(n_estimators=self.n_estimators,
                                max_samples=min(self.max_samples, len(data)),
                                random_state=self.seed + self.fits_).fit(data)
        self.forest_ = compile_forest(model)
        scores = -model.score_samples(data)
        self.cutoff_ = float(np.quantile(scores, self.quantile))
        self.since_fit_ = 0
        self.fits_ += 1

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        features = self._features(x)
        if features is None:
            return None
        vector = features[0]
        src, dst = describe_source(x), describe_destination(x)
        shown = {k: round(v, 3) for k, v in zip(FEATURES, vector, strict=True)}
        return Finding(
            detector=self.name, entity=edge_entity(x), ts=observed_at(x), score=score,
            severity=self.default_severity, title=f"Outlier window {src} -> {dst}",
            summary=(f"An IsolationForest refit on the last {len(self.samples_)} windows "
                     f"isolates this window of {src} -> {dst} faster than "
                     f"{self.quantile:.2%} of them: {shown}."),
            source=source_endpoint(x), destination=destination_endpoint(x), mitre=self.mitre,
            evidence=({"window_start": str(x.get("window_start")), "features": shown},),
        )
