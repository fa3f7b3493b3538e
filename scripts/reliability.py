#!/usr/bin/env python3
"""Run the fault and abuse suite (tests/faults) and write its measured table into
docs/reliability.md.

Each fault scenario records what it measured (records in, records stored, alerts,
notifications, ...) through the ``measured`` fixture; only rows of passing tests are a result.
Usage, from the repository root (or ``make reliability``)::

    .venv/bin/python scripts/reliability.py            # run, then rewrite the table
    .venv/bin/python scripts/reliability.py --check    # run; exit 1 if a scenario failed

The table sits between the ``<!-- reliability-table -->`` markers; the prose around it is
hand-written and stays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- reliability-table -->", "<!-- /reliability-table -->"
COLUMNS = (
    ("records_in", "records in"),
    ("records_stored", "stored"),
    ("windows", "windows"),
    ("requests", "requests"),
    ("alerts", "alerts"),
    ("notifications", "notifications"),
    ("dead_letters", "dead letters"),
)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict[str, Any]], pytest_status: int) -> str:
    """The markdown table (plus a provenance line) for ``rows``."""
    head = ["scenario", *(title for _, title in COLUMNS), "result", "s", "passed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        result = row.get("result") or ""
        if row.get("detail"):
            result = f"{result} ({row['detail']})" if result else row["detail"]
        values = [row.get("scenario"), *(row.get(key) for key, _ in COLUMNS), result,
                  row.get("seconds"), "yes" if row.get("passed") else "**no**"]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines.append("")
    lines.append(f"Measured {when} on {platform.machine()} with {os.cpu_count()} CPUs, Python "
                 f"{platform.python_version()}; pytest exit status {pytest_status}.")
    return "\n".join(lines)


def write(table: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: markers {START} / {END} not found")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{START}\n{table}\n{END}{after}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="Do not rewrite the document; exit 1 if any scenario failed.")
    parser.add_argument("pytest_args", nargs="*", help="Extra pytest arguments.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rows.json"
        env = {**os.environ, "MESHWATCH_RELIABILITY_REPORT": str(report)}
        status = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/faults",  # noqa: S603
                                  *args.pytest_args], cwd=REPO, env=env)
        rows = json.loads(report.read_text()) if report.exists() else []
    if not rows:
        print("no measured rows: did tests/faults run?", file=sys.stderr)
        return 1
    table = render(rows, status)
    if args.check:
        print(table)
    else:
        write(table)
        print(f"wrote {len(rows)} rows to {DOC.relative_to(REPO)}")
    return 0 if status == 0 and all(r.get("passed") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
