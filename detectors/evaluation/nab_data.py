"""Load a NAB corpus: the data folder, the label windows and the scoring profiles.

Everything is an argument (the data folder, the labels file, the profiles file), so the same code
scores the 28-file subset shipped with the project and the full 58-file corpus. Loading problems
raise `NabDataError` with a message an operator can act on, never a bare KeyError.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROFILE_NAMES: tuple[str, ...] = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


class NabDataError(ValueError):
    """A NAB data folder, labels file or profiles file that cannot be used as given."""


@dataclass(frozen=True)
class CostMatrix:
    """The weights of one NAB application profile (``tnWeight`` plays no part in scoring)."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class NabSeries:
    """One NAB data file with its label windows as inclusive row-index ranges."""

    key: str  # "<category>/<file>.csv", the key of the labels file
    timestamps: np.ndarray  # datetime64[ns]
    values: np.ndarray  # float64
    windows: tuple[tuple[int, int], ...]

    @property
    def category(self) -> str:
        return self.key.split("/", 1)[0] if "/" in self.key else ""

    def __len__(self) -> int:
        return len(self.values)


def load_labels(path: Path) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Read ``combined_windows.json``: ``{"<cat>/<file>.csv": [[start, end], ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise NabDataError(f"labels file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NabDataError(f"labels file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise NabDataError(f"labels file {path} must map '<category>/<file>.csv' to windows")
    labels: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for key, windows in raw.items():
        if not isinstance(windows, list):
            raise NabDataError(f"labels for {key!r} in {path} must be a list of [start, end]")
        parsed: list[tuple[pd.Timestamp, pd.Timestamp]] = []
        for window in windows:
            if not (isinstance(window, list | tuple) and len(window) == 2):
                raise NabDataError(f"window {window!r} of {key!r} in {path} is not [start, end]")
            try:
                start, end = pd.Timestamp(window[0]), pd.Timestamp(window[1])
            except (TypeError, ValueError) as exc:
                raise NabDataError(f"window {window!r} of {key!r}: bad timestamp ({exc})") from None
            if end < start:
                raise NabDataError(f"window {window!r} of {key!r} ends before it starts")
            parsed.append((start, end))
        parsed.sort()
        for (_, prev_end), (start, _) in itertools.pairwise(parsed):
            if start <= prev_end:
                raise NabDataError(f"windows of {key!r} in {path} overlap")
        labels[key] = parsed
    return labels


def _window_rows(
    key: str, timestamps: np.ndarray, windows: list[tuple[pd.Timestamp, pd.Timestamp]]
) -> tuple[tuple[int, int], ...]:
    # NAB's labels put window edges on rows of the file; searchsorted also copes with edges
    # that fall between rows (first row at/after start, last row at/before end).
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        left = int(np.searchsorted(timestamps, np.datetime64(start), side="left"))
        right = int(np.searchsorted(timestamps, np.datetime64(end), side="right")) - 1
        if left > right or left >= len(timestamps):
            raise NabDataError(f"window {start} .. {end} of {key!r} contains no row of the file")
        rows.append((left, right))
    return tuple(rows)


def load_series(
    path: Path, key: str, windows: list[tuple[pd.Timestamp, pd.Timestamp]]
) -> NabSeries:
    """Read one ``timestamp,value`` CSV and place its windows on row indices."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise NabDataError(f"cannot read {path}: {exc}") from None
    if "timestamp" not in frame.columns or "value" not in frame.columns:
        raise NabDataError(f"{path} must have the columns timestamp,value")
    try:
        timestamps = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
        values = pd.to_numeric(frame["value"]).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NabDataError(f"{path}: bad timestamp or value ({exc})") from None
    if len(values) == 0:
        raise NabDataError(f"{path} has no rows")
    if np.any(np.diff(timestamps) < np.timedelta64(0, "ns")):
        raise NabDataError(f"{path}: timestamps are not in order")
    return NabSeries(key, timestamps, values, _window_rows(key, timestamps, windows))


def load_corpus(data_dir: Path, labels_path: Path) -> list[NabSeries]:
    """All ``<category>/<file>.csv`` under ``data_dir`` (sorted by key), each with its windows.

    Every data file must have an entry in the labels (NAB's rule: an unlabelled file cannot be
    scored); label entries without a data file are ignored so a subset can share a labels file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NabDataError(f"data folder not found: {data_dir}")
    labels = load_labels(labels_path)
    paths = sorted(p for p in data_dir.rglob("*.csv") if p.is_file())
    if not paths:
        raise NabDataError(f"no <category>/<file>.csv files under {data_dir}")
    corpus: list[NabSeries] = []
    missing: list[str] = []
    for path in paths:
        key = path.relative_to(data_dir).as_posix()
        if key not in labels:
            missing.append(key)
            continue
        corpus.append(load_series(path, key, labels[key]))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise NabDataError(f"{len(missing)} data file(s) have no entry in {labels_path}: {shown}")
    return corpus


def load_profiles(path: Path) -> dict[str, CostMatrix]:
    """Read NAB's ``profiles.json`` (profile -> {"CostMatrix": {tpWeight, fpWeight, fnWeight}})."""
    path = Path(path)
    if not path.is_file():
        raise NabDataError(f"profiles file not found: {path}")
    try:
        raw = json.loads(path.read_text())
        return {
            name: CostMatrix(
                tp_weight=float(body["CostMatrix"]["tpWeight"]),
                fp_weight=float(body["CostMatrix"]["fpWeight"]),
                fn_weight=float(body["CostMatrix"]["fnWeight"]),
            )
            for name, body in raw.items()
        }
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NabDataError(f"profiles file {path} is malformed: {exc!r}") from None


def load_scoreboard(path: Path) -> dict[str, dict[str, float]]:
    """Read NAB's ``final_results.json``: detector -> profile -> normalized score."""
    try:
        raw = json.loads(Path(path).read_text())
        return {
            str(det): {str(p): float(s) for p, s in scores.items()}
            for det, scores in raw.items()
            if isinstance(scores, Mapping)
        }
    except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise NabDataError(f"scoreboard {path} is malformed: {exc!r}") from None
