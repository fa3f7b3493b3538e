"""Scale-out stages: meshwatch grows by Kafka consumer groups, not by anything home-made.

``meshwatch run --stage ...`` (docs/scale-out.md):

* **normalize** (any number of workers, group ``<group_id>-normalize``): consumes the raw topics,
  parses and resolves identities, and republishes each EdgeEvent to ``kafka.edges_topic`` keyed
  by *source identity*, so every record of one source lands in one partition. The raw record's
  identity travels in a header, which makes the hop idempotent downstream.
* **detect** (any number of workers, group ``<group_id>-detect``): consumes the edges topic with
  one `Pipeline` per partition. All processing state (windows, detector baselines, active alerts)
  is per partition and checkpointed per partition with its offset, so when a partition moves the
  new owner restores exactly that state and resumes from exactly that offset: results do not
  depend on how many workers there are or on who crashed. Alert changes go to the store and to
  ``kafka.alert_changes_topic``.
* **notify** (one worker, group ``<group_id>-notify``): consumes alert changes and runs the
  notifier (silences, routing, grouping, durable outbox, delivery).

One process can run everything on one state (``--stage all``, the default, or files mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from alerts.lifecycle import AlertChange
from ingest.graph import source_node
from ingest.identity import IdentityResolver
from ingest.parsers.base import Parser, make_parser
from ingest.parsers.edge_event import encode_event
from ingest.sources.kafka import ORIGIN_HEADER, KafkaSource, consumer_config, topic_format_keys
from meshwatch.bounded import BoundedMap
from meshwatch.kafka_state import KafkaCheckpoints
from meshwatch.pipeline import Pipeline, split_lines
from meshwatch.records import Alert, EdgeEvent, ParseFailure, RawRecord
from meshwatch.settings import KafkaSettings, Settings, TopicSettings
from meshwatch.store import Store, StoreError
from meshwatch.telemetry import get_telemetry, labels

log = logging.getLogger(__name__)

STAGES = ("all", "normalize", "detect", "notify")
_SEEN_KEYS = 2_000_000


def source_key(event: EdgeEvent) -> bytes:
    """The partition key: exactly the edge's source node, so every window of an edge (and all
    per-source detector state) lives in one partition."""
    return source_node(event)[0].encode()


def _producer(settings: KafkaSettings) -> KafkaProducer:
    config = consumer_config(settings)
    keys = ("bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_plain_username",
            "sasl_plain_password", "ssl_cafile", "client_id")
    return KafkaProducer(**{k: v for k, v in config.items() if k in keys}, acks="all",
                         linger_ms=10, batch_size=1 << 20, max_request_size=8 << 20)


def _with_group(settings: KafkaSettings, suffix: str, topics: dict[str, Any] | None = None,
                ) -> KafkaSettings:
    update: dict[str, Any] = {"group_id": f"{settings.group_id}-{suffix}"}
    if topics is not None:
        update["topics"] = {name: TopicSettings(**t) for name, t in topics.items()}
    return settings.model_copy(update=update)


class StageWorker:
    """The consume loop shared by the stages: poll, handle, checkpoint per partition, commit.

    Subclasses keep state per partition (`assign`/`revoke`), handle batches, and flush/persist
    in `checkpoint` (everything durable before offsets are committed).
    """

    def __init__(self, source: KafkaSource, commit_interval: float,
                 checkpoints: KafkaCheckpoints) -> None:
        self.source = source
        self.commit_interval = commit_interval
        self.checkpoints = checkpoints
        self.stop_event = threading.Event()
        self.records = 0
        self.commits = 0
        self.paused = False
        self.last_loop = time.monotonic()
        self.telemetry = get_telemetry()
        self._lag: dict[tuple[tuple[str, str], ...], float] = {}
        self._lag_checked = 0.0
        self._new: list[TopicPartition] = []
        source.on_assign = self._on_assign
        source.on_revoke = self._on_revoke

    # kafka-python runs rebalance callbacks on its IO thread, where blocking consumer calls are
    # refused: a new partition is paused there and its state loaded by the loop (`_take_new`).

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        if partitions and self.source.consumer is not None:
            self.source.consumer.pause(*partitions)
            self._new.extend(partitions)

    def _take_new(self) -> None:
        partitions, self._new = self._new, []
        with self.checkpoints.snapshot():  # read the state topic once for all of them
            seek = self.assign(partitions)
        if seek:
            self.source.seek(seek)
        assert self.source.consumer is not None
        self.source.consumer.resume(*partitions)
        log.info("took over %s (resuming at %s)", partitions, seek)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        self._new = [tp for tp in self._new if tp not in partitions]
        try:
            self.checkpoint(partitions)
            self.source.commit(partitions, blocking=False)
        except StoreError as exc:
            log.error("could not checkpoint %s before losing them: %s", partitions, exc)
        self.revoke(partitions)
        self.source.forget(partitions)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def lag(self) -> dict[tuple[tuple[str, str], ...], float]:
        return dict(self._lag)

    def _refresh_lag(self) -> None:
        """Consumer lag per partition, read on the loop thread (the consumer is not thread-safe)
        and served to /metrics from this cache."""
        self._lag_checked = time.monotonic()
        try:
            lag = self.source.lag()
        except Exception as exc:  # best effort: consumption goes on
            log.debug("lag unavailable: %s", exc)
            return
        self._lag = {labels(topic=k.rsplit(":", 1)[0], partition=k.rsplit(":", 1)[1]): float(v)
                     for k, v in lag.items()}

    def run(self) -> None:
        self.telemetry.watch("lag", self.lag)
        self.source.start()
        last = time.monotonic()
        dirty = False
        backoff = 1.0
        poll_backoff = 1.0
        kafka_failing = False
        try:
            while not self.stop_event.is_set():
                try:
                    records = self.source.poll(timeout_ms=500)
                except KafkaError as exc:
                    # Brokers unreachable: keep the process and its state, poll again later.
                    if not kafka_failing:
                        log.error("cannot fetch from Kafka, retrying with backoff: %s", exc)
                    kafka_failing = True
                    self.stop_event.wait(poll_backoff)
                    poll_backoff = min(poll_backoff * 2, 30.0)
                    self.last_loop = time.monotonic()
                    continue
                if kafka_failing:
                    log.info("fetching from Kafka again")
                    kafka_failing = False
                poll_backoff = 1.0
                self.last_loop = time.monotonic()
                if self._new:
                    self._take_new()
                if time.monotonic() - self._lag_checked >= 10.0:
                    self._refresh_lag()
                if records:
                    by_partition: dict[TopicPartition, list[RawRecord]] = defaultdict(list)
                    for record in records:
                        tp = TopicPartition(record.origin.source, record.origin.partition)
                        by_partition[tp].append(record)
                    for tp, batch in by_partition.items():
                        self.handle(tp, batch)
                    self.records += len(records)
                    dirty = True
                due = backoff if self.paused else self.commit_interval
                if dirty and time.monotonic() - last >= due:
                    try:
                        self._commit_all()
                        dirty = False
                        backoff = 1.0
                        if self.paused:
                            self._resume()
                    except StoreError as exc:
                        # Backpressure: consume nothing more, commit nothing, retry the flush.
                        self._pause(str(exc))
                        backoff = min(backoff * 2, 60.0)
                    except KafkaError as exc:
                        # State topic or commit unreachable: nothing is lost (the offsets were
                        # not committed past the saved state); retry with backoff.
                        log.error("checkpoint/commit failed, retrying with backoff: %s", exc)
                        backoff = min(backoff * 2, 60.0)
                    last = time.monotonic()
        finally:
            try:
                self._commit_all()
            except (StoreError, KafkaError) as exc:
                log.error("final checkpoint failed, offsets not committed: %s", exc)
            self.source.close()
            self.close()
            self.checkpoints.close()
            self.telemetry.unwatch("lag", self.lag)

    def _commit_all(self) -> None:
        self.checkpoint(list(self.source.positions))
        self.source.commit()
        self.commits += 1

    def _pause(self, error: str) -> None:
        if not self.paused and self.source.consumer is not None:
            log.error("store unavailable, pausing consumption: %s", error)
            self.source.consumer.pause(*self.source.consumer.assignment())
        self.paused = True

    def _resume(self) -> None:
        if self.source.consumer is not None:
            self.source.consumer.resume(*self.source.consumer.paused())
        self.paused = False
        log.info("store is back, consumption resumed")

    # -- hooks -------------------------------------------------------------------------------

    def assign(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Take partitions; return offsets to resume from (from their checkpoints)."""
        return {}

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions this worker no longer owns."""

    def handle(self, tp: TopicPartition, records: list[RawRecord]) -> None:
        raise NotImplementedError

    def checkpoint(self, partitions: list[TopicPartition]) -> None:
        """Make everything handled so far durable (before the offsets are committed)."""

    def close(self) -> None:
        """Release resources after the loop ends."""


class NormalizeWorker(StageWorker):
    """Raw records -> EdgeEvents on the edges topic, keyed by source identity."""

    def __init__(self, settings: Settings, store: Store) -> None:
        super().__init__(KafkaSource(_with_group(settings.kafka, "normalize")),
                         settings.kafka.commit_interval,
                         KafkaCheckpoints(settings.kafka, settings.kafka.state_topic))
        self.settings = settings
        self.store = store
        self.scope = f"normalize:{settings.kafka.group_id}"
        self.formats = topic_format_keys(settings.kafka)
        self.options = {f"{t.format}#{topic}": {"format_string": t.format_string}
                        for topic, t in settings.kafka.topics.items() if t.format_string}
        ident = settings.identity
        self.resolver = IdentityResolver(ident.trust_domain, ident.cluster_domain,
                                         ident.max_addresses, ident.address_ttl)
        self.producer = _producer(settings.kafka)
        self.topic = settings.kafka.edges_topic
        # Parsers hold span-pairing state: one set per partition, handed over with it.
        self.parsers: dict[TopicPartition, Parser] = {}
        self.dead: list[ParseFailure] = []
        self.events = 0
        self.max_ts = 0.0

    def _parser(self, tp: TopicPartition, format_key: str) -> Parser:
        parser = self.parsers.get(tp)
        if parser is None:
            name = format_key.split("#", 1)[0]
            options = dict(self.options.get(format_key, {}))
            if name in ("otlp-json", "otlp-proto", "auto"):
                options.update(pairing_ttl=self.settings.spans.pairing_ttl,
                               max_pending=self.settings.spans.max_pending)
            parser = self.parsers[tp] = make_parser(name, **options)
        return parser

    def assign(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        seek = {}
        for tp in partitions:
            saved = self.checkpoints.load_checkpoint(self.scope, f"{tp.topic}:{tp.partition}")
            if saved is not None:
                self.parsers[tp] = pickle.loads(saved[0])  # noqa: S301 - our own table
                seek[tp] = saved[1]["offset"]
        return seek

    def revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.parsers.pop(tp, None)

    def handle(self, tp: TopicPartition, records: list[RawRecord]) -> None:
        parser = self._parser(tp, records[0].format)
        events_before, dead_before = self.events, len(self.dead)
        for record in records:
            origin = str(record.origin)
            index = 0
            for line in split_lines(record.format.split("#", 1)[0], record.payload):
                for item in parser.parse(line, record.origin):
                    self._emit(item, f"{origin}#{index}")
                    index += 1
        # Spans whose partner did not come within the pairing TTL (event time) go out alone.
        for item in parser.flush(self.max_ts):
            self._emit(item, None)
        attrs = {"topic": tp.topic, "format": records[0].format}
        self.telemetry.records_consumed.add(len(records), attrs)
        self.telemetry.records_parsed.add(self.events - events_before, attrs)
        for failure in self.dead[dead_before:]:
            self.telemetry.parse_failures.add(1, {**attrs, "reason":
                                                  failure.reason.split(":", 1)[0][:80]})

    def _emit(self, item: EdgeEvent | ParseFailure, key: str | None) -> None:
        if isinstance(item, ParseFailure):
            self.dead.append(item)
            return
        event = self.resolver.resolve(item)
        self.max_ts = max(self.max_ts, event.ts.timestamp())
        value = encode_event(event)
        if key is None:  # released by span pairing later: identified by its content
            key = "pair:" + hashlib.blake2b(value, digest_size=12).hexdigest()
        self.producer.send(self.topic, value=value, key=source_key(event),
                           headers=[(ORIGIN_HEADER, key.encode())])
        self.events += 1

    def checkpoint(self, partitions: list[TopicPartition]) -> None:
        self.producer.flush(timeout=60)
        if self.dead:
            self.store.insert_dead_letters(self.dead)
            self.dead = []
        for tp in partitions:
            parser = self.parsers.get(tp)
            position = self.source.positions.get(tp)
            if parser is not None and position is not None:
                self.checkpoints.save_checkpoint(self.scope, f"{tp.topic}:{tp.partition}",
                                                 pickle.dumps(parser), {"offset": position})

    def close(self) -> None:
        self.producer.close(timeout=30)


class DetectWorker(StageWorker):
    """EdgeEvents -> graph, detectors, alerts: one Pipeline per partition of the edges topic."""

    def __init__(self, settings: Settings, store: Store,
                 alert_sink: Callable[[list[AlertChange]], None] | None = None) -> None:
        topics = {settings.kafka.edges_topic: {"format": "edge-event"}}
        super().__init__(KafkaSource(_with_group(settings.kafka, "detect", topics)),
                         settings.kafka.commit_interval,
                         KafkaCheckpoints(settings.kafka, settings.kafka.state_topic))
        self.settings = settings
        self.store = store
        self.pipelines: dict[TopicPartition, Pipeline] = {}
        self.alert_sink = alert_sink
        self.group = settings.kafka.group_id

    def _pipeline(self, tp: TopicPartition) -> Pipeline:
        pipeline = self.pipelines.get(tp)
        if pipeline is None:
            pipeline = Pipeline(self.settings, self.store,
                                checkpoint_scope=f"detect:{self.group}:{tp.topic}:{tp.partition}")
            pipeline.seen_keys = BoundedMap(_SEEN_KEYS, ttl=86400.0)
            pipeline.checkpoints = self.checkpoints
            pipeline.alert_change_sink = self.alert_sink
            self.pipelines[tp] = pipeline
        return pipeline

    def assign(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        seek = {}
        for tp in partitions:
            pipeline = self._pipeline(tp)
            offsets = pipeline.restore(load_active_alerts=False)
            key = f"{tp.topic}:{tp.partition}"
            if offsets and key in offsets:
                seek[tp] = offsets[key]
        return seek

    def revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            pipeline = self.pipelines.pop(tp, None)
            if pipeline is not None:
                pipeline.close()

    def handle(self, tp: TopicPartition, records: list[RawRecord]) -> None:
        # Records carry the raw record's identity (the origin header) as their key: event ids
        # and replay de-duplication do not depend on the hop.
        self._pipeline(tp).process(records)

    def checkpoint(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            pipeline = self.pipelines.get(tp)
            position = self.source.positions.get(tp)
            if pipeline is not None:
                offsets = {f"{tp.topic}:{tp.partition}": position} if position is not None \
                    else None
                pipeline.checkpoint(offsets)

    def close(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.close()


class AlertChangeProducer:
    """Detect -> notify hand-off: alert changes as JSON, keyed by fingerprint, flushed before
    the detect stage commits."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.producer = _producer(settings)
        self.topic = settings.alert_changes_topic

    def __call__(self, changes: list[AlertChange]) -> None:
        for change in changes:
            body = json.dumps({"kind": change.kind, "alert": change.alert.to_dict()},
                              default=str).encode()
            self.producer.send(self.topic, value=body, key=change.alert.fingerprint.encode())
        self.producer.flush(timeout=60)

    def close(self) -> None:
        self.producer.close(timeout=30)


class NotifyWorker(StageWorker):
    """Alert changes -> silences, routing, grouping, durable outbox and delivery."""

    def __init__(self, settings: Settings, store: Store, notifier: Any) -> None:
        topics = {settings.kafka.alert_changes_topic: {"format": "auto"}}
        super().__init__(KafkaSource(_with_group(settings.kafka, "notify", topics)),
                         settings.kafka.commit_interval,
                         KafkaCheckpoints(settings.kafka, settings.kafka.state_topic))
        self.store = store
        self.notifier = notifier
        self.pending: list[AlertChange] = []

    def handle(self, tp: TopicPartition, records: list[RawRecord]) -> None:
        for record in records:
            try:
                data = json.loads(record.payload)
                self.pending.append(AlertChange(data["kind"], Alert.from_dict(data["alert"])))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping malformed alert change at %s: %s", record.origin, exc)

    def checkpoint(self, partitions: list[TopicPartition]) -> None:
        if not self.pending:
            return
        changed = self.notifier.submit(self.pending)  # durable in the outbox when it returns
        if changed:
            self.store.upsert_alerts(changed)
        self.pending = []


__all__ = ["STAGES", "AlertChangeProducer", "DetectWorker", "NormalizeWorker", "NotifyWorker",
           "source_key"]
