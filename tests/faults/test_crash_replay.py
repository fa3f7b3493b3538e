"""kill -9 at random points, restart, and nothing is lost or counted twice.

Kafka mode: one worker over the session's input is SIGKILLed several times at seeded random
moments (no final checkpoint, no commit) and restarted on the same embedded store each time.
At the end the store must equal the clean run's exactly: one row per raw record, the same
windows (per edge and in total) and the same alerts (id, fingerprint, count, first/last seen).

File mode contract (`meshwatch run --input`): a run checkpoints every few seconds; a rerun of
the same input on the same store resumes after the last checkpoint (the input file is
recognised by its path and first record) and replays only what came after it, so a killed and
rerun file ends as one clean run; rerunning a file that was processed completely changes
nothing; ``--fresh`` starts over.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from meshwatch.settings import StoreSettings
from meshwatch.store import Store
from tests.faults.conftest import KafkaInput, Recorder, run_to_end
from tests.faults.helpers import (
    CLI_ENV,
    MESHWATCH,
    START,
    Snapshot,
    cli,
    duplicate_event_ids,
    snapshot,
    wait_until,
)

KILLS = 4


def assert_same_as_clean(got: Snapshot, clean: Snapshot, records: int) -> None:
    """Exactly the clean run's store: events, windows, alerts."""
    assert got.events == clean.events == records
    assert got.edge_requests == clean.edge_requests
    assert got.windows == clean.windows
    assert got.requests == clean.requests
    assert got.alerts == clean.alerts
    assert got.dead_letters == clean.dead_letters


@pytest.mark.slow
def test_kafka_worker_killed_four_times_matches_a_clean_run(kafka_input: KafkaInput,
                                                            clean_run: Snapshot,
                                                            measured: Recorder) -> None:
    rng = random.Random(20261120)
    # Kill once the group has committed past each of these fractions of the input, after a
    # random extra delay: the kill lands mid-batch, mid-flush or between save and commit.
    marks = sorted(rng.uniform(0.05, 0.85) for _ in range(KILLS))
    worker = kafka_input.worker("crash", kafka={"commit_interval": "250ms",
                                                "max_poll_records": 500})
    killed_at: list[int] = []
    for mark in marks:
        worker.start()
        target = max(int(mark * kafka_input.records), (killed_at[-1] if killed_at else 0) + 1)
        deadline = time.monotonic() + 120
        while kafka_input.committed("crash") < target:
            assert worker.alive(), worker.output()[-3000:]
            assert time.monotonic() < deadline, f"no progress to offset {target}"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        worker.kill()
        killed_at.append(kafka_input.committed("crash"))
    # Every kill hit a worker that still had records to consume.
    assert all(at < kafka_input.records for at in killed_at), killed_at
    worker.start()
    run_to_end(kafka_input, worker)

    got = snapshot(worker.store)
    assert_same_as_clean(got, clean_run, kafka_input.records)
    assert duplicate_event_ids(worker.store) == 0
    measured(
        scenario="kill -9 the Kafka worker 4x at seeded random points, restart each time",
        records_in=kafka_input.records, records_stored=got.events,
        duplicate_rows_before_merge=got.event_rows - got.events, windows=len(got.windows),
        requests=got.requests, alerts=len(got.alerts), alert_count_total=got.alert_count_total,
        clean_alerts=len(clean_run.alerts), detail=f"committed offsets at the kills: {killed_at}",
        result="store identical to the clean run")


def _file_run(log: Path, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    done = cli("run", "--input", str(log), "--format", "envoy-json", "--store", str(store),
               "--quiet", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def checkpoint_parts(store: Path) -> int:
    """Inserts into the store's checkpoints table so far, read from its data parts on disk
    (a running process holds the store, so it cannot be queried)."""
    table = store / "data" / "meshwatch" / "checkpoints"
    if not table.is_dir():
        return 0
    blocks = [int(p.name.split("_")[2]) for p in table.iterdir() if p.name.startswith("all_")]
    return max(blocks, default=0)


def _resume_point(store: Path, log: Path) -> int:
    """The last line the store's file checkpoint covers (0: no checkpoint yet)."""
    opened = Store.open(StoreSettings(path=store))
    try:
        saved = opened.load_checkpoint("files", "pipeline")
    finally:
        opened.close()
    return 0 if saved is None else int(saved[1].get(f"file-last:{log}", 0))


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five simulated hours (~80k records): a file run long enough to checkpoint mid-way."""
    out = tmp_path_factory.mktemp("long")
    done = cli("simulate", "--duration", "5h", "--rps", "3", "--seed", "9", "--start", START,
               "--out", str(out), "--quiet", "--format", "envoy-json")
    assert done.returncode == 0, done.stderr
    return out / "envoy-json.log"


@pytest.mark.slow
def test_file_run_killed_and_rerun_ends_as_one_clean_run(long_log: Path, tmp_path: Path,
                                                         measured: Recorder) -> None:
    records = sum(1 for line in long_log.read_bytes().splitlines() if line.strip())
    _file_run(long_log, tmp_path / "clean")
    clean = snapshot(tmp_path / "clean")

    # Kill each run a seeded random moment after it wrote a checkpoint (every 0.5 s here),
    # rerun it on the same store, and finally let it finish.
    rng = random.Random(7)
    store = tmp_path / "killed"
    resumed_from: list[int] = []
    for _ in range(2):
        before = checkpoint_parts(store)
        proc = subprocess.Popen(
            [*MESHWATCH, "run", "--input", str(long_log), "--format", "envoy-json", "--store",
             str(store), "--quiet", "--checkpoint-interval", "0.5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **CLI_ENV})
        wait_until(lambda p=proc, n=before: checkpoint_parts(store) > n or p.poll() is not None,
                   120, "a checkpoint of the file run")
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        resumed_from.append(_resume_point(store, long_log))
    # At least one kill came after a checkpoint and before the end: a real mid-file resume.
    assert any(0 < line < records for line in resumed_from), (resumed_from, records)
    _file_run(long_log, store)
    got = snapshot(store)
    assert_same_as_clean(got, clean, records)

    # A complete file run again on the same store: nothing changes (no double counting).
    _file_run(long_log, store)
    again = snapshot(store)
    assert again.edge_requests == clean.edge_requests
    assert again.windows == clean.windows
    assert again.alerts == clean.alerts
    measured(
        scenario="kill -9 `meshwatch run --input` at seeded random points, rerun on the store",
        records_in=records, records_stored=got.events, windows=len(got.windows),
        requests=got.requests, alerts=len(got.alerts), alert_count_total=got.alert_count_total,
        detail=f"checkpointed line after each kill: {resumed_from}; a further complete rerun "
               "changed nothing",
        result="store identical to one clean file run")
