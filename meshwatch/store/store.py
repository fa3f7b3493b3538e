"""The store: one interface over ClickHouse for everything meshwatch keeps.

Writes are idempotent (deterministic keys on Replacing/Aggregating engines), so a replay after a
crash rewrites the same rows instead of adding new ones. Reads that must be exact use ``FINAL``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from meshwatch.records import EDGE_EVENT_FIELDS, Alert, EdgeEvent, ParseFailure, format_ts
from meshwatch.settings import StoreSettings
from meshwatch.store import schema
from meshwatch.store.backend import Backend, ChdbBackend, ServerBackend, StoreError

_ENCODER = msgspec.json.Encoder()
_EVENT_COLUMNS = ("event_id", *EDGE_EVENT_FIELDS, "edge_src", "edge_dst", "record_origin")


def ch_ts(ts: datetime) -> str:
    """A timestamp as ClickHouse's DateTime64 parser wants it in JSONEachRow and parameters.

    The year is always four digits (``strftime("%Y")`` gives ``1`` for year 1, which
    ClickHouse refuses in one input format and reads as 2001 in another).

    >>> ch_ts(datetime(1, 1, 1, tzinfo=UTC)), ch_ts(datetime(2026, 3, 1, 10, 0, 0, 123456))
    ('0001-01-01 00:00:00.000', '2026-03-01 10:00:00.123')
    """
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return f"{ts.year:04d}-" + ts.strftime("%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def event_id(origin: str, index: int = 0) -> str:
    """Deterministic id of the ``index``-th event decoded from one raw record."""
    return hashlib.blake2b(f"{origin}#{index}".encode(), digest_size=12).hexdigest()


class Store:
    """ClickHouse-backed storage for events, windows, alerts, dead letters and checkpoints."""

    def __init__(self, backend: Backend, database: str = "meshwatch") -> None:
        self.backend = backend
        self.db = database

    @classmethod
    def open(cls, settings: StoreSettings, migrate: bool = True) -> Store:
        """Connect to the configured backend and bring the schema up to date."""
        backend: Backend
        if settings.url:
            backend = ServerBackend(settings.url, settings.user, settings.password,
                                    settings.verify_tls)
        else:
            backend = ChdbBackend(settings.path)
        store = cls(backend, settings.database)
        if migrate and settings.manage_schema:
            store.migrate(settings.retention_days)
        elif migrate:
            store.check_schema()
        return store

    @property
    def description(self) -> str:
        return self.backend.description

    def migrate(self, retention_days: dict[str, int] | None = None) -> list[schema.Migration]:
        applied = schema.migrate(self.backend, self.db)
        if retention_days:
            schema.apply_retention(self.backend, self.db, retention_days)
        return applied

    def check_schema(self) -> None:
        """Fail unless every migration is recorded (for externally managed cluster schemas)."""
        try:
            done = schema.applied_versions(self.backend, self.db)
        except StoreError as exc:
            raise StoreError(f"{self.description}: schema not found ({exc}); apply "
                             "infra/clickhouse/cluster.sql or set store.manage_schema") from None
        missing = [m for m in schema.available_migrations() if m.version not in done]
        if missing:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            raise StoreError(f"{self.description}: migrations not applied: {names} "
                             "(store.manage_schema is false: apply them to the cluster first)")

    def close(self) -> None:
        self.backend.close()

    # -- generic --------------------------------------------------------------------------

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query; ``{db}`` in the SQL is the meshwatch database."""
        return self.backend.query_rows(sql.replace("{db}", self.db), params)

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.backend.query_df(sql.replace("{db}", self.db), params)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.backend.execute(sql.replace("{db}", self.db), params)

    def insert_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        data = _ENCODER.encode_lines(list(rows))
        self.backend.insert_json_lines(f"{self.db}.{table}", data)
        return data.count(b"\n")

    def count(self, table: str, final: bool = True) -> int:
        rows = self.query(f"SELECT count() AS n FROM {{db}}.{table}{' FINAL' if final else ''}")
        return int(rows[0]["n"])

    # -- events ---------------------------------------------------------------------------

    def insert_events(
        self, events: Sequence[tuple[str, EdgeEvent, str, str, str]]
    ) -> int:
        """Insert (event_id, event, edge_src, edge_dst, record_origin) rows."""
        if not events:
            return 0
        # Rows as arrays (JSONCompactEachRow): one C-level encode for the whole batch.
        astuple = msgspec.structs.astuple
        rows = [(eid, *astuple(event), src, dst, origin) for eid, event, src, dst, origin
                in events]
        self.backend.insert_json_lines(f"{self.db}.edge_events", _ENCODER.encode_lines(rows),
                                       columns=_EVENT_COLUMNS)
        return len(rows)

    # -- windows --------------------------------------------------------------------------

    def insert_windows(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        return self.insert_rows("edge_windows", rows)

    # -- dead letters ---------------------------------------------------------------------

    def insert_dead_letters(self, failures: Sequence[ParseFailure]) -> int:
        if not failures:
            return 0
        now = ch_ts(datetime.now(UTC))
        rows = []
        for failure in failures:
            o = failure.origin
            # The id depends on the failure only (origin, reason, bytes), never on how a flush
            # batched it, so a replay rewrites the same row.
            digest = hashlib.blake2b(failure.payload, digest_size=8).hexdigest()
            rows.append({
                "dl_id": event_id(f"{o}|{failure.reason}|{digest}"),
                "received_at": now,
                "source": o.source,
                "partition": o.partition,
                "offset": o.offset,
                "format": failure.format,
                "reason": failure.reason[:2000],
                "payload_b64": base64.b64encode(failure.payload).decode("ascii"),
                "payload_size": len(failure.payload),
            })
        return self.insert_rows("dead_letters", rows)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT source, partition, offset, format, reason, payload_b64, received_at "
            "FROM {db}.dead_letters FINAL ORDER BY received_at DESC, source, offset "
            "LIMIT {limit:UInt32}",
            {"limit": limit},
        )
        for row in rows:
            row["payload"] = base64.b64decode(row.pop("payload_b64"))
        return rows

    # -- alerts ---------------------------------------------------------------------------

    def upsert_alerts(self, alerts: Sequence[Alert], version: int | None = None) -> int:
        """Write alerts; the highest ``version`` per id wins (last write of the same state)."""
        if not alerts:
            return 0
        rows = [alert_row(a, version) for a in alerts]
        return self.insert_rows("alerts", rows)

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self.query(
            "SELECT * FROM {db}.alerts FINAL WHERE id = {id:String}", {"id": alert_id}
        )
        return row_alert(rows[0]) if rows else None

    def list_alerts(
        self,
        limit: int = 1000,
        status: Sequence[str] | None = None,
        severity: Sequence[str] | None = None,
        detector: Sequence[str] | None = None,
    ) -> list[Alert]:
        """Alerts, newest activity first, optionally filtered (values are bound, not pasted)."""
        where = []
        params: dict[str, Any] = {"limit": limit}
        for column, values in (("status", status), ("severity", severity),
                               ("detector", detector)):
            if values:
                where.append(f"{column} IN {{{column}:Array(String)}}")
                params[column] = list(values)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self.query(
            f"SELECT * FROM {{db}}.alerts FINAL {clause}"
            "ORDER BY last_seen DESC, id LIMIT {limit:UInt32}",
            params,
        )
        return [row_alert(r) for r in rows]

    def alert_states(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Current status and labels of the given alerts (analyst-owned fields)."""
        if not ids:
            return {}
        rows = self.query(
            "SELECT id, status, labels FROM {db}.alerts FINAL WHERE id IN {ids:Array(String)}",
            {"ids": list(ids)},
        )
        return {r["id"]: {"status": r["status"], "labels": r["labels"]} for r in rows}

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, scope: str, name: str, state: bytes,
                        offsets: dict[str, int] | None = None) -> None:
        now = datetime.now(UTC)
        self.insert_rows("checkpoints", [{
            "scope": scope,
            "name": name,
            "version": int(now.timestamp() * 1_000_000),
            "written_at": ch_ts(now),
            "offsets": json.dumps(offsets or {}, sort_keys=True),
            "state_b64": base64.b64encode(state).decode("ascii"),
        }])

    def load_checkpoint(self, scope: str, name: str) -> tuple[bytes, dict[str, int]] | None:
        rows = self.query(
            "SELECT offsets, state_b64 FROM {db}.checkpoints FINAL "
            "WHERE scope = {scope:String} AND name = {name:String}",
            {"scope": scope, "name": name},
        )
        if not rows:
            return None
        return base64.b64decode(rows[0]["state_b64"]), json.loads(rows[0]["offsets"])


def alert_row(alert: Alert, version: int | None = None) -> dict[str, Any]:
    if version is None:
        version = int(datetime.now(UTC).timestamp() * 1_000_000)
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "detector": alert.detector,
        "severity": alert.severity,
        "title": alert.title,
        "summary": alert.summary,
        "source": json.dumps(alert.source.to_dict()),
        "destination": json.dumps(alert.destination.to_dict()),
        "src_namespace": alert.source.namespace,
        "src_workload": alert.source.workload,
        "src_principal": alert.source.principal,
        "dst_namespace": alert.destination.namespace,
        "dst_service": alert.destination.service,
        "first_seen": ch_ts(alert.first_seen),
        "last_seen": ch_ts(alert.last_seen),
        "count": alert.count,
        "score": alert.score,
        "mitre": list(alert.mitre),
        "runbook_url": alert.runbook_url,
        "evidence": json.dumps(list(alert.evidence), default=str),
        "status": alert.status,
        "labels": dict(alert.labels),
        "assignee": alert.labels.get("assignee"),
        "version": version,
    }


def row_alert(row: dict[str, Any]) -> Alert:
    data = dict(row)
    data["source"] = json.loads(row["source"])
    data["destination"] = json.loads(row["destination"])
    data["evidence"] = json.loads(row["evidence"])
    data["first_seen"] = _ch_parse(row["first_seen"])
    data["last_seen"] = _ch_parse(row["last_seen"])
    return Alert.from_dict(data)


def _ch_parse(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


__all__ = ["Store", "StoreError", "alert_row", "ch_ts", "event_id", "format_ts", "row_alert"]
