"""One simulation run: mesh, scenario, traffic, renderers and files, in five-minute windows.

Windows keep memory flat for long runs (a day at the default rate is ~1M calls) and give the
progress bar something to count. Every window's calls go to every requested format, so all
files describe the same calls.

Spans are the expensive format (the real SDK and OTLP encoder cost ~0.2 ms a span, ten times an
Envoy line). When they are asked for and there is more than one CPU, span workers render them
in parallel: generation is deterministic and cheap, so each worker regenerates the run and
renders every n-th window, with span ids drawn from one stream per window; the parts are
joined in window order. The bytes are the same for any number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshwatch.simulate import render_envoy
from meshwatch.simulate.builder import Counter
from meshwatch.simulate.calls import Call
from meshwatch.simulate.catalog import DEFAULT_SERVICES
from meshwatch.simulate.render_otlp import SpanRenderer, delimited, to_otlp_json
from meshwatch.simulate.scenarios import SCENARIOS, Context, Plan, build
from meshwatch.simulate.seeding import stream
from meshwatch.simulate.topology import US, Mesh, build_mesh, format_ts_us
from meshwatch.simulate.traffic import BenignTraffic
from meshwatch.simulate.writer import (
    FORMAT_FILES,
    LABELS_FILE,
    MESH_FILE,
    OutputFiles,
    write_json,
)

DEFAULT_RPS = 12.0
LEARNING_FRACTION = 0.4
WINDOW_US = 300 * US
OTLP_FORMATS = ("otlp-proto", "otlp-json")
ENVOY_FORMATS = ("envoy-json", "envoy-text")
_PARTS = ".spans-parts"


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    out_dir: Path
    start_us: int
    duration_s: float
    scenario: str = "mixed"
    formats: tuple[str, ...] = ("envoy-json",)
    seed: int = 1
    services: int = DEFAULT_SERVICES
    rps: float = DEFAULT_RPS
    learning_fraction: float = LEARNING_FRACTION
    span_workers: int | None = None  # None: one per CPU, at most two

    @property
    def end_us(self) -> int:
        return self.start_us + int(self.duration_s * US)


@dataclass(slots=True)
class Summary:
    """What a run produced and how fast (seconds are per stage, summed over processes)."""

    config: SimulationConfig
    calls: int = 0
    tcp_connections: int = 0
    outbound_records: int = 0
    inbound_records: int = 0
    spans: int = 0
    span_workers: int = 0
    records: dict[str, int] = field(default_factory=dict)  # per format
    seconds: dict[str, float] = field(default_factory=dict)  # per stage / format
    total_seconds: float = 0.0
    labels: dict[str, Any] = field(default_factory=dict)

    def rate(self, fmt: str) -> float:
        """Records (spans for OTLP) per CPU-second spent generating and rendering ``fmt``."""
        n = self.records.get(fmt, 0)
        generate = self.seconds.get("generate", 0.0)
        if fmt in ENVOY_FORMATS:
            spent = generate + self.seconds.get("envoy-records", 0.0)
        else:  # span workers regenerate the calls themselves
            spent = self.seconds.get("generate-spans", generate) + self.seconds.get("spans", 0.0)
        spent += self.seconds.get(fmt, 0.0)
        return n / spent if spent > 0 else 0.0


class _Run:
    """The deterministic part of a run: mesh, scenario plan and the calls of each window."""

    def __init__(self, config: SimulationConfig) -> None:
        start, end = config.start_us, config.end_us
        self.config = config
        self.mesh: Mesh = build_mesh(config.services, config.seed, start)
        counter = Counter.new()
        learn_end = start + int((end - start) * config.learning_fraction)
        self.plan: Plan = build(config.scenario, Context(
            mesh=self.mesh, seed=config.seed, start_us=start, end_us=end,
            learn_end_us=learn_end, counter=counter))
        self.traffic = BenignTraffic(self.mesh, seed=config.seed, start_us=start, end_us=end,
                                     rps=config.rps, counter=counter)
        self.traffic.builder.hooks = self.plan.hooks
        self.generate_seconds = 0.0

    def n_windows(self) -> int:
        return -(-(self.config.end_us - self.config.start_us) // WINDOW_US)

    def windows(self) -> Iterator[tuple[int, int, list[Call]]]:
        """(index, window end, calls) for each window, in time order."""
        start, end = self.config.start_us, self.config.end_us
        scenario_calls, next_scenario = self.plan.calls, 0
        for index in range(self.n_windows()):
            t0 = start + index * WINDOW_US
            t1 = min(end, t0 + WINDOW_US)
            clock = time.perf_counter()
            calls = self.traffic.calls_between(t0, t1)
            j = next_scenario
            while j < len(scenario_calls) and scenario_calls[j].start_us < t1:
                j += 1
            calls += scenario_calls[next_scenario:j]
            next_scenario = j
            self.generate_seconds += time.perf_counter() - clock
            yield index, t1, calls


def simulate(config: SimulationConfig,
             progress: Callable[[int, int], None] | None = None) -> Summary:
    """Run the simulation described by ``config`` and write its files; returns the summary.

    ``progress(done, total)`` is called as work completes (arbitrary units).
    """
    if config.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {config.scenario!r} "
                         f"(known: {', '.join(SCENARIOS)})")
    if config.duration_s <= 0:
        raise ValueError("duration must be positive")
    if config.rps <= 0:
        raise ValueError("rps must be positive")
    began = time.perf_counter()
    run = _Run(config)
    files = OutputFiles(config.out_dir, config.formats)
    summary = Summary(config=config)
    seconds = Tally[str]()
    want_envoy = [f for f in ENVOY_FORMATS if f in files]
    want_otlp = [f for f in OTLP_FORMATS if f in files]
    workers = 0
    if want_otlp:
        workers = config.span_workers or min(2, os.cpu_count() or 1)
        if workers > 1 and not _can_fork():
            workers = 1
    parts = config.out_dir / _PARTS
    inline_spans = SpanRenderer(stream(config.seed, "span-ids")) if workers == 1 else None
    per_label_calls = Tally[str]()
    per_label_records = Tally[str]()
    n = run.n_windows()
    total_work = n * (2 if workers > 1 else 1)
    pool: ProcessPoolExecutor | None = None
    futures: list[Future[tuple[int, dict[str, float]]]] = []
    try:
        if workers > 1:
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(parents=True)
            pool = ProcessPoolExecutor(max_workers=workers,
                                       mp_context=multiprocessing.get_context("fork"))
            futures = [pool.submit(_span_job, config, k, workers, parts)
                       for k in range(workers)]
        for index, _t1, calls in run.windows():
            _tally(summary, calls, per_label_calls, per_label_records)
            if want_envoy:
                _write_envoy(files, calls, want_envoy, seconds)
            if inline_spans is not None:
                count, rendered = _render_window(inline_spans, config.seed, index, calls,
                                                 want_otlp)
                for fmt in want_otlp:
                    files.write(fmt, [rendered[fmt]], count)
                summary.spans += count
                _add(seconds, rendered["seconds"])
            if progress is not None:
                progress(index + 1 + _parts_done(parts, workers), total_work)
        if pool is not None:
            pending = set(futures)
            while pending:
                _done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if progress is not None:
                    progress(n + _parts_done(parts, workers), total_work)
            for future in futures:
                count, spent = future.result()
                summary.spans += count
                _add(seconds, spent)
            _join_parts(files, parts, n, want_otlp, seconds)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        files.close()
        shutil.rmtree(parts, ignore_errors=True)
    seconds["generate"] += run.generate_seconds
    summary.span_workers = workers
    summary.records = dict(files.records)
    for fmt in files.formats:
        seconds[fmt] += files.seconds[fmt]
    for inst in run.plan.instances:
        inst.calls = per_label_calls[inst.id]
        inst.records = per_label_records[inst.id]
    labels = _labels(config, run.mesh, run.plan, summary)
    write_json(config.out_dir / LABELS_FILE, labels)
    write_json(config.out_dir / MESH_FILE, run.mesh.to_dict())
    summary.labels = labels
    summary.seconds = dict(seconds)
    summary.total_seconds = time.perf_counter() - began
    return summary


# -- spans --------------------------------------------------------------------------------------
def _render_window(spans: SpanRenderer, seed: int, index: int, calls: list[Call],
                   formats: list[str]) -> tuple[int, dict[str, Any]]:
    """The encoded span batches of one window, per format (ids from the window's stream)."""
    clock = time.perf_counter()
    spans.reseed(stream(seed, f"span-ids:{index}"))
    before = spans.span_count
    spans.render(calls)
    batches = spans.take_batches(final=True)
    spent: dict[str, float] = {"spans": time.perf_counter() - clock}
    out: dict[str, Any] = {"seconds": spent}
    for fmt in formats:
        clock = time.perf_counter()
        encode = delimited if fmt == "otlp-proto" else to_otlp_json
        out[fmt] = b"".join(encode(b) for b in batches)
        spent[fmt] = time.perf_counter() - clock
    return spans.span_count - before, out


def _span_job(config: SimulationConfig, worker: int, workers: int,
              parts: Path) -> tuple[int, dict[str, float]]:
    """A span worker: regenerate the run, render windows ``worker::workers`` into parts."""
    run = _Run(config)
    formats = [f for f in OTLP_FORMATS if f in config.formats]
    spans = SpanRenderer(stream(config.seed, "span-ids"))
    total, seconds = 0, Tally[str]()
    for index, _t1, calls in run.windows():
        if index % workers != worker:
            continue
        count, rendered = _render_window(spans, config.seed, index, calls, formats)
        _add(seconds, rendered["seconds"])
        for fmt in formats:
            tmp = parts / f"{index:06d}.{fmt}.tmp"
            tmp.write_bytes(rendered[fmt])
            tmp.rename(parts / f"{index:06d}.{fmt}")
        (parts / f"{index:06d}.count").write_text(str(count))
        total += count
    seconds["generate-spans"] += run.generate_seconds
    return total, dict(seconds)


def _can_fork() -> bool:
    """Fork only a single-threaded process (forking threads can deadlock the child) and only
    where fork exists. Spawn would re-import the caller's main module, which breaks scripts
    without a ``__main__`` guard; without fork, spans are rendered in-process instead."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _parts_done(parts: Path, workers: int) -> int:
    if workers < 2 or not parts.is_dir():
        return 0
    return sum(1 for _ in parts.glob("*.count"))


def _join_parts(files: OutputFiles, parts: Path, n: int, formats: list[str],
                seconds: Tally[str]) -> None:
    count = sum(int((parts / f"{index:06d}.count").read_text()) for index in range(n))
    for fmt in formats:
        clock = time.perf_counter()
        files.copy_from(fmt, [parts / f"{index:06d}.{fmt}" for index in range(n)], count)
        seconds[fmt] += time.perf_counter() - clock


def _add(seconds: Tally[str], spent: dict[str, float]) -> None:
    for key, value in spent.items():
        seconds[key] += value


# -- envoy --------------------------------------------------------------------------------------
def _write_envoy(files: OutputFiles, calls: list[Call], formats: list[str],
                 seconds: Tally[str]) -> None:
    clock = time.perf_counter()
    recs = [r for call in calls for r in render_envoy.records(call)]
    recs.sort(key=lambda r: r[0])
    seconds["envoy-records"] += time.perf_counter() - clock
    for fmt in formats:
        clock = time.perf_counter()
        encode = render_envoy.json_line if fmt == "envoy-json" else render_envoy.text_line
        files.write(fmt, [encode(rec) for _, rec in recs], len(recs))
        files.timed(fmt, clock)


# -- bookkeeping --------------------------------------------------------------------------------
def _tally(summary: Summary, calls: list[Call], per_label_calls: Tally[str],
           per_label_records: Tally[str]) -> None:
    for call in calls:
        summary.calls += 1
        if call.kind == "tcp":
            summary.tcp_connections += 1
        out = 1 if call.src_sidecar and call.src_pod is not None else 0
        inb = sum(1 for a in call.attempts if a.pod is not None and a.pod.workload.sidecar) \
            if call.service is not None else 0
        summary.outbound_records += out
        summary.inbound_records += inb
        if call.label is not None:
            per_label_calls[call.label] += 1
            per_label_records[call.label] += out + inb


def _labels(config: SimulationConfig, mesh: Mesh, plan: Plan,
            summary: Summary) -> dict[str, Any]:
    attacks = [i.to_dict() for i in plan.instances if i.label == "attack"]
    benign = [i.to_dict() for i in plan.instances if i.label == "benign"]
    return {
        "scenario": config.scenario,
        "seed": config.seed,
        "start": format_ts_us(config.start_us),
        "end": format_ts_us(config.end_us),
        "learning_period_end": format_ts_us(
            config.start_us + int((config.end_us - config.start_us) * config.learning_fraction)),
        "services": len(mesh.app_services),
        "namespaces": list(mesh.namespaces),
        "formats": list(config.formats),
        "files": {fmt: FORMAT_FILES[fmt] for fmt in config.formats},
        "rps": config.rps,
        "counts": {
            "calls": summary.calls,
            "tcp_connections": summary.tcp_connections,
            "outbound_records": summary.outbound_records,
            "inbound_records": summary.inbound_records,
            "envoy_records": summary.outbound_records + summary.inbound_records,
            "spans": summary.spans if any(f in OTLP_FORMATS for f in config.formats) else None,
            "records_per_file": {FORMAT_FILES[f]: n for f, n in summary.records.items()},
            "attack_calls": sum(a["calls"] for a in attacks),
            "benign_lookalike_calls": sum(b["calls"] for b in benign),
        },
        "attacks": attacks,
        "benign": benign,
    }
