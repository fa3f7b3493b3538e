"""A fault-injecting wrapper around a REAL store backend.

The failure is what is simulated, nothing else: while `down` (or a write budget is spent),
every call raises the error a real outage raises; otherwise it forwards to the wrapped chdb
backend unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from meshwatch.store import StoreError, StoreUnavailable
from meshwatch.store.backend import Backend


class FaultyBackend:
    """Forwards to ``inner`` unless an outage is on; counts what it refused."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.description = inner.description
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.refused = 0
        self.writes = 0
        #: Raise this (instead of StoreUnavailable) on writes while an outage is on.
        self.write_error: type[StoreError] = StoreUnavailable
        self.message = "connection refused (injected outage)"

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def end_outage(self) -> None:
        with self._lock:
            self._down_until = 0.0

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _check(self, write: bool = False) -> None:
        if self.down:
            self.refused += 1
            error = self.write_error if write else StoreUnavailable
            raise error(f"{self.description}: {self.message}")

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._check()
        self.inner.execute(sql, params)

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._check()
        return self.inner.query_rows(sql, params)

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        self._check()
        return self.inner.query_df(sql, params)

    def insert_json_lines(self, table: str, data: bytes,
                          columns: Sequence[str] | None = None) -> None:
        self._check(write=True)
        self.inner.insert_json_lines(table, data, columns)
        self.writes += 1

    def close(self) -> None:
        self.inner.close()
