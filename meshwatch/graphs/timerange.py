"""Times and ranges as operators type them: RFC 3339, ``now``, ``latest`` or ``-15m``.

One parser for the CLI and the API so both accept the same words and reject the same mistakes
(reversed or empty ranges) with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meshwatch.records import format_ts
from meshwatch.settings import parse_duration

TIME_HELP = ("RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01), 'now', 'latest' (end of the "
             "newest stored window) or relative to now (-15m, -2h, -7d)")
_RELATIVE = re.compile(r"^\s*(?:now)?\s*-\s*(.+)$")


class RangeError(ValueError):
    """A time or range that cannot be answered; the message says why and what to type."""


def parse_time(value: str | datetime, now: datetime,
               latest: Callable[[], datetime | None] | None = None) -> datetime:
    """An aware UTC datetime from what an operator typed.

    >>> now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    >>> parse_time("-15m", now).isoformat()
    '2026-03-01T11:45:00+00:00'
    >>> parse_time("2026-03-01T13:00:00+01:00", now).isoformat()
    '2026-03-01T12:00:00+00:00'
    >>> parse_time("yesterday", now)
    Traceback (most recent call last):
    ...
    meshwatch.graphs.timerange.RangeError: cannot read time 'yesterday': use RFC 3339 \
(2026-03-01T12:00:00Z), a date (2026-03-01), 'now', 'latest' (end of the newest stored window) \
or relative to now (-15m, -2h, -7d)
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strip()
    lowered = text.lower()
    if lowered == "now":
        return now
    if lowered == "latest":
        found = latest() if latest is not None else None
        if found is None:
            raise RangeError("'latest' needs data: the store holds no edge windows yet")
        return found
    relative = _RELATIVE.match(lowered)
    if relative:
        try:
            return now - timedelta(seconds=parse_duration(relative.group(1)))
        except ValueError:
            pass
    else:
        try:
            ts = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            pass
        else:
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    raise RangeError(f"cannot read time {value!r}: use {TIME_HELP}")


def parse_span(value: str | float, what: str = "window") -> float:
    """A positive duration in seconds (``15m``, ``1h``, ``90``)."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RangeError(f"{what}: {exc}") from None
    if seconds <= 0:
        raise RangeError(f"{what} must be longer than zero, got {value!r}")
    return seconds


@dataclass(frozen=True)
class TimeRange:
    """A half-open interval [start, end) of event time; never empty, never reversed."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise RangeError(f"reversed time range: start {format_ts(self.start)} is after end "
                             f"{format_ts(self.end)}")
        if self.end == self.start:
            raise RangeError(f"empty time range: start and end are both {format_ts(self.start)}")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @classmethod
    def ending(cls, at: datetime, window: float) -> TimeRange:
        """The ``window`` seconds before ``at`` (a snapshot's range)."""
        return cls(at - timedelta(seconds=window), at)

    def to_dict(self) -> dict[str, str]:
        return {"start": format_ts(self.start), "end": format_ts(self.end)}

    def __str__(self) -> str:
        return f"[{format_ts(self.start)}, {format_ts(self.end)})"


def between(since: datetime, until: datetime, since_name: str = "since",
            until_name: str = "until") -> TimeRange:
    """A range from two user times, with an error that names the options involved."""
    if until < since:
        raise RangeError(f"reversed time range: {since_name} {format_ts(since)} is after "
                         f"{until_name} {format_ts(until)}")
    if until == since:
        raise RangeError(f"empty time range: {since_name} and {until_name} are both "
                         f"{format_ts(since)}")
    return TimeRange(since, until)
