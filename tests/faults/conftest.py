"""Shared inputs of the fault tests, and the recorder of measured results.

One simulated mesh (two hours, seeded) is the input of every pipeline scenario; the Kafka
scenarios read it from one partition of a session broker, so a clean run and a faulted run
see the records in the same order and must end with identical stores. Each scenario records
what it measured with `measured`; `scripts/reliability.py` collects those rows (through
``MESHWATCH_RELIABILITY_REPORT``) into the table of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshwatch.devbroker import Broker
from tests.faults.helpers import (
    START,
    TOPIC,
    Snapshot,
    WorkerProcess,
    cli,
    committed,
    publish,
    snapshot,
    tansu,
    wait_until,
    worker_config,
)

REPORT_ENV = "MESHWATCH_RELIABILITY_REPORT"
_ROWS: list[dict[str, Any]] = []


Recorder = Callable[..., None]


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """Record rows of the reliability table (``measured(scenario=..., records_in=...)``);
    they are kept only if the test passed (a failed run's numbers are not a result)."""
    rows: list[dict[str, Any]] = []
    started = time.monotonic()

    def record(**fields: Any) -> None:
        rows.append({"test": request.node.nodeid, **fields})

    yield record
    report = getattr(request.node, "rep_call", None)
    for row in rows:
        row["seconds"] = round(time.monotonic() - started, 1)
        row["passed"] = bool(report is not None and report.passed)
        _ROWS.append(row)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if target and _ROWS:
        Path(target).write_text(json.dumps(_ROWS, indent=1, default=str))


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hours of a ~30-service mesh with attacks (32,376 Envoy JSON records, seed 5)."""
    out = tmp_path_factory.mktemp("sim")
    done = cli("simulate", "--duration", "2h", "--rps", "3", "--seed", "5", "--start", START,
               "--out", str(out), "--quiet", "--format", "envoy-json")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def payloads(sim: Path) -> list[bytes]:
    return [line for line in (sim / "envoy-json.log").read_bytes().splitlines() if line.strip()]


@dataclass
class KafkaInput:
    broker: Broker
    records: int
    workdir: Path

    def committed(self, group: str) -> int:
        return committed(self.broker.bootstrap, group, TOPIC, 1)[0]

    def worker(self, name: str, **config: Any) -> WorkerProcess:
        cfg = worker_config(self.workdir / f"{name}.yaml", self.broker.bootstrap, name, **config)
        return WorkerProcess(cfg, self.workdir / f"{name}-store", self.workdir / f"{name}.log",
                             extra=("--quiet",))


@pytest.fixture(scope="session")
def kafka_input(tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes]
                ) -> Iterator[KafkaInput]:
    """The simulated records on one partition of a broker kept for the session."""
    work = tmp_path_factory.mktemp("kafka")
    with tansu(work) as broker:
        broker.create_topics({TOPIC: 1})
        [count] = publish(broker.bootstrap, TOPIC, payloads, 1)
        assert count == len(payloads)
        yield KafkaInput(broker, count, work)


def run_to_end(kin: KafkaInput, worker: WorkerProcess, timeout: float = 240) -> None:
    """Wait until the group committed every record, then stop the worker cleanly."""
    group = worker.config.stem
    wait_until(lambda: kin.committed(group) == kin.records, timeout,
               f"{group} committed all {kin.records} records", [worker.proc] if worker.proc
               else [])
    assert worker.stop() == 0, worker.output()[-3000:]


@pytest.fixture(scope="session")
def clean_run(kafka_input: KafkaInput) -> Snapshot:
    """One undisturbed Kafka worker over the whole input: the reference every fault run
    must reproduce exactly."""
    worker = kafka_input.worker("clean").start()
    run_to_end(kafka_input, worker)
    snap = snapshot(worker.store)
    assert snap.events == kafka_input.records, "the clean run did not store every record"
    assert snap.alerts, "the clean run raised no alert: nothing to compare"
    return snap
