"""Envoy/Istio JSON access logs (``envoy-json``)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import RecordError, guarded
from ingest.parsers.envoy_fields import (
    FieldPlan,
    make_event_parser,
    make_extractor,
    make_plan,
)
from ingest.parsers.envoy_format import Command, tokenize
from meshwatch.formats import MESHWATCH_JSON_FORMAT
from meshwatch.records import EdgeEvent, Origin
from meshwatch.settings import ConfigError


class JsonFields:
    """JSON object -> canonical values, for one ``json_format`` (key -> Envoy operator).

    The object is decoded by msgspec straight into a struct holding only the mapped keys
    (unknown keys are skipped by the decoder, never materialized). Values may be typed
    (``418``, ``null``: newer Envoy) or all strings (``"418"``, ``"-"``: older Envoy).
    """

    def __init__(self, json_format: dict[str, str] | None) -> None:
        mapping = MESHWATCH_JSON_FORMAT if json_format is None else json_format
        if not isinstance(mapping, dict) or not mapping:
            raise ConfigError("json_format must be a non-empty mapping of key -> %OPERATOR%")
        keys: list[str] = []
        commands: list[Command | None] = []
        for key, value in mapping.items():
            if not isinstance(value, str):
                raise ConfigError(f"json_format key {key!r}: the value must be a string holding "
                                  f"an Envoy command operator, got {value!r}")
            try:
                tokens = tokenize(value)
            except ConfigError as exc:
                raise ConfigError(f"json_format key {key!r}: {exc}") from None
            # Only a value that is exactly one operator can be read back; "%A% %B%" cannot.
            command = tokens[0] if len(tokens) == 1 and isinstance(tokens[0], Command) else None
            keys.append(key)
            commands.append(command)
        self.plan: tuple[FieldPlan, ...] = make_plan(
            commands, lambda i, command: f"key {keys[i]!r} ({command.label})")
        if not self.plan:
            raise ConfigError("json_format maps no key meshwatch can use (START_TIME, "
                              "UPSTREAM_CLUSTER, RESPONSE_CODE, ...)")
        used = sorted({p.index for p in self.plan})
        self.keys = [keys[i] for i in used]
        position = {index: n for n, index in enumerate(used)}
        self.plan = tuple(p._replace(index=position[p.index]) for p in self.plan)
        record = msgspec.defstruct(
            "EnvoyJsonRecord",
            [(f"f{n}", Any, msgspec.UNSET) for n in range(len(self.keys))],
            rename={f"f{n}": key for n, key in enumerate(self.keys)},
        )
        self._decoder = msgspec.json.Decoder(record)
        self._extract = make_extractor(self.plan, may_be_unset=True)
        self._event = make_event_parser(self.plan, may_be_unset=True)
        self._astuple = msgspec.structs.astuple

    def decode(self, payload: bytes | str) -> tuple[Any, ...]:
        try:
            record = self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            message = str(exc)
            if message.startswith("Expected `object`"):
                raise RecordError("JSON value is not an object (" + message.split(", ", 1)[-1]
                                  + ")") from None
            raise RecordError(f"invalid JSON access-log record: {message}") from None
        except msgspec.DecodeError as exc:
            raise RecordError(f"invalid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise RecordError(f"invalid JSON: invalid UTF-8 at byte {exc.start}") from None
        return self._astuple(record)

    def _check_any(self, values: tuple[Any, ...]) -> None:
        if all(value is msgspec.UNSET for value in values):
            raise RecordError("JSON object has none of the access-log keys ("
                              + ", ".join(self.keys[:4]) + ", ...)")

    def fields(self, payload: bytes | str) -> dict[str, Any]:
        """Canonical values of one record (for OTLP bodies merged with attributes)."""
        values = self.decode(payload)
        self._check_any(values)
        return self._extract(values)

    def event(self, payload: bytes, origin: str, cluster_domain: str, trust_domain: str
              ) -> EdgeEvent:
        values = self.decode(payload)
        try:
            return self._event(values, origin, cluster_domain, trust_domain)
        except RecordError:
            self._check_any(values)  # the better reason for an object of unrelated keys
            raise


@PARSERS.register("envoy-json")
class EnvoyJsonParser:
    """Envoy JSON access-log records, one JSON object per record.

    ``json_format`` is Envoy's own ``json_format`` config (key -> command operator); the
    default is meshwatch's recommended format (Istio's JSON keys plus identity/TLS keys),
    which also reads Istio's plain JSON. Typed values with ``null`` (newer Envoy) and
    all-string values with ``"-"`` (older Envoy) both parse.

    >>> p = EnvoyJsonParser()
    >>> [e] = p.parse(b'{"start_time": "2024-05-01T10:00:00.000Z", "response_code": "503", '
    ...     b'"upstream_cluster": "inbound|9080||", "requested_server_name": null, '
    ...     b'"authority": "reviews:9080", "pod_namespace": "bookinfo", "bytes_received": 12}',
    ...     Origin("topic", 7))
    >>> e.reporter, e.mtls, e.response_code, e.destination_service, e.bytes_sent
    ('destination', False, 503, 'reviews.bookinfo.svc.cluster.local', 12)
    >>> p.parse(b'[1, 2]', Origin("topic", 8))[0].reason
    'JSON value is not an object (got `array`)'
    """

    name: ClassVar[str] = "envoy-json"
    origin: ClassVar[str] = "envoy_json"

    def __init__(self, json_format: dict[str, str] | None = None, *,
                 cluster_domain: str = "cluster.local",
                 trust_domain: str = "cluster.local") -> None:
        self.json_format = json_format
        self.cluster_domain = cluster_domain
        self.trust_domain = trust_domain
        self._fields = JsonFields(json_format)

    def __getstate__(self) -> dict[str, Any]:
        return {"json_format": self.json_format, "cluster_domain": self.cluster_domain,
                "trust_domain": self.trust_domain}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["json_format"], cluster_domain=state["cluster_domain"],  # type: ignore[misc]
                      trust_domain=state["trust_domain"])

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        return [self._fields.event(payload, self.origin, self.cluster_domain,
                                   self.trust_domain)]

    def flush(self, now: float | None = None) -> ParseResult:
        return []
