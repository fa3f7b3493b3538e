"""Processing state in a Kafka topic, so a partition's state follows the partition.

When the scale-out stages rebalance, the new owner of a partition must continue from exactly the
state the old owner saved with its last committed offset, whichever machine (and store) it runs
on. Like Kafka Streams' changelog topics, each checkpoint is written to a compacted topic keyed
by its name; the newest version wins. States larger than a Kafka message are compressed and
chunked (one key per chunk index, every chunk tagged with the version and the chunk count).
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from ingest.sources.kafka import consumer_config
from meshwatch.settings import KafkaSettings

CHUNK = 512 * 1024


def _client_config(settings: KafkaSettings) -> dict[str, Any]:
    keys = ("bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_plain_username",
            "sasl_plain_password", "ssl_cafile")
    return {k: v for k, v in consumer_config(settings).items() if k in keys}


def ensure_state_topic(settings: KafkaSettings, topic: str) -> None:
    """Create the compacted single-partition state topic if it does not exist."""
    admin = KafkaAdminClient(**_client_config(settings))
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "cleanup.policy": "compact"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


class KafkaCheckpoints:
    """`save_checkpoint` / `load_checkpoint` over a compacted topic (the Store's interface)."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.producer = KafkaProducer(**_client_config(settings), acks="all",
                                      max_request_size=2 * CHUNK, linger_ms=0)
        self._snapshot: dict[str, dict[int, dict[str, Any]]] | None = None

    def save_checkpoint(self, scope: str, name: str, state: bytes,
                        offsets: dict[str, int] | None = None) -> None:
        key = f"{scope}|{name}"
        blob = zlib.compress(state, 1)
        chunks = [blob[i:i + CHUNK] for i in range(0, len(blob), CHUNK)] or [b""]
        version = str(time.time_ns()).encode()
        meta = json.dumps(offsets or {}).encode()
        for index, chunk in enumerate(chunks):
            self.producer.send(self.topic, key=f"{key}#{index}".encode(), value=chunk, headers=[
                ("version", version), ("chunks", str(len(chunks)).encode()), ("offsets", meta)])
        self.producer.flush(timeout=60)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read the topic once and answer every `load_checkpoint` inside from that read
        (taking over many partitions then costs one read, not one per partition)."""
        self._snapshot = self._read_all()
        try:
            yield
        finally:
            self._snapshot = None

    def load_checkpoint(self, scope: str, name: str) -> tuple[bytes, dict[str, int]] | None:
        key = f"{scope}|{name}"
        everything = self._snapshot if self._snapshot is not None else self._read_all()
        found = everything.get(key)
        if not found:
            return None
        # Newest version whose chunks are all present.
        for version in sorted(found, reverse=True):
            parts = found[version]
            count = parts["count"]
            if all(i in parts["chunks"] for i in range(count)):
                blob = b"".join(parts["chunks"][i] for i in range(count))
                return zlib.decompress(blob), parts["offsets"]
        return None

    def _read_all(self) -> dict[str, dict[int, dict[str, Any]]]:
        """Every key's versions, read from the start of the topic to its current end."""
        consumer = KafkaConsumer(**_client_config(self.settings), enable_auto_commit=False,
                                 group_id=None, fetch_max_bytes=64 << 20,
                                 max_partition_fetch_bytes=16 << 20)
        out: dict[str, dict[int, dict[str, Any]]] = {}
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            while consumer.position(tp) < end:
                for records in consumer.poll(timeout_ms=1000).values():
                    for rec in records:
                        key, _, index = rec.key.decode().rpartition("#")
                        headers = dict(rec.headers or ())
                        version = int(headers["version"])
                        versions = out.setdefault(key, {})
                        entry = versions.setdefault(version, {
                            "count": int(headers["chunks"]), "chunks": {},
                            "offsets": json.loads(headers["offsets"])})
                        entry["chunks"][int(index)] = rec.value
                        if len(versions) > 2:  # the newest, and one in case it is partial
                            del versions[min(versions)]
        finally:
            consumer.close()
        return out

    def close(self) -> None:
        self.producer.close(timeout=30)
