#!/usr/bin/env python3
"""Derive meshwatch's ClickHouse *cluster* DDL from the single-node migrations.

The migrations in ``meshwatch/store/migrations/*.sql`` are the one schema. This script rewrites
them for a sharded, replicated ClickHouse cluster so the two can never drift:

* big, append-heavy tables (events, windows, the edge/node rollups, dead letters) become
  ``Replicated*MergeTree`` tables in ``<db>_local`` on every shard, plus a ``Distributed`` table
  with the *original name* in ``<db>``; meshwatch reads and writes ``<db>.<table>`` unchanged;
* small control tables (alerts, alert actions, checkpoints, schema_migrations) are replicated
  to every node (one replica set spanning the cluster, no sharding): each node answers the
  feed's ``FINAL`` queries locally and exactly;
* materialized views live next to the local tables they read from;
* ``ALTER TABLE`` statements (settings, projections, indexes, columns) go to the table that holds
  the data: the local table of a sharded table (columns: the Distributed table too), the
  replicated table otherwise;
* ``schema_migrations`` is created and filled with every migration covered here, so meshwatch's
  own start-up migration (``CREATE ... IF NOT EXISTS`` on single-node engines) applies nothing.

Usage (from the repository root, with the project's virtualenv)::

    python infra/clickhouse/generate_cluster_ddl.py                 # rewrite cluster.sql
    python infra/clickhouse/generate_cluster_ddl.py --check         # exit 1 if it is stale
    python infra/clickhouse/generate_cluster_ddl.py --stdout --database mw --ttl-days edge_events=14

Apply the result with ``clickhouse-client --multiquery < infra/clickhouse/cluster.sql`` on any
one node; every statement is ``ON CLUSTER '{cluster}'`` and re-runnable (``IF NOT EXISTS``).
A new migration with a table this script does not know fails here on purpose: decide whether it
is sharded (and by what) or replicated everywhere, and add it to ``SHARDED``/``EVERYWHERE``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUTPUT = HERE / "cluster.sql"

if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from meshwatch.store.schema import Migration, available_migrations  # noqa: E402

CLUSTER = "'{cluster}'"
# ZooKeeper/Keeper paths. {shard} and {replica} are per-node macros (see README.md);
# {database} and {table} are expanded by ClickHouse itself.
SHARD_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
EVERYWHERE_PATH = "/clickhouse/tables/all/{database}/{table}"

# Sharded tables -> sharding key. The key must be a function of the table's ORDER BY columns:
# Replacing/Aggregating merges deduplicate only within one shard, so a replayed row has to land
# on the shard that holds the original (checked by `check_sharding_keys`).
SHARDED: dict[str, str] = {
    # event_id is the replay-stable identity of an event; edge_src could differ on a replay that
    # resumes from an older identity map, which would put the duplicate on another shard.
    "edge_events": "cityHash64(event_id)",
    # One source's windows on one shard: per-source investigations and the edges/nodes rollups
    # below stay shard-local.
    "edge_windows": "cityHash64(edge_src)",
    "edges": "cityHash64(edge_src)",
    "nodes": "cityHash64(node_id)",
    # A dead letter's origin (topic, offset) spreads the table evenly and keeps retries together.
    "dead_letters": "cityHash64(source, offset)",
}

# Replicated to every node: small control-plane state read with FINAL by the feed API and the
# notifier, which must be exact (a sharded FINAL only deduplicates within each shard).
EVERYWHERE: frozenset[str] = frozenset({
    "alerts", "alert_actions", "checkpoints",
    # 0002_alerting: notification groups/log, the delivery outbox and its attempts, silences.
    "notify_groups", "notify_log", "notify_outbox", "notify_attempts", "silences",
    # 0003_analyst: API tokens and sessions (looked up on every request), feedback and the
    # rules it creates (read by the detect stage and the feed).
    "api_tokens", "alert_feedback", "feedback_rules",
})

# Where each materialized view writes. "local" is only correct when the view's output row lands
# on the shard its source row is on (same sharding column, see `check_view_targets`); otherwise
# the view writes through the Distributed table, which re-shards the row.
VIEW_TARGETS: dict[str, str] = {
    "edges_mv": "local",  # edge_windows by edge_src -> edges by edge_src
    "nodes_src_mv": "local",  # node_id = edge_src
    "nodes_dst_mv": "distributed",  # node_id = edge_dst: another shard in general
}

# meshwatch.store.schema creates this table on a single node; the cluster copy must match it.
SCHEMA_MIGRATIONS_COLUMNS = "(version UInt32, name String, applied_at DateTime64(3, 'UTC'))"

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)\s*\(", re.S)
_CREATE_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS \{db\}\.(\w+) TO \{db\}\.(\w+) AS\s+(.*)$", re.S
)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)\b(?:\(([^()]*)\))?")
_ORDER_BY = re.compile(r"ORDER BY\s+(\([^()]*\)|\w+)")
_TTL_DAYS = re.compile(r"(TTL\s+.+?\+\s*INTERVAL\s+)(\d+)(\s+DAY)")
_ALTER = re.compile(r"^ALTER TABLE \{db\}\.(\w+)\s+(.*)$", re.S)
# ALTER TABLE operations the generator places: (pattern, also on the Distributed table).
# Data-layout operations (settings, projections, indexes, TTL) concern the tables that store
# rows; column changes must also reach the Distributed table, which has the same columns.
_ALTER_OPERATIONS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"^MODIFY SETTING\b"), False),
    (re.compile(r"^(ADD|DROP|MATERIALIZE|CLEAR) PROJECTION\b"), False),
    (re.compile(r"^(ADD|DROP|MATERIALIZE|CLEAR) INDEX\b"), False),
    (re.compile(r"^MODIFY TTL\b"), False),
    (re.compile(r"^(ADD|DROP|MODIFY|COMMENT) COLUMN\b"), True),
)
_DB_REF = re.compile(r"\{db\}\.(\w+)")
_FROM = re.compile(r"\bFROM \{db\}\.(\w+)")


class DDLError(ValueError):
    """A migration statement this generator does not know how to place on a cluster."""


@dataclass(frozen=True)
class Layout:
    database: str = "meshwatch"
    ttl_days: tuple[tuple[str, int], ...] = ()

    @property
    def local(self) -> str:
        return f"{self.database}_local"


def replicated_engine(engine: str, args: str | None, path: str) -> str:
    """``ReplacingMergeTree(version)`` -> ``ReplicatedReplacingMergeTree('path', '{replica}',
    version)``.

    >>> replicated_engine("ReplacingMergeTree", "version", "/p")
    "ENGINE = ReplicatedReplacingMergeTree('/p', '{replica}', version)"
    >>> replicated_engine("AggregatingMergeTree", None, "/p")
    "ENGINE = ReplicatedAggregatingMergeTree('/p', '{replica}')"
    """
    if engine.startswith("Replicated"):
        raise DDLError(f"migration already uses a replicated engine: {engine}")
    extra = f", {args.strip()}" if args and args.strip() else ""
    return f"ENGINE = Replicated{engine}('{path}', '{{replica}}'{extra})"


def order_by_columns(statement: str) -> set[str]:
    match = _ORDER_BY.search(statement)
    if not match:
        raise DDLError("table without ORDER BY")
    return set(re.findall(r"\w+", match.group(1)))


def key_columns(expression: str) -> set[str]:
    """Column names a sharding expression reads (function names excluded)."""
    names = set(re.findall(r"\b([A-Za-z_]\w*)\b(?!\s*\()", expression))
    return names


def check_sharding_keys(statements: dict[str, str]) -> None:
    """Every sharding key reads only ORDER BY columns (so replays land on the same shard)."""
    for table, key in SHARDED.items():
        if table not in statements:
            continue
        extra = key_columns(key) - order_by_columns(statements[table])
        if extra:
            raise DDLError(f"{table}: sharding key {key} reads {sorted(extra)}, which are not in "
                           "ORDER BY; replays would not deduplicate across shards")


def _shard_column(table: str) -> str | None:
    cols = key_columns(SHARDED.get(table, ""))
    return next(iter(cols)) if len(cols) == 1 else None


def check_view_targets(views: dict[str, tuple[str, str, str]]) -> None:
    """A view writing to a *local* table must preserve the sharding column."""
    for name, (target, source, select) in views.items():
        if VIEW_TARGETS.get(name) != "local":
            continue
        target_col, source_col = _shard_column(target), _shard_column(source)
        if target_col is None or source_col is None:
            raise DDLError(f"{name}: a local target needs single-column sharding keys on "
                           f"{source} and {target}")
        aliased = re.search(rf"\b(\w+)\s+AS\s+{target_col}\b", select)
        produced = aliased.group(1) if aliased else (
            target_col if re.search(rf"(SELECT|,)\s*{target_col}\s*(,|FROM)", select) else None)
        if produced != source_col:
            raise DDLError(f"{name}: writes {target}.{target_col} from {produced!r}, not from "
                           f"the source's sharding column {source}.{source_col}; make it "
                           "'distributed' in VIEW_TARGETS")


def _with_ttl(statement: str, table: str, layout: Layout) -> str:
    days = dict(layout.ttl_days).get(table)
    if days is None:
        return statement
    if not _TTL_DAYS.search(statement):
        raise DDLError(f"--ttl-days {table}: the table has no TTL to change")
    return _TTL_DAYS.sub(lambda m: f"{m.group(1)}{int(days)}{m.group(3)}", statement, count=1)


def _local_table(statement: str, table: str, layout: Layout, path: str, db: str) -> str:
    head = _CREATE_TABLE.match(statement)
    assert head is not None
    statement = statement.replace(
        head.group(0), f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {CLUSTER}\n(", 1)
    engine = _ENGINE.search(statement)
    if not engine:
        raise DDLError(f"{table}: no *MergeTree engine to replicate")
    statement = (statement[:engine.start()]
                 + replicated_engine(engine.group(1), engine.group(2), path)
                 + statement[engine.end():])
    return _with_ttl(statement, table, layout)


def _alter_operation(operation: str) -> bool | None:
    """Whether a placeable ALTER operation also applies to the Distributed table (None: the
    generator does not know how to place it)."""
    for pattern, distributed_too in _ALTER_OPERATIONS:
        if pattern.match(operation):
            return distributed_too
    return None


def alter_statements(statement: str, layout: Layout) -> list[str]:
    """``ALTER TABLE {db}.t ...`` on the cluster: where t's rows are, ``ON CLUSTER``.

    >>> alter_statements("ALTER TABLE {db}.alerts MODIFY SETTING x = 1", Layout())
    ["ALTER TABLE meshwatch.alerts ON CLUSTER '{cluster}' MODIFY SETTING x = 1"]
    >>> for s in alter_statements("ALTER TABLE {db}.edge_windows ADD COLUMN c String",
    ...                           Layout()):
    ...     print(s)
    ALTER TABLE meshwatch_local.edge_windows ON CLUSTER '{cluster}' ADD COLUMN c String
    ALTER TABLE meshwatch.edge_windows ON CLUSTER '{cluster}' ADD COLUMN c String
    """
    match = _ALTER.match(statement)
    assert match is not None
    table, operation = match.group(1), match.group(2).strip()
    distributed_too = _alter_operation(operation)
    if distributed_too is None:
        raise DDLError(f"cannot place this statement on a cluster (teach "
                       f"infra/clickhouse/generate_cluster_ddl.py about it):\n{statement[:200]}")
    if table in SHARDED:
        targets = [layout.local] + ([layout.database] if distributed_too else [])
    elif table in EVERYWHERE:
        targets = [layout.database]
    else:
        raise DDLError(f"ALTER TABLE {table}: the table is neither in SHARDED nor in EVERYWHERE")
    return [f"ALTER TABLE {db}.{table} ON CLUSTER {CLUSTER} {operation}" for db in targets]


def transform(migration: Migration, layout: Layout) -> list[str]:
    """The cluster statements for one migration, in an order that applies cleanly."""
    statements = migration.statements("{db}")  # keep the placeholder; resolved below
    tables: dict[str, str] = {}
    views: dict[str, tuple[str, str, str]] = {}
    out: list[str] = []
    for statement in statements:
        if match := _CREATE_TABLE.match(statement):
            tables[match.group(1)] = statement
        elif match := _CREATE_VIEW.match(statement):
            sources = set(_FROM.findall(match.group(3)))
            if len(sources) != 1:
                raise DDLError(f"{match.group(1)}: a view must read exactly one table")
            views[match.group(1)] = (match.group(2), sources.pop(), match.group(3))
        elif match := _ALTER.match(statement):
            if _alter_operation(match.group(2).strip()) is None:
                raise DDLError(
                    f"migration {migration.version:04d}: cannot place this statement on a "
                    "cluster (teach infra/clickhouse/generate_cluster_ddl.py about it):\n"
                    f"{statement[:200]}")
        else:
            raise DDLError(
                f"migration {migration.version:04d}: cannot place this statement on a cluster "
                f"(teach infra/clickhouse/generate_cluster_ddl.py about it):\n{statement[:200]}")
    check_sharding_keys(tables)
    check_view_targets(views)
    for statement in statements:
        if _ALTER.match(statement):
            out.extend(alter_statements(statement, layout))
            continue
        if match := _CREATE_TABLE.match(statement):
            table = match.group(1)
            if table in SHARDED:
                out.append(_local_table(statement, table, layout, SHARD_PATH, layout.local))
                out.append(
                    f"CREATE TABLE IF NOT EXISTS {layout.database}.{table} ON CLUSTER {CLUSTER}\n"
                    f"AS {layout.local}.{table}\n"
                    f"ENGINE = Distributed({CLUSTER}, '{layout.local}', '{table}', "
                    f"{SHARDED[table]})")
            elif table in EVERYWHERE:
                out.append(_local_table(statement, table, layout, EVERYWHERE_PATH,
                                        layout.database))
            else:
                raise DDLError(
                    f"table {table!r} (migration {migration.version:04d}) is neither in SHARDED "
                    "nor in EVERYWHERE: decide how it is placed on the cluster")
        else:
            match = _CREATE_VIEW.match(statement)
            assert match is not None
            name, target, select = match.groups()
            where = VIEW_TARGETS.get(name)
            if where not in ("local", "distributed"):
                raise DDLError(f"view {name!r}: add it to VIEW_TARGETS ('local' or "
                               "'distributed')")
            if views[name][1] not in SHARDED:
                raise DDLError(f"view {name!r} reads {views[name][1]}, which is not sharded")
            target_db = layout.local if where == "local" else layout.database
            body = _DB_REF.sub(lambda m: f"{layout.local}.{m.group(1)}", select)
            out.append(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {layout.local}.{name} "
                f"ON CLUSTER {CLUSTER}\nTO {target_db}.{target} AS\n{body}")
    return out


def generate(layout: Layout | None = None,
             migrations: list[Migration] | None = None) -> str:
    """The whole cluster DDL file."""
    layout = layout or Layout()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", layout.database):
        raise DDLError(f"database must be an identifier, got {layout.database!r}")
    migrations = available_migrations() if migrations is None else migrations
    for migration in migrations:
        if not re.fullmatch(r"[a-z0-9_]+", migration.name):
            raise DDLError(f"migration name {migration.name!r} is not [a-z0-9_]+")
    known = {t for m in migrations for s in m.statements("{db}")
             if (t := (_CREATE_TABLE.match(s) or [None, None])[1])}
    for table, _ in layout.ttl_days:
        if table not in known:
            raise DDLError(f"--ttl-days: unknown table {table!r}")
    lines = [
        "-- meshwatch ClickHouse cluster schema. GENERATED by",
        "-- infra/clickhouse/generate_cluster_ddl.py from meshwatch/store/migrations/*.sql:",
        "-- do not edit; change a migration (or the generator) and regenerate.",
        "--",
        "-- Needs on every node: a cluster in <remote_servers> named by the {cluster} macro,",
        "-- the {shard} and {replica} macros ({replica} unique across the whole cluster),",
        "-- and ClickHouse Keeper/ZooKeeper. Apply once, on any node:",
        "--   clickhouse-client --multiquery < infra/clickhouse/cluster.sql",
        f"-- meshwatch then points at database '{layout.database}' with",
        "-- store.retention_days: {} (TTLs live in the local tables below; see README.md).",
        "",
        f"CREATE DATABASE IF NOT EXISTS {layout.database} ON CLUSTER {CLUSTER};",
        f"CREATE DATABASE IF NOT EXISTS {layout.local} ON CLUSTER {CLUSTER};",
        "",
    ]
    for migration in migrations:
        lines.append(f"-- migration {migration.version:04d}_{migration.name}")
        lines.append("")
        for statement in transform(migration, layout):
            lines.append(statement.rstrip() + ";")
            lines.append("")
    lines += [
        "-- Applied-migration bookkeeping, replicated to every node. meshwatch's start-up",
        "-- migration reads it and skips every version recorded here.",
        f"CREATE TABLE IF NOT EXISTS {layout.database}.schema_migrations ON CLUSTER {CLUSTER}",
        SCHEMA_MIGRATIONS_COLUMNS,
        f"ENGINE = ReplicatedReplacingMergeTree('{EVERYWHERE_PATH}', '{{replica}}')",
        "ORDER BY version;",
        "",
    ]
    # Trusted identifiers only: a checked database name, migration names from file names that
    # match [a-z0-9_]+, integer versions.
    values = ", ".join(f"({m.version}, '{m.name}', now64(3))" for m in migrations)
    lines.append(f"INSERT INTO {layout.database}.schema_migrations "  # noqa: S608
                 f"(version, name, applied_at) VALUES {values};")
    return "\n".join(lines) + "\n"


def _ttl_arg(value: str) -> tuple[str, int]:
    table, sep, days = value.partition("=")
    if not sep or not days.isdigit() or int(days) < 1:
        raise argparse.ArgumentTypeError(f"expected TABLE=DAYS (days >= 1), got {value!r}")
    return table, int(days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="meshwatch",
                        help="meshwatch's database (store.database); local tables go to "
                             "<database>_local")
    parser.add_argument("--ttl-days", type=_ttl_arg, action="append", default=[],
                        metavar="TABLE=DAYS", help="override a table's retention (repeatable)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if --out differs from what would be generated")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.database):
        parser.error("--database must be an identifier")
    try:
        text = generate(Layout(args.database, tuple(args.ttl_days)))
    except DDLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
