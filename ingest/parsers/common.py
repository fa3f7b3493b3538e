"""Limits and failure plumbing every parser shares.

A parser must never raise on bad bytes (DESIGN.md habit 8): validation problems are raised
internally as `RecordError` and turned into a `ParseFailure` at the parser's edge by `guarded`.
Anything else escaping a parser is a bug; `guarded` still turns it into a failure (so one
poisoned record cannot stop a consumer), but labels it ``internal error`` so tests and
operators can tell it from bad input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ingest.parsers.base import ParseResult
from meshwatch.records import Origin, ParseFailure

MAX_RECORD_BYTES = 1024 * 1024
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)
TS_MIN_NS = int(TS_MIN.timestamp()) * 1_000_000_000
TS_MAX_NS = int(TS_MAX.timestamp()) * 1_000_000_000
INTERNAL_ERROR = "internal error"


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
            return method(self, payload, origin)
        except RecordError as exc:
            return [failure(self.name, origin, str(exc), payload)]
        except Exception as exc:  # a bug, but one record must not stop the stream
            return [failure(self.name, origin,
                            f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}", payload)]

    return parse  # type: ignore[return-value]
