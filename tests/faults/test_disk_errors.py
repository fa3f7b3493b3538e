"""A (nearly) full disk under the embedded store: a clear error, nothing half-written, and
exact results once space is back.

The store lives on a real, tiny tmpfs (we are root in the test sandbox; `mount` works here and
in CI, which runs on the same kind of machine). ClickHouse reserves the uncompressed size of an
insert before writing it, so a few MiB fail the first large insert with NOT_ENOUGH_SPACE.
chdb 4.4's streaming insert used to swallow that error and report every row written while
storing none (meshwatch/store/backend.py now detects it); these tests pin that down at the
backend, in the Kafka worker (pauses, then resumes exactly) and in the file mode.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest.parsers.base import make_parser
from ingest.sources.files import read_records
from meshwatch.settings import StoreSettings
from meshwatch.store import Store, StoreError
from meshwatch.store.store import event_id
from tests.faults.conftest import KafkaInput, Recorder, run_to_end
from tests.faults.helpers import Snapshot, cli, snapshot, wait_until
from tests.faults.test_crash_replay import assert_same_as_clean

FULL = "3m"  # migrations fit; the first large insert does not
ROOMY = "256m"


@contextlib.contextmanager
def small_disk(path: Path, size: str = FULL) -> Iterator[Callable[[str], None]]:
    """A tmpfs of ``size`` at ``path``; yields a function that resizes it in place."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    assert mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr}"

    def resize(new_size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True,
                       timeout=30)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _events(sim: Path, n: int) -> list[tuple]:
    parser = make_parser("envoy-json")
    out: list[tuple] = []
    for record in read_records(sim / "envoy-json.log", "envoy-json"):
        for event in parser.parse(record.payload, record.origin):
            out.append((event_id(str(record.origin)), event, "src", "dst", str(record.origin)))
        if len(out) >= n:
            return out
    return out


def test_insert_on_a_full_disk_raises_and_stores_nothing(sim: Path, tmp_path: Path,
                                                         measured: Recorder) -> None:
    events = _events(sim, 20_000)
    with small_disk(tmp_path / "disk") as resize:
        store = Store.open(StoreSettings(path=tmp_path / "disk" / "store"))
        try:
            with pytest.raises(StoreError, match="NOT_ENOUGH_SPACE") as raised:
                store.insert_events(events)
            assert store.count("edge_events") == 0  # nothing half-written
            resize(ROOMY)
            assert store.insert_events(events) == len(events)
            assert store.count("edge_events") == len(events)
        finally:
            store.close()
    measured(scenario="insert into the embedded store on a full 3 MiB tmpfs, then free space",
             records_in=len(events), records_stored=len(events),
             detail=f"error: {str(raised.value).split(': ', 2)[-1][:120]}",
             result="clear StoreError, 0 rows half-written; the same insert succeeds once "
                    "space is back")


@pytest.mark.slow
def test_kafka_worker_on_a_full_disk_pauses_then_resumes_exactly(
        kafka_input: KafkaInput, clean_run: Snapshot, tmp_path: Path,
        measured: Recorder) -> None:
    worker = kafka_input.worker("diskfull")
    worker.store = tmp_path / "disk" / "store"
    with small_disk(tmp_path / "disk") as resize:
        worker.start()
        wait_until(lambda: "pausing consumption" in worker.output(), 120,
                   "the worker pauses on the full disk", [worker.proc] if worker.proc else [])
        held = kafka_input.committed("diskfull")
        time.sleep(5)  # full for a while: alive, offset held
        assert worker.alive()
        assert kafka_input.committed("diskfull") == held < kafka_input.records
        log = worker.output()
        assert "NOT_ENOUGH_SPACE" in log and "Traceback" not in log
        resize(ROOMY)
        run_to_end(kafka_input, worker, timeout=240)
        got = snapshot(worker.store)
    assert "Traceback" not in worker.output()
    assert_same_as_clean(got, clean_run, kafka_input.records)
    measured(scenario="Kafka worker whose store disk is full (3 MiB tmpfs), then grown",
             records_in=kafka_input.records, records_stored=got.events,
             windows=len(got.windows), requests=got.requests, alerts=len(got.alerts),
             alert_count_total=got.alert_count_total,
             detail=f"paused with committed offset {held}; logged NOT_ENOUGH_SPACE, no "
                    "traceback",
             result="no commit while full; store identical to the clean run")


@pytest.fixture(scope="module")
def clean_file_run(sim: Path, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    store = tmp_path_factory.mktemp("clean-file") / "store"
    done = cli("run", "--input", str(sim / "envoy-json.log"), "--format", "envoy-json",
               "--store", str(store), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    return snapshot(store)


@pytest.mark.slow
def test_file_run_on_a_full_disk_then_rerun_with_space(sim: Path, tmp_path: Path,
                                                       clean_file_run: Snapshot,
                                                       measured: Recorder) -> None:
    store = tmp_path / "disk" / "store"
    args = ("run", "--input", str(sim / "envoy-json.log"), "--format", "envoy-json", "--store",
            str(store), "--quiet")
    with small_disk(tmp_path / "disk") as resize:
        full = cli(*args)
        assert full.returncode != 0
        assert "NOT_ENOUGH_SPACE" in full.stderr
        resize(ROOMY)
        # The store opens and is consistent: the rerun ends exactly as one clean run.
        again = cli(*args)
        assert again.returncode == 0, again.stderr[-2000:]
        got = snapshot(store)
    records = clean_file_run.events
    assert_same_as_clean(got, clean_file_run, records)
    measured(scenario="`meshwatch run --input` on a full disk (3 MiB tmpfs), rerun with space",
             records_in=records, records_stored=got.events, windows=len(got.windows),
             requests=got.requests, alerts=len(got.alerts),
             alert_count_total=got.alert_count_total,
             detail=f"first run exit {full.returncode} naming NOT_ENOUGH_SPACE",
             result="no corruption: the rerun equals one clean run")


def test_file_run_on_a_full_disk_fails_with_one_clear_line(sim: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk"):
        full = cli("run", "--input", str(sim / "envoy-json.log"), "--format", "envoy-json",
                   "--store", str(tmp_path / "disk" / "store"), "--quiet")
    assert full.returncode == 2
    assert "not enough space" in full.stderr
    assert "Traceback" not in full.stderr
