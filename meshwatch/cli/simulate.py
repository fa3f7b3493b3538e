"""`meshwatch simulate`: write a labelled, realistic mesh's access logs and spans to a directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from meshwatch.cli.common import err_console, fail

if TYPE_CHECKING:
    from meshwatch.simulate import SimulationConfig, Summary

HELP = "\n\n".join([
    "Simulate an Istio mesh (Bookinfo, Online Boutique, platform services, crown jewels) and "
    "write its Envoy access logs and OpenTelemetry spans, with labelled attacks and benign "
    "look-alikes.",
    "Every format file in OUT describes the same calls: envoy-json.log (JSON lines), "
    "envoy-text.log (meshwatch's TEXT format), spans.otlp.json (OTLP/JSON lines), "
    "spans.otlp.pb (length-delimited ExportTraceServiceRequest). labels.json holds the ground "
    "truth (attacks, look-alikes, expected detectors), mesh.json the topology. Attacks start "
    "after the learning period. The same seed and arguments give byte-identical files.",
    "[bold]Examples[/bold]",
    "  meshwatch simulate --out demo-out                 [dim]# 2h, mixed, envoy-json[/dim]",
    "  meshwatch simulate -s lateral-movement -d 30m -o out -f envoy-json,otlp-proto",
    "  meshwatch simulate -d 1d --start 2026-01-05T00:00:00Z --seed 7 -o day",
    "  meshwatch simulate --list-scenarios",
])


def register(app: typer.Typer) -> None:
    app.command("simulate", help=HELP)(simulate)


def simulate(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (created if missing).",
                     file_okay=False, metavar="DIR", show_default=False),
    ] = None,
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="Scenario name (see --list-scenarios).",
                          metavar="NAME"),
    ] = "mixed",
    duration: Annotated[
        str, typer.Option("--duration", "-d", help="Simulated time span, e.g. 30m, 2h, 1d.",
                          metavar="SPAN"),
    ] = "2h",
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f",
                     help="Output formats, comma-separated or repeated: envoy-json, "
                          "envoy-text, otlp-json, otlp-proto. (default: envoy-json)",
                     metavar="FORMATS", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    services: Annotated[
        int, typer.Option("--services", help="Application services in the mesh (10-60).",
                          metavar="N"),
    ] = 30,
    rps: Annotated[
        float, typer.Option("--rps", help="Mesh-wide application calls per second at the "
                                          "daily mean (the load follows a daily curve; kubelet "
                                          "probes and pooled TCP connections come on top).",
                            metavar="R"),
    ] = 12.0,
    start: Annotated[
        str | None,
        typer.Option("--start", help="Start time, RFC 3339 (UTC if no offset). "
                                     "(default: now minus the duration, floored to the "
                                     "minute)", metavar="TIME", show_default=False),
    ] = None,
    learning: Annotated[
        float, typer.Option("--learning", help="Fraction of the run before any attack "
                                               "starts (baselines).", metavar="FRACTION"),
    ] = 0.4,
    list_scenarios: Annotated[
        bool, typer.Option("--list-scenarios", help="List the scenarios and exit."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary."),
    ] = False,
    to_kafka: Annotated[
        str | None,
        typer.Option("--to-kafka", help="Also publish the output to Kafka at these bootstrap "
                                        "servers: envoy-json/envoy-text to --access-topic, "
                                        "otlp-proto to --spans-topic (as a Collector would).",
                     metavar="HOST:PORT", show_default=False),
    ] = None,
    access_topic: Annotated[str, typer.Option(help="Topic for access logs.")] = "envoy.access",
    spans_topic: Annotated[str, typer.Option(help="Topic for OTLP spans.")] = "otlp_spans",
) -> None:
    # Imported here so `meshwatch --help` stays fast (the SDK and protobuf load slowly).
    from meshwatch.records import parse_ts
    from meshwatch.settings import parse_duration
    from meshwatch.simulate import FORMATS, SCENARIOS, SimulationConfig
    from meshwatch.simulate.catalog import MAX_SERVICES, MIN_SERVICES

    if list_scenarios:
        width = max(len(name) for name in SCENARIOS)
        for name, spec in SCENARIOS.items():
            typer.echo(f"{name:<{width}}  {spec.description}")
        return
    if out is None:
        fail("--out DIR is required (or use --list-scenarios)")
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"--duration: {exc}")
    if seconds < 60:
        fail("--duration must be at least 1m")
    chosen = [f.strip() for item in (formats or ["envoy-json"]) for f in item.split(",")
              if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        fail(f"unknown format {', '.join(unknown) or '(none)'} (known: {', '.join(FORMATS)})")
    chosen = list(dict.fromkeys(chosen))
    if not MIN_SERVICES <= services <= MAX_SERVICES:
        fail(f"--services must be between {MIN_SERVICES} and {MAX_SERVICES}")
    if rps <= 0:
        fail("--rps must be positive")
    if not 0 <= learning < 1:
        fail("--learning must be in [0, 1)")
    if start is None:
        now = int(time.time())
        start_s = (now - int(seconds)) // 60 * 60
        start_us = start_s * 1_000_000
    else:
        try:
            start_us = int(parse_ts(start).timestamp() * 1_000_000)
        except ValueError as exc:
            fail(f"--start: not an RFC 3339 time ({exc})")
    config = SimulationConfig(out_dir=out, start_us=start_us, duration_s=seconds,
                              scenario=scenario, formats=tuple(chosen), seed=seed,
                              services=services, rps=rps, learning_fraction=learning)
    try:
        summary = _run(config, quiet)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc}")
    if not quiet:
        _print_summary(summary)
    if to_kafka:
        _publish(out, chosen, to_kafka, access_topic, spans_topic, quiet)


def _publish(out: Path, formats: list[str], bootstrap: str, access_topic: str,
             spans_topic: str, quiet: bool) -> None:
    """Send what was written to Kafka; one log format and the protobuf spans at most."""
    from kafka.errors import KafkaError

    from meshwatch.cli.produce import publish
    from meshwatch.simulate import FORMAT_FILES

    plan = []
    log_format = next((f for f in ("envoy-json", "envoy-text") if f in formats), None)
    if log_format:
        plan.append((out / FORMAT_FILES[log_format], access_topic, log_format))
    if "otlp-proto" in formats:
        plan.append((out / FORMAT_FILES["otlp-proto"], spans_topic, "otlp-proto"))
    if not plan:
        fail("--to-kafka publishes envoy-json/envoy-text and otlp-proto output; add one of them")
    for path, topic, fmt in plan:
        try:
            sent, seconds = publish([path], topic, bootstrap.split(","), fmt)
        except KafkaError as exc:
            fail(f"Kafka at {bootstrap}: {exc}")
        if not quiet:
            err_console.print(f"published {sent:,} messages from {path.name} to {topic} "
                              f"in {seconds:.1f}s")


def _run(config: SimulationConfig, quiet: bool) -> Summary:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from meshwatch.simulate import simulate as run_simulation

    if quiet:
        return run_simulation(config)
    # No auto-refresh thread: the run stays single-threaded, so span workers may fork.
    progress = Progress(TextColumn(f"simulating {config.duration_s / 3600:g} h"), BarColumn(),
                        TaskProgressColumn(), TimeElapsedColumn(), console=err_console,
                        transient=True, auto_refresh=False)
    with progress:
        task = progress.add_task("", total=1.0)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done / total)
            progress.refresh()

        return run_simulation(config, progress=advance)


def _print_summary(summary: Summary) -> None:
    from meshwatch.simulate import FORMAT_FILES

    console = Console(highlight=False, soft_wrap=True)
    cfg = summary.config
    labels = summary.labels
    console.print(
        f"[bold]{cfg.scenario}[/] {labels['start']} .. {labels['end']}  seed {cfg.seed}, "
        f"{labels['services']} services, {summary.calls:,} calls "
        f"({summary.tcp_connections:,} TCP connections) in {summary.total_seconds:.1f} s"
        + (f" ({summary.span_workers} span workers)" if summary.span_workers > 1 else "")
        + f" -> {cfg.out_dir}")
    table = Table("file", "records", "records/CPU-s", box=None, pad_edge=False)
    for fmt, n in summary.records.items():
        table.add_row(FORMAT_FILES[fmt], f"{n:,}", f"{summary.rate(fmt):,.0f}")
    console.print(table)
    for title, key in (("attacks", "attacks"), ("benign look-alikes", "benign")):
        items = labels[key]
        console.print(f"[bold]{title}[/] ({len(items)})")
        for item in items:
            expected = ", ".join(item["expected_detectors"]) or "must not page"
            src = item["source"]
            console.print(f"  {item['id']:<22} {item['start'][11:19]}-{item['end'][11:19]} "
                          f"{item['calls']:>5} calls  from {src['workload'] or src['address']}"
                          f"  [dim]{expected}[/]")
    console.print(f"labels: {cfg.out_dir / 'labels.json'}  mesh: {cfg.out_dir / 'mesh.json'}")
