"""Kafka source: a kafka-python consumer group with manual, flush-then-commit offsets.

The consumer never auto-commits. The worker calls `commit` only after the pipeline has flushed
every writer and saved its state, so a crash replays at most the records since the last
checkpoint, and idempotent writes absorb the replay. On a rebalance the worker is told which
partitions it loses *before* they go (`on_revoke`) so it can checkpoint and commit them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ingest.sources import kafka_fastpath
from meshwatch.records import Origin, ParseFailure, RawRecord
from meshwatch.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Header carrying a republished EdgeEvent's raw-record identity (scale-out stages).
ORIGIN_HEADER = "meshwatch.origin"


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached (the worker retries with backoff)."""


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python consumer options from settings (also used by the benchmark)."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "max_poll_records": settings.max_poll_records,
        "session_timeout_ms": int(settings.session_timeout * 1000),
        "heartbeat_interval_ms": max(100, int(settings.session_timeout * 1000) // 3),
        "max_poll_interval_ms": int(settings.max_poll_interval * 1000),
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "security_protocol": settings.security_protocol,
        "client_id": f"meshwatch-{settings.group_id}",
    }
    if settings.sasl_mechanism:
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.sasl_password
    if settings.ssl_cafile:
        config["ssl_cafile"] = str(settings.ssl_cafile)
    return config


@dataclass
class _Listener(ConsumerRebalanceListener):
    on_revoke: Callable[[list[TopicPartition]], None]
    on_assign: Callable[[list[TopicPartition]], None]

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            self.on_revoke(list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.on_assign(list(assigned))


@dataclass
class KafkaSource:
    """Polls the configured topics and tracks the next offset per partition."""

    settings: KafkaSettings
    on_revoke: Callable[[list[TopicPartition]], None] = lambda tps: None
    on_assign: Callable[[list[TopicPartition]], None] = lambda tps: None
    #: Next offset to consume per partition (what a commit would store).
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    consumer: KafkaConsumer | None = None
    _formats: dict[str, str] | None = None
    _topics_checked: bool = False

    def start(self) -> None:
        kafka_fastpath.install()
        try:
            self.consumer = KafkaConsumer(**consumer_config(self.settings))
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"cannot reach Kafka at {', '.join(self.settings.bootstrap_servers)}: {exc}"
            ) from None
        self.consumer.subscribe(
            topics=sorted(self.settings.topics),
            listener=_Listener(on_revoke=self.on_revoke, on_assign=self.on_assign),
        )

    def formats(self) -> dict[str, str]:
        """Topic -> format key for the pipeline (see `topic_format_keys`)."""
        if self._formats is None:
            self._formats = topic_format_keys(self.settings)
        return self._formats

    def poll(self, timeout_ms: int = 500) -> list[RawRecord]:
        """One fetch: raw records in partition order, each tagged with its topic's format."""
        assert self.consumer is not None, "start() first"
        batches = self.consumer.poll(timeout_ms=timeout_ms,
                                     max_records=self.settings.max_poll_records)
        if not self._topics_checked and self.consumer.assignment():
            self._topics_checked = True  # once the group is joined: the brokers answer
            self.warn_missing_topics()
        formats = self.formats()
        out: list[RawRecord] = []
        for tp, records in batches.items():
            fmt = formats.get(tp.topic, "auto")
            topic, partition = tp.topic, tp.partition
            for rec in records:
                key = None
                if rec.headers:
                    key = next((v.decode("utf-8", "replace") for k, v in rec.headers
                                if k == ORIGIN_HEADER), None)
                out.append(RawRecord(rec.value if rec.value is not None else b"",
                                     Origin(topic, rec.offset, partition), fmt, key))
            if records:
                self.positions[tp] = records[-1].offset + 1
        return out

    def warn_missing_topics(self) -> list[str]:
        """Log each configured topic the cluster does not have (a typo in ``kafka.topics``
        would otherwise consume nothing, silently); the others are consumed meanwhile, and a
        topic created later is picked up at the next metadata refresh."""
        assert self.consumer is not None
        try:
            missing = [topic for topic in sorted(self.settings.topics)
                       if not self.consumer.partitions_for_topic(topic)]
        except KafkaError as exc:
            log.debug("could not check the configured topics exist: %s", exc)
            return []
        for topic in missing:
            log.warning("Kafka topic %r (kafka.topics) does not exist: consuming the other "
                        "topics; it is picked up once created (within metadata_max_age, 5 min)",
                        topic)
        return missing

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)
            self.positions[tp] = offset

    def commit(self, partitions: list[TopicPartition] | None = None,
               blocking: bool = True) -> dict[str, int]:
        """Commit the tracked positions (all, or the given partitions).

        Inside a rebalance callback (which kafka-python runs on its IO thread, where blocking
        consumer calls are refused) use ``blocking=False``: the commit is queued ahead of the
        re-join, and a lost commit only means an idempotent replay.
        """
        assert self.consumer is not None
        chosen = self.positions if partitions is None else {
            tp: self.positions[tp] for tp in partitions if tp in self.positions}
        if not chosen:
            return {}
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in chosen.items()}
        if blocking:
            self.consumer.commit(offsets)
        else:
            self.consumer.commit_async(offsets)
        return {f"{tp.topic}:{tp.partition}": off for tp, off in chosen.items()}

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop(tp, None)

    def lag(self) -> dict[str, int]:
        """Records behind the log end, per partition (for metrics)."""
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        ends = self.consumer.end_offsets(assigned)
        return {f"{tp.topic}:{tp.partition}": max(0, ends[tp] - self.consumer.position(tp))
                for tp in assigned}

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None


class DeadLetterProducer:
    """Copies dead letters to a Kafka topic: the raw bytes as the value, the reason and the
    origin in headers, keyed by the source topic. Synchronous (flushes before returning), so a
    checkpoint never commits past dead letters that did not reach the topic."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        from kafka import KafkaProducer

        config = consumer_config(settings)
        producer_keys = ("bootstrap_servers", "security_protocol", "sasl_mechanism",
                         "sasl_plain_username", "sasl_plain_password", "ssl_cafile",
                         "client_id")
        self.topic = topic
        self.producer = KafkaProducer(**{k: v for k, v in config.items() if k in producer_keys},
                                      acks="all", max_request_size=2 * 1024 * 1024)

    def __call__(self, failures: list[ParseFailure]) -> None:
        for failure in failures:
            origin = failure.origin
            headers = [
                ("meshwatch.reason", failure.reason.encode("utf-8", "replace")[:4000]),
                ("meshwatch.format", failure.format.encode()),
                ("meshwatch.source", origin.source.encode("utf-8", "replace")),
                ("meshwatch.offset", str(origin.offset).encode()),
            ]
            if origin.partition is not None:
                headers.append(("meshwatch.partition", str(origin.partition).encode()))
            self.producer.send(self.topic, value=failure.payload,
                               key=origin.source.encode("utf-8", "replace"), headers=headers)
        self.producer.flush(timeout=30)

    def close(self) -> None:
        self.producer.close(timeout=10)


def topic_format_keys(settings: KafkaSettings) -> dict[str, str]:
    """Topic -> the pipeline's parser key: the format name, or ``format#topic`` when the topic
    has its own Envoy format string (so two topics can carry different custom formats)."""
    return {topic: f"{t.format}#{topic}" if t.format_string else t.format
            for topic, t in settings.topics.items()}


def topic_format_options(settings: KafkaSettings) -> dict[str, dict[str, str]]:
    """Parser options per format key (only topics with a custom format string have any)."""
    return {f"{t.format}#{topic}": {"format_string": t.format_string}
            for topic, t in settings.topics.items() if t.format_string}


def offsets_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def parse_offsets_key(key: str) -> TopicPartition:
    topic, _, partition = key.rpartition(":")
    return TopicPartition(topic, int(partition))
