"""Drivers for the fault tests: the real CLI in subprocesses, a TCP proxy that can cut the
broker off, a Tansu broker advertised behind that proxy, exact store snapshots.

Everything here talks to loopback only and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from meshwatch.devbroker import Broker, free_port, tansu_binary
from meshwatch.settings import StoreSettings
from meshwatch.store import Store

MESHWATCH = [sys.executable, "-m", "meshwatch.cli.main"]
START = "2026-11-20T00:00:00Z"
TOPIC = "envoy.access"
CLI_ENV = {"NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``meshwatch ARGS`` to completion (text output captured)."""
    return subprocess.run([*MESHWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **CLI_ENV}, **kw)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               procs: Iterable[subprocess.Popen[bytes]] = (), every: float = 0.25) -> float:
    """Poll ``condition`` until true; fail naming ``what`` (or a process that died early).

    Returns the seconds waited."""
    started = time.monotonic()
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"{what}: process {proc.pid} exited ({proc.returncode})"
        assert time.monotonic() - started < timeout, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(every)
    return time.monotonic() - started


# -- Kafka -------------------------------------------------------------------------------------


@contextlib.contextmanager
def tansu(workdir: Path, advertised_port: int | None = None) -> Iterator[Broker]:
    """A Tansu broker on a free port; with ``advertised_port`` it tells clients to connect
    there (a proxy in front of it), so every connection goes through that proxy."""
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = workdir / f"tansu-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # fixed arguments, our own binary
            [str(tansu_binary()), "broker", "--listener-url", listen,
             "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT)
    broker = Broker(f"127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: _accepts(port), 30, "tansu listening", [process], every=0.1)
        yield broker
    finally:
        broker.stop()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def publish(bootstrap: str, topic: str, payloads: list[bytes], partitions: int) -> list[int]:
    """Send record i to partition i % partitions (deterministic offsets); returns the record
    count per partition (the exact end offsets, as nothing else writes the topic)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20,
                             max_request_size=16 << 20, acks="all")
    counts = [0] * partitions
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, payload, partition=i % partitions)
            counts[i % partitions] += 1
        producer.flush(timeout=120)
    finally:
        producer.close()
    return counts


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset per partition (0 where nothing was committed)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, request_timeout_ms=20_000)
    try:
        return [consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)]
    finally:
        consumer.close()


def worker_config(path: Path, bootstrap: str, group: str, **extra: Any) -> Path:
    """A `meshwatch run` config for one consumer group on TOPIC (fast group joins)."""
    kafka = {"bootstrap_servers": [bootstrap], "group_id": group,
             "topics": {TOPIC: "envoy-json"}, "session_timeout": "6s",
             "max_poll_interval": "30s", "commit_interval": "1s", "max_poll_records": 1000}
    kafka.update(extra.pop("kafka", {}))
    path.write_text(yaml.safe_dump({"kafka": kafka, **extra}))
    return path


@dataclass
class WorkerProcess:
    """`meshwatch run --config C --store S` (Kafka mode) in a subprocess, output to a log."""

    config: Path
    store: Path
    log: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> WorkerProcess:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*MESHWATCH, "run", "--config", str(self.config), "--store", str(self.store),
                 *self.extra], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **CLI_ENV})
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no final checkpoint, no commit, nothing flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, then the exit code (the worker checkpoints and commits first)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker ignored SIGTERM for {timeout} s; log:\n"
                                 f"{self.output()[-3000:]}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# -- the store ---------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What a run left in a store, read with FINAL (exact after replays)."""

    events: int
    event_rows: int  # without FINAL: rows inserted and not merged yet (replays show here)
    dead_letters: int
    windows: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    edge_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    alerts: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.windows.values())

    @property
    def alert_count_total(self) -> int:
        return sum(a[2] for a in self.alerts.values())


def snapshot(path: Path) -> Snapshot:
    """Open the embedded store at ``path`` (no other process may hold it), read, close."""
    store = Store.open(StoreSettings(path=path))
    try:
        snap = Snapshot(
            events=store.count("edge_events"),
            event_rows=store.count("edge_events", final=False),
            dead_letters=store.count("dead_letters"),
        )
        for row in store.query("SELECT toString(window_start) AS w, edge_src, edge_dst, part, "
                               "requests FROM {db}.edge_windows FINAL"):
            snap.windows[(row["w"], row["edge_src"], row["edge_dst"], int(row["part"]))] = int(
                row["requests"])
            edge = (row["edge_src"], row["edge_dst"])
            snap.edge_requests[edge] = snap.edge_requests.get(edge, 0) + int(row["requests"])
        for row in store.query("SELECT id, fingerprint, detector, count, severity, "
                               "toString(first_seen) AS f, toString(last_seen) AS l "
                               "FROM {db}.alerts FINAL"):
            snap.alerts[row["id"]] = (row["fingerprint"], row["detector"], int(row["count"]),
                                      row["severity"], row["f"], row["l"])
        return snap
    finally:
        store.close()


def duplicate_event_ids(path: Path) -> int:
    """Event ids stored more than once after merging (must be 0: idempotent writes)."""
    store = Store.open(StoreSettings(path=path))
    try:
        store.execute("OPTIMIZE TABLE {db}.edge_events FINAL")
        rows = store.query("SELECT count() - uniqExact(event_id) AS d FROM {db}.edge_events")
        return int(rows[0]["d"])
    finally:
        store.close()


# -- a TCP proxy that can go down ----------------------------------------------------------------


class TcpProxy:
    """Forwards a loopback port to a target. `down` stops listening and resets every open
    connection (a broker that vanished: connection refused); `up` listens again on the same
    port. One selector thread, so it costs nothing while idle."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tcp-proxy")
        self.connections = 0

    def start(self) -> TcpProxy:
        self.up()
        self._thread.start()
        return self

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            sock.setblocking(False)
            self._listener = sock
            self._sel.register(sock, selectors.EVENT_READ, "accept")

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in list(self._pairs):
                self._drop(sock, reset=True)

    def close(self) -> None:
        self.down()
        self._stop.set()
        self._thread.join(timeout=5)

    def _drop(self, sock: socket.socket, reset: bool = False) -> None:
        other = self._pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            if reset:  # RST instead of FIN: what a dead peer looks like
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                 b"\x00\x00\x00\x00")
            s.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.2):
                with self._lock:
                    if key.data == "accept":
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    else:
                        self._pump(key.fileobj)  # type: ignore[arg-type]

    def _accept(self, listener: socket.socket) -> None:
        if listener is not self._listener:
            return
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.connections += 1
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(5)
        self._pairs[client] = upstream
        self._pairs[upstream] = client
        self._sel.register(client, selectors.EVENT_READ, "pump")
        self._sel.register(upstream, selectors.EVENT_READ, "pump")

    def _pump(self, sock: socket.socket) -> None:
        other = self._pairs.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(1 << 16)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)
