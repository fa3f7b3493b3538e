"""Multi-resolution context novelty: a streaming univariate anomaly model.

The idea is the one behind the strongest published NAB detectors that learn online without
forecasting (the Contextual Anomaly Detector, CAD OSE, and ARTime): quantize the value against
its known range and call "anomalous" what the stream has never (or rarely) shown before. We
apply it at several nested resolutions and to short transitions:

* the value range ``[lo, hi]`` is cut into ``B`` equal bins for each ``B`` in ``resolutions``
  (powers of two nest, so a value new at a coarse resolution is new at every finer one);
* a *context* is the current bin (order 0) or the last ``order + 1`` bins (a transition);
* the rarity of a context seen ``c`` times before is ``1 / (1 + c)`` (1.0 when never seen:
  the rule-of-succession chance that the stream is showing something new);
* the score is the mean rarity over all (resolution, order) contexts, in [0, 1].

A sustained anomaly is new only at its start, so the model reports each episode once; on top of
that, after its score reaches ``alert_level`` it stays quiet for ``refractory`` rows (alert
de-duplication, as CAD OSE and KNN-CAD do on NAB). The range is either given (NAB passes each
series' min/max to detectors) or taken from the warm-up rows and widened (`_LIVE_PAD`); values
beyond it fall into extra bins up to one range-width outside (so state stays bounded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from detectors.base import DETECTORS, Consumes, Detector

#: Bins kept beyond the learned range on each side, in range widths: values further out share
#: the outermost bin. Bounds the context tables at (3B)^(order+1) entries per resolution.
_OUTSIDE_SPANS = 1
#: Without a given range, the warm-up range is widened by this share of its width on each side:
#: a warm-up sample rarely shows the full normal range, and with 1.0 the warm-up extremes are
#: not bin edges at any power-of-two resolution, so noise slightly beyond them is new only at
#: the finer resolutions (a partial score), not at all of them at once.
_LIVE_PAD = 1.0


def _value(x: Mapping[str, Any]) -> float | None:
    v = x.get("value")
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@DETECTORS.register("value_anomaly")
class ContextNovelty(Detector):
    """Scores how new the current value and its short history are, in [0, 1].

    Parameters are stored as given (validated by `validate_params`):
    ``warmup`` rows are learned before scoring (NAB: the probationary length);
    ``value_min``/``value_max`` fix the range (else the warm-up rows set it);
    ``refractory`` rows of silence follow a score >= ``alert_level`` (None: ``warmup // 5``).
    An input with ``"sequence_break": True`` does not follow the previous one (a gap in the
    stream): transitions across it are neither scored nor learned, only the value itself.

    >>> model = ContextNovelty(warmup=50)
    >>> for i in range(200):
    ...     x = {"value": float(i % 10)}
    ...     _ = model.score_one(x)
    ...     model.learn_one(x)
    >>> model.score_one({"value": 0.0}) < 0.1  # seen many times, and always after a 9
    True
    >>> round(model.score_one({"value": 40.0}), 2)  # far above anything seen
    1.0
    """

    name: ClassVar[str] = "value_anomaly"
    family: ClassVar[str] = "univariate"
    consumes: ClassVar[Consumes] = "values"
    default_threshold: ClassVar[float] = 0.5
    # One resolution of 4 bins spans bins -4..8 (13 values): 13 + 13**2 contexts at order 1.
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]] = (
        {"warmup": 20, "resolutions": (4,), "order": 1}, 13 + 13**2)

    def __init__(
        self,
        warmup: int = 150,
        resolutions: tuple[int, ...] = (4, 8, 16),
        order: int = 1,
        value_min: float | None = None,
        value_max: float | None = None,
        alert_level: float = 0.5,
        refractory: int | None = None,
    ) -> None:
        self.warmup = warmup
        self.resolutions = resolutions
        self.order = order
        self.value_min = value_min
        self.value_max = value_max
        self.alert_level = alert_level
        self.refractory = refractory

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        params = super().validate_params(params)
        if int(params.get("warmup", 150)) < 1:
            raise ValueError("warmup must be >= 1")
        resolutions = tuple(params.get("resolutions", (4, 8, 16)))
        if not resolutions or any(int(b) < 1 for b in resolutions):
            raise ValueError("resolutions must be a non-empty list of bin counts >= 1")
        if not 0 <= int(params.get("order", 1)) <= 3:
            raise ValueError("order must be between 0 and 3")
        if not 0.0 < float(params.get("alert_level", 0.5)) <= 1.0:
            raise ValueError("alert_level must be in (0, 1]")
        if params.get("refractory") is not None and int(params["refractory"]) < 0:
            raise ValueError("refractory must be >= 0")
        lo, hi = params.get("value_min"), params.get("value_max")
        if (lo is None) != (hi is None):
            raise ValueError("value_min and value_max must be given together")
        if lo is not None and float(hi) < float(lo):
            raise ValueError("value_max must be >= value_min")
        return params

    # -- state -----------------------------------------------------------------------------

    def _ensure_state(self) -> None:
        if hasattr(self, "n_"):
            return
        self.n_ = 0  # rows learned
        self.counts_: dict[tuple[int, ...], int] = {}
        self.recent_: tuple[tuple[int, ...], ...] = ()  # bins of the last `order` rows
        self.quiet_ = 0  # refractory rows left
        self.pending_: list[float] = []  # warm-up values while the range is not known
        if self.value_min is not None and self.value_max is not None:
            self.range_: tuple[float, float] | None = (float(self.value_min),
                                                       float(self.value_max))
        else:
            self.range_ = None

    def learned_size(self) -> int:
        return len(getattr(self, "counts_", {})) + len(getattr(self, "pending_", []))

    def _refractory(self) -> int:
        return self.warmup // 5 if self.refractory is None else self.refractory

    # -- the model -------------------------------------------------------------------------

    def _bins(self, value: float) -> tuple[int, ...]:
        assert self.range_ is not None
        lo, hi = self.range_
        span = hi - lo
        if span <= 0.0:  # a constant range: any change is as new as it gets
            span = max(abs(hi), 1.0) * 1e-9
        z = (value - lo) / span
        out = []
        for b in self.resolutions:
            k = math.floor(z * b)
            if k == b and z <= 1.0:  # the maximum itself belongs to the top bin
                k = b - 1
            out.append(min(max(k, -_OUTSIDE_SPANS * b), (1 + _OUTSIDE_SPANS) * b))
        return tuple(out)

    def _contexts(self, bins: tuple[int, ...], fresh: bool = False) -> list[tuple[int, ...]]:
        keys: list[tuple[int, ...]] = []
        recent = () if fresh else self.recent_
        for r, b in enumerate(bins):
            keys.append((r, 0, b))
            for k in range(1, min(self.order, len(recent)) + 1):
                keys.append((r, k, *(past[r] for past in recent[-k:]), b))
        return keys

    def _rarity(self, bins: tuple[int, ...], fresh: bool = False) -> float:
        counts = self.counts_
        keys = self._contexts(bins, fresh)
        return sum(1.0 / (1 + counts.get(key, 0)) for key in keys) / len(keys)

    def score_one(self, x: Mapping[str, Any]) -> float:
        self._ensure_state()
        value = _value(x)
        if value is None or self.n_ < self.warmup or self.range_ is None or self.quiet_ > 0:
            return 0.0
        return self._rarity(self._bins(value), bool(x.get("sequence_break")))

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self._ensure_state()
        value = _value(x)
        if value is None:
            return
        self.n_ += 1
        if self.range_ is None:
            self.pending_.append(value)
            if self.n_ >= self.warmup:  # range known: replay the warm-up into the tables
                lo, hi = min(self.pending_), max(self.pending_)
                pad = (hi - lo) * _LIVE_PAD
                self.range_ = (lo - pad, hi + pad)
                pending, self.pending_ = self.pending_, []
                for v in pending:
                    self._count(self._bins(v))
            return
        bins = self._bins(value)
        fresh = bool(x.get("sequence_break"))
        if self.quiet_ > 0:
            self.quiet_ -= 1
        elif self.n_ > self.warmup and self._rarity(bins, fresh) >= self.alert_level:
            self.quiet_ = self._refractory()
        self._count(bins, fresh)

    def _count(self, bins: tuple[int, ...], fresh: bool = False) -> None:
        counts = self.counts_
        for key in self._contexts(bins, fresh):
            counts[key] = counts.get(key, 0) + 1
        if self.order:
            self.recent_ = (*(() if fresh else self.recent_), bins)[-self.order :]

    def expected_range(self, min_share: float = 0.01) -> tuple[float, float] | None:
        """The span of the finest-resolution bins holding at least ``min_share`` of the values
        learned so far: what an analyst should read as "normal" (None before warm-up)."""
        if not hasattr(self, "n_") or self.range_ is None:
            return None
        r = len(self.resolutions) - 1
        b = self.resolutions[r]
        seen = {key[2]: c for key, c in self.counts_.items() if key[0] == r and key[1] == 0}
        total = sum(seen.values())
        common = [k for k, c in seen.items() if c >= min_share * total] or list(seen)
        if not common:
            return None
        lo, hi = self.range_
        width = (hi - lo) / b
        return lo + min(common) * width, lo + (max(common) + 1) * width
