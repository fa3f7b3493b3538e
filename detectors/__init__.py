"""Detectors: the River-style contract, the built-in detectors, state persistence and the
evaluation tools (labelled-traffic evaluation, NAB scoring)."""
