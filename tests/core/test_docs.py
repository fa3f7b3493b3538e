"""The README's reference sections are generated from the code and must be current."""

from __future__ import annotations

from pathlib import Path

from meshwatch.docs import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_sections_match_the_code():
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, (
        "README.md is out of date with the code: run `.venv/bin/python scripts/update_readme.py`")


def test_readme_names_the_two_setup_commands_and_ci_runs_one():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
