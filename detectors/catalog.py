"""Importing this module registers every built-in detector."""

from detectors import lateral, models, plaintext, traffic  # noqa: F401
