#!/usr/bin/env python3
"""Regenerate infra/constraints.txt: exact pins of meshwatch's dependency closure.

The pins are the versions installed in the environment this runs in (the project's virtualenv,
where the test suite passed), limited to what ``meshwatch[dev]`` (the environment the tests
run in) needs, directly or transitively:
unlike ``pip freeze``, tools someone installed into the same virtualenv by hand (notebooks,
profilers) do not end up in the image's constraints. Usage, from the repository root::

    .venv/bin/python infra/freeze_constraints.py            # rewrite infra/constraints.txt
    .venv/bin/python infra/freeze_constraints.py --stdout

tests/infra/test_image_and_api.py checks that every runtime and dev dependency in
pyproject.toml is pinned here within its declared range.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

OUTPUT = Path(__file__).resolve().parent / "constraints.txt"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
ROOT = "meshwatch"
EXTRAS = ("dev",)
HEADER = """\
# Pinned versions for the meshwatch image (infra/Dockerfile: pip wheel --constraint).
# The dependency closure of meshwatch[dev] as installed where the test suite passed
# (not a pip freeze: tools installed into the virtualenv by hand stay out); regenerate
# after dependency changes with:
#   .venv/bin/python infra/freeze_constraints.py
# tests/infra checks every pyproject dependency is pinned here within its declared range.
"""


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(requirement.marker.evaluate({**environment, "extra": extra})
               for extra in (extras or {""}))


def root_requirements(extras: tuple[str, ...] = EXTRAS) -> list[Requirement]:
    """meshwatch's own requirements, from pyproject.toml (not from the installed metadata,
    which is only as new as the last `pip install -e`)."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(spec) for spec in specs]


def closure(extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Installed distribution name -> version for everything ``meshwatch[extras]`` requires."""
    found: dict[str, str] = {}
    pending = [(r.name, set(r.extras)) for r in root_requirements(extras)
               if r.marker is None or r.marker.evaluate(default_environment())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, wanted_extras = pending.pop()
        key = (canonicalize_name(name), frozenset(wanted_extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is required but not installed here "
                             "(run: .venv/bin/pip install -e '.[dev]')") from None
        if canonicalize_name(dist.metadata["Name"]) != canonicalize_name(ROOT):
            found[dist.metadata["Name"]] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if _wanted(requirement, wanted_extras):
                pending.append((requirement.name, set(requirement.extras)))
    return found


def render(pins: dict[str, str]) -> str:
    lines = [f"{name}=={version}" for name, version in sorted(pins.items(),
                                                                key=lambda i: i[0].lower())]
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    text = render(closure())
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
