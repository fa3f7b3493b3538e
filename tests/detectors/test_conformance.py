"""Conformance suite run over EVERY registered detector (River/scikit-learn style checks)."""

from __future__ import annotations

import pickle

import pytest

import detectors.catalog  # noqa: F401  - registers the built-in detectors
from detectors.base import DETECTORS, Detector
from tests.detectors.streams import inputs_for

ALL = DETECTORS.names()


def test_registry_has_the_core_detectors():
    assert {"plaintext_edge", "first_seen_edge"} <= set(ALL)


@pytest.fixture(params=ALL)
def detector(request) -> Detector:
    return DETECTORS.get(request.param)()


def _fit(det: Detector, xs, n: int) -> None:
    for x in xs[:n]:
        det.score_one(x)
        det.learn_one(x)


def test_metadata(detector):
    assert detector.name and detector.family
    assert detector.consumes in ("events", "windows", "values")
    assert detector.default_severity in ("info", "low", "medium", "high", "critical")
    assert all(isinstance(m, str) and m[:2] in ("TA", "T1") for m in detector.mitre)


def test_constructor_only_stores_parameters(detector):
    learned = [k for k in vars(detector) if k.endswith("_") and not k.startswith("_")]
    assert learned == [], f"constructor created learned state: {learned}"
    assert set(detector._get_params()) == set(type(detector)._param_names())


def test_clone_is_unfitted_with_equal_params(detector):
    xs = inputs_for(detector.consumes)
    _fit(detector, xs, 500)
    twin = detector.clone()
    assert twin._get_params() == detector._get_params()
    assert twin.learned_size() == 0
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(twin))


def test_scoring_is_pure(detector):
    xs = inputs_for(detector.consumes)
    _fit(detector, xs, 400)
    before = pickle.dumps(detector)
    for x in xs[400:450]:
        detector.score_one(x)
    assert pickle.dumps(detector) == before


def test_neutral_before_warm_up(detector):
    xs = inputs_for(detector.consumes)
    fresh = detector.clone()
    # Benign input to an unfitted detector scores neutral (0.0).
    assert fresh.score_one(xs[0]) == 0.0


def test_pickle_round_trip_scores_identically(detector):
    xs = inputs_for(detector.consumes)
    _fit(detector, xs, 300)
    copy = pickle.loads(pickle.dumps(detector))
    for x in xs[300:400]:
        assert copy.score_one(x) == detector.score_one(x)
        copy.learn_one(x)
        detector.learn_one(x)


def test_missing_and_unknown_features_do_not_break_it(detector):
    xs = inputs_for(detector.consumes)
    _fit(detector, xs, 100)
    x = dict(xs[100])
    x["some_new_field"] = "surprise"
    assert isinstance(detector.score_one(x), float)
    partial = {k: v for i, (k, v) in enumerate(x.items()) if i % 2}
    assert isinstance(detector.score_one(partial), float)
    detector.learn_one(partial)
    assert isinstance(detector.score_one({}), float)
    detector.learn_one({})


def test_scores_are_finite_and_non_negative(detector):
    xs = inputs_for(detector.consumes)
    for x in xs[:600]:
        s = detector.score_one(x)
        assert s >= 0.0 and s == s and s != float("inf")
        detector.learn_one(x)


def test_learned_state_is_bounded(detector):
    cls = type(detector)
    bounds = getattr(cls, "conformance_bounds", None)
    assert bounds is not None, f"{cls.__name__} must declare conformance_bounds"
    params, limit = bounds
    det = cls(**params)
    xs = inputs_for(det.consumes)
    _fit(det, xs, len(xs))
    assert det.learned_size() <= limit
