"""Read queries behind the service graph: snapshots, series, coverage, policy inputs.

Only SQL lives here; `meshwatch.graphs` turns the rows into graphs, diffs and reports.

How the snapshot stays fast (see `meshwatch bench store`):

* ClickHouse does the aggregation: one row per edge comes back, never one per window.
* The time range is a range on ``window_start``, the first column of ``edge_windows``'s
  ORDER BY, so only the granules of that range are read.
* ``FINAL`` collapses rows a replay wrote twice (same window, edge and part), so sums are exact
  under replays; parts of one window (late data) are distinct keys and are summed.
* Latency sketches travel only for edges with more than one window row in the range; a single
  row's stored p50/p95/p99 already came from its sketch.

Every function returns plain dicts with Python types (timestamps as aware UTC datetimes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from meshwatch.store.store import Store

# The destination namespace when the window rows lack it: `name.NS.svc...` service FQDNs.
_DST_NS_HINT = (
    "nullIf(extract(ifNull(dst_service, ''), '^[^.:]+\\\\.([^.:]+)\\\\.svc(?:\\\\.|:|$)'), '')"
)

# The windows of a range, each once even if a replay wrote it twice. A window belongs to a
# range when it lies entirely inside it.
_RANGE = (
    "FROM {db}.edge_windows FINAL "
    "WHERE window_start >= {start:DateTime('UTC')} AND window_start < {end:DateTime('UTC')} "
    "AND window_start + window_seconds <= {end:DateTime('UTC')}"
)
# An aggregated edge's destination namespace (no output alias may shadow a column used here).
_DST_NS = f"coalesce(any(dst_namespace), any({_DST_NS_HINT}))"

# (field, expression) per edge, in the order `edge_aggregates` returns values; the graph
# model's EdgeView declares its fields in this same order (checked when it is imported).
EDGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("src", "edge_src"),
    ("dst", "edge_dst"),
    ("src_kind", "any(src_kind)"),
    ("dst_kind", "any(dst_kind)"),
    ("src_workload", "any(src_workload)"),
    ("src_namespace", "any(src_namespace)"),
    ("src_principal", "any(src_principal)"),
    ("src_address", "any(src_address)"),
    ("dst_service", "any(dst_service)"),
    ("dst_port", "any(dst_port)"),
    ("dst_workload", "any(dst_workload)"),
    ("dst_namespace", _DST_NS),
    ("dst_principal", "any(dst_principal)"),
    ("requests", "sum(requests)"),
    ("errors_4xx", "sum(errors_4xx)"),
    ("errors_5xx", "sum(errors_5xx)"),
    ("denials", "sum(denials)"),
    ("conn_failures", "sum(conn_failures)"),
    ("bytes_sent", "sum(bytes_sent)"),
    ("bytes_received", "sum(bytes_received)"),
    ("latency_count", "sum(latency_count)"),
    ("mtls_true", "sum(mtls_true)"),
    ("mtls_false", "sum(mtls_false)"),
    ("mtls_unknown", "sum(mtls_unknown)"),
    ("mtls_share", "if(sum(mtls_true) + sum(mtls_false) > 0,"
                   " sum(mtls_true) / (sum(mtls_true) + sum(mtls_false)), NULL)"),
    ("mtls_status", "multiIf(sum(mtls_true) > 0 AND sum(mtls_false) > 0, 'mixed',"
                    " sum(mtls_true) > 0, 'all-mtls', sum(mtls_false) > 0, 'plaintext',"
                    " 'unknown')"),
    ("tls_versions", "arraySort(groupUniqArrayArray(tls_versions))"),
    ("peer_principals", "arraySort(groupUniqArrayArray(peer_principals))"),
    ("first_seen", "concat(replaceOne(toString(min(first_seen)), ' ', 'T'), 'Z')"),
    ("last_seen", "concat(replaceOne(toString(max(last_seen)), ' ', 'T'), 'Z')"),
    ("windows", "uniqExact(window_start)"),
)
EDGE_FIELDS: tuple[str, ...] = tuple(name for name, _ in EDGE_COLUMNS)
# Appended with latency=True: stored quantiles of a single-row edge, or the sketches to merge.
LATENCY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("single_p50", "if(count() = 1, any(latency_p50), NULL)"),
    ("single_p95", "if(count() = 1, any(latency_p95), NULL)"),
    ("single_p99", "if(count() = 1, any(latency_p99), NULL)"),
    ("sketches", "if(count() > 1, groupArrayIf(latency_sketch, latency_sketch != ''), [])"),
)
_LATENCY_SELECT = "".join(f",\n    {expr} AS {name}" for name, expr in LATENCY_COLUMNS)
# 64-bit integers as JSON numbers on every server version (older servers quote them).
_JSON_SETTINGS = "SETTINGS output_format_json_quote_64bit_integers = 0"

_TS_KEYS = ("first_seen", "last_seen", "window_start", "first_seen_ever", "last_seen_ever",
            "first", "last")


def ch_second(ts: datetime) -> str:
    """A bound for a DateTime('UTC') parameter (windows start on whole seconds)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for key in _TS_KEYS:
            if key in row:
                row[key] = _parse_ts(row[key])
    return rows


def edge_aggregates(
    store: Store,
    start: datetime,
    end: datetime,
    namespace: str | None = None,
    latency: bool = True,
    plaintext_only: bool = False,
) -> list[list[Any]]:
    """One value list per edge over the windows inside [start, end], summed over windows and
    parts, in `EDGE_FIELDS` order (then `LATENCY_COLUMNS` with ``latency``), sorted by
    (source, destination).

    Lists rather than dicts: a 10k-edge snapshot decodes 2.5x less JSON. ``namespace`` keeps
    edges with that source or destination namespace, decided on the aggregated edge so that a
    window lacking the namespace cannot split an edge.
    """
    having = []
    params: dict[str, Any] = {"start": ch_second(start), "end": ch_second(end)}
    if namespace is not None:
        having.append(f"(any(src_namespace) = {{ns:String}} OR {_DST_NS} = {{ns:String}})")
        params["ns"] = namespace
    if plaintext_only:
        having.append("sum(mtls_false) > 0")
    columns = ", ".join(expr for _, expr in EDGE_COLUMNS)
    if latency:
        columns += ", " + ", ".join(expr for _, expr in LATENCY_COLUMNS)
    sql = (
        f"SELECT tuple({columns}) AS e\n{_RANGE}\nGROUP BY edge_src, edge_dst"
        + (f"\nHAVING {' AND '.join(having)}" if having else "")
        + f"\nORDER BY edge_src, edge_dst\n{_JSON_SETTINGS}"
    )
    return [row["e"] for row in store.query(sql, params)]


def edge_series(store: Store, src: str, dst: str, start: datetime,
                end: datetime) -> list[dict[str, Any]]:
    """One row per window of one edge (parts summed), oldest first, with latency inputs."""
    sql = (
        "SELECT window_start, any(window_seconds) AS seconds, count() AS parts,"
        " sum(requests) AS requests, sum(errors_4xx) AS errors_4xx,"
        " sum(errors_5xx) AS errors_5xx, sum(denials) AS denials,"
        " sum(conn_failures) AS conn_failures, sum(bytes_sent) AS bytes_sent,"
        " sum(bytes_received) AS bytes_received, sum(latency_count) AS latency_count,"
        " sum(mtls_true) AS mtls_true, sum(mtls_false) AS mtls_false,"
        " sum(mtls_unknown) AS mtls_unknown,"
        " arraySort(groupUniqArrayArray(tls_versions)) AS tls_versions,"
        " arraySort(groupUniqArrayArray(peer_principals)) AS peer_principals"
        f"{_LATENCY_SELECT}\n"
        f"{_RANGE} AND edge_src = {{src:String}} AND edge_dst = {{dst:String}}\n"
        f"GROUP BY window_start ORDER BY window_start {_JSON_SETTINGS}"
    )
    params = {"start": ch_second(start), "end": ch_second(end), "src": src, "dst": dst}
    return _clean(store.query(sql, params))


def edge_lifetimes(store: Store, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                          dict[str, Any]]:
    """All-time first/last seen of the given edges (from the ``edges`` table)."""
    if not pairs:
        return {}
    rows = store.query(
        "SELECT edge_src, edge_dst, min(first_seen) AS first_seen_ever,"
        " max(last_seen) AS last_seen_ever FROM {db}.edges"
        " WHERE (edge_src, edge_dst) IN"
        " (SELECT tupleElement(p, 1), tupleElement(p, 2)"
        "  FROM (SELECT arrayJoin(arrayZip({srcs:Array(String)}, {dsts:Array(String)})) AS p))"
        " GROUP BY edge_src, edge_dst",
        {"srcs": [p[0] for p in pairs], "dsts": [p[1] for p in pairs]},
    )
    return {(r["edge_src"], r["edge_dst"]): r for r in _clean(rows)}


def coverage_rows(store: Store, start: datetime, end: datetime, bucket_seconds: int,
                  namespace: str | None = None) -> list[dict[str, Any]]:
    """Per (bucket index, destination namespace): edges and requests by mTLS evidence.

    An edge's status is decided per bucket from its summed counts: all-mTLS (only mTLS),
    mixed, plaintext (only plaintext) or unknown (no destination-side evidence).
    """
    params: dict[str, Any] = {"start": ch_second(start), "end": ch_second(end),
                              "start_epoch": int(start.timestamp()),
                              "bucket": int(bucket_seconds)}
    where = ""
    if namespace is not None:
        where = "WHERE ns = {ns:String}"
        params["ns"] = namespace
    sql = f"""
SELECT bucket, ns,
    count() AS edges,
    countIf(t > 0 AND f = 0) AS edges_all_mtls,
    countIf(t > 0 AND f > 0) AS edges_mixed,
    countIf(t = 0 AND f > 0) AS edges_plaintext,
    countIf(t = 0 AND f = 0) AS edges_unknown,
    sum(r) AS requests,
    sum(t) AS requests_mtls,
    sum(f) AS requests_plaintext,
    sum(u) AS requests_unknown
FROM (
    SELECT intDiv(toUInt32(window_start) - {{start_epoch:UInt32}}, {{bucket:UInt32}}) AS bucket,
        edge_src, edge_dst,
        {_DST_NS} AS ns,
        sum(requests) AS r, sum(mtls_true) AS t, sum(mtls_false) AS f, sum(mtls_unknown) AS u
    {_RANGE}
    GROUP BY bucket, edge_src, edge_dst
)
{where}
GROUP BY bucket, ns
ORDER BY bucket, ns
{_JSON_SETTINGS}
"""
    return store.query(sql, params)


def data_range(store: Store) -> dict[str, Any] | None:
    """First window start and last window end in the store, or None when it holds none."""
    rows = _clean(store.query(
        "SELECT min(window_start) AS first, max(window_start + window_seconds) AS last,"
        " count() AS rows FROM {db}.edge_windows " + _JSON_SETTINGS
    ))
    if not rows or not rows[0]["rows"]:
        return None
    return rows[0]


def namespaces(store: Store, start: datetime, end: datetime) -> list[str]:
    """Namespaces seen (as source or destination) in the range, for 'did you mean' errors."""
    rows = store.query(
        "SELECT arraySort(groupUniqArray(n)) AS names FROM ("
        f" SELECT arrayJoin([src_namespace, coalesce(dst_namespace, {_DST_NS_HINT})]) AS n"
        f" {_RANGE}) WHERE n IS NOT NULL",
        {"start": ch_second(start), "end": ch_second(end)},
    )
    return list(rows[0]["names"]) if rows else []


def count_events(store: Store, start: datetime, end: datetime) -> int:
    """Raw edge events stored in [start, end) (they are optional and expire sooner)."""
    rows = store.query(
        "SELECT count() AS n FROM {db}.edge_events"
        " WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')} "
        + _JSON_SETTINGS,
        {"start": ch_second(start), "end": ch_second(end)},
    )
    return int(rows[0]["n"])


def observed_operations(store: Store, start: datetime, end: datetime,
                        max_values: int = 64) -> list[dict[str, Any]]:
    """Per (edge destination, caller principal): methods, paths and ports seen *inbound*.

    Only destination-side records count: the principal there is the certificate the callee
    verified. At most ``max_values`` distinct values per list (one more shows it overflowed).
    """
    cap = int(max_values) + 1
    rows = store.query(
        "SELECT edge_dst, source_principal AS principal,"
        f" groupUniqArrayIf({cap})(method, method != '') AS methods,"
        f" groupUniqArrayIf({cap})(p, p != '') AS paths,"
        f" groupUniqArray({cap})(destination_port) AS ports,"
        " count() AS events"
        " FROM (SELECT *, splitByChar('?', ifNull(path, ''))[1] AS p"
        "       FROM {db}.edge_events FINAL"
        "       WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}"
        "         AND reporter = 'destination' AND source_principal IS NOT NULL)"
        " GROUP BY edge_dst, principal " + _JSON_SETTINGS,
        {"start": ch_second(start), "end": ch_second(end)},
    )
    for row in rows:
        row["methods"] = sorted(row["methods"])
        row["paths"] = sorted(row["paths"])
        row["ports"] = sorted(int(p) for p in row["ports"])
    return rows
