"""Paths and loaders shared by the infra/ validation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def yaml_docs(path: Path) -> list[Any]:
    """Every document of a (possibly multi-document) YAML file, empty documents dropped."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def yaml_doc(path: Path) -> Any:
    docs = yaml_docs(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, found {len(docs)}"
    return docs[0]


def infra_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def parse_meshwatch_args(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a meshwatch command line the way the CLI would, without running it: (command path,
    parameters). Raises the CLI's usage error for an unknown command or option, so every command
    line in infra/ is checked against the meshwatch it ships with."""
    import typer

    from meshwatch.cli.main import app

    command = typer.main.get_command(app)
    ctx = command.make_context("meshwatch", list(args))
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    while hasattr(command, "resolve_command"):  # a command group: descend into the subcommand
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    if rest:
        raise ValueError(f"unexpected arguments {rest} in meshwatch {' '.join(args)}")
    return ctx.command_path, ctx.params
