"""Stdout / JSON-lines file sink for the embedded mode: one notification per line.

The line is the same JSON the generic webhook posts (`Notification.to_dict`), so a script that
tails the file sees exactly what a webhook receiver would.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from alerts.sinks.base import SINKS, Notification, RetryableDelivery, Sink, SinkContext


@SINKS.register("file")
class FileSink(Sink):
    """Append each notification as one JSON line to ``path`` (``-``: standard output).

    >>> from datetime import UTC, datetime
    >>> sink = FileSink.from_config({"path": "-"}, SinkContext())
    >>> sink.send(Notification("nt-1", "ops", "ops/file/0", "g", {"detector": "x"}, (),
    ...                        datetime(2026, 1, 1, tzinfo=UTC), "http://feed"))
    ... # doctest: +ELLIPSIS
    {"version":"1","id":"nt-1","receiver":"ops",...,"alerts":[]}
    """

    name = "file"
    keys: ClassVar[frozenset[str]] = frozenset({"path"})
    required: ClassVar[frozenset[str]] = frozenset({"path"})

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> FileSink:
        cls.check_keys(config)
        if not isinstance(config["path"], str) or not config["path"]:
            raise ValueError("path: must be a file path or '-'")
        return cls(config["path"])

    def send(self, notification: Notification) -> None:
        line = json.dumps(notification.to_dict(), separators=(",", ":"), default=str) + "\n"
        if self.path == "-":
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        try:
            with Path(self.path).open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise RetryableDelivery(f"file {self.path}: {exc.strerror or exc}") from None

    def describe(self) -> str:
        return f"file {self.path}"
