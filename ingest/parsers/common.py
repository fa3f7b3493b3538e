"""Limits and failure plumbing every parser shares.

A parser must never raise on bad bytes (DESIGN.md habit 8): validation problems are raised
internally as `RecordError` and turned into a `ParseFailure` at the parser's edge by `guarded`.
Anything else escaping a parser is a bug; `guarded` still turns it into a failure (so one
poisoned record cannot stop a consumer), but labels it ``internal error`` so tests and
operators can tell it from bad input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ingest.parsers.base import ParseResult
from meshwatch.records import EdgeEvent, Origin, ParseFailure

MAX_RECORD_BYTES = 1024 * 1024
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)
TS_MIN_NS = int(TS_MIN.timestamp()) * 1_000_000_000
TS_MAX_NS = int(TS_MAX.timestamp()) * 1_000_000_000
INTERNAL_ERROR = "internal error"
_UINT64_END = 2**64


class RecordError(ValueError):
    """One record (or one item of a batch record) is bad; the message is the failure reason."""


def check_ts(ts: datetime) -> datetime:
    """``ts`` unchanged when plausible; timestamps outside 2000..2100 are corrupt or hostile."""
    if ts < TS_MIN or ts >= TS_MAX:
        raise RecordError(f"timestamp out of range: {ts.isoformat()} (accepted: 2000..2100)")
    return ts


def ns_to_datetime(ns: int, what: str = "timestamp") -> datetime:
    """An aware UTC datetime from Unix nanoseconds, range-checked."""
    if ns < TS_MIN_NS or ns >= TS_MAX_NS:
        if ns == 0:
            raise RecordError(f"{what} is missing (0)")
        raise RecordError(f"timestamp out of range: {what} {ns} ns (accepted: 2000..2100)")
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1000)


def too_large(payload: bytes) -> str | None:
    """The failure reason for an oversized record, checked before any parsing work."""
    if len(payload) > MAX_RECORD_BYTES:
        return f"record is {len(payload)} bytes, over the {MAX_RECORD_BYTES} byte (1 MiB) limit"
    return None


def decode_utf8(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"invalid UTF-8 at byte {exc.start}") from None


def failure(parser_name: str, origin: Origin, reason: str, payload: bytes) -> ParseFailure:
    return ParseFailure(origin=origin, format=parser_name, reason=reason, payload=payload)


F = TypeVar("F", bound=Callable[..., ParseResult])


def guarded(method: F) -> F:
    """Wrap ``parse(self, payload, origin)``: size limit, RecordError -> ParseFailure, no raise."""

    @functools.wraps(method)
    def parse(self: Any, payload: bytes, origin: Origin) -> ParseResult:
        if len(payload) > MAX_RECORD_BYTES:
            return [failure(self.name, origin, too_large(payload) or "", payload)]
        try:
            results = method(self, payload, origin)
        except RecordError as exc:
            return [failure(self.name, origin, str(exc), payload)]
        except RecursionError:  # e.g. JSON nested 100k levels deep: hostile, not a bug
            return [failure(self.name, origin, "record nested too deeply to decode", payload)]
        except OverflowError as exc:  # e.g. a 400-digit duration: hostile, not a bug
            return [failure(self.name, origin, f"number out of range: {exc}", payload)]
        except Exception as exc:  # a bug, but one record must not stop the stream
            return [failure(self.name, origin,
                            f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}", payload)]
        return checked(self.name, results, origin, payload)

    return parse  # type: ignore[return-value]


def event_problem(event: EdgeEvent) -> str | None:
    """Why an event cannot be stored as it is (a value outside its column's range), or None.

    One such event must not fail the batch insert it is in: the whole pipeline would stall
    on it (a poison record), so it becomes a dead letter instead.

    >>> from datetime import UTC, datetime
    >>> e = EdgeEvent(ts=datetime(2026, 1, 1, tzinfo=UTC), origin="envoy_json",
    ...               destination_port=99999)
    >>> event_problem(e)
    'destination_port out of range: 99999 (accepted: 0..65535)'
    """
    port = event.destination_port
    if port is not None and not 0 <= port <= 65535:
        return f"destination_port out of range: {port} (accepted: 0..65535)"
    code = event.response_code
    if code is not None and not 0 <= code <= 999:
        return f"response_code out of range: {code} (accepted: 0..999)"
    for name, value in (("bytes_sent", event.bytes_sent),
                        ("bytes_received", event.bytes_received)):
        if value is not None and not 0 <= value < _UINT64_END:
            return f"{name} out of range: {value} (accepted: 0..2^64-1)"
    duration = event.duration_ms
    if duration is not None and not math.isfinite(duration):
        return f"duration_ms is not a finite number: {duration}"
    return None


def checked(parser_name: str, results: ParseResult, origin: Origin | None = None,
            payload: bytes | None = None) -> ParseResult:
    """``results`` with every unstorable event replaced by a failure naming the value.

    Events released by ``flush`` have no record of their own: their failure carries the
    event's JSON as the payload and ``<parser>:flush`` as the origin.
    """
    out: ParseResult = results
    for i, item in enumerate(results):
        if not isinstance(item, EdgeEvent):
            continue
        problem = event_problem(item)
        if problem is None:
            continue
        if out is results:
            out = list(results)
        where = origin if origin is not None else Origin(f"{parser_name}:flush", 0)
        out[i] = failure(parser_name, where, problem,
                         payload if payload is not None else item.to_json())
    return out
