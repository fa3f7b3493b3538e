"""window_outlier: the IsolationForest batch baseline and its compiled scorer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from detectors.batch import WindowOutlier, compile_forest, forest_score
from detectors.config import load_detectors
from tests.detectors.test_streaming import run, steady, window


def test_compiled_forest_scores_exactly_like_sklearn_with_the_sign_flipped():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(1500, 9))
    model = IsolationForest(n_estimators=40, max_samples=200, random_state=5).fit(train)
    probe = np.vstack([rng.normal(size=(40, 9)), rng.normal(size=(10, 9)) * 6])
    trees, norm = compile_forest(model)
    ours = [forest_score(trees, norm, row.tolist()) for row in probe]
    assert ours == pytest.approx(list(-model.score_samples(probe)), abs=1e-12)
    assert np.mean(ours[40:]) > np.mean(ours[:40])  # higher = more anomalous (River's way)


def test_refits_periodically_and_flags_a_failure_storm():
    det = WindowOutlier(refit_every=500, reservoir=1000, quantile=0.95)
    scores = run(det, steady(120))
    assert det.fits_ >= 3 and len(det.samples_) == 1000
    assert max(scores[-300:]) < 0.5
    storm = window(120, "app2", "svc2:80", requests=400, failed=300)
    assert det.score_one(storm) >= 0.5
    assert det.explain(storm, det.score_one(storm)).evidence[0]["features"]["failed"] == 0.75


def test_disabled_by_default_but_configurable():
    assert "window_outlier" not in [c.name for c in load_detectors()]
    (item,) = [c for c in load_detectors({"window_outlier": {"enabled": True}})
               if c.name == "window_outlier"]
    assert item.detector.refit_every == 2000
