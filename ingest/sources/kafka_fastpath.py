"""Two fast paths for kafka-python's consumer, installed by the Kafka source.

**Record batches.** kafka-python decodes each record through a `DefaultRecord` object, seven
varint function calls and two copies of the value, then wraps it in a `ConsumerRecord`: about
7 us per record, most of a 100k records/s budget. The fast unpacker walks each uncompressed (or
decompressed) v2 batch in one loop with short varints inlined and one copy of each value
(3 us). Everything else stays kafka-python's: fetching, batch headers, CRC checks,
decompression, control batches, offset bookkeeping, metrics. What the fast path does not cover
(key/value deserializers, read_committed transactions, legacy v0/v1 message sets) goes through
kafka-python's original code.

**Socket reads.** kafka-python 3 reads broker responses on its own network thread, 4 KiB per
``recv``. Every ``recv`` releases the GIL, and taking it back while the main thread is parsing
records waits up to a switch interval (5 ms), so a busy worker starved its own fetches: 4 KiB
per 5 ms. Reading up to 4 MiB per call drains the socket buffer in one go (measured on a TEXT
backlog: time in ``poll`` 1.4 s -> 0.5 s per 100k records).

`tests/ingest/test_kafka_fastpath.py` checks both paths return identical records from a real
broker, including headers, null keys and values, compressed batches and multi-byte varints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import kafka
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError, KafkaConnectionError
from kafka.net.transport import KafkaTCPTransport
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)

_PartitionRecords: Any = getattr(Fetcher, "PartitionRecords", None)
_ORIGINAL_UNPACK: Any = getattr(_PartitionRecords, "_unpack_records", None)
_ORIGINAL_RECV: Any = getattr(KafkaTCPTransport, "_sock_recv", None)
#: kafka-python major version whose internals this module replaces.
SUPPORTED_MAJOR = "3."
#: Bytes per socket read (kafka-python reads 4 KiB).
RECV_BYTES = 4 << 20


def supported() -> bool:
    """Whether the installed kafka-python has the internals this module replaces."""
    return (kafka.__version__.startswith(SUPPORTED_MAJOR)
            and getattr(_ORIGINAL_UNPACK, "__name__", "") == "_unpack_records"
            and getattr(_ORIGINAL_RECV, "__name__", "") == "_sock_recv")


def installed() -> bool:
    return (_PartitionRecords is not None
            and _PartitionRecords._unpack_records is _unpack_records
            and KafkaTCPTransport._sock_recv is _sock_recv)


def c_crc32c_in_use() -> bool:
    """Whether kafka-python checks record CRCs with the C ``crc32c`` package (a dependency):
    its pure-Python fallback is about 10x slower and would dominate consuming."""
    from kafka.record import util

    return getattr(util, "crc32c_c", None) is not None


def install() -> bool:
    """Use both fast paths in every KafkaConsumer of this process; False if unsupported."""
    if not c_crc32c_in_use():
        log.warning("the crc32c package is missing: kafka-python checks CRCs in pure Python, "
                    "about 10x slower (pip install crc32c)")
    if installed():
        return True
    if not supported():
        log.warning("kafka-python %s: fast record unpacking and socket reads not installed "
                    "(built for %sx)", kafka.__version__, SUPPORTED_MAJOR)
        return False
    _PartitionRecords._unpack_records = _unpack_records
    KafkaTCPTransport._sock_recv = _sock_recv
    return True


def uninstall() -> None:
    """Back to kafka-python's own code (tests compare the two)."""
    if _PartitionRecords is not None and _ORIGINAL_UNPACK is not None:
        _PartitionRecords._unpack_records = _ORIGINAL_UNPACK
    if _ORIGINAL_RECV is not None:
        KafkaTCPTransport._sock_recv = _ORIGINAL_RECV


_READS = threading.local()


def _sock_recv(self: Any) -> tuple[bytes, Exception | None]:
    """`KafkaTCPTransport._sock_recv` with large reads into one reused buffer: everything the
    socket holds, then (data, error) as the original returns them."""
    buffer = getattr(_READS, "buffer", None)
    if buffer is None:  # one per network thread (per client), not per broker connection
        buffer = _READS.buffer = memoryview(bytearray(RECV_BYTES))
    chunks: list[bytes] = []
    err: Exception | None = None
    while True:
        try:
            n = self._sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            break
        except BaseException as exc:
            log.exception("%s: Error receiving network data closing socket", self)
            err = KafkaConnectionError(exc)
            break
        if not n:
            log.error("%s: socket disconnected", self)
            err = KafkaConnectionError("socket disconnected")
            break
        chunks.append(bytes(buffer[:n]))
    return b"".join(chunks), err


def _unpack_records(self: Any, tp: Any, records: Any, key_deserializer: Any,
                    value_deserializer: Any) -> Iterator[ConsumerRecord]:
    """`PartitionRecords._unpack_records` for the common case: v2 batches, raw bytes,
    read_uncommitted. Same bookkeeping as the original (offsets, epoch, counters, drain)."""
    from kafka.consumer.fetcher import IsolationLevel

    if (key_deserializer is not None or value_deserializer is not None
            or self.isolation_level != IsolationLevel.READ_UNCOMMITTED):
        yield from _ORIGINAL_UNPACK(self, tp, records, key_deserializer, value_deserializer)
        return
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check")
            if not isinstance(batch, DefaultRecordBatch):
                yield from _legacy_records(self, tp, batch)
            elif batch.is_control_batch:  # transaction markers: never returned to the consumer
                self.leader_epoch = batch.leader_epoch
                self.next_fetch_offset = batch.next_offset
            else:
                self.leader_epoch = batch.leader_epoch
                yield from _batch_records(self, tp, batch)
            batch = records.next_batch()
        # v2 keeps a batch's last offset even when compaction removed its last record: fetch
        # from after it, or the same batch comes back forever.
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()
    except StopIteration:  # a StopIteration inside a generator would end it silently
        raise RuntimeError("StopIteration raised unpacking messageset") from None


def _legacy_records(self: Any, tp: Any, batch: Any) -> Iterator[ConsumerRecord]:
    """v0/v1 message sets (Kafka < 0.11): rare, so kafka-python's record objects are fine."""
    for record in batch:
        if self.check_crcs and not record.validate_crc():
            raise CorruptRecordError(
                f"Record for partition {self.topic_partition} at offset {record.offset} "
                "failed crc check")
        key, value = record.key, record.value
        self.records_read += 1
        self.bytes_read += record.size_in_bytes
        self.next_fetch_offset = record.offset + 1
        yield ConsumerRecord(
            tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
            record.timestamp_type, key, value, record.headers, record.checksum,
            -1 if key is None else len(key), -1 if value is None else len(value), -1)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos`` (any length): (value, next position)."""
    return decode_varint(data, pos)


def _batch_records(self: Any, tp: Any, batch: DefaultRecordBatch) -> Iterator[ConsumerRecord]:
    """Every record of one v2 batch, decoded in one loop over an immutable copy."""
    batch._maybe_uncompress()
    data = bytes(batch._buffer)  # slices of bytes are bytes: one copy per value, not two
    pos = batch._pos
    base_offset = batch.base_offset
    timestamp_type = batch.timestamp_type
    log_append = timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME
    first_timestamp, max_timestamp = batch.first_timestamp, batch.max_timestamp
    topic, partition, epoch = tp.topic, tp.partition, self.leader_epoch
    end = len(data)
    try:
        for _ in range(batch._num_records):
            # Record: length, attributes (int8), timestamp delta, offset delta, key, value,
            # headers; every integer a zigzag varint. One- and two-byte varints are decoded inline.
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                b = (b & 0x7F) | (data[pos + 1] << 7)
                length, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                length, pos = _varint(data, pos)
            start = pos
            pos += 1  # attributes: unused in v2
            b = data[pos]
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                b = (b & 0x7F) | (data[pos + 1] << 7)
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                ts_delta, pos = _varint(data, pos)
            b = data[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                b = (b & 0x7F) | (data[pos + 1] << 7)
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                offset_delta, pos = _varint(data, pos)
            b = data[pos]
            if b < 0x80:
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                b = (b & 0x7F) | (data[pos + 1] << 7)
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                key_len, pos = _varint(data, pos)
            if key_len >= 0:
                key: bytes | None = data[pos:pos + key_len]
                pos += key_len
            else:
                key = None
            b = data[pos]
            if b < 0x80:
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                b = (b & 0x7F) | (data[pos + 1] << 7)
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                value_len, pos = _varint(data, pos)
            if value_len >= 0:
                value: bytes | None = data[pos:pos + value_len]
                pos += value_len
            else:
                value = None
            header_count = data[pos]
            if header_count == 0:
                pos += 1
                headers: list[tuple[str, bytes | None]] = []
                header_size = -1
            else:
                headers, header_size, pos = _headers(data, pos)
            if pos - start != length or pos > end:
                raise CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, "
                    f"but instead read {pos - start}")
            offset = base_offset + offset_delta
            self.records_read += 1
            self.bytes_read += length
            self.next_fetch_offset = offset + 1
            yield ConsumerRecord(
                topic, partition, epoch, offset,
                max_timestamp if log_append else first_timestamp + ts_delta, timestamp_type,
                key, value, headers, None,
                -1 if key is None else key_len, -1 if value is None else value_len, header_size)
    except (ValueError, IndexError) as exc:
        raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
    if pos != end:
        raise CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")


def _headers(data: bytes, pos: int) -> tuple[list[tuple[str, bytes | None]], int, int]:
    """(headers, their serialized size as kafka-python counts it, next position)."""
    count, pos = _varint(data, pos)
    if count < 0:
        raise CorruptRecordError(f"Found invalid number of record headers {count}")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    for _ in range(count):
        key_len, pos = _varint(data, pos)
        if key_len < 0:
            raise CorruptRecordError(f"Invalid negative header key size {key_len}")
        key = data[pos:pos + key_len].decode("utf-8")
        pos += key_len
        value_len, pos = _varint(data, pos)
        value: bytes | None = None
        if value_len >= 0:
            value = data[pos:pos + value_len]
            pos += value_len
        headers.append((key, value))
        size += key_len + (len(value) if value is not None else 0)
    return headers, size, pos
