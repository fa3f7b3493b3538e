"""`meshwatch bench ingest`: Kafka -> parse -> edge aggregation throughput on ONE worker process.

Simulated traffic is produced to a broker (a throwaway Tansu broker unless ``--bootstrap`` is
given), then a fresh process consumes each topic from the beginning and is timed in three
stages, so the report says where the time goes:

* ``consume`` - kafka-python fetch and record decoding only (the client's ceiling);
* ``ingest`` - consume + parse + identity + per-edge window aggregation (the issue's measure);
* ``pipeline`` - ingest + detectors + alert lifecycle (no store writes).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMATS = ("envoy-json", "envoy-text", "otlp-proto")
_FILES = {"envoy-json": "envoy-json.log", "envoy-text": "envoy-text.log",
          "otlp-proto": "spans.otlp.pb"}
_ENVOY_RECORDS_PER_HOUR = 55_000  # at the simulator's default rate (measured)


@dataclass
class StageResult:
    format: str
    stage: str
    records: int
    events: int
    bytes: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(records_per_s=round(self.records_per_s), mb_per_s=round(self.mb_per_s, 2),
                   events_per_s=round(self.events_per_s))
        return out


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    """The given bootstrap servers, or a throwaway Tansu broker for the run."""
    if bootstrap:
        yield bootstrap
        return
    from meshwatch.devbroker import tansu_broker

    with tansu_broker(workdir) as b:
        yield b.bootstrap


def simulate_traffic(workdir: Path, records: int, formats: tuple[str, ...]) -> Path:
    from meshwatch.simulate import SimulationConfig, simulate

    hours = max(0.5, records / _ENVOY_RECORDS_PER_HOUR * 1.1)
    out = workdir / "traffic"
    simulate(SimulationConfig(out_dir=out, start_us=1_763_600_000_000_000,
                              duration_s=hours * 3600, scenario="mixed", formats=formats))
    return out


def produce(bootstrap: str, topic: str, path: Path, format_name: str, limit: int,
            partitions: int, lines_per_message: int) -> tuple[int, int]:
    """Publish up to ``limit`` records (spans, for OTLP); returns (records, messages)."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from ingest.sources.files import read_records

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20,
                             max_request_size=16 << 20)
    sent = messages = 0
    batch: list[bytes] = []
    join = lines_per_message > 1 and format_name != "otlp-proto"
    try:
        for record in read_records(path, format_name):
            if sent >= limit:
                break
            sent += _span_count(record.payload) if format_name == "otlp-proto" else 1
            if join:
                batch.append(record.payload)
                if len(batch) >= lines_per_message:
                    producer.send(topic, b"\n".join(batch))
                    messages += 1
                    batch = []
            else:
                producer.send(topic, record.payload)
                messages += 1
        if batch:
            producer.send(topic, b"\n".join(batch))
            messages += 1
        producer.flush()
    finally:
        producer.close()
    return sent, messages


def _span_count(payload: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(payload)
    return sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)


def _consume(bootstrap: str, topic: str, format_name: str, messages: int, units: int,
             stage: str, conn: Any) -> None:
    """Child process: time one stage over the whole topic and send the result (or the error)."""
    try:
        conn.send(_time_stage(bootstrap, topic, format_name, messages, units, stage))
    except BaseException as exc:
        conn.send(RuntimeError(f"{stage} stage for {format_name} failed: {exc!r}"))


def _time_stage(bootstrap: str, topic: str, format_name: str, messages: int, units: int,
                stage: str) -> StageResult:
    import gc

    from kafka import KafkaConsumer, TopicPartition

    from ingest.sources.kafka_fastpath import install
    from meshwatch.records import Origin, RawRecord

    install()  # as the Kafka source does
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_poll_records=5000, fetch_max_bytes=64 << 20,
                             max_partition_fetch_bytes=16 << 20)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    handle = _stage_handler(stage, format_name)
    gc.freeze()
    seen = events = nbytes = 0
    started = None
    while seen < messages:
        batch = consumer.poll(timeout_ms=2000)
        if not batch:
            if started is not None:
                break
            continue
        if started is None:
            started = time.perf_counter()
        records = []
        for tp, recs in batch.items():
            for rec in recs:
                nbytes += len(rec.value)
                records.append(RawRecord(rec.value, Origin(tp.topic, rec.offset, tp.partition),
                                         format_name))
        seen += len(records)
        events += handle(records)
    seconds = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    # Frozen objects are never collected: sketches still alive at exit make nanobind
    # (datasketches) print a page of leak warnings.
    gc.unfreeze()
    del handle
    gc.collect()
    # OTLP messages carry many spans: report spans, the unit the targets are stated in.
    records = units if seen == messages else seen
    return StageResult(format_name, stage, records, events, nbytes, seconds)


def _stage_handler(stage: str, format_name: str) -> Any:
    if stage == "consume":
        return lambda records: 0
    from meshwatch.pipeline import split_lines

    if stage == "ingest":
        from ingest.graph import EdgeGraph
        from ingest.identity import IdentityResolver
        from ingest.parsers.base import ParseFailure, make_parser

        parser = make_parser(format_name)
        resolver = IdentityResolver()
        graph = EdgeGraph()

        def ingest(records: list[Any]) -> int:
            # A stage at a time over the batch, as `Pipeline.process` does.
            parsed = [item for record in records
                      for line in split_lines(format_name, record.payload)
                      for item in parser.parse(line, record.origin)]
            resolve = resolver.resolve
            events = [resolve(item) for item in parsed if not isinstance(item, ParseFailure)]
            add = graph.add
            for event in events:
                add(event)
            graph.advance()
            return len(events)

        return ingest
    from meshwatch.pipeline import Pipeline
    from meshwatch.settings import load_settings

    settings = load_settings(overrides={"store": {"store_events": False},
                                        "alerts": {"series_windows": 0}})
    # No store: this stage measures processing only and never flushes.
    pipeline = Pipeline(settings, _NullStore())  # type: ignore[arg-type]

    def full(records: list[Any]) -> int:
        before = pipeline.stats.events
        pipeline.process(records)
        return pipeline.stats.events - before

    return full


class _NullStore:
    """Stands in for the store in the `pipeline` stage, which never flushes: reads find an
    empty store (no feedback rules, no history), writes are refused."""

    description = "none"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return []

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the pipeline stage must not touch the store ({name})")


def measure(bootstrap: str, topic: str, format_name: str, messages: int, units: int,
            stage: str) -> StageResult:
    """Run one stage in a fresh process (clean heap, its own interpreter: ONE worker)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_consume, args=(bootstrap, topic, format_name, messages, units,
                                                 stage, child))
    process.start()
    result: Any = None
    while process.is_alive() or parent.poll():
        if parent.poll(1.0):
            result = parent.recv()
            break
    process.join(timeout=60)
    if result is None:
        raise RuntimeError(f"{stage} stage for {format_name} died (exit {process.exitcode})")
    if isinstance(result, BaseException):
        raise result
    return result


def run(records: int, formats: tuple[str, ...], bootstrap: str | None, partitions: int,
        lines_per_message: int, stages: tuple[str, ...],
        progress: Any = None) -> list[StageResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="meshwatch-bench-") as tmp:
        work = Path(tmp)
        if progress:
            progress("simulating traffic")
        traffic = simulate_traffic(work, records, formats)
        with broker(bootstrap, work) as servers:
            for fmt in formats:
                topic = f"bench.{fmt}.{int(time.time())}"
                if progress:
                    progress(f"producing {fmt}")
                units, messages = produce(servers, topic, traffic / _FILES[fmt], fmt, records,
                                          partitions, lines_per_message)
                for stage in stages:
                    if progress:
                        progress(f"{fmt}: {stage}")
                    results.append(measure(servers, topic, fmt, messages, units, stage))
    return results
