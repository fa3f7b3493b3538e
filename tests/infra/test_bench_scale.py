"""`meshwatch bench scale` (meshwatch/bench_scale.py): the report's arithmetic, and the end of
a topic read from its records (the figures in docs/scale-out.md come from these)."""

from __future__ import annotations

import pytest

from meshwatch.bench_scale import ScaleReport, ScaleResult, _log_ends


def _result(stage: str, workers: int, steady_rate: float, parts: list[int],
            wall: float = 100.0) -> ScaleResult:
    total = sum(parts)
    return ScaleResult(stage=stage, workers=workers, events=total, output=0,
                       wall_seconds=wall, startup_seconds=10.0,
                       steady_seconds=total / steady_rate, steady_events=total,
                       commit_interval=2.0, partition_events=parts, cpu_seconds=total / 1000)


def test_rates_skew_and_bound():
    even = _result("detect", 2, 1000.0, [100, 100, 100, 100])
    assert even.steady_rate == pytest.approx(1000.0)
    assert even.skew == 1.0 and even.bound == 2.0
    assert even.events_per_cpu_second == pytest.approx(1000.0)
    # One partition with two thirds of the events: no number of workers beats 1.5x.
    hot = _result("detect", 4, 1000.0, [10, 10, 30, 100])
    assert hot.bound == 1.5
    assert hot.skew == pytest.approx(100 / 37.5)


def test_speedup_uses_the_best_run_of_each_worker_count():
    parts = [100, 100, 100, 100]
    report = ScaleReport(records=400, partitions=4, cores=2, store_events=False, broker="x",
                         results=[_result("detect", 1, 1000.0, parts),
                                  _result("detect", 2, 1500.0, parts),
                                  _result("detect", 1, 800.0, parts),  # a noisy repeat
                                  _result("detect", 2, 1900.0, parts, wall=80.0)])
    assert report.best("detect")[1].steady_rate == pytest.approx(1000.0)
    assert report.speedups() == {"detect:2": {"steady": 1.9, "wall": 1.25, "bound": 2.0}}
    assert report.as_dict()["results"][0]["speedup_bound"] == 1.0


@pytest.mark.kafka
def test_log_ends_counts_every_record_of_the_last_batch(kafka_broker):
    # Tansu answers ListOffsets(latest) with the last batch's base offset + 1; the bench reads
    # the last batch instead, which is exact on any broker.
    from kafka import KafkaProducer

    kafka_broker.create_topics({"ends": 3})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20)
    try:
        for i in range(10):
            producer.send("ends", b"v", partition=i % 2)
        producer.flush()
        for _ in range(7):
            producer.send("ends", b"w", partition=0)
        producer.flush()
    finally:
        producer.close()
    ends = {tp.partition: end for tp, end in _log_ends(kafka_broker.bootstrap, "ends").items()}
    assert ends == {0: 12, 1: 5, 2: 0}
