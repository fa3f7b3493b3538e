"""`meshwatch serve`: the feed API and web UI over a store, without processing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshwatch.cli.common import ConfigOption, fail, settings_from


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        help=(
            "Serve the alert feed API and web UI over the configured store. With a ClickHouse "
            "server this is the API process next to the pipeline workers; with an embedded store "
            "it lets you browse a store that no pipeline is using (one process per store "
            "directory: to serve while processing, use `meshwatch run --serve`).\n\n"
            "Example: meshwatch serve --config meshwatch.yaml --host 0.0.0.0 --port 8080"
        ),
    )(serve)


def serve(
    store_path: Annotated[
        Path | None,
        typer.Option("--store", help="Embedded store directory (default: ./meshwatch-data)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: 8080).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Also serve /metrics, /livez, /readyz without authentication on this port (for "
             "Prometheus and probes; the API's own /metrics needs a viewer token).")] = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.cli.run import serve_api
    from meshwatch.store import Store, StoreError

    settings = settings_from(config, {"store": {"path": store_path},
                                      "api": {"host": host, "port": port}})
    try:
        store = Store.open(settings.store)
    except StoreError as exc:
        fail(str(exc))
    health = None
    if metrics_port is not None:
        from meshwatch.health import HealthServer

        def ready() -> bool:
            try:
                store.query("SELECT 1 AS ok")
            except StoreError:
                return False
            return True

        health = HealthServer("0.0.0.0", metrics_port, lambda: True, ready).start()  # noqa: S104
    try:
        serve_api(settings, store)
    finally:
        if health is not None:
            health.stop()
