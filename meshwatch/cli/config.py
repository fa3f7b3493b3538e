"""`meshwatch config ...`: see and check the effective configuration before running."""

from __future__ import annotations

from typing import Any

import typer
import yaml

from meshwatch.cli.common import ConfigOption, check_topic_formats, fail, settings_from

config_app = typer.Typer(help="Show or check the effective configuration.", no_args_is_help=True)

_SECRET_KEYS = ("password", "secret", "token", "routing_key", "sasl_password")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if value and any(s in key.lower() for s in _SECRET_KEYS):
        return "***"
    return value


@config_app.command("show", help=(
    "Print the effective configuration (defaults < config file < MESHWATCH_* environment) as "
    "YAML, secrets redacted. The output is a valid config file to start from."))
def show(config: ConfigOption = None) -> None:
    settings = settings_from(config)
    data = settings.model_dump(mode="json")
    typer.echo(yaml.safe_dump(_redact(data), sort_keys=False))


@config_app.command("check", help=(
    "Validate the configuration the way start-up does (settings, detector configuration, "
    "format strings) and exit 0 if it is good, 2 with the offending key if not."))
def check(config: ConfigOption = None) -> None:
    from detectors.config import load_detectors
    from meshwatch.settings import ConfigError

    settings = settings_from(config)
    try:
        detectors = load_detectors(settings.detectors)
        check_topic_formats(settings)
    except ConfigError as exc:
        fail(str(exc))
    names = ", ".join(d.name for d in detectors)
    typer.echo(f"configuration is valid; detectors enabled: {names}")
