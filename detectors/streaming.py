"""Per-source behaviour with a River model (detector ``source_behaviour``).

Closed edge windows are folded into one feature vector per source and window period: how many
destinations it called and how many of those are new for it, its request volume and bytes
relative to its own moving average, and the share of failed, denied and plaintext calls. A River
`HalfSpaceTrees` forest (fixed feature limits instead of a MinMaxScaler, so one burst cannot
rescale everything) scores each vector, and a running quantile of the scores (River's P²
`stats.Quantile`) turns scores into alerts: a period alerts when its score is above the
``quantile`` of all scores seen and at least one feature moved in a security-relevant direction
(new destinations, failures or denials, plaintext, more bytes than usual).

Sizing follows DESIGN.md: the model sees one vector per source per window (tens per minute, not
the request rate), and the forest is small (10 trees of height 8 learn ~57k vectors/s).

**When a period is scored.** Windows of one period arrive together; the period is complete when
the first window of a later period arrives. That window (the *carrier*) is scored with the worst
complete source and its finding is about that source; the next windows of the batch carry the
next worst sources, so several anomalous sources in one period each get a finding. Allowlists
match the carrier, not the reported source: use ``ignore_sources`` (globs) instead.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from river import anomaly, stats

from detectors.base import DETECTORS, Detector
from detectors.observations import ts_of
from meshwatch.bounded import BoundedMap
from meshwatch.records import Endpoint, Finding, Severity

Scored = tuple[float, str, "_Period", dict[str, float]]
Ranked = tuple[list[Scored], dict[str, tuple[dict[str, float], float]]]

# Feature limits for HalfSpaceTrees (values are clipped into them).
LIMITS: dict[str, tuple[float, float]] = {
    "destinations": (0.0, 5.0),  # log1p(distinct destinations)
    "new_destinations": (0.0, 4.0),  # log1p(destinations never called before)
    "requests_ratio": (-4.0, 4.0),  # log(requests / usual)
    "bytes_ratio": (-8.0, 4.0),  # log(bytes / the most it ever moved in a period)
    "failed": (0.0, 1.0),  # (4xx + connection failures) / requests
    "denied": (0.0, 1.0),
    "errors_5xx": (0.0, 1.0),
    "plaintext": (0.0, 1.0),  # rise of the share of calls without mTLS over the usual share
}


@dataclass
class _Period:
    """One source's windows in one period, summed."""

    start: float
    source: dict[str, Any]
    destinations: set[str] = field(default_factory=set)
    requests: int = 0
    bytes: int = 0
    failed: int = 0
    denied: int = 0
    errors_5xx: int = 0
    mtls_true: int = 0
    mtls_false: int = 0


@dataclass
class _History:
    periods: int = 0
    requests: float = 0.0
    bytes_max: float = 0.0  # slowly decaying maximum: pooled TCP connections log in bursts
    plaintext: float = 0.0  # usual share of destination-side calls without mTLS
    destinations: dict[str, float] = field(default_factory=dict)


def _source_key(x: Mapping[str, Any]) -> str:
    workload = x.get("src_workload")
    if workload:
        return f"{x.get('src_namespace') or '-'}/{workload}"
    return str(x.get("src_principal") or x.get("edge_src") or "unknown")


def _int(x: Mapping[str, Any], key: str) -> int:
    value = x.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _start(x: Mapping[str, Any]) -> float | None:
    start = x.get("window_start")
    if isinstance(start, datetime):
        return start.timestamp()
    return None


@DETECTORS.register("source_behaviour")
class SourceBehaviour(Detector):
    """A source whose whole-window behaviour is unlike anything seen (River HalfSpaceTrees).

    >>> from datetime import datetime, timedelta, UTC
    >>> det = SourceBehaviour(warmup=50, quantile=0.99)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def window(minute, src, dst, requests=20, denials=0):
    ...     return {"window_start": t0 + timedelta(minutes=minute), "edge_src": src,
    ...             "src_workload": src, "src_namespace": "ns", "edge_dst": dst,
    ...             "requests": requests, "denials": denials, "errors_4xx": denials,
    ...             "bytes_sent": 100 * requests, "mtls_true": requests}
    >>> for m in range(120):
    ...     for s in range(5):
    ...         w = window(m, f"app{s}", f"db{s}:5432")
    ...         _ = det.score_one(w); det.learn_one(w)
    >>> for d in range(12):   # app0 probes twelve new destinations, all denied
    ...     w = window(120, "app0", f"svc{d}:80", requests=2, denials=2)
    ...     _ = det.score_one(w); det.learn_one(w)
    >>> carrier = window(121, "app1", "db1:5432")
    >>> det.score_one(carrier) >= 0.5, det.explain(carrier, 1.0).entity
    (True, 'ns/app0')
    """

    name: ClassVar[str] = "source_behaviour"
    family: ClassVar[str] = "lateral_movement"
    consumes = "windows"
    mitre: ClassVar[tuple[str, ...]] = ("TA0007", "T1046", "TA0010", "T1041")
    default_severity: ClassVar[Severity] = "medium"
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"max_sources": 10, "max_destinations_per_source": 4}, 50)

    def __init__(self, n_trees: int = 10, height: int = 8, window_size: int = 250,
                 quantile: float = 0.9995, warmup: int = 250, min_periods: int = 20,
                 half_life: int = 60, ignore_sources: Sequence[str] = (),
                 max_sources: int = 20_000, max_destinations_per_source: int = 256,
                 seed: int = 42) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.quantile = quantile
        self.warmup = warmup
        self.min_periods = min_periods
        self.half_life = half_life
        self.ignore_sources = ignore_sources
        self.max_sources = max_sources
        self.max_destinations_per_source = max_destinations_per_source
        self.seed = seed

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        for key in ("n_trees", "height", "window_size", "warmup", "min_periods", "half_life",
                    "max_sources", "max_destinations_per_source"):
            if key in params and (not isinstance(params[key], int) or params[key] < 1):
                raise ValueError(f"{key}: must be a positive integer")
        q = params.get("quantile", 0.9995)
        if not isinstance(q, float) or not 0.5 < q < 1.0:
            raise ValueError("quantile: must be a fraction in (0.5, 1)")
        ignore = params.get("ignore_sources", ())
        if isinstance(ignore, str) or not all(isinstance(v, str) for v in ignore):
            raise ValueError("ignore_sources: must be a list of globs")
        return params

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> None:
        if not hasattr(self, "model_"):
            self.model_ = anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height,
                                                 window_size=self.window_size, limits=LIMITS,
                                                 seed=self.seed)
            self.cutoff_ = stats.Quantile(self.quantile)
            self.learned_ = 0
            self.history_: BoundedMap[str, _History] = BoundedMap(self.max_sources,
                                                                 86400.0 * 7)
            # Workloads seen as callees (periods): a known service that never called anyone
            # is judged on its first calls (everything it calls is new for it).
            self.callees_: BoundedMap[str, int] = BoundedMap(self.max_sources, 86400.0 * 7)
            self.period_: dict[str, _Period] = {}  # the open period, by source
            self.period_callees_: set[str] = set()
            self.period_start_: float | None = None
            # Complete sources not reported yet: (score, key, period, features), worst first.
            self.queue_: list[Scored] = []

    def learned_size(self) -> int:
        if not hasattr(self, "model_"):
            return 0
        return (len(self.history_) + len(self.period_) + len(self.queue_) + len(self.callees_)
                + sum(len(h.destinations) for _, h in self.history_.items()) // 4)

    # -- features --------------------------------------------------------------------------

    def _features(self, key: str, p: _Period) -> dict[str, float]:
        history = self.history_.get(key)
        known = history.destinations if history else {}
        new = sum(1 for d in p.destinations if d not in known)
        requests = max(p.requests, 1)
        usual_requests = history.requests if history and history.periods else p.requests
        usual_bytes = history.bytes_max if history and history.periods else p.bytes
        mtls = p.mtls_true + p.mtls_false
        raw = {
            "destinations": math.log1p(len(p.destinations)),
            "new_destinations": math.log1p(new),
            "requests_ratio": math.log((p.requests + 1) / (usual_requests + 1)),
            "bytes_ratio": math.log((p.bytes + 1) / (usual_bytes + 1)),
            "failed": p.failed / requests,
            "denied": p.denied / requests,
            "errors_5xx": p.errors_5xx / requests,
            "plaintext": (p.mtls_false / mtls - (history.plaintext if history else 0.0)
                          if mtls else 0.0),
        }
        return {k: min(max(v, LIMITS[k][0]), LIMITS[k][1]) for k, v in raw.items()}

    @staticmethod
    def _suspicious(p: _Period, f: Mapping[str, float]) -> bool:
        """A move that matters for security, in counts as well as shares (a window with two
        calls and one 404 is not one)."""
        return (f["new_destinations"] >= math.log1p(2)
                or (p.failed >= 5 and f["failed"] >= 0.2)
                or (p.denied >= 3 and f["denied"] >= 0.1)
                or (p.mtls_false > 0 and f["plaintext"] >= 0.5)
                or (p.bytes >= 1_000_000 and f["bytes_ratio"] >= math.log(3)))

    def _calibrated(self, raw: float, p: _Period, f: Mapping[str, float]) -> float:
        cut = self.cutoff_.get()
        if cut is None or self.learned_ < self.warmup:
            return 0.0
        cut = min(max(cut, 1e-6), 1.0 - 1e-6)
        if raw < cut or not self._suspicious(p, f):
            return round(0.49 * min(raw / cut, 1.0), 4)
        return round(min(1.0, 0.5 + 0.5 * (raw - cut) / (1.0 - cut)), 4)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_last"}

    def _ranked(self, x: Mapping[str, Any]) -> Ranked:
        """`_complete`, memoised for the learn_one that follows score_one on the same carrier
        (a transient cache, never pickled)."""
        last = self.__dict__.get("_last")
        if last is not None and last[0] is x:
            return last[1]
        ranked = self._complete()
        self.__dict__["_last"] = (x, ranked)
        return ranked

    def _complete(self) -> Ranked:
        """Scores of the open period's sources, worst first, and each source's (features, raw
        model score) for the learning that follows (pure)."""
        out = []
        raws: dict[str, tuple[dict[str, float], float]] = {}
        for key, p in self.period_.items():
            history = self.history_.get(key)
            periods = history.periods if history else self.callees_.get(key) or 0
            if periods < self.min_periods:
                continue
            if any(fnmatch.fnmatchcase(key, g) for g in self.ignore_sources):
                continue
            f = self._features(key, p)
            raw = self.model_.score_one(f)
            raws[key] = (f, raw)
            out.append((self._calibrated(raw, p, f), key, p, f))
        out.sort(key=lambda item: (-item[0], item[1]))
        return out, raws

    def _head(self, x: Mapping[str, Any]) -> Scored | None:
        """What the carrier ``x`` reports: the worst complete source not reported yet."""
        if not hasattr(self, "model_"):
            return None
        start = _start(x)
        if start is not None and self.period_start_ is not None and start > self.period_start_:
            ranked = self._ranked(x)[0]
            return ranked[0] if ranked else None
        return self.queue_[0] if self.queue_ else None

    # -- protocol --------------------------------------------------------------------------

    def score_one(self, x: Mapping[str, Any]) -> float:
        head = self._head(x)
        return head[0] if head else 0.0

    def learn_one(self, x: Mapping[str, Any]) -> None:
        start = _start(x)
        if start is None:
            return
        self._state()
        if self.period_start_ is None:
            self.period_start_ = start
        if start > self.period_start_:
            ranked, raws = self._ranked(x)
            self.__dict__.pop("_last", None)
            self._close_period(start, raws)
            self.queue_ = ranked[1:]  # the head was reported by this carrier
        elif self.queue_:
            self.queue_ = self.queue_[1:]
        if start < self.period_start_:
            return  # a late window of a period already scored
        callee = x.get("dst_workload")
        if callee and x.get("dst_namespace") and len(self.period_callees_) < self.max_sources:
            self.period_callees_.add(f"{x.get('dst_namespace')}/{callee}")
        key = _source_key(x)
        p = self.period_.get(key)
        if p is None:
            if len(self.period_) >= self.max_sources:
                self.dropped_ = getattr(self, "dropped_", 0) + 1  # more sources than the cap
                return
            p = self.period_[key] = _Period(start, {
                "workload": x.get("src_workload"), "namespace": x.get("src_namespace"),
                "principal": x.get("src_principal"), "address": x.get("src_address"),
                "edge_src": x.get("edge_src")})
        if len(p.destinations) < self.max_destinations_per_source:
            p.destinations.add(str(x.get("edge_dst")))
        requests = _int(x, "requests")
        p.requests += requests
        p.bytes += _int(x, "bytes_sent") + _int(x, "bytes_received")
        p.failed += _int(x, "errors_4xx") + _int(x, "conn_failures")
        p.denied += _int(x, "denials")
        p.errors_5xx += _int(x, "errors_5xx")
        p.mtls_true += _int(x, "mtls_true")
        p.mtls_false += _int(x, "mtls_false")

    def _close_period(self, next_start: float,
                      raws: Mapping[str, tuple[dict[str, float], float]]) -> None:
        alpha = 1.0 - 0.5 ** (1.0 / self.half_life)
        for callee in self.period_callees_:
            self.callees_.put(callee, (self.callees_.get(callee) or 0) + 1, next_start)
        self.period_callees_ = set()
        for key, p in self.period_.items():
            history = self.history_.get(key) or _History()
            if history.periods >= self.min_periods:
                cached = raws.get(key)
                if cached is None:  # not scored (ignored source): features for learning only
                    features = self._features(key, p)
                    cached = (features, self.model_.score_one(features))
                f, raw = cached
                self.cutoff_.update(raw)
                self.model_.learn_one(f)
                self.learned_ += 1
            if history.periods == 0:
                history.requests = float(p.requests)
            else:
                history.requests += alpha * (p.requests - history.requests)
            history.bytes_max = max(history.bytes_max * (1.0 - alpha / 10), float(p.bytes))
            mtls = p.mtls_true + p.mtls_false
            if mtls:
                share = p.mtls_false / mtls
                history.plaintext = share if history.periods == 0 else (
                    history.plaintext + alpha * (share - history.plaintext))
            history.periods += 1
            for dst in p.destinations:
                if dst not in history.destinations and (
                        len(history.destinations) >= self.max_destinations_per_source):
                    history.destinations.pop(next(iter(history.destinations)))
                history.destinations[dst] = p.start
            self.history_.put(key, history, p.start)
        self.period_ = {}
        self.period_start_ = next_start
        self.history_.expire(next_start)  # once per period: sources gone for a week
        self.callees_.expire(next_start)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        head = self._head(x)
        if head is None:
            return None
        score, key, p, f = head
        src = p.source
        when = datetime.fromtimestamp(p.start, UTC)
        moved = ", ".join(f"{k}={v:.2f}" for k, v in f.items() if v)
        return Finding(
            detector=self.name, entity=key, ts=datetime.fromtimestamp(ts_of(x), UTC),
            score=score, severity=self.default_severity,
            title=f"Unusual behaviour of {key} ({len(p.destinations)} destinations, "
                  f"{p.requests} calls)",
            summary=(f"In the window starting {when:%H:%M} UTC, {key} behaved unlike any source "
                     f"the model has seen (HalfSpaceTrees score above its running "
                     f"{self.quantile:.2%} quantile): {moved}. Check its new destinations, "
                     "failures and volume against its usual profile."),
            source=Endpoint(workload=src.get("workload"), namespace=src.get("namespace"),
                            principal=src.get("principal"), address=src.get("address")),
            destination=Endpoint(),
            mitre=self.mitre,
            evidence=({"window_start": when.isoformat(), "source": key, "features": f,
                       "destinations": sorted(p.destinations)[:20], "requests": p.requests},),
        )
