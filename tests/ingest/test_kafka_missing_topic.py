"""A configured topic that does not exist does not stop the others, and is named once in the
log (a typo in ``kafka.topics`` would otherwise consume nothing, silently)."""

from __future__ import annotations

import logging

from ingest.sources.kafka import KafkaSource
from meshwatch.settings import load_settings
from meshwatch.store import Store
from tests.ingest.istio_lines import inbound_line
from tests.ingest.test_kafka_worker import TOPIC, _committed, _produce, _run_until

MISSING = "envoy.not-created"


def test_a_missing_topic_does_not_stall_the_others(kafka_broker, tmp_path):
    kafka_broker.create_topics({TOPIC: 2})
    settings = load_settings(overrides={
        "store": {"path": str(tmp_path / "store")},
        "kafka": {"bootstrap_servers": [kafka_broker.bootstrap], "group_id": "mw-test",
                  "topics": {TOPIC: "envoy-json", MISSING: "envoy-text"},
                  "session_timeout": "6s", "max_poll_interval": "5s",
                  "commit_interval": "1s"},
        "graph": {"allowed_lateness": 0},
    })
    _produce(kafka_broker, [inbound_line(i, i) for i in range(40)])
    store = Store.open(settings.store)
    try:
        pipeline, _ = _run_until(settings, store, want_records=40)
        assert pipeline.stats.records == 40 and pipeline.stats.parse_failures == 0
        assert sum(_committed(kafka_broker)) == 40
        assert store.count("edge_events") == 40
    finally:
        store.close()


def test_a_missing_topic_is_named_in_the_log(kafka_broker, caplog):
    # Checked before the first poll: a subscription's own metadata request may auto-create
    # topics on brokers that allow it, and then nothing is missing any more.
    kafka_broker.create_topics({TOPIC: 1})
    settings = load_settings(overrides={"kafka": {
        "bootstrap_servers": [kafka_broker.bootstrap], "group_id": "mw-test",
        "topics": {TOPIC: "envoy-json", MISSING: "envoy-text"}}})
    source = KafkaSource(settings.kafka)
    source.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.sources.kafka"):
            assert source.warn_missing_topics() == [MISSING]
        [warning] = [r.getMessage() for r in caplog.records if MISSING in r.getMessage()]
        assert "does not exist" in warning and "kafka.topics" in warning
    finally:
        source.close()
