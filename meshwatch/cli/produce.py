"""`meshwatch produce`: publish log files or simulator output to Kafka (demos, benchmarks)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from meshwatch.cli.common import err_console, fail
from meshwatch.settings import FORMAT_NAMES


def register(app: typer.Typer) -> None:
    app.command(
        "produce",
        help=(
            "Publish records from files to a Kafka topic, one record per message (or "
            "--lines-per-message lines joined by newlines, as batching shippers do). "
            "OTLP protobuf files (length-delimited) give one ExportTraceServiceRequest per "
            "message, as an OpenTelemetry Collector's Kafka exporter writes them.\n\n"
            "Example: meshwatch produce sim/envoy-json.log --topic envoy.access "
            "--bootstrap localhost:9092"
        ),
    )(produce)


def produce(
    files: Annotated[list[Path], typer.Argument(help="Files to publish.", show_default=False)],
    topic: Annotated[str, typer.Option("--topic", "-t", help="Destination topic.")],
    bootstrap: Annotated[
        str, typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers, comma-separated.")
    ] = "localhost:9092",
    format_name: Annotated[
        str, typer.Option("--format", "-f", help=f"How to split files: {'|'.join(FORMAT_NAMES)}.")
    ] = "auto",
    lines_per_message: Annotated[
        int, typer.Option(min=1, help="Join this many line records into one message.")
    ] = 1,
    create_partitions: Annotated[
        int, typer.Option(min=0, help="Create the topic with N partitions if missing (0: no).")
    ] = 0,
) -> None:
    from kafka.errors import KafkaError

    if format_name not in FORMAT_NAMES:
        fail(f"unknown format {format_name!r} (known: {', '.join(FORMAT_NAMES)})")
    for path in files:
        if not path.is_file():
            fail(f"input file not found: {path}")
    if lines_per_message > 1 and format_name not in ("envoy-text", "envoy-json", "ztunnel"):
        fail("--lines-per-message needs a line format: --format envoy-text|envoy-json|ztunnel")
    try:
        sent, elapsed = publish(files, topic, bootstrap.split(","), format_name,
                                lines_per_message, create_partitions)
    except KafkaError as exc:
        fail(f"Kafka at {bootstrap}: {exc}")
    err_console.print(f"published {sent:,} messages to {topic} in {elapsed:.1f}s "
                      f"({sent / max(elapsed, 1e-9):,.0f}/s)")


def publish(files: list[Path], topic: str, bootstrap: list[str], format_name: str,
            lines_per_message: int = 1, create_partitions: int = 0) -> tuple[int, float]:
    """Send every record of ``files`` to ``topic``; returns (messages, seconds)."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from ingest.sources.files import read_records

    if create_partitions:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(topic, create_partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                             batch_size=1 << 20, max_request_size=16 << 20, acks=1)
    started = time.monotonic()
    sent = 0
    try:
        for path in files:
            pending: list[bytes] = []
            for record in read_records(path, format_name):
                pending.append(record.payload)
                if len(pending) >= lines_per_message:
                    producer.send(topic, b"\n".join(pending))
                    sent += 1
                    pending = []
            if pending:
                producer.send(topic, b"\n".join(pending))
                sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent, time.monotonic() - started
