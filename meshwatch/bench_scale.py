"""`meshwatch bench scale`: throughput of the scale-out stages with 1 and with N worker processes.

What is measured is what an operator runs: real ``meshwatch run --stage normalize|detect``
processes (fresh interpreters, each with its own embedded store directory, since chdb allows one
process per directory), members of one consumer group, against a Kafka-protocol broker (a
throwaway Tansu broker unless ``--bootstrap`` is given). The steps:

1. simulate envoy-json traffic and produce ``records`` raw records to a topic with
   ``partitions`` partitions (one record per message);
2. **normalize** with W processes for each W in ``workers`` (group ``<run>-normalize``): raw
   records -> EdgeEvents on an edges topic of its own with ``partitions`` partitions, keyed by
   source node (`meshwatch.stages.source_key`);
3. **detect** with W processes for each W (group ``<run>-detect``) over the EdgeEvents of the
   one-process normalize run, so every detect run reads identical input.

Each run is timed from spawning the processes until the group's committed offsets reach the
end of its input (lag 0), by sampling the committed offsets. Two rates come out of it:

* ``wall``: input / (spawn -> lag 0): includes interpreter start, store open and migrations,
  joining the group and restoring state; what a short run sees;
* ``steady``: input committed after the first commit / (first commit -> lag 0): the processing
  rate once the workers run, the figure to size deployments with. Commits happen every
  ``commit_interval``, so the end of a run is seen up to one interval late (stated as the
  error bound).

Both stages also write to their stores (normalize: dead letters; detect: windows, alerts and,
with ``store_events``, every event). An embedded store does ClickHouse's insert work inside the
worker process, which a ClickHouse server would do elsewhere; ``store_events`` is off by default
so that the bulk insert of raw events does not dominate what is a stage-throughput figure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

RAW_TOPIC = "bench.raw"  # + a per-run suffix
STAGES = ("normalize", "detect")


@dataclass
class ScaleResult:
    stage: str
    workers: int
    events: int  # input records of the stage (raw records / EdgeEvents)
    output: int  # EdgeEvents produced (normalize) / alert changes produced (detect)
    wall_seconds: float
    startup_seconds: float  # spawn -> first commit seen
    steady_seconds: float  # first commit -> lag 0
    steady_events: int  # input committed after the first commit
    commit_interval: float
    partition_events: list[int] = field(default_factory=list)
    load_before: float = 0.0  # 1-minute load average before the run
    load_after: float = 0.0
    # CPU seconds of the worker processes (all their threads) from the first commit to lag 0,
    # and of the broker (when it is the throwaway one) over the whole run.
    cpu_seconds: float = 0.0
    broker_cpu_seconds: float | None = None
    peak_rss_mb: float = 0.0  # largest peak resident set of one worker process
    # Newest checkpoint per partition in the state topic at the end (zlib-compressed bytes, as
    # stored): what a new owner reads to take the partition over.
    checkpoint_bytes: list[int] = field(default_factory=list)

    @property
    def events_per_cpu_second(self) -> float:
        return self.steady_events / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def wall_rate(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def steady_rate(self) -> float:
        return self.steady_events / self.steady_seconds if self.steady_seconds else 0.0

    @property
    def skew(self) -> float:
        """Largest partition / mean partition: 1.0 is perfectly even."""
        parts = self.partition_events
        return max(parts) / (sum(parts) / len(parts)) if parts and sum(parts) else 0.0

    @property
    def bound(self) -> float:
        """The best speed-up over one worker this many workers can reach on this input: a
        partition is processed by one worker, so the largest one sets the pace."""
        parts = self.partition_events
        if not parts or not sum(parts):
            return float(self.workers)
        return round(min(self.workers, sum(parts) / max(parts)), 2)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(wall_events_per_s=round(self.wall_rate),
                   events_per_cpu_second=round(self.events_per_cpu_second),
                   steady_events_per_s=round(self.steady_rate), partition_skew=round(self.skew, 2),
                   speedup_bound=self.bound)
        return out


@dataclass
class ScaleReport:
    records: int
    partitions: int
    cores: int
    store_events: bool
    broker: str
    results: list[ScaleResult]

    def best(self, stage: str) -> dict[int, ScaleResult]:
        """Per worker count, the run with the highest steady rate (best of the repeats)."""
        out: dict[int, ScaleResult] = {}
        for r in self.results:
            if r.stage == stage and (r.workers not in out
                                     or r.steady_rate > out[r.workers].steady_rate):
                out[r.workers] = r
        return out

    def speedups(self) -> dict[str, dict[str, float]]:
        """Per stage: the best steady and wall rate of each worker count relative to the best
        of one worker, and the bound the largest partition sets."""
        out: dict[str, dict[str, float]] = {}
        for stage in STAGES:
            runs = self.best(stage)
            base = runs.get(1)
            if base is None:
                continue
            walls = {w: max(r.wall_rate for r in self.results
                            if r.stage == stage and r.workers == w) for w in runs}
            for workers, run in sorted(runs.items()):
                if workers == 1:
                    continue
                out[f"{stage}:{workers}"] = {
                    "steady": round(run.steady_rate / base.steady_rate, 2)
                    if base.steady_rate else 0.0,
                    "wall": round(walls[workers] / walls[1], 2) if walls[1] else 0.0,
                    "bound": run.bound,
                }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "partitions": self.partitions, "cores": self.cores,
                "store_events": self.store_events, "broker": self.broker,
                "results": [r.as_dict() for r in self.results], "speedup": self.speedups()}


def _child_env() -> dict[str, str]:
    # The bench's own config file only: no MESHWATCH_* from the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHWATCH_")}
    env["NO_COLOR"] = "1"
    return env


def _config(work: Path, name: str, bootstrap: str, raw_topic: str, edges_topic: str,
            commit_interval: float, store_events: bool) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {
            "bootstrap_servers": [bootstrap], "group_id": name,
            "topics": {raw_topic: "envoy-json"},
            "edges_topic": edges_topic,
            "alert_changes_topic": f"bench.alert-changes.{name}",
            "state_topic": f"bench.state.{name}",
            "auto_offset_reset": "earliest", "commit_interval": f"{commit_interval}s",
            "session_timeout": "10s", "max_poll_interval": "60s",
        },
        "store": {"store_events": store_events},
    }), encoding="utf-8")
    return path


def _log_ends(bootstrap: str, topic: str) -> dict[Any, int]:
    """The offset after the last record of each partition, read from the records themselves.

    ListOffsets ("latest") is not trusted: the Tansu broker answers the base offset of the last
    record batch + 1, which is short by that batch's other records. Reading from just before the
    reported end returns the whole last batch, whose last offset is exact on any broker.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                          or ())]
        ends = dict(consumer.end_offsets(parts))
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, max(ends[tp] - 1, 0))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
            if not batch and all(consumer.position(tp) >= ends[tp] for tp in parts):
                break
        return ends
    finally:
        consumer.close()


def _checkpoint_sizes(bootstrap: str, topic: str) -> list[int]:
    """Bytes of the newest version of every checkpoint in a state topic
    (`meshwatch.kafka_state` layout: key ``<scope>|<name>#<chunk>``, header ``version``)."""
    from kafka import KafkaConsumer, TopicPartition

    ends = _log_ends(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    newest: dict[str, int] = {}  # checkpoint -> newest version
    sizes: dict[tuple[str, int], int] = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 60
        while consumer.position(tp) < ends.get(tp, 0) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    name = rec.key.decode().rpartition("#")[0]
                    version = int(dict(rec.headers or ()).get("version", b"0"))
                    sizes[(name, version)] = sizes.get((name, version), 0) + len(rec.value)
                    newest[name] = max(version, newest.get(name, version))
    finally:
        consumer.close()
    return sorted(sizes[(name, version)] for name, version in newest.items())


class _Lag:
    """Committed offsets of a group on a topic, read from outside the group (one OffsetFetch
    request per sample, so that watching costs the measured workers next to nothing)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka.admin import KafkaAdminClient

        self.ends = _log_ends(bootstrap, topic)
        self.parts = sorted(self.ends, key=lambda tp: tp.partition)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.group = group

    @property
    def total(self) -> int:
        return sum(self.ends.values())

    def committed(self) -> int:
        if hasattr(self.admin, "list_group_offsets"):  # kafka-python 3
            offsets = self.admin.list_group_offsets({self.group: self.parts}).get(self.group, {})
        else:  # kafka-python 2
            offsets = self.admin.list_consumer_group_offsets(self.group, partitions=self.parts)
        return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp in self.ends)

    def per_partition(self) -> list[int]:
        return [self.ends[tp] for tp in self.parts]

    def close(self) -> None:
        self.admin.close()


def _end_offsets(bootstrap: str, topic: str) -> int:
    return sum(_log_ends(bootstrap, topic).values())


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (Linux /proc; 0.0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM (a clean checkpoint and commit), then SIGKILL whatever is left after a minute or
    if waiting is interrupted: no worker outlives the bench."""
    try:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_stage(work: Path, bootstrap: str, stage: str, workers: int, config: Path, group: str,
              topic: str, commit_interval: float, timeout: float,
              output_topic: str | None = None, broker_pid: int | None = None,
              state_topic: str | None = None) -> ScaleResult:
    """Spawn ``workers`` processes of ``stage`` and time them until the group's lag is 0."""
    lag = _Lag(bootstrap, group, topic)
    total = lag.total
    if total == 0:
        lag.close()
        raise RuntimeError(f"{stage}: input topic {topic} is empty")
    load = os.getloadavg()[0]
    broker_cpu = _cpu_seconds(broker_pid) if broker_pid else None
    logs = [work / f"{config.stem}-{i}.log" for i in range(workers)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(  # noqa: S603 - this interpreter, our own CLI, fixed arguments
            [sys.executable, "-m", "meshwatch.cli.main", "run", "--stage", stage, "--config",
             str(config), "--store", str(work / f"{config.stem}-store-{i}"), "--quiet"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=_child_env(), cwd=work)
        for i, log in enumerate(logs)
    ]
    first_commit: float | None = None
    first_committed = 0
    cpu_start = cpu_end = 0.0
    rss = 0.0
    try:
        while True:
            committed = lag.committed()
            now = time.monotonic()
            if committed >= total:
                cpu_end = sum(_cpu_seconds(p.pid) for p in procs)
                rss = max(_peak_rss_mb(p.pid) for p in procs)
                break
            if first_commit is None and committed > 0:
                first_commit, first_committed = now, committed
                cpu_start = sum(_cpu_seconds(p.pid) for p in procs)
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{stage} worker exited ({proc.returncode}):\n{tail}")
            if now - started > timeout:
                raise RuntimeError(f"{stage} with {workers} worker(s) did not catch up within "
                                   f"{timeout:.0f} s ({committed:,} of {total:,} committed)")
            time.sleep(0.5)
    finally:
        _stop(procs)
        parts = lag.per_partition()
        lag.close()
    if first_commit is None:  # everything in the first commit: no steady window to measure
        first_commit, first_committed = started, 0
    return ScaleResult(
        stage=stage, workers=workers, events=total,
        output=_end_offsets(bootstrap, output_topic) if output_topic else 0,
        wall_seconds=round(now - started, 3), startup_seconds=round(first_commit - started, 3),
        steady_seconds=round(now - first_commit, 3), steady_events=total - first_committed,
        commit_interval=commit_interval, partition_events=parts, load_before=round(load, 2),
        load_after=round(os.getloadavg()[0], 2), cpu_seconds=round(cpu_end - cpu_start, 2),
        broker_cpu_seconds=None if broker_cpu is None or not broker_pid
        else round(_cpu_seconds(broker_pid) - broker_cpu, 2),
        peak_rss_mb=round(rss, 1),
        checkpoint_bytes=_checkpoint_sizes(bootstrap, state_topic) if state_topic else [])


def run(records: int, partitions: int, workers: tuple[int, ...], stages: tuple[str, ...],
        bootstrap: str | None, commit_interval: float = 2.0, store_events: bool = False,
        timeout: float = 900.0, repeat: int = 1,
        progress: Callable[[str], None] | None = None) -> ScaleReport:
    from meshwatch.bench_ingest import produce, simulate_traffic

    say = progress or (lambda _m: None)
    stamp = str(int(time.time()))
    results: list[ScaleResult] = []
    with tempfile.TemporaryDirectory(prefix="meshwatch-bench-scale-") as tmp:
        work = Path(tmp)
        say("simulating traffic")
        traffic = simulate_traffic(work, records, ("envoy-json",))
        with _broker(bootstrap, work) as (servers, broker_pid):
            raw = f"{RAW_TOPIC}.{stamp}"
            say(f"producing {records:,} raw records to {partitions} partitions")
            sent, _ = produce(servers, raw, traffic / "envoy-json.log", "envoy-json", records,
                              partitions, 1)
            # The first one-process normalize run also produces the detect runs' input. Runs
            # alternate worker counts (1, 2, 1, 2, ...) so that a burst of load from elsewhere
            # on the machine does not favour one count; the speed-up uses the best of each.
            counts = sorted({1, *workers})
            normalize_runs = [(w, r) for r in range(repeat) for w in counts] \
                if "normalize" in stages else [(1, 0)]
            detect_runs = [(w, r) for r in range(repeat) for w in counts] \
                if "detect" in stages else []
            names = {(stage, w, r): f"bench-{stage[0]}{w}-r{r}-{stamp}"
                     for stage, runs in (("normalize", normalize_runs), ("detect", detect_runs))
                     for w, r in runs}
            _create_topics(servers, partitions, [
                (name, f"bench.edges.{name}" if stage == "normalize" else None)
                for (stage, _w, _r), name in names.items()])
            for w, r in normalize_runs:
                name = names[("normalize", w, r)]
                edges = f"bench.edges.{name}"
                cfg = _config(work, name, servers, raw, edges, commit_interval, store_events)
                say(f"normalize with {w} process(es), run {r + 1}")
                result = run_stage(work, servers, "normalize", w, cfg, f"{name}-normalize", raw,
                                   commit_interval, timeout, output_topic=edges,
                                   broker_pid=broker_pid, state_topic=f"bench.state.{name}")
                if "normalize" in stages:
                    results.append(result)
            edges = f"bench.edges.{names[('normalize', 1, 0)]}"
            for w, r in detect_runs:
                name = names[("detect", w, r)]
                cfg = _config(work, name, servers, raw, edges, commit_interval, store_events)
                say(f"detect with {w} process(es), run {r + 1}")
                results.append(run_stage(work, servers, "detect", w, cfg, f"{name}-detect",
                                         edges, commit_interval, timeout,
                                         output_topic=f"bench.alert-changes.{name}",
                                         broker_pid=broker_pid,
                                         state_topic=f"bench.state.{name}"))
    return ScaleReport(records=sent, partitions=partitions, cores=os.cpu_count() or 0,
                       store_events=store_events,
                       broker=bootstrap or "Tansu (throwaway, in-memory, same machine)",
                       results=results)


@contextlib.contextmanager
def _broker(bootstrap: str | None, work: Path) -> Iterator[tuple[str, int | None]]:
    """The given Kafka (no pid), or a throwaway Tansu broker and its pid (for its CPU time)."""
    if bootstrap:
        yield bootstrap, None
        return
    from meshwatch.devbroker import tansu_broker

    with tansu_broker(work) as broker:
        yield broker.bootstrap, broker.process.pid


def _create_topics(bootstrap: str, partitions: int,
                   runs: list[tuple[str, str | None]]) -> None:
    """Per run (name, its edges topic or None): the edges topic (the partition count under
    test), an alert-changes topic and a state topic (one partition; created here so the
    worker finds it)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topics = []
        for name, edges in runs:
            if edges:
                topics.append(NewTopic(edges, partitions, 1))
            topics += [NewTopic(f"bench.alert-changes.{name}", 1, 1),
                       NewTopic(f"bench.state.{name}", 1, 1)]
        admin.create_topics(topics)
    finally:
        admin.close()
