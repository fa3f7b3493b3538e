"""The univariate streaming model behind `value_anomaly` (and every traffic metric)."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from detectors.base import DETECTORS
from detectors.models import ContextNovelty


def _run(model: ContextNovelty, values: list[float]) -> list[float]:
    out = []
    for v in values:
        x = {"value": v}
        out.append(model.score_one(x))
        model.learn_one(x)
    return out


def _noisy_sine(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [50 + 10 * math.sin(2 * math.pi * i / 96) + rng.gauss(0, 1.0) for i in range(n)]


def test_registered_as_value_anomaly() -> None:
    assert DETECTORS.get("value_anomaly") is ContextNovelty
    assert ContextNovelty.consumes == "values"


def test_clone_is_unfitted_with_equal_params() -> None:
    model = ContextNovelty(warmup=40, resolutions=(8, 16), value_min=0.0, value_max=100.0)
    _run(model, _noisy_sine(300))
    twin = model.clone()
    assert twin._get_params() == model._get_params()
    assert twin.learned_size() == 0 < model.learned_size()
    assert twin.score_one({"value": 50.0}) == 0.0


def test_score_one_does_not_change_state() -> None:
    model = ContextNovelty(warmup=40)
    _run(model, _noisy_sine(300))
    before = pickle.dumps(model)
    for v in (-1e9, 0.0, 55.0, 1e9, math.nan):
        model.score_one({"value": v})
    assert pickle.dumps(model) == before


def test_neutral_before_warm_up_and_on_missing_values() -> None:
    model = ContextNovelty(warmup=100)
    values = _noisy_sine(100)
    values[50] = 1e6  # even a wild value scores neutral before warm-up
    assert set(_run(model, values)) == {0.0}
    assert model.score_one({}) == 0.0
    assert model.score_one({"value": None}) == 0.0


def test_pickle_round_trip_scores_identically() -> None:
    model = ContextNovelty(warmup=60)
    stream = _noisy_sine(600)
    _run(model, stream[:300])
    restored = pickle.loads(pickle.dumps(model))
    assert _run(restored, stream[300:]) == _run(model, stream[300:])


def test_scores_lie_in_unit_interval_and_state_is_bounded() -> None:
    params, limit = ContextNovelty.conformance_bounds
    model = ContextNovelty(**params)
    rng = random.Random(5)
    walk, x = [], 0.0
    for _ in range(5000):  # a random walk leaves any learned range far behind
        x += rng.gauss(0, 5)
        walk.append(x)
    scores = _run(model, walk)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert model.learned_size() <= limit


@pytest.mark.parametrize("known_range", [True, False])
def test_quiet_on_flat_and_sine(known_range: bool) -> None:
    for values in ([7.0] * 2000, _noisy_sine(2000)):
        rng = (min(values), max(values)) if known_range else (None, None)
        model = ContextNovelty(warmup=300, value_min=rng[0], value_max=rng[1])
        scores = _run(model, values)
        assert max(scores) < model.alert_level, max(scores)


@pytest.mark.parametrize("known_range", [True, False])
def test_flags_an_injected_spike(known_range: bool) -> None:
    values = _noisy_sine(2000)
    values[1500] += 60
    rng = (min(values), max(values)) if known_range else (None, None)
    model = ContextNovelty(warmup=300, value_min=rng[0], value_max=rng[1])
    scores = _run(model, values)
    assert scores[1500] >= model.alert_level
    assert max(scores[300:1500]) < model.alert_level


@pytest.mark.parametrize("known_range", [True, False])
def test_flags_a_level_shift_once(known_range: bool) -> None:
    values = _noisy_sine(2000)
    values[1500:] = [v + 35 for v in values[1500:]]
    rng = (min(values), max(values)) if known_range else (None, None)
    model = ContextNovelty(warmup=300, value_min=rng[0], value_max=rng[1], refractory=200)
    scores = _run(model, values)
    fired = [i for i, s in enumerate(scores) if s >= model.alert_level]
    assert fired and 1500 <= fired[0] <= 1510
    assert max(scores[300:1500]) < model.alert_level
    assert all(s == 0.0 for s in scores[fired[0] + 1 : fired[0] + 201])  # refractory


def test_sequence_break_scores_the_value_alone() -> None:
    model = ContextNovelty(warmup=50, value_min=0.0, value_max=10.0)
    _run(model, [float(i % 10) for i in range(500)])  # 0, 1, ..., 9, 0, 1, ...
    # 3 never follows 9: the transition is new, the value is not.
    assert model.score_one({"value": 3.0}) > 0.4
    assert model.score_one({"value": 3.0, "sequence_break": True}) < 0.1


def test_expected_range_covers_the_usual_values() -> None:
    model = ContextNovelty(warmup=100)
    assert model.expected_range() is None
    _run(model, _noisy_sine(1000))
    lo, hi = model.expected_range()
    assert 35 <= lo <= 42 and 58 <= hi <= 65


def test_validate_params_rejects_bad_values() -> None:
    ContextNovelty.validate_params({"warmup": 10, "resolutions": [4, 8]})
    for bad in ({"warmup": 0}, {"resolutions": []}, {"order": 7}, {"alert_level": 0},
                {"value_min": 1.0}, {"value_min": 2.0, "value_max": 1.0}, {"refractory": -1},
                {"nope": 1}):
        with pytest.raises(ValueError):
            ContextNovelty.validate_params(bad)
