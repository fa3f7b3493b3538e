"""Regenerate the README's reference sections from the code (see meshwatch/docs.py)."""

from pathlib import Path

from meshwatch.docs import render

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    README.write_text(render(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {README}")
