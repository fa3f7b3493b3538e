"""The NAB scorer, written from NAB's published scoring rules (see the data README).

Scoring a detector on a NAB corpus, per application profile:

* the first ``min(floor(0.15 * n), 750)`` rows of a file are probationary and not scored;
* a detection is a row whose anomaly score is >= the threshold;
* a detection at row ``i`` inside a window (right edge ``R``, width ``W`` rows) is worth
  ``tpWeight * S(-(R - i + 1) / W) / S(-1)``, and only the earliest detection of a window
  counts; a window with no detection costs ``fnWeight``;
* a detection outside every window costs ``fpWeight * S(|i - Rprev| / (Wprev - 1))`` relative
  to the closest preceding window (``-fpWeight`` when none precedes it), and every one counts;
* the threshold is the one value, over the WHOLE corpus given, that maximizes the total; NAB
  sweeps every distinct anomaly score (plus 1.1, "never fires"), highest first, and keeps the
  first best, i.e. the highest threshold among ties;
* normalized = 100 * (raw - null) / (perfect - null), with null (never fires) and perfect (each
  window detected at its first scored row, no false positive) scored on the same corpus.

The per-row window geometry does not depend on the profile, so it is computed once per file
(`ScoringFrame`) and weighted per profile; the threshold sweep is vectorized over the corpus.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detectors.evaluation.nab_data import CostMatrix, NabSeries

PROBATION_FRACTION = 0.15
#: The sweep's first threshold: above every score in [0, 1], so nothing is detected.
NEVER_FIRES = 1.1
#: Totals closer than this are ties (float noise); ties go to the higher threshold, as in NAB.
TIE_TOLERANCE = 1e-9


def scaled_sigmoid(y: float) -> float:
    """NAB's S(y) = 2 / (1 + exp(5y)) - 1, and -1 beyond 3 window widths past a window.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.98661, 0.0, -1.0)
    """
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


_S_MINUS_ONE = scaled_sigmoid(-1.0)


def probationary_length(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the start of a file that are not scored: ``min(floor(f * n), f * 5000)``.

    >>> probationary_length(4032), probationary_length(22695), probationary_length(10)
    (604, 750, 1)
    """
    return math.ceil(min(math.floor(fraction * n_rows), fraction * 5000))


@dataclass(frozen=True)
class ScoringFrame:
    """Profile-independent per-row scoring geometry of one file.

    ``window`` is the window index of each row (-1 outside windows); ``part`` is the unweighted
    worth of a detection there: ``S(pos)/S(-1)`` inside a window, ``S(pos)`` (<= 0) outside.
    """

    key: str
    n_rows: int
    probation: int
    window: np.ndarray
    part: np.ndarray

    @property
    def scored(self) -> slice:
        return slice(self.probation, self.n_rows)

    @property
    def scored_windows(self) -> np.ndarray:
        """Indices of windows with at least one scored row (the only ones NAB counts)."""
        w = self.window[self.scored]
        return np.unique(w[w >= 0])


def row_parts(n_rows: int, windows: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Window index and unweighted detection worth of every row (see `ScoringFrame`).

    >>> w, p = row_parts(6, [(1, 2)])
    >>> w.tolist()
    [-1, 0, 0, -1, -1, -1]
    >>> [round(v, 3) for v in p.tolist()]
    [-1.0, 1.0, 0.86, -0.987, -1.0, -1.0]
    """
    window = np.full(n_rows, -1, dtype=np.int64)
    part = np.full(n_rows, -1.0)  # before the first window: a full false positive
    bounds = sorted(windows)
    for k, (left, right) in enumerate(bounds):
        width = right - left + 1
        rows = np.arange(left, right + 1)
        window[left : right + 1] = k
        part[left : right + 1] = [scaled_sigmoid(-(right - i + 1) / width) / _S_MINUS_ONE
                                  for i in rows]
        stop = bounds[k + 1][0] if k + 1 < len(bounds) else n_rows
        for i in range(right + 1, stop):
            distance = (i - right) / (width - 1) if width > 1 else math.inf
            part[i] = scaled_sigmoid(distance)
    return window, part


def scoring_frame(series: NabSeries, fraction: float = PROBATION_FRACTION) -> ScoringFrame:
    window, part = row_parts(len(series), series.windows)
    return ScoringFrame(series.key, len(series), probationary_length(len(series), fraction),
                        window, part)


@dataclass(frozen=True)
class ScoreRow:
    """One row of NAB's scores file: a file (or the corpus) scored at a threshold."""

    key: str
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int
    windows: int = 0  # scored windows in the file(s)
    detected: int = 0  # of which at least one row was a detection


def score_file(
    frame: ScoringFrame, scores: np.ndarray, threshold: float, cost: CostMatrix
) -> ScoreRow:
    """Raw NAB score and row counts of one file at ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (frame.n_rows,):
        raise ValueError(f"{frame.key}: {scores.shape[0]} scores for {frame.n_rows} rows")
    sl = frame.scored
    window, part, detected = frame.window[sl], frame.part[sl], scores[sl] >= threshold
    inside = window >= 0
    fp_rows = detected & ~inside
    total = float(part[fp_rows].sum()) * cost.fp_weight
    windows = np.unique(window[inside])
    found = 0
    for k in windows:
        hits = part[(window == k) & detected]
        if hits.size:
            found += 1
            total += cost.tp_weight * float(hits.max())  # the earliest detection is worth most
        else:
            total -= cost.fn_weight
    tp = int((detected & inside).sum())
    fp = int(fp_rows.sum())
    return ScoreRow(frame.key, threshold, total, tp, int((~inside).sum()) - fp, fp,
                    int(inside.sum()) - tp, frame.n_rows, len(windows), found)


@dataclass(frozen=True)
class ThresholdSweep:
    """Corpus totals for every candidate threshold, highest threshold first."""

    thresholds: np.ndarray
    totals: np.ndarray

    def best(self) -> tuple[float, float]:
        """(threshold, total) of the best total; the highest threshold among ties (NAB's rule)."""
        top = float(self.totals.max())
        k = int(np.argmax(self.totals >= top - TIE_TOLERANCE))
        return float(self.thresholds[k]), float(self.totals[k])


def sweep_thresholds(
    frames: Sequence[ScoringFrame], scores: Sequence[np.ndarray], cost: CostMatrix
) -> ThresholdSweep:
    """Corpus total at every distinct anomaly score used as the threshold.

    Rows are visited from the highest anomaly score down; each row changes the total by its
    false-positive worth, or, inside a window, by how much it improves that window's best
    (earliest) detection. The total after the last row of each distinct score is the corpus
    score at that threshold.
    """
    all_scores, all_window, all_part = [], [], []
    n_windows = 0
    for frame, s in zip(frames, scores, strict=True):
        sl = frame.scored
        w = frame.window[sl]
        all_scores.append(np.asarray(s, dtype=np.float64)[sl])
        all_window.append(np.where(w >= 0, w + n_windows, -1))
        all_part.append(frame.part[sl])
        n_windows += int(frame.window.max(initial=-1)) + 1
    s = np.concatenate(all_scores) if all_scores else np.empty(0)
    window = np.concatenate(all_window) if all_window else np.empty(0, dtype=np.int64)
    part = np.concatenate(all_part) if all_part else np.empty(0)

    order = np.argsort(-s, kind="stable")
    s, window, part = s[order], window[order], part[order]
    delta = part * cost.fp_weight
    inside = window >= 0
    scored_windows = np.unique(window[inside])
    base = -cost.fn_weight * len(scored_windows)
    # Per window, in visiting order: running best worth (starting at -fnWeight) and its gains.
    for k in scored_windows:
        idx = np.flatnonzero(window == k)
        best = np.maximum.accumulate(np.maximum(part[idx] * cost.tp_weight, -cost.fn_weight))
        previous = np.concatenate(([-cost.fn_weight], best[:-1]))
        delta[idx] = best - previous
    running = base + np.cumsum(delta)
    last_of_value = np.flatnonzero(np.diff(s, append=-np.inf) != 0) if s.size else np.empty(0, int)
    thresholds = np.concatenate(([NEVER_FIRES], s[last_of_value]))
    totals = np.concatenate(([base], running[last_of_value]))
    return ThresholdSweep(thresholds, totals)


def optimize_threshold(
    frames: Sequence[ScoringFrame], scores: Sequence[np.ndarray], cost: CostMatrix
) -> float:
    """The threshold that maximizes the corpus total (highest among ties)."""
    return sweep_thresholds(frames, scores, cost).best()[0]


def normalize(raw: float, null: float, perfect: float) -> float:
    """NAB's normalized score: Null detector = 0, Perfect detector = 100.

    >>> round(normalize(-24.0131, -116.0, 116.0), 2)
    39.65
    """
    if perfect == null:
        raise ValueError("perfect and null scores are equal (a corpus without scored windows)")
    return 100.0 * (raw - null) / (perfect - null)


def null_scores(frame: ScoringFrame) -> np.ndarray:
    """A detector that never fires."""
    return np.zeros(frame.n_rows)


def perfect_scores(frame: ScoringFrame) -> np.ndarray:
    """A detector that fires exactly once per window, at its first scored row."""
    out = np.zeros(frame.n_rows)
    window = frame.window
    for k in frame.scored_windows:
        out[max(int(np.flatnonzero(window == k)[0]), frame.probation)] = 1.0
    return out


@dataclass(frozen=True)
class ProfileResult:
    """A detector's result on a corpus for one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    files: tuple[ScoreRow, ...]

    @property
    def normalized(self) -> float | None:
        """None when the corpus has no scored window (normalization undefined)."""
        return None if self.perfect == self.null else normalize(self.raw, self.null, self.perfect)


def _corpus_total(
    frames: Sequence[ScoringFrame], scores: Sequence[np.ndarray], threshold: float,
    cost: CostMatrix,
) -> float:
    return sum(score_file(f, s, threshold, cost).score for f, s in zip(frames, scores, strict=True))


def score_corpus(
    frames: Sequence[ScoringFrame],
    scores: Sequence[np.ndarray],
    profile: str,
    cost: CostMatrix,
    threshold: float | None = None,
) -> ProfileResult:
    """Score a corpus for one profile at ``threshold`` (optimized over the corpus when None)."""
    if threshold is None:
        threshold = optimize_threshold(frames, scores, cost)
    rows = tuple(score_file(f, s, threshold, cost) for f, s in zip(frames, scores, strict=True))
    null = _corpus_total(frames, [null_scores(f) for f in frames], NEVER_FIRES, cost)
    perfect = _corpus_total(frames, [perfect_scores(f) for f in frames], 1.0, cost)
    return ProfileResult(profile, threshold, sum(r.score for r in rows), null, perfect, rows)


def restrict(
    result: ProfileResult, frames: Sequence[ScoringFrame], keys: set[str], cost: CostMatrix
) -> ProfileResult:
    """``result`` over the files in ``keys`` only (same threshold), with their null/perfect."""
    chosen = [f for f in frames if f.key in keys]
    rows = tuple(r for r in result.files if r.key in keys)
    null = _corpus_total(chosen, [null_scores(f) for f in chosen], NEVER_FIRES, cost)
    perfect = _corpus_total(chosen, [perfect_scores(f) for f in chosen], 1.0, cost)
    return ProfileResult(result.profile, result.threshold, sum(r.score for r in rows), null,
                         perfect, rows)


def score_profiles(
    frames: Sequence[ScoringFrame],
    scores: Sequence[np.ndarray],
    profiles: Mapping[str, CostMatrix],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, ProfileResult]:
    """`score_corpus` for each profile (threshold optimized per profile unless given)."""
    thresholds = thresholds or {}
    return {
        name: score_corpus(frames, scores, name, cost, thresholds.get(name))
        for name, cost in profiles.items()
    }
