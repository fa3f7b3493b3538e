"""The detector contract (River's one-event protocol) and the detector registry.

A detector is an online estimator:

* ``learn_one(x)`` updates learned state (attributes ending in ``_``);
* ``score_one(x) -> float`` is pure, higher = more anomalous, and returns a neutral ``0.0``
  before the detector has warmed up;
* ``clone()`` returns a fresh, unfitted copy with the same parameters.

Constructors only store parameters (scikit-learn's rule); `validate_params` checks them when the
configuration loads, so a bad value fails at start-up naming the key. ``x`` is a mapping: an edge
observation (``consumes = "events"``), a closed edge window (``"windows"``) or a single value
(``"values"``, for univariate models). Detectors never import ingest/alerts: they see mappings and
return numbers and `Finding`s; the engine in `detectors.engine` does the wiring.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from meshwatch.records import Finding, Severity
from meshwatch.registry import Registry

Consumes = Literal["events", "windows", "values"]

DETECTORS: Registry[type[Detector]] = Registry("detector")


class Detector:
    """Base class: parameter handling, cloning and metadata shared by all detectors."""

    #: Registry key and the ``detector`` field of alerts.
    name: ClassVar[str] = ""
    #: "non_mtls", "lateral_movement", "traffic" ...: groups detectors in docs and reports.
    family: ClassVar[str] = ""
    #: What ``x`` is: edge observations, closed edge windows, or plain values.
    consumes: ClassVar[Consumes] = "events"
    #: MITRE ATT&CK tactic/technique ids the detector maps to.
    mitre: ClassVar[tuple[str, ...]] = ()
    default_severity: ClassVar[Severity] = "medium"
    #: Score at or above which `explain` is asked for a finding.
    default_threshold: ClassVar[float] = 0.5
    #: (small-bound params, limit): with these params, `learned_size()` must stay <= limit on
    #: any stream. The conformance suite checks it for every registered detector.
    conformance_bounds: ClassVar[tuple[dict[str, Any], int]]

    # -- River-style protocol --------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def score_one(self, x: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        """Turn an input that scored at/above the threshold into a finding (or None to skip)."""
        return None

    # -- parameters ------------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def _get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from same-named attributes (River/sklearn rule)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._param_names()}

    def clone(self, **new_params: Any) -> Self:
        """A fresh, unfitted detector with the same (optionally overridden) parameters."""
        params = self._get_params()
        params.update(new_params)
        return type(self)(**params)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a parameter mapping from configuration; raise ValueError naming the key.

        The default checks names against the constructor; detectors override to check values
        (call ``super().validate_params`` first).
        """
        known = cls._param_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(known) or 'none'})"
            )
        return dict(params)

    def learned_size(self) -> int:
        """Number of items in learned keyed state; the conformance suite checks it is bounded."""
        return 0

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({params})"
