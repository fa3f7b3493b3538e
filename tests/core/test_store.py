"""The embedded store: schema, idempotent writes, round trips, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from meshwatch.records import Alert, EdgeEvent, Endpoint, Origin, ParseFailure
from meshwatch.settings import StoreSettings
from meshwatch.store import Store, StoreError
from meshwatch.store.schema import applied_versions, available_migrations

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    s = Store.open(StoreSettings(path=tmp_path / "data"))
    yield s
    s.close()


def _event(i: int) -> EdgeEvent:
    return EdgeEvent(ts=T0 + timedelta(seconds=i), origin="envoy_json", reporter="destination",
                     source_principal="spiffe://cluster.local/ns/a/sa/web",
                     destination_service="db.b.svc.cluster.local", destination_port=5432,
                     response_code=200, mtls=True, request_id=f"r{i}")


def test_migrations_apply_once_and_record_versions(store):
    assert applied_versions(store.backend, store.db) == {m.version for m in available_migrations()}
    assert store.migrate() == []  # nothing left to apply


def test_event_replay_leaves_no_duplicates(store):
    rows = [(f"id{i}", _event(i), "src", "dst", f"f:{i}") for i in range(50)]
    store.insert_events(rows)
    store.insert_events(rows[10:30])  # a replay of part of the stream after a crash
    assert store.count("edge_events") == 50
    back = store.query("SELECT mtls, destination_port, ts FROM {db}.edge_events FINAL "
                       "WHERE event_id = 'id3'")
    assert back == [{"mtls": True, "destination_port": 5432, "ts": "2026-03-01 12:00:03.000"}]


def test_alert_upsert_latest_version_wins(store):
    alert = Alert(id="al-1", fingerprint="fp", detector="plaintext_edge", severity="high",
                  title="t", summary="s", source=Endpoint(address="10.0.0.1"),
                  destination=Endpoint(service="db:5432"), first_seen=T0, last_seen=T0, count=1,
                  score=1.0, mitre=("T1040",), runbook_url="http://x/runbooks/plaintext_edge",
                  evidence=({"request_id": "r1"},), status="open", labels={"team": "db"})
    store.upsert_alerts([alert], version=1)
    later = Alert.from_dict({**alert.to_dict(), "count": 5, "status": "acknowledged"})
    store.upsert_alerts([later], version=2)
    store.upsert_alerts([alert], version=1)  # a stale replay must not win
    got = store.get_alert("al-1")
    assert got is not None and got.count == 5 and got.status == "acknowledged"
    assert got.to_dict() == later.to_dict()
    assert [a.id for a in store.list_alerts(status=["open"])] == []
    assert [a.id for a in store.list_alerts(status=["acknowledged"], detector=["plaintext_edge"])
            ] == ["al-1"]


def test_dead_letters_keep_raw_bytes_and_reason(store):
    bad = ParseFailure(Origin("envoy.access", 42, partition=3), "envoy-json",
                       "JSON value is not an object", b"\xff\x00[1,2]")
    store.insert_dead_letters([bad])
    store.insert_dead_letters([bad])  # replayed
    rows = store.dead_letters()
    assert len(rows) == 1
    assert rows[0]["payload"] == b"\xff\x00[1,2]"
    assert rows[0]["reason"] == "JSON value is not an object"
    assert (rows[0]["source"], rows[0]["partition"], rows[0]["offset"]) == ("envoy.access", 3, 42)


def test_checkpoint_round_trip_latest_wins(store):
    assert store.load_checkpoint("g", "pipeline") is None
    store.save_checkpoint("g", "pipeline", b"one", {"t:0": 5})
    store.save_checkpoint("g", "pipeline", b"two\x00", {"t:0": 9})
    assert store.load_checkpoint("g", "pipeline") == (b"two\x00", {"t:0": 9})


def test_query_errors_are_store_errors(store):
    with pytest.raises(StoreError, match="UNKNOWN_TABLE|Unknown table|doesn't exist"):
        store.query("SELECT * FROM {db}.nope")


def test_second_process_on_same_directory_gets_a_clear_error(store, tmp_path):
    code = (
        "from meshwatch.settings import StoreSettings\n"
        "from meshwatch.store import Store, StoreError\n"
        "try:\n"
        f"    Store.open(StoreSettings(path={str(tmp_path / 'data')!r}))\n"
        "except StoreError as exc:\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "ERR" in out.stdout, out.stderr
    assert "another meshwatch process" in out.stdout
