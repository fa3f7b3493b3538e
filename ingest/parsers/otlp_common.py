"""OTLP decoding shared by the span and log parsers: ids, enums, AnyValues, resources.

OTLP/JSON is read with msgspec into plain Python values and walked by hand rather than through
``google.protobuf.json_format``: the OTLP JSON encoding differs from protobuf's canonical JSON
mapping (trace/span ids are hex, not base64; enums are integers), and real producers mix the
two. Both spellings are accepted: hex or base64 ids, integer or named enums, 64-bit integers as
strings or numbers, camelCase or snake_case field names.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Container, Iterable
from typing import Any

import msgspec

from ingest.parsers.common import RecordError

_HEX = re.compile(r"^[0-9a-fA-F]*$")
_decode_json = msgspec.json.Decoder().decode


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """The top-level JSON object, or RecordError naming what was wrong."""
    try:
        value = _decode_json(payload)
    except msgspec.DecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecordError(f"invalid JSON: invalid UTF-8 at byte {exc.start}") from None
    if not isinstance(value, dict):
        raise RecordError(f"JSON value is not an object (got {type(value).__name__})")
    return value


def field(obj: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    """``obj[camel]``, falling back to the proto field name (``trace_id``)."""
    value = obj.get(camel)
    if value is None and snake is not None:
        value = obj.get(snake)
    return value


def json_id(value: Any, size: int, what: str) -> str | None:
    """Lower-case hex of an OTLP/JSON id: hex (any case) or base64 (protobuf JSON mapping).

    >>> json_id("5B8EFFF798038103D269B633813FC60C", 16, "traceId")
    '5b8efff798038103d269b633813fc60c'
    >>> json_id("W47/95gDgQPSabYzgT/GDA==", 16, "traceId")
    '5b8efff798038103d269b633813fc60c'
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) == 2 * size and _HEX.match(value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError(f"{what} {value[:40]!r} is neither {2 * size} hex digits nor "
                              "base64") from None
        if len(raw) != size:
            raise RecordError(f"{what} {value[:40]!r} is not {size} bytes")
    if not any(raw):
        return None  # all-zero ids mean "absent" in OTLP
    return raw.hex()


def bytes_id(raw: bytes, size: int, what: str) -> str | None:
    """Lower-case hex of a protobuf id field; empty/all-zero means absent."""
    if not raw or not any(raw):
        return None
    if len(raw) != size:
        raise RecordError(f"{what} is {len(raw)} bytes, expected {size}")
    return raw.hex()


def json_int(value: Any, what: str) -> int:
    """A 64-bit integer as OTLP/JSON writes it (a decimal string) or as a number."""
    if isinstance(value, bool):
        raise RecordError(f"{what}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.removeprefix("-").isdigit():
        return int(value)  # one sign at most: "--1" is not a number (int() would raise)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None:
        return 0
    raise RecordError(f"{what}: expected an integer, got {str(value)[:40]!r}")


def json_enum(value: Any, names: dict[str, int], what: str) -> int:
    """An enum as integer (OTLP/JSON) or as its name (protobuf JSON mapping)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in names:
            return names[value]
        if value.isdigit():
            return int(value)
    raise RecordError(f"{what}: unknown value {str(value)[:40]!r}")


SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
              "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def json_any_value(value: Any) -> Any:
    """A Python value from an OTLP/JSON AnyValue object."""
    if not isinstance(value, dict):
        return value
    for key, inner in value.items():
        if key in ("stringValue", "string_value"):
            return inner
        if key in ("intValue", "int_value"):
            try:
                return int(inner)
            except (TypeError, ValueError):
                return None
        if key in ("boolValue", "bool_value"):
            return bool(inner)
        if key in ("doubleValue", "double_value"):
            return inner if isinstance(inner, int | float) else _float(inner)
        if key in ("arrayValue", "array_value"):
            values = inner.get("values") if isinstance(inner, dict) else None
            return [json_any_value(v) for v in values or ()]
        if key in ("kvlistValue", "kvlist_value"):
            values = inner.get("values") if isinstance(inner, dict) else None
            return json_attributes(values)
        if key in ("bytesValue", "bytes_value"):
            try:
                return base64.b64decode(inner)
            except (binascii.Error, ValueError, TypeError):
                return None
    return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def json_attributes(items: Any, keep: Iterable[str] | None = None) -> dict[str, Any]:
    """``[{"key": k, "value": AnyValue}, ...]`` -> ``{k: value}`` (only ``keep`` keys if given)."""
    out: dict[str, Any] = {}
    if not isinstance(items, list):
        return out
    wanted = None if keep is None else keep
    for item in items:
        if not isinstance(item, dict):
            continue
        key = item.get("key")
        if not isinstance(key, str) or (wanted is not None and key not in wanted):
            continue
        out[key] = json_any_value(item.get("value"))
    return out


def proto_any_value(value: Any) -> Any:
    """A Python value from an ``opentelemetry.proto.common.v1.AnyValue`` message."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [proto_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return proto_attributes(value.kvlist_value.values)
    return getattr(value, kind)


def proto_attributes(items: Iterable[Any], keep: Container[str] | None = None) -> dict[str, Any]:
    """Repeated ``KeyValue`` -> ``{key: value}`` (only ``keep`` keys if given).

    Each message access builds a wrapper object, so keys are read once and a non-empty
    ``string_value`` (most attributes; only the set member of the oneof can be non-empty) is
    taken without asking which member is set: 12.9 -> 9.9 us for a 10-attribute span.
    """
    out: dict[str, Any] = {}
    for kv in items:
        key = kv.key
        if keep is None or key in keep:
            value = kv.value
            text = value.string_value
            out[key] = text if text else proto_any_value(value)
    return out


RESOURCE_KEYS = frozenset({
    "service.name", "service.namespace", "k8s.namespace.name", "k8s.deployment.name",
    "k8s.statefulset.name", "k8s.daemonset.name", "k8s.pod.name", "k8s.pod.ip", "node_name",
})
