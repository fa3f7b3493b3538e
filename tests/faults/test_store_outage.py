"""The store goes away while the Kafka worker runs: backpressure, no commit past unflushed
data, and a resume with nothing lost.

The worker runs in this process over the real broker and a real chdb store; a wrapper around
the real backend refuses every call for a while (what a locked directory or a ClickHouse
server that is down looks like from the pipeline: `StoreUnavailable`). While it is down the
committed offset must not move and consumption must stop; afterwards the store must equal the
clean run's exactly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from alerts.notify import Notifier
from ingest.sources.kafka import KafkaSource, topic_format_keys, topic_format_options
from meshwatch.pipeline import Pipeline
from meshwatch.settings import load_settings
from meshwatch.store import Store
from meshwatch.worker import KafkaWorker
from tests.faults.conftest import KafkaInput, Recorder
from tests.faults.faulty import FaultyBackend
from tests.faults.helpers import Snapshot, snapshot, wait_until, worker_config
from tests.faults.test_crash_replay import assert_same_as_clean

OUTAGE = 15.0


@pytest.mark.slow
def test_store_outage_pauses_consumption_and_commits(kafka_input: KafkaInput,
                                                     clean_run: Snapshot, tmp_path: Path,
                                                     measured: Recorder) -> None:
    group = "storeout"
    config = worker_config(tmp_path / "w.yaml", kafka_input.broker.bootstrap, group,
                           kafka={"commit_interval": "500ms", "max_poll_records": 500})
    settings = load_settings(config, {"store": {"path": str(tmp_path / "store")}})
    store = Store.open(settings.store)
    faulty = FaultyBackend(store.backend)
    store.backend = faulty
    pipeline = Pipeline(settings, store, format_options=topic_format_options(settings.kafka),
                        checkpoint_scope=f"kafka:{group}", notifier=Notifier(settings, store))
    pipeline.prepare(topic_format_keys(settings.kafka).values())
    worker = KafkaWorker(pipeline, KafkaSource(settings.kafka),
                         commit_interval=settings.kafka.commit_interval)
    worker.restore()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    try:
        wait_until(lambda: kafka_input.committed(group) >= kafka_input.records // 3, 120,
                   "a third of the input committed")
        assert not errors
        faulty.outage(OUTAGE)
        wait_until(lambda: worker.status.paused, 30, "the worker pauses its partitions")
        committed_at_pause = kafka_input.committed(group)
        records_at_pause = pipeline.stats.records
        samples = []
        while faulty.down:
            samples.append((kafka_input.committed(group), pipeline.stats.records))
            assert thread.is_alive() and not errors, errors
            time.sleep(0.5)
        # While the store was down: not one commit, not one more record consumed.
        assert {s[0] for s in samples} == {committed_at_pause}, samples
        assert {s[1] for s in samples} == {records_at_pause}, samples
        assert committed_at_pause < kafka_input.records
        assert worker.status.store_failures >= 2  # retried with backoff, not once
        wait_until(lambda: kafka_input.committed(group) == kafka_input.records, 180,
                   "the rest of the input committed after the store came back",
                   every=0.5)
        assert not worker.status.paused
    finally:
        worker.stop_event.set()
        thread.join(timeout=90)
        pipeline.close()
        store.close()
    assert not thread.is_alive() and not errors, errors
    got = snapshot(tmp_path / "store")
    assert_same_as_clean(got, clean_run, kafka_input.records)
    measured(
        scenario=f"store refuses every call for {OUTAGE:.0f} s mid-run (in-process worker, "
                 "fault-injecting wrapper around the real chdb backend)",
        records_in=kafka_input.records, records_stored=got.events, windows=len(got.windows),
        requests=got.requests, alerts=len(got.alerts), alert_count_total=got.alert_count_total,
        detail=f"paused at committed offset {committed_at_pause}; {len(samples)} samples while "
               f"down, offset and consumed records unchanged; {worker.status.store_failures} "
               f"refused checkpoints, {faulty.refused} refused store calls",
        result="backpressure, no commit while down; store identical to the clean run")
