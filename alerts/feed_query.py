"""The alert feed query: filters, sorting and keyset (cursor) pagination, fast at 1M alerts.

``alerts`` is a ReplacingMergeTree ordered by id, so "newest first" with ``FINAL`` reads and
merges every row (~100 ms at 1M alerts). Instead a page is read in two steps:

1. candidates: rows (any version) in sort order — from a projection ordered by the sort key
   for ``last_seen`` and ``first_seen`` (migration 0003), read in order without ``FINAL`` and
   stopped after a batch; every filter is applied to the row's own values;
2. verification: the current version of each candidate, by primary key (only the id and
   version columns); a candidate counts only if it *is* the current version, so each alert
   appears once, at its current sort position, and only if its current state matches.

The projections hold whole rows, so a page is read from consecutive rows. Newest-first time
scans are bounded (an hour back from where they start, then a day, a week ...) so the
projection's primary key skips all but a few granules.

Repeat until the page is full. Keyset cursors (the last row's sort values and id) keep pages
stable while alerts are inserted: new alerts sort before the cursor, not into later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from meshwatch.records import SEVERITIES, Alert
from meshwatch.store import Store
from meshwatch.store.store import ch_ts, row_alert

SortKey = Literal["last_seen", "first_seen", "severity", "count", "score"]
Order = Literal["desc", "asc"]
SORT_KEYS: tuple[str, ...] = ("last_seen", "first_seen", "severity", "count", "score")
_COLUMN_TYPES = {"last_seen": "DateTime64(3, 'UTC')", "first_seen": "DateTime64(3, 'UTC')",
                 "count": "UInt64", "score": "Float64"}
MAX_ROUNDS = 40
# Newest-first time scans look back this far from where they start, then further: a bound on
# the projection's first key column reads a few granules instead of every part's tail.
LOOKBACK = (3600.0, 86400.0, 8 * 86400.0, 64 * 86400.0, None)


class CursorError(ValueError):
    """A cursor that this query cannot continue from (malformed, or from another sort)."""


@dataclass(frozen=True)
class AlertFilter:
    """What the feed shows; every value is bound as a query parameter, never pasted."""

    status: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    detector: tuple[str, ...] = ()
    namespace: str | None = None
    source: str | None = None
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    assignee: str | None = None

    def where(self) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions (on ``alerts`` columns) and their parameters."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for column in ("status", "severity", "detector"):
            values = getattr(self, column)
            if values:
                clauses.append(f"{column} IN {{f_{column}:Array(String)}}")
                params[f"f_{column}"] = list(values)
        if self.namespace:
            clauses.append("(src_namespace = {f_ns:String} OR dst_namespace = {f_ns:String})")
            params["f_ns"] = self.namespace
        if self.source:
            clauses.append(
                "(positionCaseInsensitiveUTF8(ifNull(src_workload, ''), {f_src:String}) > 0"
                " OR positionCaseInsensitiveUTF8(ifNull(src_principal, ''), {f_src:String}) > 0"
                " OR positionCaseInsensitiveUTF8(ifNull(src_namespace, ''), {f_src:String}) > 0"
                " OR positionCaseInsensitiveUTF8(JSONExtractString(source, 'address'),"
                " {f_src:String}) > 0)")
            params["f_src"] = self.source
        if self.destination:
            clauses.append(
                "(positionCaseInsensitiveUTF8(ifNull(dst_service, ''), {f_dst:String}) > 0"
                " OR positionCaseInsensitiveUTF8(JSONExtractString(destination, 'workload'),"
                " {f_dst:String}) > 0"
                " OR positionCaseInsensitiveUTF8(ifNull(dst_namespace, ''), {f_dst:String}) > 0)")
            params["f_dst"] = self.destination
        if self.since is not None:
            clauses.append("last_seen >= {f_since:DateTime64(3, 'UTC')}")
            params["f_since"] = ch_ts(self.since)
        if self.until is not None:
            clauses.append("first_seen < {f_until:DateTime64(3, 'UTC')}")
            params["f_until"] = ch_ts(self.until)
        if self.q:
            clauses.append("(positionCaseInsensitiveUTF8(title, {f_q:String}) > 0"
                           " OR positionCaseInsensitiveUTF8(summary, {f_q:String}) > 0"
                           " OR id = {f_q:String} OR fingerprint = {f_q:String})")
            params["f_q"] = self.q
        if self.assignee:
            clauses.append("assignee = {f_assignee:String}")
            params["f_assignee"] = self.assignee
        return clauses, params


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last alert's sort values (severity rank first for severity)."""

    sort: str
    order: str
    values: tuple[Any, ...]
    id: str

    def encode(self) -> str:
        raw = json.dumps([1, self.sort, self.order, list(self.values), self.id],
                         separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str) -> Position:
    """The position in ``cursor``; CursorError if it is not one of ours for this sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, c_sort, c_order, values, alert_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise CursorError("cursor: not a cursor from this API (pass next_cursor unchanged)"
                          ) from None
    if version != 1 or not isinstance(alert_id, str) or not isinstance(values, list):
        raise CursorError("cursor: not a cursor from this API (pass next_cursor unchanged)")
    if (c_sort, c_order) != (sort, order):
        raise CursorError(f"cursor: made for sort={c_sort}&order={c_order}, not "
                          f"sort={sort}&order={order}")
    expected = 2 if sort == "severity" else 1
    if len(values) != expected:
        raise CursorError("cursor: malformed (wrong number of sort values)")
    if sort in ("last_seen", "first_seen") or sort == "severity":
        stamp = values[-1]
        if not isinstance(stamp, str) or len(stamp) > 40:
            raise CursorError("cursor: malformed time")
        try:
            datetime.fromisoformat(stamp)
        except ValueError:
            raise CursorError("cursor: malformed time") from None
    if sort == "severity" and (not isinstance(values[0], int) or
                               not 0 <= values[0] < len(SEVERITIES)):
        raise CursorError("cursor: malformed severity")
    if sort in ("count", "score") and (isinstance(values[0], bool) or
                                       not isinstance(values[0], int | float)):
        raise CursorError("cursor: malformed number")
    if sort == "count" and (not isinstance(values[0], int) or values[0] < 0):
        raise CursorError("cursor: malformed count")
    return Position(sort, order, tuple(values), alert_id)


@dataclass
class Page:
    alerts: list[Alert]
    next_cursor: str | None
    rounds: int = 0


def _candidates(store: Store, column: str, order: str, clauses: list[str],
                params: dict[str, Any], after: tuple[Any, str] | None,
                limit: int, lower: str | None = None) -> list[dict[str, Any]]:
    """Whole rows in (column, id) order after the position (and at or after ``lower``),
    filters applied; no FINAL. Time columns read their projection; count and score the
    table's own top-K."""
    where = list(clauses)
    p = dict(params)
    ctype = _COLUMN_TYPES[column]
    if after is not None:
        op = "<" if order == "desc" else ">"
        # The plain bound lets the projection's primary key skip granules; the OR breaks ties.
        where.append(f"{column} {op}= {{c_key:{ctype}}}")
        where.append(f"({column} {op} {{c_key:{ctype}}} OR "
                     f"({column} = {{c_key:{ctype}}} AND id {op} {{c_id:String}}))")
        p["c_key"] = after[0]
        p["c_id"] = after[1]
    if lower is not None:
        where.append(f"{column} >= {{c_lower:{ctype}}}")
        p["c_lower"] = lower
    direction = "DESC" if order == "desc" else "ASC"
    # ``column`` is one of _COLUMN_TYPES and ``where`` holds fixed clauses; values are bound.
    sql = (f"SELECT *, toString({column}) AS k FROM {{db}}.alerts"  # noqa: S608
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {column} {direction}, id {direction} LIMIT {{c_limit:UInt32}}"
           " SETTINGS output_format_json_quote_64bit_integers = 0")
    p["c_limit"] = limit
    return store.query(sql, p)


def _versions(store: Store, ids: Sequence[str]) -> dict[str, int]:
    """The current version of each id (reads only the id and version columns)."""
    rows = store.query("SELECT id, max(version) AS v FROM {db}.alerts"
                       " WHERE id IN {ids:Array(String)} GROUP BY id"
                       " SETTINGS output_format_json_quote_64bit_integers = 0",
                       {"ids": list(ids)})
    return {r["id"]: int(r["v"]) for r in rows}


def _value(text: str, column: str) -> Any:
    """A sort value as read back (``toString``) in the type its cursor holds."""
    if column == "count":
        return int(text)
    if column == "score":
        return float(text)
    return text


@dataclass
class _Scan:
    alerts: list[Alert]
    rounds: int
    resume: tuple[Any, str] | None  # where to continue; None when nothing is left


def list_page(store: Store, filters: AlertFilter, sort: str = "last_seen",
              order: str = "desc", limit: int = 100, cursor: str | None = None) -> Page:
    """One page of alerts and the cursor of the next (None on the last page)."""
    if sort not in SORT_KEYS:
        raise CursorError(f"sort: one of {', '.join(SORT_KEYS)}")
    if order not in ("asc", "desc"):
        raise CursorError("order: asc or desc")
    position = decode_cursor(cursor, sort, order) if cursor else None
    clauses, params = filters.where()
    if sort != "severity":
        after = (position.values[0], position.id) if position else None
        scan = _scan(store, sort, order, clauses, params, after, limit)
        nxt = None
        if scan.resume is not None:
            nxt = Position(sort, order, (scan.resume[0],), scan.resume[1]).encode()
        return Page(scan.alerts, nxt, scan.rounds)
    # Severity: one last_seen-ordered scan per severity, in rank order.
    ranks = list(range(len(SEVERITIES)))
    if order == "desc":
        ranks.reverse()
    if filters.severity:
        ranks = [r for r in ranks if SEVERITIES[r] in filters.severity]
    collected: list[Alert] = []
    rounds = 0
    for i, rank in enumerate(ranks):
        after = None
        if position is not None:
            start_rank = int(position.values[0])
            if (order == "desc" and rank > start_rank) or (order == "asc" and rank < start_rank):
                continue
            if rank == start_rank:
                after = (position.values[1], position.id)
        scan = _scan(store, "last_seen", order, [*clauses, "severity = {f_rank:String}"],
                     {**params, "f_rank": SEVERITIES[rank]}, after, limit - len(collected))
        rounds += scan.rounds
        collected.extend(scan.alerts)
        if scan.resume is not None:
            nxt = Position("severity", order, (rank, scan.resume[0]), scan.resume[1])
            return Page(collected, nxt.encode(), rounds)
        if len(collected) >= limit:
            if i == len(ranks) - 1:
                return Page(collected, None, rounds)
            # Continue with the next severity: a position before its first row.
            next_rank = ranks[i + 1]
            edge = "9999-12-31 23:59:59.999" if order == "desc" else "1970-01-01 00:00:00.000"
            nxt = Position("severity", order, (next_rank, edge), "\uffff" if order == "desc"
                           else "")
            return Page(collected, nxt.encode(), rounds)
    return Page(collected, None, rounds)


def _scan(store: Store, column: str, order: str, clauses: list[str], params: dict[str, Any],
          after: tuple[Any, str] | None, limit: int) -> _Scan:
    """Collect ``limit`` current alerts in (column, id) order after ``after``.

    One alert more than asked is looked for: finding it says there is a next page, without
    a separate query (or an empty last page).
    """
    out: list[Alert] = []
    seen: set[str] = set()
    want = limit + 1
    bounded = order == "desc" and column in ("last_seen", "first_seen")
    window = 0
    anchor: datetime | None = None
    if bounded:
        if after is not None:
            anchor = datetime.fromisoformat(str(after[0]))
        else:
            # ``column`` is last_seen or first_seen (checked above).
            top = store.query(f"SELECT toString(max({column})) AS m FROM {{db}}.alerts")  # noqa: S608
            anchor = datetime.fromisoformat(top[0]["m"]) if top and top[0]["m"] else None
        bounded = anchor is not None
    batch = want + want // 4 + 8
    rounds = 0
    last: tuple[Any, str] | None = after
    resume: tuple[Any, str] | None = after
    while len(out) < want:
        if rounds >= MAX_ROUNDS:
            # A very selective filter: hand back where the scan stopped (a short page).
            return _Scan(out, rounds, last)
        rounds += 1
        span = LOOKBACK[window] if bounded else None
        lower = None
        if span is not None and anchor is not None:
            lower = ch_ts(anchor - timedelta(seconds=span))
        rows = _candidates(store, column, order, clauses, params, last, batch, lower=lower)
        if not rows:
            if lower is not None:  # nothing (more) in this window: look further back
                window += 1
                continue
            return _Scan(out, rounds, None)
        versions = _versions(store, list(dict.fromkeys(r["id"] for r in rows)))
        current = {r["id"]: (int(r["version"]), row_alert(r)) for r in rows
                   if versions.get(r["id"]) == int(r["version"])}
        for row in rows:
            last = (_value(row["k"], column), row["id"])
            found = current.get(row["id"])
            if found is None or found[0] != int(row["version"]) or row["id"] in seen:
                continue
            seen.add(row["id"])
            out.append(found[1])
            if len(out) == limit:
                resume = last
            if len(out) == want:
                return _Scan(out[:limit], rounds, resume)
        if len(rows) < batch:
            if lower is not None:
                window += 1
                continue
            return _Scan(out, rounds, None)
        batch = min(batch * 2, 5000)
    return _Scan(out[:limit], rounds, resume)  # pragma: no cover - the loop returns
