"""`meshwatch db ...`: schema migrations, store status and the dead-letter store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meshwatch.cli.common import ConfigOption, fail, settings_from
from meshwatch.settings import Settings
from meshwatch.store import Store, StoreError

db_app = typer.Typer(help="Store administration: migrations, status, dead letters.",
                     no_args_is_help=True)

StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Embedded store directory (default: ./meshwatch-data)."),
]

TABLES = ("edge_events", "edge_windows", "edges", "nodes", "alerts", "alert_actions",
          "dead_letters", "checkpoints")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


def _open(config: Path | None, store_path: Path | None,
          migrate: bool = True) -> tuple[Store, Settings]:

    settings = settings_from(config, {"store": {"path": store_path}})
    try:
        return Store.open(settings.store, migrate=migrate), settings
    except StoreError as exc:
        fail(str(exc))


@db_app.command("migrate", help="Apply pending schema migrations (also done at start-up).")
def migrate(store_path: StoreOption = None, config: ConfigOption = None) -> None:
    store, settings = _open(config, store_path, migrate=False)
    if not settings.store.manage_schema:
        store.close()
        fail("store.manage_schema is false: this schema is managed outside meshwatch (apply "
             "infra/clickhouse/cluster.sql); `meshwatch db status` shows what is recorded")
    try:
        applied = store.migrate(settings.store.retention_days)
    finally:
        store.close()
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("schema is up to date")


@db_app.command("status", help="Applied migrations and row counts per table.")
def status(store_path: StoreOption = None, config: ConfigOption = None) -> None:
    from meshwatch.store.schema import applied_versions, available_migrations

    store, _ = _open(config, store_path)
    try:
        done = applied_versions(store.backend, store.db)
        table = Table(title=f"{store.description} (database {store.db})")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name in TABLES:
            table.add_row(name, f"{store.count(name):,}")
        Console().print(table)
        known = [m.version for m in available_migrations()]
        typer.echo(f"migrations applied: {sorted(done)} of {known}")
    finally:
        store.close()


@db_app.command("dead-letters", help="Show records that could not be parsed, newest first.")
def dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    store, _ = _open(config, store_path)
    try:
        rows = store.dead_letters(limit=limit)
    finally:
        store.close()
    for row in rows:
        payload = row.pop("payload")
        row["payload_preview"] = payload[:200].decode("utf-8", "backslashreplace")
        if as_json:
            typer.echo(json.dumps(row, default=str))
        else:
            where = f"{row['source']}" + (
                f"[{row['partition']}]@{row['offset']}" if row["partition"] is not None
                else f":{row['offset']}")
            typer.echo(f"{where}: {row['reason']}\n    {row['payload_preview']!r}")
    if not rows:
        typer.echo("no dead letters")
