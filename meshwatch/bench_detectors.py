"""`meshwatch bench detectors`: can every enabled detector keep up with one worker's ingest?

Detectors never see raw events: they see the graph builder's edge notes (first observation of
an edge per window, plaintext, denials, new principals/addresses, certificates) and closed edge
windows. So the benchmark first runs the ingest half of the pipeline (parse, identity, graph)
over a realistic run - simulator output, or a fresh simulation - and records the notes and
windows exactly as `Pipeline` hands them to the engine (per 5,000-record batch, windows
filtered the same way). Then it times the detection engine alone on them (CPU time, best of
``repeat`` fresh engines, ``gc.freeze()`` after the engine is built as DESIGN.md advises) and
reports the equivalent ingest rate: events of the run / detector CPU seconds. The same is done
for each detector on its own, to show where the time goes.

How many notes a run yields per event depends on traffic density: the simulator's default
12 calls/s spread over ~120 edges gives ~0.18 notes per event (most windows hold a handful of
calls), a denser mesh far fewer. Both are worth measuring (``--rps``).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Batch = tuple[str, list[dict[str, Any]]]  # ("events" | "windows", inputs)
BATCH_RECORDS = 5000


@dataclass
class Captured:
    """The detector inputs of one run, in pipeline order."""

    events: int
    batches: list[Batch]
    source: str
    capture_seconds: float

    @property
    def notes(self) -> int:
        return sum(len(xs) for kind, xs in self.batches if kind == "events")

    @property
    def windows(self) -> int:
        return sum(len(xs) for kind, xs in self.batches if kind == "windows")


@dataclass
class Timing:
    name: str
    cpu_seconds: float
    events_per_second: float
    findings: int


@dataclass
class Result:
    captured: Captured
    total: Timing
    detectors: list[Timing] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        c = self.captured
        return {
            "source": c.source,
            "events": c.events,
            "notes": c.notes,
            "windows": c.windows,
            "notes_per_event": round(c.notes / max(c.events, 1), 4),
            "all_enabled": self.total.__dict__,
            "per_detector": [t.__dict__ for t in self.detectors],
        }


def capture(path: Path, format_name: str, settings: Any) -> Captured:
    """Run parse -> identity -> graph over ``path``; keep the notes and complete windows."""
    from ingest.graph import EdgeGraph
    from ingest.identity import IdentityResolver
    from ingest.parsers.base import make_parser
    from ingest.sources.files import read_records
    from meshwatch.pipeline import split_lines
    from meshwatch.records import ParseFailure

    started = time.process_time()
    parser = make_parser(format_name)
    ident = settings.identity
    resolver = IdentityResolver(trust_domain=ident.trust_domain,
                                cluster_domain=ident.cluster_domain,
                                max_addresses=ident.max_addresses,
                                address_ttl=ident.address_ttl)
    g = settings.graph
    graph = EdgeGraph(window=g.window, allowed_lateness=g.allowed_lateness, max_edges=g.max_edges,
                      call_dedup_ttl=g.call_dedup_ttl, max_calls=g.max_calls)
    batches: list[Batch] = []
    notes: list[dict[str, Any]] = []
    events = 0
    records = 0

    def complete(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        horizon = graph.max_ts  # the same filter as Pipeline._complete
        return [w for w in windows if w["part"] == 0
                and w["window_start"].timestamp() + w["window_seconds"] <= horizon]

    def after_batch(final: bool = False) -> None:
        nonlocal notes
        batches.append(("events", notes))
        notes = []
        batches.append(("windows", complete(graph.close_all() if final else graph.advance())))

    for record in read_records(path, format_name):
        for line in split_lines(record.format, record.payload):
            for item in parser.parse(line, record.origin):
                if isinstance(item, ParseFailure):
                    continue
                notes.extend(graph.add(resolver.resolve(item)).notes)
                events += 1
        records += 1
        if records % BATCH_RECORDS == 0:
            after_batch()
    after_batch(final=True)
    return Captured(events, batches, str(path), time.process_time() - started)


def simulate_run(out: Path, rps: float, duration_s: float, scenario: str, seed: int) -> Path:
    """A fresh simulation (envoy-json) into ``out``; returns the log file."""
    from meshwatch.simulate import SimulationConfig, simulate

    start = datetime(2026, 1, 5, tzinfo=UTC)
    simulate(SimulationConfig(out_dir=out, start_us=int(start.timestamp() * 1_000_000),
                              duration_s=duration_s, scenario=scenario, seed=seed, rps=rps))
    return out / "envoy-json.log"


def time_engine(captured: Captured, config: dict[str, Any] | None, repeat: int) -> Timing:
    """Best-of-``repeat`` CPU time of a fresh engine over the captured inputs."""
    from detectors.engine import DetectionEngine

    best = float("inf")
    findings = 0
    for _ in range(repeat):
        engine = DetectionEngine.from_config(config)
        gc.collect()
        gc.freeze()
        try:
            started = time.process_time()
            found = 0
            for kind, inputs in captured.batches:
                if kind == "events":
                    found += len(engine.process_events(inputs))
                else:
                    found += len(engine.process_windows(inputs))
            elapsed = time.process_time() - started
        finally:
            gc.unfreeze()
        if elapsed < best:
            best, findings = elapsed, found
    name = "all enabled" if config is None else ",".join(engine.names)
    return Timing(name, round(best, 4), round(captured.events / max(best, 1e-9)), findings)


def run(captured: Captured, detectors_config: dict[str, Any], repeat: int = 3,
        per_detector: bool = True, progress: Callable[[str], None] | None = None) -> Result:
    """Time all enabled detectors together, then each enabled one alone."""
    from detectors.config import load_detectors

    total = time_engine(captured, detectors_config or None, repeat)
    total.name = "all enabled"
    result = Result(captured, total)
    if per_detector:
        enabled = [c.name for c in load_detectors(detectors_config)]
        for name in enabled:
            if progress is not None:
                progress(name)
            only = {**detectors_config, **{n: {**(detectors_config.get(n) or {}),
                                               "enabled": n == name} for n in enabled}}
            timing = time_engine(captured, only, repeat)
            timing.name = name
            result.detectors.append(timing)
    return result


def from_args(input_dir: Path | None, rps: float, duration_s: float, scenario: str, seed: int,
              settings: Any, progress: Callable[[str], None] | None = None) -> Captured:
    """Capture from an existing simulator directory, or from a fresh simulation."""
    if input_dir is not None:
        path = input_dir / "envoy-json.log" if input_dir.is_dir() else input_dir
        return capture(path, "envoy-json", settings)
    with tempfile.TemporaryDirectory(prefix="meshwatch-bench-") as tmp:
        if progress is not None:
            progress(f"simulating {duration_s / 3600:.1f} h at {rps:g} calls/s")
        path = simulate_run(Path(tmp), rps, duration_s, scenario, seed)
        if progress is not None:
            progress("capturing notes and windows")
        return capture(path, "envoy-json", settings)
