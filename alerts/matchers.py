"""Label matchers (Alertmanager syntax) and the label set of an alert.

Routing and silences both select alerts by their labels, with Alertmanager's four operators:
``=`` (equal), ``!=`` (not equal), ``=~`` (regex, anchored), ``!~`` (negated regex). A label an
alert does not have reads as the empty string, exactly as in Alertmanager, so
``team!="payments"`` matches an alert without a ``team`` label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from meshwatch.records import Alert

Operator = Literal["=", "!=", "=~", "!~"]

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)

#: The label a silence puts on the alerts it suppresses (the silence id): it tells a suppression
#: meshwatch owns (lifted when the silence ends) from one an analyst set by hand (kept).
SILENCED_BY = "silenced_by"


@dataclass(frozen=True)
class Matcher:
    """One ``name op value`` condition on a label.

    >>> Matcher.parse('dst_namespace=~"pay.*"').matches({"dst_namespace": "payments"})
    True
    >>> Matcher.parse("team!=payments").matches({})
    True
    >>> str(Matcher.parse("severity =~ high|critical"))
    'severity=~"high|critical"'
    """

    name: str
    op: Operator
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not LABEL_NAME.match(self.name):
            raise ValueError(f"invalid label name {self.name!r}")
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"invalid operator {self.op!r} (use =, !=, =~ or !~)")
        if self.op in ("=~", "!~") and self._regex is None:
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!="value"``, ``name=~"re"`` or ``name!~re``."""
        if not isinstance(text, str):
            raise ValueError(f"a matcher is a string like 'severity=\"high\"', got {text!r}")
        match = _MATCHER.match(text)
        if not match:
            raise ValueError(
                f"invalid matcher {text!r}: expected <label><op><value> with op one of "
                "=, !=, =~, !~ (e.g. 'detector=plaintext_edge', 'dst_namespace=~\"pay.*\"')"
            )
        name, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"')
        return cls(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def to_dict(self) -> dict[str, object]:
        """Alertmanager's API shape for a silence matcher."""
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Matcher:
        """From Alertmanager's ``{name, value, isRegex, isEqual}`` shape."""
        is_regex = bool(data.get("isRegex", False))
        is_equal = bool(data.get("isEqual", True))
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~",
              (True, False): "!~"}[(is_regex, is_equal)]
        return cls(str(data.get("name", "")), op, str(data.get("value", "")))  # type: ignore[arg-type]


def parse_matchers(items: Iterable[object]) -> tuple[Matcher, ...]:
    """Matchers from strings or Alertmanager-style dicts (the first error names its index)."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Matcher.from_dict(item) if isinstance(item, Mapping)
                       else Matcher.parse(item))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"[{i}]: {exc}") from None
    return tuple(out)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels routing and silences see: the alert's own plus ones derived from it.

    Derived labels win over an alert's own labels of the same name, so a detector cannot claim
    another severity than the alert has. Unknown endpoint parts are left out (read as "").

    >>> from datetime import UTC, datetime
    >>> from meshwatch.records import Endpoint
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Alert("al-1", "fp", "plaintext_edge", "high", "t", "s",
    ...           Endpoint(workload="web", namespace="shop"),
    ...           Endpoint(service="db.pay:5432", namespace="pay"), t, t, 1, 1.0,
    ...           ("TA0006", "T1040"), "u", (), "open", {"team": "sec"})
    >>> labels = alert_labels(a)
    >>> labels["alertname"], labels["src_workload"], labels["dst_namespace"], labels["team"]
    ('plaintext_edge', 'web', 'pay', 'sec')
    """
    labels = {str(k): str(v) for k, v in alert.labels.items() if v is not None}
    derived = {
        "alertname": alert.detector,
        "detector": alert.detector,
        "severity": alert.severity,
        "status": alert.status,
        "fingerprint": alert.fingerprint,
        "mitre": ",".join(alert.mitre),
        "src_workload": alert.source.workload,
        "src_namespace": alert.source.namespace,
        "src_principal": alert.source.principal,
        "src_address": alert.source.address,
        "dst_service": alert.destination.service,
        "dst_workload": alert.destination.workload,
        "dst_namespace": alert.destination.namespace,
        "dst_principal": alert.destination.principal,
    }
    labels.update({k: v for k, v in derived.items() if v})
    return labels
