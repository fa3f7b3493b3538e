"""Benchmark a registered univariate detector on a NAB corpus.

Like NAB's own runner, each series gets a fresh detector that may be told the series' min/max
(``value_min``/``value_max``) and the probationary length (``warmup``) when its constructor takes
those parameters; nothing else about the future. Rows are scored before they are learned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import DETECTORS, Detector
from detectors.evaluation.nab import (
    ProfileResult,
    ScoringFrame,
    restrict,
    score_profiles,
    scoring_frame,
)
from detectors.evaluation.nab_data import CostMatrix, NabSeries, load_corpus, load_profiles


def make_detector(name: str, series: NabSeries, probation: int,
                  params: Mapping[str, Any] | None = None) -> Detector:
    """A fresh detector for one series, told what NAB tells its detectors."""
    cls = DETECTORS.get(name)
    if cls.consumes != "values":
        raise ValueError(f"detector {name!r} consumes {cls.consumes}, NAB needs a 'values' model")
    accepted = set(cls._param_names())
    hints: dict[str, Any] = {
        "warmup": probation,
        "value_min": float(series.values.min()),
        "value_max": float(series.values.max()),
    }
    kwargs = {k: v for k, v in hints.items() if k in accepted}
    kwargs.update(params or {})
    return cls(**cls.validate_params(kwargs))


def run_series(detector: Detector, series: NabSeries) -> np.ndarray:
    """Per-row anomaly scores, each row scored before it is learned."""
    out = np.empty(len(series))
    score_one, learn_one = detector.score_one, detector.learn_one
    for i, (ts, value) in enumerate(zip(series.timestamps, series.values.tolist(), strict=True)):
        x = {"value": value, "timestamp": ts}
        out[i] = score_one(x)
        learn_one(x)
    if not np.all((out >= 0.0) & (out <= 1.0)):
        raise ValueError(f"{series.key}: detector scores must lie in [0, 1]")
    return out


@dataclass(frozen=True)
class NabReport:
    """What `meshwatch bench nab` shows: scores per profile and per category, and speed."""

    detector: str
    files: int
    rows: int
    seconds: float
    results: dict[str, ProfileResult]
    categories: dict[str, dict[str, ProfileResult]] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        def one(r: ProfileResult) -> dict[str, Any]:
            return {"normalized": r.normalized, "raw": r.raw, "null": r.null,
                    "perfect": r.perfect, "threshold": r.threshold,
                    "tp": sum(f.tp for f in r.files), "fp": sum(f.fp for f in r.files),
                    "fn": sum(f.fn for f in r.files), "tn": sum(f.tn for f in r.files),
                    "windows": sum(f.windows for f in r.files),
                    "windows_detected": sum(f.detected for f in r.files)}

        return {
            "detector": self.detector,
            "files": self.files,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "profiles": {p: one(r) for p, r in self.results.items()},
            "categories": {c: {p: one(r) for p, r in by_p.items()}
                           for c, by_p in self.categories.items()},
        }


def score_report(
    detector: str,
    corpus: Sequence[NabSeries],
    scores: Sequence[np.ndarray],
    profiles: Mapping[str, CostMatrix],
    seconds: float,
    frames: Sequence[ScoringFrame] | None = None,
) -> NabReport:
    """Score per-row results (threshold optimized per profile over the whole corpus)."""
    frames = list(frames) if frames is not None else [scoring_frame(s) for s in corpus]
    results = score_profiles(frames, scores, profiles)
    categories: dict[str, dict[str, ProfileResult]] = {}
    for category in sorted({s.category for s in corpus}):
        keys = {s.key for s in corpus if s.category == category}
        categories[category] = {p: restrict(r, frames, keys, profiles[p])
                                for p, r in results.items()}
    return NabReport(detector, len(corpus), sum(len(s) for s in corpus), seconds, results,
                     categories)


def benchmark(
    detector: str,
    data_dir: Path,
    labels_path: Path,
    profiles_path: Path,
    params: Mapping[str, Any] | None = None,
    profile_names: Sequence[str] | None = None,
    on_series: Callable[[NabSeries], None] | None = None,
) -> NabReport:
    """Run ``detector`` over every series of the corpus and score it."""
    corpus = load_corpus(data_dir, labels_path)
    profiles = load_profiles(profiles_path)
    if profile_names is not None:
        unknown = sorted(set(profile_names) - set(profiles))
        if unknown:
            raise ValueError(f"unknown profile(s) {', '.join(unknown)} "
                             f"(known: {', '.join(profiles)})")
        profiles = {p: profiles[p] for p in profile_names}
    DETECTORS.get(detector)  # fail before any work on an unknown name
    frames = [scoring_frame(s) for s in corpus]
    scores: list[np.ndarray] = []
    seconds = 0.0
    for series, frame in zip(corpus, frames, strict=True):
        model = make_detector(detector, series, frame.probation, params)
        start = time.perf_counter()
        scores.append(run_series(model, series))
        seconds += time.perf_counter() - start
        if on_series is not None:
            on_series(series)
    return score_report(detector, corpus, scores, profiles, seconds, frames)
