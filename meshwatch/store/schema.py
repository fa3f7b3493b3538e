"""Versioned schema migrations and per-table retention.

Migrations are numbered SQL files in ``migrations/`` (``0001_initial.sql``...), applied in order
at start-up and by ``meshwatch db migrate``; applied versions are recorded in
``schema_migrations`` so each runs once. Statements are written to be re-runnable
(``IF NOT EXISTS``) so a crash mid-migration is recovered by running it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from meshwatch.store.backend import Backend

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Table -> (TTL column expression) used to apply configured retention.
RETENTION_COLUMNS = {
    "edge_events": "ingested_at",
    "edge_windows": "ingested_at",
    "dead_letters": "toDateTime(received_at)",
    "alerts": "updated_at",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, database: str) -> list[str]:
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip().replace("{db}", database) for s in text.split(";") if s.strip()]


def available_migrations() -> list[Migration]:
    folder = resources.files("meshwatch.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def applied_versions(backend: Backend, database: str) -> set[int]:
    rows = backend.query_rows(f"SELECT version FROM {database}.schema_migrations FINAL")
    return {int(r["version"]) for r in rows}


def migrate(backend: Backend, database: str) -> list[Migration]:
    """Apply every migration not yet recorded; returns the ones applied now."""
    backend.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    backend.execute(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = applied_versions(backend, database)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements(database):
            backend.execute(statement)
        backend.execute(
            f"INSERT INTO {database}.schema_migrations VALUES "
            "({v:UInt32}, {n:String}, {t:DateTime64(3, 'UTC')})",
            {"v": migration.version, "n": migration.name,
             "t": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]},
        )
        applied.append(migration)
    return applied


def apply_retention(backend: Backend, database: str, retention_days: dict[str, int]) -> None:
    """Set each table's TTL to the configured number of days when it differs."""
    rows = backend.query_rows(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = {db:String}",
        {"db": database},
    )
    # A Distributed table has no TTL of its own (its local tables do, managed by cluster DDL).
    ddl = {r["name"]: r["create_table_query"] for r in rows if r["engine"] != "Distributed"}
    for table, days in retention_days.items():
        column = RETENTION_COLUMNS[table]
        if table not in ddl or f"toIntervalDay({days})" in ddl[table]:
            continue
        backend.execute(
            f"ALTER TABLE {database}.{table} MODIFY TTL {column} + INTERVAL {int(days)} DAY "
            "SETTINGS materialize_ttl_after_modify = 0"
        )
