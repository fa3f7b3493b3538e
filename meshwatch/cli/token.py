"""`meshwatch token ...`: API tokens for the feed API and web UI (create, list, revoke).

Works on the configured store: the embedded directory (while no other meshwatch process holds
it) or a ClickHouse server. The secret is printed once, on stdout; only its hash is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshwatch.cli.common import ConfigOption, err_console, fail, settings_from

token_app = typer.Typer(
    help=(
        "API tokens. Every API endpoint but /healthz needs one (Authorization: Bearer ...), "
        "and the web UI logs in with one. Roles: [bold]viewer[/] reads; [bold]analyst[/] also "
        "acts on alerts and gives feedback; [bold]admin[/] also manages silences, tokens and "
        "deliveries; [bold]integration[/] may only post to /api/v1/integrations (Alertmanager)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Embedded store directory (default: from the config)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


@contextmanager
def _tokens(config: Path | None, store_path: Path | None) -> Iterator[Any]:
    from alerts.tokens import TokenStore
    from meshwatch.store import Store, StoreError, StoreUnavailable

    settings = settings_from(config, {"store": {"path": store_path}})
    try:
        store = Store.open(settings.store)
    except StoreUnavailable as exc:
        fail(f"{exc}\nhint: stop the meshwatch process that holds the store, or create the "
             "token through the API (POST /api/v1/tokens with an admin token)")
    except StoreError as exc:
        fail(str(exc))
    try:
        yield TokenStore(store)
    finally:
        store.close()


@token_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="viewer | analyst | admin | integration")],
    name: Annotated[str, typer.Option(help="Who or what holds it (shown in the audit trail).")],
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", help="Lifetime, e.g. 90d (default: until revoked).")] = None,
    as_json: JsonOption = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a token and print its secret (once: store it now).

    Example: meshwatch token create --role analyst --name ana
    """
    from alerts.tokens import ROLES
    from meshwatch.settings import parse_duration

    if role not in ROLES:
        fail(f"--role: one of {', '.join(ROLES)}")
    try:
        ttl = parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        fail(f"--expires-in: {exc}")
    with _tokens(config, store_path) as tokens:
        try:
            token, secret = tokens.create(name, role, created_by="cli", ttl=ttl)
        except ValueError as exc:
            fail(escape(str(exc)))
    if as_json:
        typer.echo(json.dumps({**token.to_dict(), "token": secret}, indent=2))
        return
    err_console.print(f"created {role} token {token.id} for {escape(name)}"
                      + (f", expires {token.to_dict()['expires_at']}" if ttl else "")
                      + ". The secret is shown once:")
    typer.echo(secret)


@token_app.command("list")
def list_tokens(
    all_tokens: Annotated[bool, typer.Option("--all", help="Include revoked and expired.")] = False,
    as_json: JsonOption = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """List tokens (never their secrets)."""
    with _tokens(config, store_path) as tokens:
        items = [t.to_dict() for t in tokens.list("api")]
    if not all_tokens:
        items = [t for t in items if t["state"] == "active"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(show_lines=False)
    for column in ("id", "name", "role", "state", "created", "expires", "created by"):
        table.add_column(column, overflow="fold")
    for t in items:
        table.add_row(t["id"], escape(t["name"]), t["role"], t["state"], t["created_at"],
                      t["expires_at"] or "never", escape(t["created_by"]))
    Console(highlight=False).print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `token list`).")],
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a token (its web sessions end with it)."""
    with _tokens(config, store_path) as tokens:
        token = tokens.get(token_id)
        if token is None or token.kind != "api":
            fail(f"no token with id {escape(token_id)!r}")
        tokens.revoke(token_id, by="cli")
    err_console.print(f"revoked token {token_id} ({escape(token.name)}); running API processes "
                      "stop accepting it within seconds")
