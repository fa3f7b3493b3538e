"""Univariate streaming anomaly models (``consumes = "values"``): one number in, a score in
[0, 1] out. Importing this package registers them in `detectors.base.DETECTORS`; the per-edge
traffic detector keeps one model per (edge, metric)."""

from detectors.models.context_novelty import ContextNovelty

__all__ = ["ContextNovelty"]
