"""`--alerts-out`: the alerts of a run as JSON lines, one line per alert in its latest state.

The file is rewritten atomically (temp file + rename) at each flush, so a reader never sees a
half-written line and a long run's file always reflects the current counts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from meshwatch.records import Alert


class AlertFileExport:
    """Keeps the latest state of every alert seen in this run and writes them out."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._alerts: dict[str, Alert] = {}
        self._dirty = False

    def update(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self._alerts[alert.id] = alert
            self._dirty = True

    def __len__(self) -> int:
        return len(self._alerts)

    def flush(self) -> None:
        if not self._dirty and self.path.exists():
            return
        ordered = sorted(self._alerts.values(), key=lambda a: (a.first_seen, a.id))
        directory = self.path.parent if str(self.path.parent) else Path(".")
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".alerts-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for alert in ordered:
                    out.write(json.dumps(alert.to_dict(), sort_keys=False, default=str) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
