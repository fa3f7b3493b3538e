"""The detection engine: feeds edge observations and closed windows to the configured detectors.

Score before learn (an input never vouches for itself); a score at or above the detector's
threshold asks the detector to explain itself as a `Finding`. Allowlisted inputs are learned
but never scored. The engine's whole state (every detector) pickles into one checkpoint blob,
so a restart keeps baselines and known edges.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from detectors.config import ConfiguredDetector, load_detectors
from meshwatch.records import Finding


class DetectionEngine:
    """Runs a set of configured detectors over the two input streams."""

    def __init__(self, configured: list[ConfiguredDetector]) -> None:
        self.configured = configured
        self._by_input: dict[str, list[ConfiguredDetector]] = {"events": [], "windows": []}
        for item in configured:
            if item.detector.consumes in self._by_input:
                self._by_input[item.detector.consumes].append(item)
        self.scored: Counter[str] = Counter()
        self.allowlisted: Counter[str] = Counter()
        self.findings: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None) -> DetectionEngine:
        return cls(load_detectors(config))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.configured]

    def process_events(self, observations: Iterable[Mapping[str, Any]]) -> list[Finding]:
        """Edge observations (notes from the graph builder)."""
        return self._run(self._by_input["events"], observations)

    def process_windows(self, windows: Iterable[Mapping[str, Any]]) -> list[Finding]:
        """Closed per-edge windows."""
        return self._run(self._by_input["windows"], windows)

    def _run(self, detectors: list[ConfiguredDetector],
             inputs: Iterable[Mapping[str, Any]]) -> list[Finding]:
        if not detectors:
            return []
        found: list[Finding] = []
        for x in inputs:
            for item in detectors:
                det = item.detector
                if item.allowlist and item.allowlist.matches(x):
                    self.allowlisted[item.name] += 1
                    det.learn_one(x)
                    continue
                score = det.score_one(x)
                self.scored[item.name] += 1
                if score >= item.threshold:
                    finding = det.explain(x, score)
                    if finding is not None:
                        if item.severity is not None:
                            finding = dataclasses.replace(finding, severity=item.severity)
                        found.append(finding)
                        self.findings[item.name] += 1
                det.learn_one(x)
        return found

    # -- checkpointing ---------------------------------------------------------------------

    def state(self) -> bytes:
        """Every detector's learned state, for the checkpoint."""
        return pickle.dumps({c.name: c.detector for c in self.configured},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> list[str]:
        """Load learned state saved by `state`; returns the detectors restored.

        A detector whose parameters changed since the checkpoint starts fresh (its old state
        may not fit the new parameters); one no longer configured is ignored.
        """
        saved: dict[str, Any] = pickle.loads(blob)  # noqa: S301 - our own checkpoint table
        restored = []
        for item in self.configured:
            old = saved.get(item.name)
            if old is not None and type(old) is type(item.detector) and (
                old._get_params() == item.detector._get_params()
            ):
                item.detector = old
                restored.append(item.name)
        self._by_input = {"events": [], "windows": []}
        for item in self.configured:
            if item.detector.consumes in self._by_input:
                self._by_input[item.detector.consumes].append(item)
        return restored
