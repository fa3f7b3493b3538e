"""Scale-out the Kafka way (issue 10): a normalize stage republishes EdgeEvents keyed by source,
detect workers share a consumer group with per-partition state in a Kafka state topic. Three
detect processes, one killed with SIGKILL mid-stream, must produce the same alerts and windows
as a single detect process over the same input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from meshwatch.cli.produce import publish
from meshwatch.settings import StoreSettings
from meshwatch.store import Store

MESHWATCH = [sys.executable, "-m", "meshwatch.cli.main"]
RAW, EDGES, CHANGES, STATE = "envoy.access", "meshwatch.edges", "meshwatch.alert-changes", \
    "meshwatch.state"


def _config(tmp: Path, bootstrap: str, group: str) -> Path:
    path = tmp / f"{group}.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group,
                  "topics": {RAW: "envoy-json"}, "session_timeout": "6s",
                  "max_poll_interval": "20s", "commit_interval": "1s"},
        "alerts": {"series_windows": 0},
    }))
    return path


def _start(config: Path, stage: str, store: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*MESHWATCH, "run", "--stage", stage, "--config", str(config),
                             "--store", str(store), "--quiet"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"})


_ENDS: dict[tuple[str, str], dict[TopicPartition, int]] = {}


def _ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The real end of each partition, read from the records themselves (the test broker's
    end_offsets answer can stop short of a batch's last record)."""
    if (bootstrap, topic) not in _ENDS:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = {tp: 0 for tp in parts}
            while batch := consumer.poll(timeout_ms=3000):
                for tp, records in batch.items():
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
        finally:
            consumer.close()
        _ENDS[(bootstrap, topic)] = ends
    return _ENDS[(bootstrap, topic)]


def _lag(bootstrap: str, group: str, topic: str) -> int:
    ends = _ends(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return sum(end - (consumer.committed(tp) or 0) for tp, end in ends.items())
    finally:
        consumer.close()


def _wait_caught_up(bootstrap: str, group: str, topic: str, procs: list[subprocess.Popen],
                    timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _lag(bootstrap, group, topic) > 0:
        for proc in procs:
            assert proc.poll() is None, f"worker exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{group} did not catch up on {topic}"
        time.sleep(1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=60) in (0, -signal.SIGKILL), proc.returncode


def _results(stores: list[Path]) -> tuple[dict, dict]:
    """Alerts (latest version per id across stores) and request totals per edge."""
    alerts: dict[str, tuple] = {}
    windows: dict[tuple, int] = {}
    for path in stores:
        store = Store.open(StoreSettings(path=path))
        try:
            for row in store.query("SELECT id, detector, fingerprint, count, first_seen, "
                                   "last_seen, version FROM {db}.alerts FINAL"):
                old = alerts.get(row["id"])
                if old is None or row["version"] > old[-1]:
                    alerts[row["id"]] = (row["detector"], row["fingerprint"], row["count"],
                                         row["first_seen"], row["last_seen"], row["version"])
            for row in store.query("SELECT window_start, edge_src, edge_dst, part, requests "
                                   "FROM {db}.edge_windows FINAL"):
                key = (row["window_start"], row["edge_src"], row["edge_dst"], row["part"])
                windows[key] = row["requests"]  # a replayed window is the same row
        finally:
            store.close()
    return {k: v[:-1] for k, v in alerts.items()}, windows


@pytest.mark.slow
def test_three_detect_workers_with_a_crash_match_one_worker(kafka_broker, tmp_path):
    sim = tmp_path / "sim"
    done = subprocess.run([*MESHWATCH, "simulate", "--duration", "2h", "--rps", "3", "--seed",
                           "5", "--start", "2026-11-20T00:00:00Z", "--out", str(sim), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kafka_broker.create_topics({RAW: 3, EDGES: 6, CHANGES: 1, STATE: 1})
    sent, _ = publish([sim / "envoy-json.log"], RAW, [kafka_broker.bootstrap], "envoy-json")
    assert sent > 10_000

    # Normalize once; both detect runs read the same EdgeEvents.
    normalize = _start(_config(tmp_path, kafka_broker.bootstrap, "norm"), "normalize",
                       tmp_path / "norm-store", tmp_path / "normalize.log")
    _wait_caught_up(kafka_broker.bootstrap, "norm-normalize", RAW, [normalize])
    _stop([normalize])

    single = _start(_config(tmp_path, kafka_broker.bootstrap, "single"), "detect",
                    tmp_path / "single", tmp_path / "single.log")
    _wait_caught_up(kafka_broker.bootstrap, "single-detect", EDGES, [single])
    _stop([single])

    multi_config = _config(tmp_path, kafka_broker.bootstrap, "multi")
    workers = [_start(multi_config, "detect", tmp_path / f"multi{i}", tmp_path / f"m{i}.log")
               for i in range(3)]
    total = sum(_ends(kafka_broker.bootstrap, EDGES).values())
    deadline = time.monotonic() + 120
    while _lag(kafka_broker.bootstrap, "multi-detect", EDGES) > total * 0.6:
        assert time.monotonic() < deadline, "the three workers made no progress"
        time.sleep(0.5)
    workers[1].kill()  # SIGKILL mid-stream: no final checkpoint, no commit
    workers[1].wait()
    survivors = [workers[0], workers[2]]
    _wait_caught_up(kafka_broker.bootstrap, "multi-detect", EDGES, survivors)
    _stop(survivors)

    single_alerts, single_windows = _results([tmp_path / "single"])
    multi_alerts, multi_windows = _results([tmp_path / f"multi{i}" for i in range(3)])
    assert single_alerts, "the single worker raised no alerts"
    assert multi_alerts == single_alerts
    assert multi_windows == single_windows
    assert sum(single_windows.values()) > 5_000
