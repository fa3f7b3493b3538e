"""`meshwatch`: the single entry point. Each command group lives in its own module."""

from __future__ import annotations

import importlib

import typer

from meshwatch import __version__

app = typer.Typer(
    name="meshwatch",
    help=(
        "Catch attackers inside a service mesh: turn Envoy access logs and OpenTelemetry spans "
        "into a service graph, score it for lateral movement and plaintext (non-mTLS) calls, "
        "store it in ClickHouse and raise alerts with runbooks."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Modules under meshwatch.cli that define `register(app)`; order is the order in --help.
COMMAND_MODULES = [
    "demo", "run", "serve", "parse", "simulate", "produce", "graph", "eval", "bench", "silence",
    "token", "config", "db",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """meshwatch command line."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"meshwatch.cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
