"""kafka-python fast paths: the v2 record-batch unpacker returns exactly what kafka-python's own
unpacker returns from a real broker (keys, values, headers, timestamps, sizes, offsets, fetch
positions), and the large socket reads return every byte and report a closed connection."""

from __future__ import annotations

import contextlib
import socket

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CorruptRecordError, KafkaConnectionError
from kafka.net.transport import KafkaTCPTransport
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from ingest.sources import kafka_fastpath

TOPIC = "batches"


@pytest.fixture
def restore_unpacker():
    yield
    kafka_fastpath.install()


def _records_of_every_shape() -> list[tuple[bytes | None, bytes | None, list]]:
    """Shapes that exercise each varint length and each optional part of a record."""
    shapes: list[tuple[bytes | None, bytes | None, list]] = [
        (None, b"", []),  # empty value
        (b"k", None, []),  # null value (a tombstone)
        (None, b"x" * 63, []),  # one-byte lengths
        (b"key-" * 20, b"y" * 64, []),  # two-byte lengths start at 64 (zigzag)
        (None, b"z" * 8191, []),
        (None, b"w" * 8192, []),  # three-byte length
        (None, bytes(range(256)) * 300, [("h", b"1"), ("trace", b"abc"), ("ü", b"")]),
        (b"", b"{}", [("meshwatch.origin", b"envoy.access[0]@7")]),
    ]
    shapes += [(str(i).encode(), f'{{"n": {i}}}'.encode(), []) for i in range(300)]
    return shapes


def _produce(broker, compression: str | None) -> int:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50,
                             compression_type=compression)
    shapes = _records_of_every_shape()
    for i, (key, value, headers) in enumerate(shapes):
        # Spread timestamps so deltas need one, two and more varint bytes.
        producer.send(TOPIC, value=value, key=key, headers=headers, partition=i % 2,
                      timestamp_ms=1_763_600_000_000 + i * i * 37)
    producer.flush()
    producer.close()
    return len(shapes)


def _consume(broker, expected: int, start_offset: int = 0) -> tuple[list, dict]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             max_poll_records=50)
    parts = [TopicPartition(TOPIC, p) for p in (0, 1)]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, start_offset)
    out: list = []
    for _ in range(200):
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
        if len(out) >= expected:
            break
    positions = {tp.partition: consumer.position(tp) for tp in parts}
    consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset)), positions


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_fast_unpacker_matches_kafka_python(kafka_broker, compression, restore_unpacker):
    kafka_broker.create_topics({TOPIC: 2})
    n = _produce(kafka_broker, compression)

    kafka_fastpath.uninstall()
    assert not kafka_fastpath.installed()
    reference, reference_positions = _consume(kafka_broker, n)
    assert kafka_fastpath.install() and kafka_fastpath.installed()
    assert KafkaTCPTransport._sock_recv is kafka_fastpath._sock_recv
    fast, fast_positions = _consume(kafka_broker, n)

    assert len(reference) == n
    assert fast == reference  # every ConsumerRecord field, in order
    assert fast_positions == reference_positions
    # Fetching from the middle of a batch skips the records before the fetch offset.
    kafka_fastpath.uninstall()
    mid_reference, _ = _consume(kafka_broker, n - 2 * 100, start_offset=100)
    kafka_fastpath.install()
    mid_fast, _ = _consume(kafka_broker, n - 2 * 100, start_offset=100)
    assert mid_fast == mid_reference and mid_fast[0].offset == 100


def _batch_bytes(values: list[bytes]) -> bytearray:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(timestamp=1_763_600_000_000 + i, key=None, value=value, headers=[])
    builder.close()
    return bytearray(builder.buffer())


class _Partition:
    """The attributes `PartitionRecords` gives its unpacker (for corrupt-batch tests)."""

    from kafka.consumer.fetcher import IsolationLevel

    topic_partition = TopicPartition(TOPIC, 0)
    isolation_level = IsolationLevel.READ_UNCOMMITTED
    leader_epoch = -1
    records_read = bytes_read = next_fetch_offset = 0

    def __init__(self, check_crcs: bool) -> None:
        self.check_crcs = check_crcs
        self.drained = False

    def drain(self) -> None:
        self.drained = True


def _unpack(buffer: bytes | bytearray, check_crcs: bool = True) -> list:
    tp = TopicPartition(TOPIC, 0)
    return list(kafka_fastpath._unpack_records(_Partition(check_crcs), tp,
                                               MemoryRecords(bytes(buffer)), None, None))


def test_corrupt_batches_raise_corrupt_record_error():
    good = _batch_bytes([b"a" * 100, b"b" * 100])
    assert [r.value for r in _unpack(good)] == [b"a" * 100, b"b" * 100]

    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="crc"):
        _unpack(flipped)
    # Without CRC checks, the record framing still catches a wrong length.
    bad_length = bytearray(good)
    bad_length[61] = 0x7E  # first record's length varint: 63, not what follows
    with pytest.raises(CorruptRecordError):
        _unpack(bad_length, check_crcs=False)


def test_unsupported_kafka_python_keeps_the_original(monkeypatch, restore_unpacker):
    kafka_fastpath.uninstall()
    monkeypatch.setattr(kafka_fastpath.kafka, "__version__", "4.0.0")
    assert not kafka_fastpath.supported()
    assert kafka_fastpath.install() is False
    assert not kafka_fastpath.installed()


class _Transport:
    """What `_sock_recv` reads from a transport: its non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock


def test_socket_reads_return_everything_then_report_a_closed_peer():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    transport = _Transport(ours)
    try:
        assert kafka_fastpath._sock_recv(transport) == (b"", None)  # nothing yet: no error
        payload = bytes(range(256)) * 40_000  # 10 MB: more than one read
        theirs.setblocking(False)
        sent = 0
        received = []
        while sent < len(payload):
            with contextlib.suppress(BlockingIOError):  # buffer full: the reader drains it
                sent += theirs.send(payload[sent:sent + (1 << 20)])
            data, err = kafka_fastpath._sock_recv(transport)
            assert err is None
            received.append(data)
        theirs.close()
        data, err = kafka_fastpath._sock_recv(transport)
        received.append(data)
        assert b"".join(received) == payload
        assert isinstance(err, KafkaConnectionError) and "disconnected" in str(err)
    finally:
        ours.close()


def test_record_crcs_are_checked_in_c():
    assert kafka_fastpath.c_crc32c_in_use()
