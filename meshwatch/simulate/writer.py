"""The output directory: one file per requested format, plus labels.json and mesh.json.

File names are part of the contract (the demo and the tests read them), so they live here
together with the per-file record counts the summary reports.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

FORMAT_FILES: dict[str, str] = {
    "envoy-json": "envoy-json.log",
    "envoy-text": "envoy-text.log",
    "otlp-json": "spans.otlp.json",
    "otlp-proto": "spans.otlp.pb",
}
FORMATS: tuple[str, ...] = tuple(FORMAT_FILES)
LABELS_FILE = "labels.json"
MESH_FILE = "mesh.json"


class OutputFiles:
    """Open output files by format, counting records and the seconds spent rendering each."""

    def __init__(self, out_dir: Path, formats: Iterable[str]) -> None:
        self.dir = out_dir
        self.formats = tuple(formats)
        unknown = [f for f in self.formats if f not in FORMAT_FILES]
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(unknown)} "
                             f"(known: {', '.join(FORMATS)})")
        out_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, BinaryIO] = {
            fmt: (out_dir / FORMAT_FILES[fmt]).open("wb") for fmt in self.formats
        }
        self.records: dict[str, int] = dict.fromkeys(self.formats, 0)
        self.seconds: dict[str, float] = dict.fromkeys(self.formats, 0.0)

    def __contains__(self, fmt: str) -> bool:
        return fmt in self._files

    def write(self, fmt: str, chunks: Iterable[bytes], count: int) -> None:
        self._files[fmt].writelines(chunks)
        self.records[fmt] += count

    def copy_from(self, fmt: str, paths: Iterable[Path], count: int) -> None:
        """Append whole files (rendered elsewhere) to ``fmt``'s output."""
        out = self._files[fmt]
        for path in paths:
            with path.open("rb") as part:
                shutil.copyfileobj(part, out)
        self.records[fmt] += count

    def timed(self, fmt: str, started: float) -> None:
        self.seconds[fmt] += time.perf_counter() - started

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def paths(self) -> dict[str, str]:
        return {fmt: FORMAT_FILES[fmt] for fmt in self.formats}


def write_json(path: Path, data: Any) -> None:
    """Pretty, key-order-stable JSON (labels and topology are read by people too)."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
