"""`meshwatch silence ...`: create, list and expire silences (Alertmanager-style matchers).

Works on the store directly, or through a running meshwatch API with ``--api`` (needed in
embedded mode while another meshwatch process holds the store directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshwatch.cli.common import ConfigOption, fail, settings_from

silence_app = typer.Typer(
    help=(
        "Mute alerts for a while. Alerts a silence matches are stored as [bold]suppressed[/] "
        "(still in the feed) and are not notified; when the silence ends they notify again."
        "\n\nMatchers use Alertmanager syntax on alert labels: =, !=, =~ (regex), !~. Labels: "
        "alertname/detector, severity, status, src_namespace, src_workload, src_principal, "
        "dst_namespace, dst_service, dst_workload, fingerprint, mitre, plus the alert's own."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Embedded store directory (default: from the config)."),
]
ApiOption = Annotated[
    str | None,
    typer.Option("--api", help="Use a running meshwatch API (e.g. http://127.0.0.1:8080) "
                               "instead of opening the store."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API token for --api (default: $MESHWATCH_TOKEN); silences "
                                 "need an admin token to change, a viewer token to list.",
                 show_default=False),
]


def register(app: typer.Typer) -> None:
    app.add_typer(silence_app, name="silence")


@contextmanager
def _silences(config: Path | None, store_path: Path | None) -> Iterator[Any]:
    from alerts.silences import SilenceStore
    from meshwatch.store import Store, StoreError, StoreUnavailable

    settings = settings_from(config, {"store": {"path": store_path}})
    try:
        store = Store.open(settings.store)
    except StoreUnavailable as exc:
        fail(f"{exc}\nhint: while a meshwatch process holds the store, use --api URL")
    except StoreError as exc:
        fail(str(exc))
    try:
        yield SilenceStore(store)
    finally:
        store.close()


def _api(method: str, url: str, token: str | None,
         body: dict[str, Any] | None = None) -> Any:
    import httpx

    from meshwatch.settings import env_flag

    token = token or env_flag("MESHWATCH_TOKEN")
    if not token:
        fail("--api needs a token: --token or MESHWATCH_TOKEN (meshwatch token create)")
    try:
        response = httpx.request(method, url, json=body, timeout=10.0,
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        fail(f"cannot reach the meshwatch API: {type(exc).__name__}: {exc}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        fail(f"API answered {response.status_code}: {escape(str(detail))}")
    return response.json()


def _print(items: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(show_lines=False)
    for column in ("id", "state", "matchers", "ends", "created by", "comment"):
        table.add_column(column, overflow="fold")
    for s in items:
        table.add_row(s["id"], s["state"], escape(", ".join(s["matchers"])), s["ends_at"],
                      escape(s["created_by"]), escape(s["comment"]))
    Console(highlight=False).print(table)


def _parse_time(value: str | None, option: str) -> datetime | None:
    from meshwatch.records import parse_ts

    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError:
        fail(f"{option}: not an RFC 3339 time: {value!r} (e.g. 2026-03-01T18:00:00Z)")


@silence_app.command("create")
def create(
    matcher: Annotated[list[str], typer.Option(
        "--matcher", "-m", show_default=False,
        help="Label matcher, repeatable; all must match. E.g. 'detector=plaintext_edge', "
             "'dst_namespace=~pay.*', 'severity!=info'.")],
    comment: Annotated[str, typer.Option(help="Why (ticket, maintenance window ...).")],
    creator: Annotated[str, typer.Option(help="Who is silencing (name or e-mail).")],
    duration: Annotated[str | None, typer.Option(
        help="How long from the start: 30m, 2h, 1d ... (or --ends-at).")] = None,
    ends_at: Annotated[str | None, typer.Option(help="End time, RFC 3339.")] = None,
    starts_at: Annotated[str | None, typer.Option(
        help="Start time, RFC 3339 (default: now).")] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a silence; alerts it matches are suppressed right away.

    Example:

      meshwatch silence create -m detector=plaintext_edge -m 'dst_namespace=~pay.*'
      --duration 2h --creator ana --comment 'CHG-1234 db migration'
    """
    from alerts.matchers import parse_matchers
    from meshwatch.settings import parse_duration

    if (duration is None) == (ends_at is None):
        fail("give exactly one of --duration or --ends-at")
    try:
        parse_matchers(matcher)
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        fail(escape(f"--matcher{exc}" if str(exc).startswith("[") else str(exc)))
    start, end = _parse_time(starts_at, "--starts-at"), _parse_time(ends_at, "--ends-at")
    if api:
        body = {"matchers": matcher, "created_by": creator, "comment": comment,
                "duration": duration, "starts_at": starts_at, "ends_at": ends_at}
        _print([_api("POST", f"{api.rstrip('/')}/api/v1/silences", token, body)], as_json)
        return
    with _silences(config, store_path) as silences:
        try:
            silence = silences.create(matcher, created_by=creator, comment=comment,
                                      duration=seconds, starts_at=start, ends_at=end)
        except ValueError as exc:
            fail(escape(str(exc)))
        _print([silence.to_dict()], as_json)


@silence_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(
        help="Only silences in this state: active, pending or expired.")] = None,
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """List silences, newest first."""
    if state not in (None, "active", "pending", "expired"):
        fail(f"--state: expected active, pending or expired, got {state!r}")
    if api:
        query = f"?state={state}" if state else ""
        _print(_api("GET", f"{api.rstrip('/')}/api/v1/silences{query}", token)["items"], as_json)
        return
    with _silences(config, store_path) as silences:
        _print([s.to_dict() for s in silences.list(state)], as_json)  # type: ignore[arg-type]


@silence_app.command("expire")
def expire(
    silence_id: Annotated[str, typer.Argument(metavar="ID", help="The silence id (sil-...).")],
    api: ApiOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """End a silence now; the alerts it suppressed open again and notify."""
    if api:
        _print([_api("DELETE", f"{api.rstrip('/')}/api/v1/silences/{silence_id}", token)], as_json)
        return
    with _silences(config, store_path) as silences:
        silence = silences.expire(silence_id)
        if silence is None:
            fail(f"no silence with id {silence_id!r}")
        _print([silence.to_dict()], as_json)
