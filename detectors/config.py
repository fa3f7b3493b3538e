"""Detector configuration: which detectors run, with which parameters, thresholds, severities
and allowlists. Validated once at start-up; errors name the key (``detectors.NAME.params.KEY``).

YAML shape (all keys optional; unlisted detectors run with their defaults)::

    detectors:
      plaintext_edge:
        enabled: true
        threshold: 0.5
        severity: high            # overrides the detector's own choice
        allowlist:
          - {source_address: 10.128.0.0/16, path: "/healthz*"}
        params:
          sensitive_services: ["vault.*", "payments-db.*"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from detectors.allowlist import Allowlist
from detectors.base import DETECTORS, Detector
from meshwatch.records import SEVERITIES, Severity
from meshwatch.settings import ConfigError

_ENTRY_KEYS = {"enabled", "threshold", "severity", "allowlist", "params"}


@dataclass
class ConfiguredDetector:
    """A detector instance plus how the engine should treat its scores."""

    detector: Detector
    threshold: float
    severity: Severity | None
    allowlist: Allowlist

    @property
    def name(self) -> str:
        return self.detector.name


def default_config() -> dict[str, Any]:
    """The built-in configuration (detectors/defaults.yaml)."""
    text = (resources.files("detectors") / "defaults.yaml").read_text("utf-8")
    return (yaml.safe_load(text) or {}).get("detectors", {})


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_detectors(config: Mapping[str, Any] | None = None) -> list[ConfiguredDetector]:
    """Build the enabled detectors from the defaults merged with ``config``.

    >>> [d.name for d in load_detectors({"first_seen_edge": {"enabled": False}})][:1]
    ['plaintext_edge']
    >>> try:
    ...     load_detectors({"plaintext_edge": {"params": {"nope": 1}}})
    ... except ConfigError as exc:
    ...     print(str(exc)[:63])
    detectors.plaintext_edge.params: unknown parameter(s) nope (kno
    """
    import detectors.catalog  # noqa: F401  - registers the built-in detectors

    merged = _merge(default_config(), config or {})
    configured = []
    for name, entry in merged.items():
        where = f"detectors.{name}"
        if name not in DETECTORS:
            raise ConfigError(f"{where}: unknown detector (known: {', '.join(DETECTORS.names())})")
        entry = entry or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key "
                              f"(known: {', '.join(sorted(_ENTRY_KEYS))})")
        if entry.get("enabled", True) is False:
            continue
        cls = DETECTORS.get(name)
        if cls.consumes not in ("events", "windows"):
            raise ConfigError(f"{where}: a {cls.consumes} model, not a pipeline detector (it "
                              "is used inside other detectors and by `meshwatch bench nab`)")
        params = entry.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}.params: must be a mapping")
        try:
            params = cls.validate_params(params)
            detector = cls(**params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.params: {exc}") from None
        threshold = entry.get("threshold", cls.default_threshold)
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise ConfigError(f"{where}.threshold: must be a number")
        severity = entry.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise ConfigError(f"{where}.severity: must be one of {', '.join(SEVERITIES)}")
        try:
            allowlist = Allowlist.compile(entry.get("allowlist"))
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}") from None
        configured.append(ConfiguredDetector(detector, float(threshold), severity, allowlist))
    return configured
