"""Allowlists: known-benign patterns a detector must not alert on.

An entry is a mapping of input field -> pattern; it matches when every field matches. Patterns:
a CIDR (``10.0.0.0/8``) for address fields, a shell glob (``/healthz*``, ``kube-probe*``) for
strings, a list for alternatives, or a literal (numbers, booleans). Entries come from the detector
YAML and are compiled once when the configuration loads, so a bad CIDR fails at start-up.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_ADDRESS_FIELDS = {"source_address", "src_address", "address"}


@lru_cache(maxsize=65536)
def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.rsplit(":", 1)[0] if value.count(":") == 1 else value)
    except ValueError:
        return None


@dataclass(frozen=True)
class _FieldPattern:
    field: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    globs: tuple[re.Pattern[str], ...]
    literals: tuple[Any, ...]

    def matches(self, value: Any) -> bool:
        if value is None:
            return False
        if self.literals and value in self.literals:
            return True
        if isinstance(value, str):
            if self.networks:
                ip = _ip(value)
                if ip is not None and any(ip in net for net in self.networks):
                    return True
            return any(g.match(value) for g in self.globs)
        return False


def _compile_field(field: str, pattern: Any) -> _FieldPattern:
    options = pattern if isinstance(pattern, list | tuple) else [pattern]
    networks = []
    globs = []
    literals = []
    for option in options:
        if isinstance(option, str):
            if field in _ADDRESS_FIELDS and "/" in option:
                try:
                    networks.append(ipaddress.ip_network(option, strict=False))
                except ValueError as exc:
                    raise ValueError(f"{field}: {exc}") from None
                continue
            globs.append(re.compile(fnmatch.translate(option)))
        elif isinstance(option, bool | int | float):
            literals.append(option)
        else:
            raise ValueError(f"{field}: unsupported pattern {option!r}")
    return _FieldPattern(field, tuple(networks), tuple(globs), tuple(literals))


@dataclass(frozen=True)
class Allowlist:
    """A list of entries; an input is allowed when any entry matches it.

    >>> allow = Allowlist.compile([{"source_address": "10.128.0.0/16", "path": "/healthz*"}])
    >>> allow.matches({"source_address": "10.128.4.2", "path": "/healthz/ready"})
    True
    >>> allow.matches({"source_address": "10.1.4.2", "path": "/healthz/ready"})
    False
    """

    entries: tuple[tuple[_FieldPattern, ...], ...] = ()

    @classmethod
    def compile(cls, raw: Sequence[Mapping[str, Any]] | None) -> Allowlist:
        entries = []
        for i, entry in enumerate(raw or ()):
            if not isinstance(entry, Mapping) or not entry:
                raise ValueError(f"allowlist[{i}]: must be a non-empty mapping of field: pattern")
            try:
                entries.append(tuple(_compile_field(str(k), v) for k, v in entry.items()))
            except ValueError as exc:
                raise ValueError(f"allowlist[{i}].{exc}") from None
        return cls(tuple(entries))

    def matches(self, x: Mapping[str, Any]) -> bool:
        get = x.get
        return any(all(p.matches(get(p.field)) for p in entry) for entry in self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)
