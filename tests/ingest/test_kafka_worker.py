"""The Kafka collector against a real Kafka-protocol broker (Tansu): consume, flush-then-commit,
resume from committed offsets without duplicates, dead letters with their offsets."""

from __future__ import annotations

import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ingest.sources.kafka import KafkaSource
from meshwatch.pipeline import Pipeline
from meshwatch.settings import load_settings
from meshwatch.store import Store
from meshwatch.worker import KafkaWorker
from tests.ingest.istio_lines import inbound_line

TOPIC = "envoy.access"


def _settings(broker, tmp_path):
    return load_settings(overrides={
        "store": {"path": str(tmp_path / "store")},
        "kafka": {"bootstrap_servers": [broker.bootstrap], "group_id": "mw-test",
                  "topics": {TOPIC: "envoy-json"}, "session_timeout": "6s",
                  "max_poll_interval": "5s", "commit_interval": "1s"},
        "graph": {"allowed_lateness": 0},
        "detectors": {"first_seen_edge": {"enabled": False}},
    })


def _produce(broker, payloads):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i, payload in enumerate(payloads):
        producer.send(TOPIC, payload, partition=i % 2)
    producer.flush()
    producer.close()


def _run_until(settings, store, want_records, timeout=60.0):
    pipeline = Pipeline(settings, store, checkpoint_scope="kafka:mw-test")
    worker = KafkaWorker(pipeline, KafkaSource(settings.kafka), commit_interval=1.0)
    worker.restore()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while pipeline.stats.records < want_records and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # let a commit interval pass with nothing new
    worker.stop_event.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return pipeline, worker


def _committed(broker):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="mw-test",
                             enable_auto_commit=False)
    try:
        return [consumer.committed(TopicPartition(TOPIC, p)) for p in (0, 1)]
    finally:
        consumer.close()


def test_consume_commit_resume_without_duplicates(kafka_broker, tmp_path):
    kafka_broker.create_topics({TOPIC: 2})
    settings = _settings(kafka_broker, tmp_path)
    first = [inbound_line(i, i * 0.5) for i in range(200)]
    plaintext = [inbound_line(1000 + i, 60 + i, src_ip="10.9.9.9", principal=None,
                              path=f"/admin/{i}") for i in range(10)]
    garbage = [b"\xff\xfe not a record", b'["json", "array"]']
    _produce(kafka_broker, first + plaintext + garbage)

    store = Store.open(settings.store)
    try:
        pipeline, worker = _run_until(settings, store, want_records=212)
        assert pipeline.stats.records == 212
        assert pipeline.stats.parse_failures == 2
        assert worker.status.commits >= 1
        assert sum(_committed(kafka_broker)) == 212
        assert store.count("edge_events") == 210
        dead = store.dead_letters()
        assert {(d["source"], d["partition"]) for d in dead} <= {(TOPIC, 0), (TOPIC, 1)}
        assert {d["payload"] for d in dead} == set(garbage)
        plaintext_alerts = store.list_alerts(detector=["plaintext_edge"])
        assert len(plaintext_alerts) == 1 and plaintext_alerts[0].source.address == "10.9.9.9"
        assert plaintext_alerts[0].count >= 1

        # More records arrive; a restarted worker resumes from the committed offsets.
        _produce(kafka_broker, [inbound_line(2000 + i, 300 + i) for i in range(50)])
        pipeline2, _ = _run_until(settings, store, want_records=50)
        assert pipeline2.stats.records == 50  # nothing consumed twice
        assert store.count("edge_events") == 260
        assert sum(_committed(kafka_broker)) == 262
        # The restored detector/alert state updates the same plaintext alert, no new one.
        assert len(store.list_alerts(detector=["plaintext_edge"])) == 1
    finally:
        store.close()


def test_batched_lines_in_one_message_are_separate_records(kafka_broker, tmp_path):
    kafka_broker.create_topics({TOPIC: 2})
    settings = _settings(kafka_broker, tmp_path)
    lines = [inbound_line(i, i) for i in range(30)]
    _produce(kafka_broker, [b"\n".join(lines[i:i + 10]) for i in range(0, 30, 10)])
    store = Store.open(settings.store)
    try:
        pipeline, _ = _run_until(settings, store, want_records=3)
        assert pipeline.stats.records == 3 and pipeline.stats.events == 30
        assert store.count("edge_events") == 30
    finally:
        store.close()


def test_dead_letters_are_copied_to_the_dead_letter_topic(kafka_broker, tmp_path):
    from ingest.sources.kafka import DeadLetterProducer

    kafka_broker.create_topics({TOPIC: 2, "meshwatch.dead": 1})
    settings = _settings(kafka_broker, tmp_path)
    bad = [b"\x00\x01 not json", b'{"start_time": "yesterday-ish"}']
    _produce(kafka_broker, [inbound_line(1, 1), *bad])
    store = Store.open(settings.store)
    producer = DeadLetterProducer(settings.kafka, "meshwatch.dead")
    try:
        pipeline = Pipeline(settings, store, checkpoint_scope="kafka:mw-test")
        pipeline.dead_letter_sink = producer
        worker = KafkaWorker(pipeline, KafkaSource(settings.kafka), commit_interval=1.0)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while pipeline.stats.records < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.stop_event.set()
        thread.join(timeout=30)
    finally:
        producer.close()
        store.close()
    consumer = KafkaConsumer("meshwatch.dead", bootstrap_servers=kafka_broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        got = list(consumer)
    finally:
        consumer.close()
    assert sorted(m.value for m in got) == sorted(bad)
    for message in got:
        headers = dict(message.headers)
        assert headers["meshwatch.source"] == TOPIC.encode()
        assert headers["meshwatch.reason"]
        assert int(headers["meshwatch.offset"]) >= 0


class _FlakySource(KafkaSource):
    """The real source; its first ``failures`` polls raise what kafka-python raises when the
    brokers refuse connections (seen in CI from the coordinator's metadata refresh)."""

    failures = 3

    def poll(self, timeout_ms: int = 500):
        if self.failures > 0:
            self.failures -= 1
            from kafka.errors import KafkaConnectionError

            raise KafkaConnectionError("111 ECONNREFUSED")
        return super().poll(timeout_ms)


def test_fetch_failures_are_retried_not_fatal(kafka_broker, tmp_path, caplog):
    kafka_broker.create_topics({TOPIC: 2})
    settings = _settings(kafka_broker, tmp_path)
    _produce(kafka_broker, [inbound_line(i, i * 0.5) for i in range(50)])
    store = Store.open(settings.store)
    try:
        pipeline = Pipeline(settings, store, checkpoint_scope="kafka:mw-test")
        worker = KafkaWorker(pipeline, _FlakySource(settings.kafka), commit_interval=1.0)
        thread = threading.Thread(target=worker.run, daemon=True)
        with caplog.at_level("INFO", logger="meshwatch.worker"):
            thread.start()
            deadline = time.monotonic() + 60
            while pipeline.stats.records < 50 and time.monotonic() < deadline:
                assert thread.is_alive(), "a failed fetch ended the worker"
                time.sleep(0.2)
            worker.stop_event.set()
            thread.join(timeout=30)
        assert pipeline.stats.records == 50
        assert worker.status.poll_failures == 3 and not worker.status.poll_failing
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot fetch from Kafka" in m for m in messages) == 1  # once per episode
        assert any("fetching from Kafka again" in m for m in messages)
    finally:
        store.close()
