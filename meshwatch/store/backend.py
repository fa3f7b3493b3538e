"""Two ways to reach ClickHouse behind one small interface: embedded chdb or a server.

Both speak the same SQL, bind parameters the same way (``{name:Type}`` server-side binding) and
insert JSONEachRow bytes, so everything above this module is backend-agnostic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import msgspec
import pandas as pd

_JSON_LINES = msgspec.json.Decoder()


class StoreError(RuntimeError):
    """The store could not do what was asked; the message says what and where."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (locked directory, server down): retry later."""


class Backend(Protocol):
    """What the store needs from a ClickHouse connection."""

    description: str

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        ...

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame: ...

    def insert_json_lines(self, table: str, data: bytes,
                          columns: Sequence[str] | None = None) -> None:
        """Insert JSON lines: objects (JSONEachRow), or arrays in ``columns`` order
        (JSONCompactEachRow, cheaper to encode and to parse for wide hot tables)."""
        ...

    def close(self) -> None: ...


def _decode_rows(raw: bytes) -> list[dict[str, Any]]:
    return [_JSON_LINES.decode(line) for line in raw.splitlines() if line]


class ChdbBackend:
    """In-process ClickHouse on an on-disk directory.

    chdb allows one process per directory, so the pipeline and the API share this object; a
    lock serializes threads (the API's worker threads and the pipeline thread).
    """

    def __init__(self, path: Path | str) -> None:
        from chdb import session

        self.path = Path(path)
        self.description = f"embedded ClickHouse at {self.path}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store directory {self.path}: {exc.strerror}") from None
        if not self.path.is_dir():
            raise StoreError(f"store path {self.path} is not a directory")
        try:
            opened = session.Session(str(self.path))
        except Exception as exc:  # chdb raises a bare RuntimeError for a locked/corrupt dir
            raise StoreUnavailable(
                f"cannot open {self.description}: {exc}. Is another meshwatch process using "
                "this directory? (embedded mode allows one process per store directory)"
            ) from None
        self._attach(opened)

    @classmethod
    def over_session(cls, opened: Any, path: Path, description: str) -> ChdbBackend:
        """A backend over a chdb session opened elsewhere (e.g. with a config file, which a
        plain directory path cannot pass): same SQL, binding and insert paths."""
        backend = cls.__new__(cls)
        backend.path = path
        backend.description = description
        backend._attach(opened)
        return backend

    def _attach(self, opened: Any) -> None:
        self._lock = threading.RLock()
        #: The server's failed-insert count as of the last streaming insert (see
        #: `insert_json_lines`); None: read it afresh.
        self._failed_seen: int | None = None
        self._session = opened

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> Any:
        bound = {k: _chdb_param(v) for k, v in params.items()} if params else None
        with self._lock:
            try:
                return self._session.query(sql, fmt, params=bound)
            except Exception as exc:
                self._failed_seen = None  # a failed INSERT ... SELECT counts too
                raise StoreError(f"{self.description}: {_first_line(exc)}") from None

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return _decode_rows(self._run(sql, "JSONEachRow", params).bytes())

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._run(sql, "DataFrame", params)

    def insert_json_lines(self, table: str, data: bytes,
                          columns: Sequence[str] | None = None) -> None:
        if not data:
            return
        fmt = "JSONCompactEachRow" if columns else "JSONEachRow"
        target = f"{table} ({', '.join(columns)})" if columns else table
        with self._lock:
            if self._failed_seen is None:
                self._failed_seen = self._failed_inserts()
            try:
                with self._session.send_insert(f"INSERT INTO {target}", fmt) as ins:
                    ins.append(data)
                    ins.finish()
            except Exception as exc:
                self._failed_seen = None  # the server counted this one: re-read it next time
                raise StoreError(f"{self.description}: insert into {table}: "
                                 f"{_first_line(exc)}") from None
            # chdb's streaming insert can fail without raising (measured with chdb 4.4 on a
            # full disk: NOT_ENOUGH_SPACE, finish() reports every row written, none stored).
            # The server still counts the failure: then the same rows go through a plain
            # INSERT, which raises the real error, or stores them if the cause has passed.
            failed, self._failed_seen = self._failed_seen, self._failed_inserts()
            if self._failed_seen > failed:
                self._failed_seen = None
                try:
                    self._session.query(f"INSERT INTO {target} FORMAT {fmt}\n"
                                        + data.decode("utf-8"), "CSV")
                except Exception as exc:
                    raise StoreError(f"{self.description}: insert into {table}: "
                                     f"{_first_line(exc)}") from None

    def _failed_inserts(self) -> int:
        """The server's FailedInsertQuery counter (0 before the first failure)."""
        raw = self._session.query("SELECT value FROM system.events "
                                  "WHERE event = 'FailedInsertQuery'", "CSV").bytes()
        return int(raw.strip() or 0)

    def close(self) -> None:
        # Closing a broken session must not mask the error that broke it.
        with self._lock, contextlib.suppress(Exception):
            self._session.close()


class ServerBackend:
    """A ClickHouse server over HTTP(S) through clickhouse-connect."""

    def __init__(self, url: str, user: str, password: str, verify_tls: bool = True) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors: tuple[type[BaseException], ...] = (ClickHouseError, OSError)
        parsed = urlparse(url)
        self.description = f"ClickHouse server {parsed.scheme}://{parsed.hostname}:{parsed.port}"
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname,
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=user,
                password=password,
                secure=parsed.scheme == "https",
                verify=verify_tls,
                connect_timeout=10,
                send_receive_timeout=120,
                settings={"date_time_input_format": "best_effort"},
            )
        except self._errors as exc:
            raise StoreUnavailable(f"cannot connect to {self.description}: "
                                   f"{_first_line(exc)}") from None

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            message = _first_line(exc)
            kind = StoreUnavailable if _looks_unavailable(message) else StoreError
            raise kind(f"{self.description}: {what}: {message}") from None

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._guard("command", self._client.command, sql, parameters=params or None)

    def query_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raw = self._guard("query", self._client.raw_query, sql, parameters=params or None,
                          fmt="JSONEachRow")
        return _decode_rows(raw)

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._guard("query", self._client.query_df, sql, parameters=params or None)

    def insert_json_lines(self, table: str, data: bytes,
                          columns: Sequence[str] | None = None) -> None:
        if data:
            self._guard(f"insert into {table}", self._client.raw_insert, table,
                        column_names=list(columns) if columns else None, insert_block=data,
                        fmt="JSONCompactEachRow" if columns else "JSONEachRow")

    def close(self) -> None:
        self._client.close()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _chdb_param(value: Any) -> Any:
    r"""chdb takes parameter values as ClickHouse text; arrays need their literal form.

    A String value is read in the escaped (TSV) form, like a server's HTTP parameters: a raw
    tab or newline is refused (an API path parameter could carry one: that was a 503) and a
    backslash sequence would be unescaped, so both are escaped here.

    >>> _chdb_param("a\tb\nc\\n"), _chdb_param(["x'y"]), _chdb_param(True)
    ('a\\tb\\nc\\\\n', "['x\\'y']", 1)
    """
    if isinstance(value, list | tuple | set):
        items = [_quote(v) if isinstance(v, str) else str(_chdb_param(v)) for v in value]
        return "[" + ",".join(items) + "]"
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _looks_unavailable(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("connection", "timed out", "timeout", "refused",
                                            "unreachable", "name or service"))
