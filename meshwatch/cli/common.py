"""Helpers shared by CLI commands: settings loading and operator-facing errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from meshwatch.settings import ConfigError, Settings, load_settings

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (also MESHWATCH_CONFIG). See README 'Configuration'.",
        exists=False,
        dir_okay=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error for the operator and exit without a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def check_topic_formats(settings: Settings) -> None:
    """Compile every per-topic Envoy format string now, so a bad one fails at start-up with its
    key named (``kafka.topics.<topic>.format_string``)."""
    from ingest.parsers.base import make_parser

    for name, topic in settings.kafka.topics.items():
        if topic.format_string:
            try:
                make_parser("envoy-text", format_string=topic.format_string)
            except ConfigError as exc:
                raise ConfigError(f"kafka.topics.{name}.format_string: {exc}") from None


def settings_from(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load settings or exit with the config error; also starts telemetry as configured."""
    from meshwatch.telemetry import get_telemetry

    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    get_telemetry(settings.telemetry.otlp_endpoint)
    return settings
