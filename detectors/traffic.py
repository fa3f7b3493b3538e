"""Per-edge traffic anomalies: one streaming value model per (edge, metric) of closed windows.

An attacker who exfiltrates data through a compromised workload, or floods a service, changes
the volume, latency or error profile of an edge that otherwise behaves like clockwork. Each edge
(source identity -> destination service) keeps a `ContextNovelty` model per metric:

* ``requests`` - calls in the window (floods, scraping: T1499);
* ``bytes`` - ``bytes_sent + bytes_received`` (exfiltration over the mesh channel: T1041);
* ``latency_p95`` - the window's p95 latency in ms (resource exhaustion: T1499);
* ``error_ratio`` - ``errors_5xx / requests`` (a service failing under abuse: T1499).

Volumes and latency are modelled on a log scale (a 10x jump matters the same at 10 and at 10k
requests). Edges live in a `BoundedMap` (size cap + TTL on window time, evictions counted); an
edge is neutral until its models have warmed up, and a window that follows a silence longer than
``gap_windows`` windows breaks the sequence, so resuming alone is not a transition to flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from detectors.base import DETECTORS, Consumes, Detector
from detectors.models.context_novelty import ContextNovelty
from meshwatch.bounded import BoundedMap, EvictionCounts
from meshwatch.records import Endpoint, Finding, Severity

METRICS: tuple[str, ...] = ("requests", "bytes", "latency_p95", "error_ratio")
_LOG_SCALE = {"requests", "bytes", "latency_p95"}
_MITRE = {
    "requests": ("TA0040", "T1499"),
    "bytes": ("TA0010", "T1041"),
    "latency_p95": ("TA0040", "T1499"),
    "error_ratio": ("TA0040", "T1499"),
}
_LABEL = {
    "requests": "request count",
    "bytes": "bytes sent + received",
    "latency_p95": "p95 latency (ms)",
    "error_ratio": "5xx error ratio",
}


def _number(x: Mapping[str, Any], key: str) -> float | None:
    v = x.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def window_metrics(x: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one closed window; a metric whose inputs are missing is absent.

    >>> window_metrics({"requests": 10, "errors_5xx": 2, "bytes_sent": 5, "latency_p95": None})
    {'requests': 10.0, 'bytes': 5.0, 'error_ratio': 0.2}
    """
    out: dict[str, float] = {}
    requests = _number(x, "requests")
    if requests is not None:
        out["requests"] = requests
    sent, received = _number(x, "bytes_sent"), _number(x, "bytes_received")
    if sent is not None or received is not None:
        out["bytes"] = (sent or 0.0) + (received or 0.0)
    p95 = _number(x, "latency_p95")
    if p95 is not None:
        out["latency_p95"] = p95
    errors = _number(x, "errors_5xx")
    if errors is not None and requests:
        out["error_ratio"] = errors / requests
    return out


def _model_value(metric: str, value: float) -> float:
    return math.log1p(max(value, 0.0)) if metric in _LOG_SCALE else value


def _display(metric: str, value: float) -> str:
    if metric == "error_ratio":
        return f"{value:.1%}"
    if metric == "bytes":
        for unit in ("B", "kB", "MB", "GB"):
            if abs(value) < 1000 or unit == "GB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1000
    return f"{value:.0f}" if metric == "requests" else f"{value:.1f}"


def _severity(score: float) -> Severity:
    if score >= 0.9:
        return "high"
    if score >= 0.8:
        return "medium"
    return "low"


@DETECTORS.register("traffic_anomaly")
class TrafficAnomaly(Detector):
    """Flags an edge window whose volume, bytes, latency or error ratio is new for that edge.

    >>> from datetime import UTC, datetime, timedelta
    >>> det = TrafficAnomaly(warmup=30)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def window(i, requests, bytes_sent):
    ...     return {"window_start": t0 + timedelta(minutes=i), "window_seconds": 60,
    ...             "edge_src": "ns/a", "edge_dst": "db.ns", "requests": requests,
    ...             "bytes_sent": bytes_sent, "bytes_received": 1000 * requests}
    >>> for i in range(120):
    ...     w = window(i, 90 + i % 20, 4000 + 100 * (i % 7))
    ...     _ = det.score_one(w)
    ...     det.learn_one(w)
    >>> det.score_one(window(120, 90, 4100)) < det.default_threshold  # the usual next window
    True
    >>> exfil = window(120, 90, 80_000_000)
    >>> det.score_one(exfil) >= det.default_threshold
    True
    >>> print(det.explain(exfil, det.score_one(exfil)).title)
    Unusual bytes sent + received on ns/a->db.ns
    """

    name: ClassVar[str] = "traffic_anomaly"
    family: ClassVar[str] = "traffic"
    consumes: ClassVar[Consumes] = "windows"
    mitre: ClassVar[tuple[str, ...]] = ("TA0010", "T1041", "TA0040", "T1499")
    default_severity: ClassVar[Severity] = "medium"
    #: Per-edge novelty is noisier than a whole-series model: a higher bar than NAB's optimum
    #: (0.45-0.5) keeps normal Gaussian-like traffic to ~1 alert per 8k windows (measured).
    default_threshold: ClassVar[float] = 0.7
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = ({"max_edges": 5}, 5)

    def __init__(
        self,
        metrics: tuple[str, ...] = METRICS,
        warmup: int = 120,
        refractory: int = 30,
        resolutions: tuple[int, ...] = (2, 4, 8),
        alert_level: float = 0.7,
        max_edges: int = 10_000,
        ttl_seconds: float = 86_400.0,
        gap_windows: int = 3,
    ) -> None:
        self.metrics = metrics
        self.warmup = warmup
        self.refractory = refractory
        self.resolutions = resolutions
        self.alert_level = alert_level
        self.max_edges = max_edges
        self.ttl_seconds = ttl_seconds
        self.gap_windows = gap_windows

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        unknown = sorted(set(params.get("metrics", METRICS)) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics: unknown {', '.join(unknown)} (known: {', '.join(METRICS)})")
        if int(params.get("max_edges", 1)) < 1:
            raise ValueError("max_edges must be >= 1")
        if float(params.get("ttl_seconds", 1.0)) <= 0:
            raise ValueError("ttl_seconds must be > 0")
        if int(params.get("gap_windows", 1)) < 1:
            raise ValueError("gap_windows must be >= 1")
        ContextNovelty.validate_params({"warmup": params.get("warmup", 120),
                                        "refractory": params.get("refractory", 30),
                                        "resolutions": params.get("resolutions", (2, 4, 8)),
                                        "alert_level": params.get("alert_level", 0.7)})
        return params

    # -- state -----------------------------------------------------------------------------

    def _ensure_state(self) -> None:
        if not hasattr(self, "edges_"):
            self.edges_: BoundedMap[str, _EdgeState] = BoundedMap(self.max_edges,
                                                                  self.ttl_seconds)
            self.clock_ = -math.inf

    @property
    def evictions(self) -> EvictionCounts:
        """Edges dropped for capacity or TTL since start (exported as a counter)."""
        self._ensure_state()
        return self.edges_.evictions

    def learned_size(self) -> int:
        return len(self.edges_) if hasattr(self, "edges_") else 0

    @staticmethod
    def edge_key(x: Mapping[str, Any]) -> str:
        return f"{x.get('edge_src') or '?'}->{x.get('edge_dst') or '?'}"

    @staticmethod
    def _time(x: Mapping[str, Any]) -> float | None:
        start = x.get("window_start")
        return start.timestamp() if isinstance(start, datetime) else None

    def _is_gap(self, edge: _EdgeState | None, x: Mapping[str, Any], now: float | None) -> bool:
        if edge is None or now is None or edge.last_start is None:
            return False
        width = _number(x, "window_seconds") or 60.0
        return now - edge.last_start > width * self.gap_windows

    # -- protocol --------------------------------------------------------------------------

    def _metric_scores(self, x: Mapping[str, Any]) -> dict[str, float]:
        self._ensure_state()
        edge = self.edges_.get(self.edge_key(x))
        if edge is None:
            return {}
        gap = self._is_gap(edge, x, self._time(x))
        scores: dict[str, float] = {}
        for metric, value in window_metrics(x).items():
            model = edge.models.get(metric)
            if model is not None and metric in self.metrics:
                scores[metric] = model.score_one(
                    {"value": _model_value(metric, value), "sequence_break": gap})
        return scores

    def score_one(self, x: Mapping[str, Any]) -> float:
        return max(self._metric_scores(x).values(), default=0.0)

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self._ensure_state()
        now = self._time(x)
        if now is not None and now > self.clock_:
            self.clock_ = now
            self.edges_.expire(now)
        clock = self.clock_ if math.isfinite(self.clock_) else 0.0
        key = self.edge_key(x)
        edge = self.edges_.get(key)
        gap = self._is_gap(edge, x, now)
        if edge is None:
            edge = _EdgeState()
        for metric, value in window_metrics(x).items():
            if metric not in self.metrics:
                continue
            model = edge.models.get(metric)
            if model is None:
                model = edge.models[metric] = ContextNovelty(
                    warmup=self.warmup, resolutions=self.resolutions,
                    refractory=self.refractory, alert_level=self.alert_level)
            model.learn_one({"value": _model_value(metric, value), "sequence_break": gap})
        if now is not None:
            edge.last_start = now
        self.edges_.put(key, edge, now if now is not None else clock)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        scores = self._metric_scores(x)
        if not scores:
            return None
        metric = max(scores, key=scores.__getitem__)
        observed = window_metrics(x)[metric]
        edge = self.edges_.get(self.edge_key(x))
        assert edge is not None  # scores came from its models
        expected = edge.models[metric].expected_range()
        if expected is None:
            expected_text = "no learned range yet"
        else:
            lo, hi = expected
            if metric in _LOG_SCALE:
                lo, hi = math.expm1(max(lo, 0.0)), math.expm1(max(hi, 0.0))
            expected_text = f"usually {_display(metric, lo)} to {_display(metric, hi)}"
        key = self.edge_key(x)
        seconds = _number(x, "window_seconds") or 60.0
        start = x.get("window_start")
        label = _LABEL[metric]
        return Finding(
            detector=self.name,
            entity=key,
            ts=start if isinstance(start, datetime) else datetime.fromtimestamp(0, UTC),
            score=float(score),
            severity=_severity(score),
            title=f"Unusual {label} on {key}",
            summary=(f"{label} was {_display(metric, observed)} in a {seconds:.0f} s window, "
                     f"{expected_text} for this edge (novelty score {scores[metric]:.2f})."),
            source=Endpoint(workload=x.get("src_workload"), namespace=x.get("src_namespace"),
                            principal=x.get("src_principal")),
            destination=Endpoint(service=x.get("dst_service"),
                                 namespace=x.get("dst_namespace")),
            mitre=_MITRE[metric],
            evidence=({"window_start": str(start), "metric": metric, "value": observed,
                       "scores": {m: round(s, 4) for m, s in scores.items()}},),
            labels={"metric": metric},
        )


class _EdgeState:
    """Models of one edge and when its last window started (for gap detection)."""

    __slots__ = ("last_start", "models")

    def __init__(self) -> None:
        self.models: dict[str, ContextNovelty] = {}
        self.last_start: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"models": self.models, "last_start": self.last_start}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.models = state["models"]
        self.last_start = state["last_start"]
