"""The Kafka worker loop: poll -> process -> (every commit interval) flush, save state, commit.

Order matters and is the whole point: offsets are committed only after `Pipeline.checkpoint`
returned, i.e. after every writer flushed and the processing state was saved. If the store is
unavailable the worker pauses its partitions (backpressure: nothing more is consumed, nothing is
committed), retries the flush with backoff and resumes when it succeeds. If the brokers cannot be
reached the checkpoint is still written and only the commit fails: the worker keeps running,
retries the commit with the same backoff, and a restart resumes from the checkpoint meanwhile. A
fetch that fails (brokers unreachable) is retried with backoff too, without advancing event time.
SIGTERM/SIGINT stop the loop cleanly: a last checkpoint and commit, then exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from ingest.sources.kafka import KafkaSource, parse_offsets_key
from meshwatch.pipeline import Pipeline
from meshwatch.store import StoreError
from meshwatch.telemetry import labels

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500
LAG_INTERVAL = 10.0


@dataclass
class WorkerStatus:
    """Live counters for progress output and /metrics."""

    started: float = field(default_factory=time.monotonic)
    checkpoints: int = 0
    commits: int = 0
    store_failures: int = 0
    commit_failures: int = 0
    poll_failures: int = 0
    paused: bool = False
    #: The last commit failed (brokers unreachable, group rebalancing): retried with backoff.
    commit_failing: bool = False
    #: The last fetch failed (brokers unreachable): retried with backoff.
    poll_failing: bool = False
    last_error: str | None = None


class KafkaWorker:
    """Runs one pipeline over a Kafka consumer group until stopped."""

    def __init__(
        self,
        pipeline: Pipeline,
        source: KafkaSource,
        commit_interval: float = 5.0,
        idle_advance_after: float | None = None,
        on_progress: Callable[[KafkaWorker], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.commit_interval = commit_interval
        window = pipeline.settings.graph.window + pipeline.settings.graph.allowed_lateness
        self.idle_advance_after = idle_advance_after if idle_advance_after is not None else window
        self.on_progress = on_progress
        self.status = WorkerStatus()
        self.stop_event = threading.Event()
        self._resume: dict[TopicPartition, int] = {}
        self._dirty = False
        self._lag: dict[tuple[tuple[str, str], ...], float] = {}
        #: When the loop last turned (liveness: /livez of `meshwatch run --metrics-port`).
        self.last_loop = time.monotonic()
        self._lag_checked = 0.0
        source.on_revoke = self._on_revoke
        source.on_assign = self._on_assign

    # -- rebalance callbacks (called from inside poll) ---------------------------------------

    # kafka-python runs these on its IO thread: no blocking consumer calls in here.

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partitions)
        try:
            self._checkpoint_and_commit(blocking=False)
        except StoreError as exc:
            # Not committing is safe: the new owner replays from the last commit.
            log.error("could not checkpoint before losing partitions: %s", exc)
        self.source.forget(partitions)

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Resume where the checkpoint says, which is never behind the committed offset
        (the checkpoint is written before every commit)."""
        log.info("partitions assigned: %s", partitions)
        seek = {tp: self._resume.pop(tp) for tp in partitions if tp in self._resume}
        if seek:
            self.source.seek(seek)

    # -- the loop ----------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the pipeline's checkpoint; its offsets become the resume points."""
        offsets = self.pipeline.restore()
        if offsets:
            self._resume = {parse_offsets_key(k): v for k, v in offsets.items()}
        return offsets is not None

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("signal %s: stopping after a last checkpoint", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> None:
        self.pipeline.telemetry.watch("lag", self.lag)
        self.source.start()
        last_checkpoint = time.monotonic()
        last_record = time.monotonic()
        backoff = 1.0
        poll_backoff = 1.0
        try:
            while not self.stop_event.is_set():
                try:
                    records = self.source.poll(timeout_ms=IDLE_POLL_MS)
                except KafkaError as exc:
                    # Brokers unreachable (connection refused, coordinator lost): keep the
                    # process and its state, wait, and poll again. The outage is not idle
                    # time: event time must not advance with the wall clock meanwhile.
                    self._poll_failed(exc)
                    self.stop_event.wait(poll_backoff)
                    poll_backoff = min(poll_backoff * 2, 30.0)
                    self.last_loop = last_record = time.monotonic()
                    continue
                poll_backoff = 1.0
                self._poll_recovered()
                now = self.last_loop = time.monotonic()
                if records:
                    self.pipeline.process(records)
                    self._dirty = True
                    last_record = now
                elif now - last_record > self.idle_advance_after:
                    # No traffic: let event time follow the wall clock so windows close.
                    self.pipeline.advance_idle(now - last_record)
                    last_record = now
                    self._dirty = True
                retrying = self.status.paused or self.status.commit_failing
                due = now - last_checkpoint >= (backoff if retrying else self.commit_interval)
                if self._dirty and due:
                    try:
                        self._checkpoint_and_commit()
                        backoff = 1.0
                        if self.status.paused:
                            self._resume_consuming()
                        self._commit_recovered()
                    except StoreError as exc:
                        self._pause_consuming(str(exc))
                        backoff = min(backoff * 2, 60.0)
                    except KafkaError as exc:
                        self._commit_failed(exc)
                        backoff = min(backoff * 2, 60.0)
                    last_checkpoint = time.monotonic()
                if now - self._lag_checked >= LAG_INTERVAL:
                    self._refresh_lag()
                if self.on_progress is not None:
                    self.on_progress(self)
        finally:
            try:
                # Open windows are not closed on shutdown: they are in the checkpoint and
                # continue after a restart.
                self._checkpoint_and_commit()
            except StoreError as exc:
                log.error("final checkpoint failed, offsets not committed: %s", exc)
            except KafkaError as exc:
                log.error("final commit failed (the next start resumes from the saved "
                          "checkpoint): %s", exc)
            self.source.close()
            self.pipeline.telemetry.unwatch("lag", self.lag)

    def _refresh_lag(self) -> None:
        """Consumer lag per partition, read here on the loop thread (the consumer is not
        thread-safe) and served to /metrics from this cache."""
        self._lag_checked = time.monotonic()
        try:
            lag = self.source.lag()
        except Exception as exc:  # lag is best-effort; consumption must go on
            log.debug("lag unavailable: %s", exc)
            return
        self._lag = {labels(topic=k.rsplit(":", 1)[0], partition=k.rsplit(":", 1)[1]): float(v)
                     for k, v in lag.items()}

    def lag(self) -> dict[tuple[tuple[str, str], ...], float]:
        return dict(self._lag)

    def _checkpoint_and_commit(self, blocking: bool = True) -> None:
        offsets = {f"{tp.topic}:{tp.partition}": off for tp, off in self.source.positions.items()}
        self.pipeline.checkpoint(offsets)
        self.status.checkpoints += 1
        self.source.commit(blocking=blocking)
        self.status.commits += 1
        self._dirty = False

    def _commit_failed(self, exc: KafkaError) -> None:
        """The checkpoint was saved but the commit did not reach the brokers: keep going.

        Safe: a restart resumes from the checkpoint's offsets (never behind the committed
        ones), and the next successful commit covers everything up to it.
        """
        self.status.commit_failures += 1
        self.status.last_error = f"offset commit failed: {exc}"
        if not self.status.commit_failing:
            log.error("offset commit failed, retrying with backoff: %s", exc)
        self.status.commit_failing = True

    def _poll_failed(self, exc: KafkaError) -> None:
        self.status.poll_failures += 1
        self.status.last_error = f"fetch failed: {exc}"
        if not self.status.poll_failing:
            log.error("cannot fetch from Kafka, retrying with backoff: %s", exc)
        self.status.poll_failing = True

    def _poll_recovered(self) -> None:
        if self.status.poll_failing:
            self.status.poll_failing = False
            self.status.last_error = None
            log.info("fetching from Kafka again")

    def _commit_recovered(self) -> None:
        if self.status.commit_failing:
            self.status.commit_failing = False
            self.status.last_error = None
            log.info("offset commits succeed again")

    def _pause_consuming(self, error: str) -> None:
        self.status.store_failures += 1
        self.status.last_error = error
        if not self.status.paused and self.source.consumer is not None:
            log.error("store unavailable, pausing consumption: %s", error)
            self.source.consumer.pause(*self.source.consumer.assignment())
            self.status.paused = True

    def _resume_consuming(self) -> None:
        if self.source.consumer is not None:
            self.source.consumer.resume(*self.source.consumer.paused())
        self.status.paused = False
        self.status.last_error = None
        log.info("store is back, consumption resumed")
