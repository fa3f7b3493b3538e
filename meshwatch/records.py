"""The records that flow between stages.

These are the contracts of DESIGN.md: every stage reads and writes these types, so a stage can
be replaced without the others noticing.

`EdgeEvent` sits on the hot path (one per access-log line or span pair, 100k/s per worker), so
it is a frozen ``msgspec.Struct`` rather than a frozen dataclass: it is just as immutable and
typed, builds 4x faster (1.5 us vs 6.6 us measured for 25 fields) and encodes to JSON natively.
`Origin` and `RawRecord` (one per
consumed record) are frozen Structs for the same reason; the rest is plain frozen dataclasses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Reporter = Literal["source", "destination", "unknown"]
OriginFormat = Literal["envoy_text", "envoy_json", "otlp_log", "ztunnel", "otlp_span"]
Severity = Literal["info", "low", "medium", "high", "critical"]
AlertStatus = Literal["open", "acknowledged", "resolved", "suppressed"]

SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
ALERT_STATUSES: tuple[AlertStatus, ...] = ("open", "acknowledged", "resolved", "suppressed")


class EdgeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One observed call between two workloads, from one reporter's point of view.

    ``mtls`` is only ever ``True``/``False`` on destination-side evidence; a source-side record
    cannot know whether the caller presented a client certificate, so it carries ``None``.

    The event also reads like a mapping (``event["mtls"]``, ``event.get("path")``) so that
    detectors, which speak River's dict protocol, can take it without a copy.

    >>> e = EdgeEvent(ts=datetime(2026, 1, 1, tzinfo=UTC), origin="envoy_json",
    ...               reporter="destination", mtls=False, destination_service="db.prod")
    >>> e["mtls"], e.get("path"), e.get("nope", 1)
    (False, None, 1)
    >>> sorted(e.to_dict()) == sorted(EDGE_EVENT_FIELDS)
    True
    """

    ts: datetime
    origin: OriginFormat
    reporter: Reporter = "unknown"
    source_workload: str | None = None
    source_namespace: str | None = None
    source_principal: str | None = None
    source_address: str | None = None
    destination_service: str | None = None
    destination_workload: str | None = None
    destination_namespace: str | None = None
    destination_principal: str | None = None
    destination_port: int | None = None
    protocol: str | None = None
    method: str | None = None
    path: str | None = None
    response_code: int | None = None
    response_flags: str | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    duration_ms: float | None = None
    mtls: bool | None = None
    tls_version: str | None = None
    peer_cert_not_after: datetime | None = None
    request_id: str | None = None
    trace_id: str | None = None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready contract form: RFC 3339 UTC timestamps, null where unknown."""
        return msgspec.to_builtins(self)

    def to_json(self) -> bytes:
        return _EVENT_ENCODER.encode(self)


EDGE_EVENT_FIELDS: tuple[str, ...] = EdgeEvent.__struct_fields__
_EVENT_ENCODER = msgspec.json.Encoder()


class Origin(msgspec.Struct, frozen=True):
    """Where a raw record came from: a Kafka topic/partition/offset or a file and line.

    A frozen msgspec Struct like `EdgeEvent`: one is built per consumed record, and it builds
    8x faster than a frozen dataclass (0.16 us vs 1.3 us with `RawRecord`, measured).
    """

    source: str
    offset: int
    partition: int | None = None

    def __str__(self) -> str:
        if self.partition is None:
            return f"{self.source}:{self.offset}"
        return f"{self.source}[{self.partition}]@{self.offset}"


class RawRecord(msgspec.Struct, frozen=True):
    """Undecoded bytes plus where they came from and the format they are declared to be.

    ``key`` is the record's stable identity when it is not its origin: an EdgeEvent republished
    between scale-out stages keeps the identity of the raw record it came from, so event ids
    (and replay de-duplication) do not depend on which hop delivered it.
    """

    payload: bytes
    origin: Origin
    format: str
    key: str | None = None


DEAD_LETTER_PAYLOAD_CAP = 64 * 1024


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A record that could not be turned into an event: kept, with the reason, never dropped."""

    origin: Origin
    format: str
    reason: str
    payload: bytes = b""

    def __post_init__(self) -> None:
        if len(self.payload) > DEAD_LETTER_PAYLOAD_CAP:
            object.__setattr__(self, "payload", self.payload[:DEAD_LETTER_PAYLOAD_CAP])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of an edge as alerts show it; unknown parts are None."""

    workload: str | None = None
    namespace: str | None = None
    principal: str | None = None
    service: str | None = None
    address: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "workload": self.workload,
            "namespace": self.namespace,
            "principal": self.principal,
            "service": self.service,
            "address": self.address,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Endpoint:
        data = data or {}
        return cls(**{k: data.get(k) for k in ("workload", "namespace", "principal", "service",
                                              "address")})


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector concluded about one entity at one time: an alert candidate.

    ``entity`` is the detector's notion of what the finding is about (an edge key, a source
    identity); together with the detector name it makes the alert fingerprint.
    """

    detector: str
    entity: str
    ts: datetime
    score: float
    severity: Severity
    title: str
    summary: str
    source: Endpoint
    destination: Endpoint
    mitre: tuple[str, ...] = ()
    evidence: tuple[dict[str, Any], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.detector, self.entity)


def fingerprint(detector: str, entity: str) -> str:
    """Stable alert identity: the same detector about the same entity is the same alert."""
    return hashlib.sha256(f"{detector}\x1f{entity}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Alert:
    """The alert contract (DESIGN.md): one JSON shape for API, webhooks and files."""

    id: str
    fingerprint: str
    detector: str
    severity: Severity
    title: str
    summary: str
    source: Endpoint
    destination: Endpoint
    first_seen: datetime
    last_seen: datetime
    count: int
    score: float
    mitre: tuple[str, ...]
    runbook_url: str
    evidence: tuple[dict[str, Any], ...]
    status: AlertStatus
    labels: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "detector": self.detector,
            "severity": self.severity,
            "title": self.title,
            "summary": self.summary,
            "source": self.source.to_dict(),
            "destination": self.destination.to_dict(),
            "first_seen": format_ts(self.first_seen),
            "last_seen": format_ts(self.last_seen),
            "count": self.count,
            "score": self.score,
            "mitre": list(self.mitre),
            "runbook_url": self.runbook_url,
            "evidence": [dict(e) for e in self.evidence],
            "status": self.status,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(
            id=data["id"],
            fingerprint=data["fingerprint"],
            detector=data["detector"],
            severity=data["severity"],
            title=data["title"],
            summary=data["summary"],
            source=Endpoint.from_dict(data.get("source")),
            destination=Endpoint.from_dict(data.get("destination")),
            first_seen=parse_ts(data["first_seen"]),
            last_seen=parse_ts(data["last_seen"]),
            count=int(data["count"]),
            score=float(data["score"]),
            mitre=tuple(data.get("mitre") or ()),
            runbook_url=data["runbook_url"],
            evidence=tuple(data.get("evidence") or ()),
            status=data["status"],
            labels=dict(data.get("labels") or {}),
        )


ALERT_FIELDS: tuple[str, ...] = (
    "id", "fingerprint", "detector", "severity", "title", "summary", "source", "destination",
    "first_seen", "last_seen", "count", "score", "mitre", "runbook_url", "evidence", "status",
    "labels",
)


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z``, the one timestamp form we emit.

    >>> format_ts(datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC))
    '2026-01-02T03:04:05.678Z'
    """
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_ts(value: str | datetime) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp into an aware UTC datetime.

    >>> parse_ts("2020-11-25T21:26:18.409Z").isoformat()
    '2020-11-25T21:26:18.409000+00:00'
    """
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip())
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
