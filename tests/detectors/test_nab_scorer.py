"""The NAB scorer against NAB's own published outputs (golden files in ../shared/data/nab)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detectors.evaluation import nab
from detectors.evaluation.nab_data import (
    CostMatrix,
    NabDataError,
    NabSeries,
    load_corpus,
    load_profiles,
)

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
STANDARD = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)


@pytest.fixture(scope="module")
def nab_dir(shared_data: Path) -> Path:
    return shared_data / "nab"


@pytest.fixture(scope="module")
def corpus(nab_dir: Path) -> list[NabSeries]:
    return load_corpus(nab_dir / "data", nab_dir / "labels" / "combined_windows.json")


@pytest.fixture(scope="module")
def frames(corpus: list[NabSeries]) -> list[nab.ScoringFrame]:
    return [nab.scoring_frame(s) for s in corpus]


@pytest.fixture(scope="module")
def gaussian_scores(nab_dir: Path, corpus: list[NabSeries]) -> list[np.ndarray]:
    """Windowed Gaussian's per-row anomaly scores as NAB published them."""
    out = []
    for series in corpus:
        category, name = series.key.split("/")
        rows = pd.read_csv(nab_dir / "results" / "windowedGaussian" / category
                           / f"windowedGaussian_{name}")
        assert len(rows) == len(series)
        out.append(rows["anomaly_score"].to_numpy())
    return out


def test_corpus_is_the_28_file_subset(corpus: list[NabSeries]) -> None:
    assert len(corpus) == 28
    assert sum(len(s.windows) for s in corpus) == 36
    assert {s.category for s in corpus} == {
        "artificialNoAnomaly", "artificialWithAnomaly", "realAWSCloudwatch"}


@pytest.mark.parametrize("profile", PROFILES)
def test_reproduces_windowed_gaussian_per_file_rows(
    nab_dir: Path, frames: list[nab.ScoringFrame], gaussian_scores: list[np.ndarray],
    profile: str,
) -> None:
    cost = load_profiles(nab_dir / "config" / "profiles.json")[profile]
    golden = pd.read_csv(nab_dir / "results" / "windowedGaussian"
                         / f"windowedGaussian_{profile}_scores.csv").set_index("File")
    published = json.loads((nab_dir / "config" / "thresholds.json").read_text())
    threshold = published["windowedGaussian"][profile]["threshold"]
    checked = 0
    for frame, scores in zip(frames, gaussian_scores, strict=True):
        row = golden.loc[frame.key]
        assert row["Threshold"] == threshold
        got = nab.score_file(frame, scores, threshold, cost)
        assert got.score == pytest.approx(row["Score"], abs=1e-4), frame.key
        assert (got.tp, got.tn, got.fp, got.fn, got.total) == (
            row["TP"], row["TN"], row["FP"], row["FN"], row["Total_Count"]), frame.key
        checked += 1
    assert checked == 28


@pytest.mark.parametrize("profile", PROFILES)
def test_null_detector_matches_published_null_rows(
    nab_dir: Path, frames: list[nab.ScoringFrame], profile: str
) -> None:
    cost = load_profiles(nab_dir / "config" / "profiles.json")[profile]
    golden = pd.read_csv(nab_dir / "results" / "null" / f"null_{profile}_scores.csv")
    golden = golden.set_index("File")
    total = 0.0
    for frame in frames:
        got = nab.score_file(frame, nab.null_scores(frame), nab.NEVER_FIRES, cost)
        row = golden.loc[frame.key]
        assert got.score == pytest.approx(row["Score"], abs=1e-9)
        assert (got.tp, got.fp, got.fn, got.tn) == (row["TP"], row["FP"], row["FN"], row["TN"])
        total += got.score
    n_windows = sum(len(f.scored_windows) for f in frames)
    assert n_windows == 36
    assert total == pytest.approx(-cost.fn_weight * n_windows)


def test_null_raw_total_is_minus_the_number_of_windows_for_standard(
    corpus: list[NabSeries], frames: list[nab.ScoringFrame]
) -> None:
    result = nab.score_corpus(frames, [nab.null_scores(f) for f in frames], "standard",
                              STANDARD, threshold=0.5)
    assert result.raw == -sum(len(s.windows) for s in corpus) == result.null
    assert result.normalized == 0.0


def test_perfect_detector_scores_100(frames: list[nab.ScoringFrame]) -> None:
    result = nab.score_corpus(frames, [nab.perfect_scores(f) for f in frames], "standard",
                              STANDARD)
    assert result.perfect == 36.0
    assert result.normalized == pytest.approx(100.0)
    assert result.threshold == 1.0


def test_readme_normalization_example() -> None:
    assert round(nab.normalize(-24.0131, -116.0, 116.0), 2) == 39.65


@pytest.mark.parametrize("profile", PROFILES)
def test_normalizing_published_totals_gives_the_published_scoreboard(
    nab_dir: Path, profile: str
) -> None:
    """Full-corpus totals (58 files, 116 windows) from NAB's own score files."""
    cost = load_profiles(nab_dir / "config" / "profiles.json")[profile]
    gaussian = pd.read_csv(nab_dir / "results" / "windowedGaussian"
                           / f"windowedGaussian_{profile}_scores.csv")
    null = pd.read_csv(nab_dir / "results" / "null" / f"null_{profile}_scores.csv")
    raw = float(gaussian.loc[gaussian["Detector"] == "Totals", "Score"].iloc[0])
    null_total = float(null.loc[null["Detector"] == "Totals", "Score"].iloc[0])
    n_windows = -null_total / cost.fn_weight
    assert n_windows == 116
    board = json.loads((nab_dir / "results" / "final_results.json").read_text())
    expected = board["windowedGaussian"][profile]
    assert nab.normalize(raw, null_total, cost.tp_weight * n_windows) == pytest.approx(
        expected, abs=1e-6)


# -- the rules, one by one ----------------------------------------------------------------------

def test_scaled_sigmoid() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)
    assert nab.scaled_sigmoid(3.0) != -1.0
    assert nab.scaled_sigmoid(3.0001) == -1.0


def test_probationary_length() -> None:
    assert nab.probationary_length(4032) == 604
    assert nab.probationary_length(1243) == 186
    assert nab.probationary_length(4999) == 749
    assert nab.probationary_length(5000) == 750
    assert nab.probationary_length(22695) == 750


def test_window_and_false_positive_weights() -> None:
    # 40 rows, one window on rows 10..19 (width 10).
    window, part = nab.row_parts(40, [(10, 19)])
    assert (window[10:20] == 0).all() and (window[:10] == -1).all() and (window[20:] == -1).all()
    assert part[10] == pytest.approx(1.0)  # left edge: full credit
    s = nab.scaled_sigmoid
    assert part[15] == pytest.approx(s(-(19 - 15 + 1) / 10) / s(-1.0))
    assert part[19] == pytest.approx(s(-0.1) / s(-1.0))
    assert list(part[10:20]) == sorted(part[10:20], reverse=True)  # earlier is worth more
    assert (part[:10] == -1.0).all()  # before any window: a full false positive
    assert part[20] == pytest.approx(s(1 / 9))  # just after the window: cheap
    assert part[21] == pytest.approx(s(2 / 9))
    assert part[39] == pytest.approx(s(20 / 9)) and part[39] > -1.0


def _frame(n: int, windows: list[tuple[int, int]], probation: int) -> nab.ScoringFrame:
    window, part = nab.row_parts(n, windows)
    return nab.ScoringFrame("cat/f.csv", n, probation, window, part)


def test_only_the_earliest_detection_of_a_window_counts() -> None:
    frame = _frame(100, [(50, 69)], probation=10)
    one = np.zeros(100)
    one[55] = 1.0
    two = one.copy()
    two[60] = two[65] = 1.0
    a, b = (nab.score_file(frame, s, 0.5, STANDARD) for s in (one, two))
    assert a.score == b.score == pytest.approx(frame.part[55])
    assert (a.tp, b.tp) == (1, 3)
    missed = nab.score_file(frame, np.zeros(100), 0.5, STANDARD)
    assert missed.score == -1.0 and missed.fn == 20


def test_every_false_positive_counts_and_probation_is_not_scored() -> None:
    frame = _frame(100, [(50, 69)], probation=10)
    scores = np.zeros(100)
    scores[5] = 1.0  # probationary: ignored
    scores[20] = scores[30] = 1.0  # before the window: -fpWeight each
    got = nab.score_file(frame, scores, 0.5, STANDARD)
    assert got.fp == 2
    assert got.score == pytest.approx(-1.0 - 2 * 0.11)
    assert got.tn + got.fp + got.tp + got.fn == 90


def test_threshold_sweep_matches_scoring_each_threshold(
    frames: list[nab.ScoringFrame], gaussian_scores: list[np.ndarray]
) -> None:
    sweep = nab.sweep_thresholds(frames, gaussian_scores, STANDARD)
    assert sweep.thresholds[0] == nab.NEVER_FIRES
    assert sweep.totals[0] == -36.0
    assert (np.diff(sweep.thresholds) < 0).all()
    picks = np.random.default_rng(0).choice(len(sweep.thresholds), 25, replace=False)
    best_threshold, best_total = sweep.best()
    for k in [*picks.tolist(), int(np.argmax(sweep.thresholds == best_threshold))]:
        t = float(sweep.thresholds[k])
        total = sum(nab.score_file(f, s, t, STANDARD).score
                    for f, s in zip(frames, gaussian_scores, strict=True))
        assert total == pytest.approx(sweep.totals[k], rel=1e-9, abs=1e-9)
        assert total <= best_total + 1e-9


def test_ties_go_to_the_highest_threshold() -> None:
    frame = _frame(100, [(50, 69)], probation=10)
    scores = np.zeros(100)
    scores[55] = 0.9  # detects the window
    scores[60] = 0.7  # later in the same window: adds nothing, so 0.9 and 0.7 tie
    sweep = nab.sweep_thresholds([frame], [scores], STANDARD)
    totals = dict(zip(sweep.thresholds.tolist(), sweep.totals.tolist(), strict=True))
    assert totals[0.9] == totals[0.7]
    assert nab.optimize_threshold([frame], [scores], STANDARD) == 0.9


# -- loading errors ---------------------------------------------------------------------------

def test_loading_errors_are_explicit(tmp_path: Path, nab_dir: Path) -> None:
    labels = nab_dir / "labels" / "combined_windows.json"
    with pytest.raises(NabDataError, match="data folder not found"):
        load_corpus(tmp_path / "missing", labels)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NabDataError, match="not valid JSON"):
        load_corpus(nab_dir / "data", bad)
    bad.write_text(json.dumps({"a/b.csv": [["2014-01-01 00:00:00"]]}))
    with pytest.raises(NabDataError, match="is not"):
        load_corpus(nab_dir / "data", bad)
    data = tmp_path / "data" / "realAWSCloudwatch"
    data.mkdir(parents=True)
    shutil.copy(nab_dir / "data" / "realAWSCloudwatch" / "grok_asg_anomaly.csv", data)
    bad.write_text(json.dumps({"other/x.csv": []}))
    with pytest.raises(NabDataError, match="no entry"):
        load_corpus(tmp_path / "data", bad)
    bad.write_text(json.dumps({"realAWSCloudwatch/grok_asg_anomaly.csv": [
        ["2030-01-01 00:00:00", "2030-01-02 00:00:00"]]}))
    with pytest.raises(NabDataError, match="contains no row"):
        load_corpus(tmp_path / "data", bad)
