"""`meshwatch simulate --to-kafka` publishes what it wrote, as a mesh's shippers would."""

from __future__ import annotations

from kafka import KafkaConsumer
from typer.testing import CliRunner

from meshwatch.cli.main import app


def _count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def test_simulate_to_kafka_publishes_logs_and_spans(kafka_broker, tmp_path):
    kafka_broker.create_topics({"envoy.access": 2, "otlp_spans": 1})
    result = CliRunner().invoke(app, [
        "simulate", "--duration", "10m", "--rps", "2", "--start", "2026-11-20T00:00:00Z",
        "--out", str(tmp_path), "--format", "envoy-json,otlp-proto", "--quiet",
        "--to-kafka", kafka_broker.bootstrap])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "envoy-json.log").read_bytes().count(b"\n")
    assert _count(kafka_broker.bootstrap, "envoy.access") == lines
    assert _count(kafka_broker.bootstrap, "otlp_spans") >= 1
