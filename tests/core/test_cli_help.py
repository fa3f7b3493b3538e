"""Every command explains itself: --help works everywhere and no help text is eaten by markup."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from meshwatch.cli.main import COMMAND_MODULES, app

CLI_DIR = Path(__file__).resolve().parents[2] / "meshwatch" / "cli"


def _commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            out.extend(_commands(command, path))
    return out


def test_every_command_module_exists_and_registers():
    for name in COMMAND_MODULES:
        assert (CLI_DIR / f"{name}.py").is_file(), f"meshwatch/cli/{name}.py is missing"


def test_help_for_every_command():
    root = typer.main.get_command(app)
    runner = CliRunner()
    paths = _commands(root)
    assert len(paths) >= 25
    assert ("graph", "snapshot") in paths and ("db", "migrate") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_no_help_text_is_swallowed_as_rich_markup():
    # Rich drops unknown [tags]: "[default: x]" in a help string silently disappears.
    pattern = re.compile(r'help=[^)]*?(?<!\\)\[(default|required)[: ]')
    offenders = [f"{p.name}:{i}" for p in CLI_DIR.glob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
