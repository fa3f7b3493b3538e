"""Reference sections of the README generated from the code, so the docs cannot drift.

`scripts/update_readme.py` rewrites the README between ``<!-- name -->`` and ``<!-- /name -->``
markers; a test fails when the committed README differs from what the code generates.
"""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from meshwatch.settings import ENV_PREFIX, Settings

_SIMPLE = {"float": "number", "int": "integer", "str": "string", "bool": "boolean",
           "Path": "path", "NoneType": "null", "SecretStr": "secret"}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is None:
        name = getattr(annotation, "__name__", str(annotation))
        return _SIMPLE.get(name, name)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if str(origin) in ("typing.Literal",) or getattr(origin, "__name__", "") == "Literal":
        return " \\| ".join(repr(a) for a in get_args(annotation))
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if len(args) == 1:
        return _type_name(args[0])
    return " or ".join(_type_name(a) for a in args)


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, dict):
        if value and all(isinstance(v, BaseModel) for v in value.values()):
            value = {k: v.model_dump(exclude_none=True) for k, v in value.items()}
        return f"`{value}`" if value else "`{}`"
    return f"`{value}`"


def _is_duration(field: FieldInfo) -> bool:
    return any("parse_duration" in repr(m) for m in field.metadata)


def _model_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for key, sub in model.model_fields.items():
        annotation = sub.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_model_rows(annotation, f"{prefix}.{key}"))
            continue
        kind = "duration" if _is_duration(sub) else _type_name(annotation)
        desc = (sub.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}.{key}` | {kind} | {_default(sub)} | {desc} |")
    return rows


def config_reference_markdown() -> str:
    """A table per section: key, type, default, description."""
    lines: list[str] = [
        f"Every key can also be set as `{ENV_PREFIX}<SECTION>__<KEY>` (nested keys add "
        f"`__<KEY>`), e.g. `{ENV_PREFIX}ALERTS__DELIVERY__TIMEOUT=5s`.",
        "",
    ]
    for section, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            doc = (annotation.__doc__ or "").strip()
            lines.append(f"**`{section}`**" + (f" — {doc.splitlines()[0]}" if doc else ""))
            lines.append("")
            lines.append("| key | type | default | meaning |")
            lines.append("|---|---|---|---|")
            lines.extend(_model_rows(annotation, section))
            lines.append("")
        else:
            desc = field.description or ""
            lines.append(f"**`{section}`** ({_type_name(annotation)}, default "
                         f"{_default(field)}): {desc}")
            lines.append("")
    lines.append("Durations accept `90`, `90s`, `15m`, `2h`, `1d` or `250ms`.")
    return "\n".join(lines)


def cli_reference_markdown() -> str:
    """Every command and sub-command with its one-line help."""
    import typer

    from meshwatch.cli.main import app

    root = typer.main.get_command(app)
    rows: list[str] = ["| command | what it does |", "|---|---|"]

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix} {name}"
            text = (command.help or command.short_help or "").strip()
            first = re.split(r"(?<=\.)\s|\n\n", text, maxsplit=1)[0].replace("\n", " ")
            first = re.sub(r"\[/?[a-z ]+\]", "", first).replace("|", "\\|")
            rows.append(f"| `{path}` | {first} |")
            if hasattr(command, "commands"):  # a group (typer vendors its own click)
                walk(command, path)

    walk(root, "meshwatch")
    rows.append("")
    rows.append("Every command has `--help` with options and examples.")
    return "\n".join(rows)


def detectors_table_markdown() -> str:
    """Every registered detector with its family, input, default state, severity and MITRE
    ATT&CK ids, from the registry, the built-in config and the first docstring paragraph."""
    import inspect

    import detectors.catalog  # noqa: F401 - registers the built-ins
    from detectors.base import DETECTORS
    from detectors.config import default_config

    defaults = default_config()
    rows = ["| detector | family | reads | default | severity | MITRE ATT&CK | what it flags |",
            "|---|---|---|---|---|---|---|"]
    for name in sorted(DETECTORS.names()):
        cls = DETECTORS.get(name)
        if name not in defaults:
            continue  # a building block (e.g. the NAB value model), not an alerting detector
        config = defaults[name]
        state = "on" if config.get("enabled", True) else "opt-in"
        what = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        what = what.replace("``", "`").replace("|", "\\|")
        mitre = ", ".join(getattr(cls, "mitre", ()) or ())
        rows.append(f"| `{name}` | {cls.family} | {cls.consumes} | {state} | "
                    f"{config.get('severity', cls.default_severity)} | {mitre} | {what} |")
    return "\n".join(rows)


GENERATORS = {
    "detectors-table": detectors_table_markdown,
    "config-reference": config_reference_markdown,
    "cli-reference": cli_reference_markdown,
}


def render(readme: str) -> str:
    """The README with every generated section replaced by what the code says now."""
    for name, generate in GENERATORS.items():
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start not in readme or end not in readme:
            raise ValueError(f"README lacks the {start} ... {end} markers")
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{start}\n{generate()}\n{end}{tail}"
    return readme
