"""`meshwatch run`: the pipeline, over files (embedded mode) or a Kafka consumer group."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from meshwatch.cli.common import (
    ConfigOption,
    check_topic_formats,
    err_console,
    fail,
    settings_from,
)
from meshwatch.settings import FORMAT_NAMES, Settings

BATCH_RECORDS = 5000
CHECKPOINT_SECONDS = 5.0


def register(app: typer.Typer) -> None:
    app.command(
        "run",
        help=(
            "Run the pipeline. With --input, process files to completion in embedded mode "
            "(chdb store, no servers needed) and exit; without it, consume the configured "
            "Kafka topics until SIGTERM/SIGINT.\n\n"
            "Examples:\n\n"
            "  meshwatch run --input access.log --alerts-out alerts.jsonl\n\n"
            "  meshwatch run --input sim/envoy-json.log --store ./data --serve\n\n"
            "  meshwatch run --config meshwatch.yaml        # Kafka collector"
        ),
    )(run)


def run(
    input_files: Annotated[
        list[Path] | None,
        typer.Option("--input", "-i", help="Input file(s); '-' for stdin. Repeatable.",
                     show_default=False),
    ] = None,
    format_name: Annotated[
        str, typer.Option("--format", "-f", help=f"Input format: {'|'.join(FORMAT_NAMES)}.")
    ] = "auto",
    format_string: Annotated[
        str | None,
        typer.Option("--format-string", help="Envoy format string for custom TEXT access logs."),
    ] = None,
    store_path: Annotated[
        Path | None,
        typer.Option("--store", help="Embedded ClickHouse directory (default: ./meshwatch-data)."),
    ] = None,
    alerts_out: Annotated[
        Path | None, typer.Option("--alerts-out", help="Write alerts as JSON lines to this file.")
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the alert feed API/UI up after processing.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="API host for --serve.")] = None,
    port: Annotated[int | None, typer.Option(help="API port for --serve (default: 8080).")] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore the checkpoint in the store; start cold.")
    ] = False,
    checkpoint_interval: Annotated[float, typer.Option(
        "--checkpoint-interval", min=0.1,
        help="File mode: seconds between checkpoints (flush + saved state). A killed run "
             "resumes from the last one when rerun on the same store.")] = CHECKPOINT_SECONDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Kafka mode: serve /metrics, /livez and /readyz (no auth, no data) on this port "
             "from the worker itself, for Prometheus and orchestrator probes.")] = None,
    stage: Annotated[str, typer.Option(
        help="Kafka mode: all (one process does everything), or a scale-out stage: normalize "
             "(raw topics -> EdgeEvents keyed by source), detect (EdgeEvents -> windows, "
             "detectors, alerts; per-partition state), notify (alert changes -> delivery). "
             "See docs/scale-out.md.")] = "all",
    config: ConfigOption = None,
) -> None:
    settings = settings_from(config, {
        "store": {"path": store_path},
        "api": {"host": host, "port": port},
    })
    if format_name not in FORMAT_NAMES:
        fail(f"unknown format {format_name!r} (known: {', '.join(FORMAT_NAMES)})")
    if stage not in ("all", "normalize", "detect", "notify"):
        fail(f"unknown stage {stage!r} (known: all, normalize, detect, notify)")
    if stage != "all":
        if input_files:
            fail("--stage is for Kafka mode; files are processed by one process (--stage all)")
        run_stage(settings, stage, quiet=quiet, metrics_port=metrics_port)
        return
    if not input_files:
        run_kafka(settings, alerts_out=alerts_out, serve=serve, quiet=quiet, fresh=fresh,
                  metrics_port=metrics_port)
        return
    for path in input_files:
        if str(path) != "-" and not path.is_file():
            fail(f"input file not found: {path}")
    summary = run_files(settings, input_files, format_name, format_string, alerts_out,
                        fresh=fresh, quiet=quiet, serve=serve,
                        checkpoint_interval=checkpoint_interval)
    print_summary(summary, Console())
    if serve:
        serve_api(settings, summary["store"], notifier=summary["notifier"])


def open_pipeline(settings: Settings, alerts_out: Path | None,
                  format_options: dict[str, dict[str, Any]], scope: str) -> Any:
    from alerts.notify import Notifier
    from meshwatch.pipeline import Pipeline
    from meshwatch.store import Store, StoreError

    try:
        store = Store.open(settings.store)
    except StoreError as exc:
        fail(str(exc))
    try:
        return Pipeline(settings, store, alerts_out=alerts_out, format_options=format_options,
                        checkpoint_scope=scope, notifier=Notifier(settings, store))
    except Exception:
        store.close()
        raise


def run_files(
    settings: Settings,
    paths: Sequence[Path],
    format_name: str,
    format_string: str | None,
    alerts_out: Path | None,
    fresh: bool = False,
    quiet: bool = False,
    serve: bool = False,
    checkpoint_interval: float = CHECKPOINT_SECONDS,
) -> dict[str, Any]:
    """Process files to completion; returns the run summary (the store stays open).

    Notifications are delivered while the files are processed; at the end the run waits up
    to ``alerts.delivery.drain_timeout`` for the rest and leaves what is still undelivered in
    the outbox for the next run. With ``serve`` delivery goes on while the API is up.

    A store failure (full disk, broken directory) ends the run with one line naming it: what
    the last checkpoint covers is safe, and rerunning the same command resumes from there.
    """
    from ingest.sources.files import read_records
    from meshwatch.settings import ConfigError
    from meshwatch.store import StoreError

    options: dict[str, dict[str, Any]] = {}
    if format_string:
        options = {"envoy-text": {"format_string": format_string}}
        if format_name == "auto":
            format_name = "envoy-text"
    try:
        pipeline = open_pipeline(settings, alerts_out, options, scope="files")
    except ConfigError as exc:
        fail(str(exc))
    if not fresh:
        pipeline.restore()
    notifier = pipeline.notifier
    notifier.start()
    started = time.monotonic()
    total = sum(p.stat().st_size for p in paths if str(p) != "-")
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
        TextColumn("{task.fields[events]} events"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, disable=quiet, transient=False,
    )
    last_checkpoint = time.monotonic()
    try:
        with progress:
            task = progress.add_task("processing", total=total or None, events=0)
            for path in paths:
                try:
                    records = read_records(path, format_name)
                    for batch, size in _batches(records, BATCH_RECORDS):
                        pipeline.process(batch)
                        progress.update(task, advance=size, events=pipeline.stats.events)
                        if time.monotonic() - last_checkpoint > checkpoint_interval:
                            pipeline.checkpoint()
                            last_checkpoint = time.monotonic()
                except OSError as exc:
                    fail(f"cannot read {path}: {exc.strerror or exc}")
            pipeline.finish()
            pipeline.checkpoint()
    except StoreError as exc:
        notifier.stop()
        fail(f"store write failed, run stopped: {exc}. What the last checkpoint covers is "
             "stored; rerun the same command to resume from it.")
    notifier.drain(settings.alerts.delivery.drain_timeout)
    if not serve:
        notifier.stop()
    elapsed = time.monotonic() - started
    store = pipeline.store
    edges = store.query("SELECT uniqExact(edge_src, edge_dst) AS n FROM {db}.edge_windows")
    return {
        "stats": pipeline.stats,
        "elapsed": elapsed,
        "edges_total": int(edges[0]["n"]),
        "store": store,
        "store_description": store.description,
        "alerts_out": alerts_out,
        "active_alerts": len(pipeline.alert_book.active()),
        "notifier": notifier,
        "notifications": notifier.summary(),
    }


def _batches(records: Iterator[Any], size: int) -> Iterator[tuple[list[Any], int]]:
    batch: list[Any] = []
    nbytes = 0
    for record in records:
        batch.append(record)
        nbytes += len(record.payload) + 1
        if len(batch) >= size:
            yield batch, nbytes
            batch, nbytes = [], 0
    if batch:
        yield batch, nbytes


def print_summary(summary: dict[str, Any], console: Console) -> None:
    stats = summary["stats"]
    elapsed = summary["elapsed"]
    table = Table(title="meshwatch run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    table.add_row("records", f"{stats.records:,} in {elapsed:.1f}s ({rate:,.0f}/s)")
    table.add_row("edge events", f"{stats.events:,}")
    table.add_row("edges (in store)", f"{summary['edges_total']:,}")
    table.add_row("edge windows written", f"{stats.windows:,}")
    failures = f"{stats.parse_failures:,}"
    if stats.failures_by_reason:
        top = ", ".join(f"{r} x{n}" for r, n in stats.failures_by_reason.most_common(3))
        failures += f" (dead-lettered; {top})"
    table.add_row("parse failures", failures)
    opened = stats.alerts_opened
    table.add_row("alerts opened", f"{sum(opened.values()):,}" + (
        " (" + ", ".join(f"{d}: {n}" for d, n in sorted(opened.items())) + ")" if opened else ""))
    notes = summary.get("notifications")
    if notes and notes.get("outbox") is not None:
        box = notes["outbox"]
        table.add_row("notifications", f"{notes['delivered']:,} delivered this run, "
                      f"{box['pending']:,} pending in the outbox, {box['failed']:,} failed")
    table.add_row("store", summary["store_description"])
    if summary.get("alerts_out"):
        table.add_row("alerts file", str(summary["alerts_out"]))
    console.print(table)


def _health(settings: Settings, port: int | None, worker: Any) -> Any:
    """Start the worker's health/metrics endpoint when a port is given."""
    if port is None:
        return None
    from meshwatch.health import HealthServer

    stuck_after = settings.kafka.max_poll_interval

    def live() -> bool:
        return time.monotonic() - worker.last_loop < stuck_after

    def ready() -> bool:
        return worker.source.consumer is not None

    server = HealthServer("0.0.0.0", port, live, ready).start()  # noqa: S104 - probes/scrapes
    err_console.print(f"metrics and probes on :{server.port} (/metrics /livez /readyz)")
    return server


def run_kafka(settings: Settings, alerts_out: Path | None, serve: bool, quiet: bool,
              fresh: bool = False, metrics_port: int | None = None) -> None:
    """Consume the configured topics until SIGTERM/SIGINT (flush, commit, exit 0)."""
    import logging

    from ingest.sources.kafka import (
        DeadLetterProducer,
        KafkaSource,
        KafkaUnavailable,
        topic_format_keys,
        topic_format_options,
    )
    from meshwatch.settings import ConfigError
    from meshwatch.worker import KafkaWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        check_topic_formats(settings)
        scope = f"kafka:{settings.kafka.group_id}"
        pipeline = open_pipeline(settings, alerts_out, topic_format_options(settings.kafka),
                                 scope=scope)
        pipeline.prepare(topic_format_keys(settings.kafka).values())
    except ConfigError as exc:
        fail(str(exc))
    dead_letters = None
    if settings.kafka.dead_letter_topic:
        dead_letters = DeadLetterProducer(settings.kafka, settings.kafka.dead_letter_topic)
        pipeline.dead_letter_sink = dead_letters
    worker = KafkaWorker(pipeline, KafkaSource(settings.kafka),
                         commit_interval=settings.kafka.commit_interval)
    if not fresh:
        worker.restore()
    worker.install_signal_handlers()
    pipeline.notifier.start()
    server = _api_thread(settings, pipeline.store, pipeline) if serve else None
    health = _health(settings, metrics_port, worker)
    topics = ", ".join(f"{k} ({v.format})" for k, v in settings.kafka.topics.items())
    err_console.print(f"consuming {topics} from {', '.join(settings.kafka.bootstrap_servers)} "
                      f"as group {settings.kafka.group_id!r}; Ctrl-C to stop")
    last_report = [time.monotonic()]

    def progress(w: KafkaWorker) -> None:
        if quiet or time.monotonic() - last_report[0] < 10:
            return
        last_report[0] = time.monotonic()
        s = w.pipeline.stats
        state = " PAUSED (store unavailable)" if w.status.paused else ""
        err_console.print(f"records {s.records:,}  events {s.events:,}  failures "
                          f"{s.parse_failures:,}  alerts {sum(s.alerts_opened.values()):,}  "
                          f"commits {w.status.commits}{state}")

    worker.on_progress = progress
    try:
        worker.run()
        edges = pipeline.store.query(
            "SELECT uniqExact(edge_src, edge_dst) AS n FROM {db}.edge_windows")
    except KafkaUnavailable as exc:
        fail(str(exc))
    finally:
        if server is not None:
            server.should_exit = True
        if health is not None:
            health.stop()
        if dead_letters is not None:
            dead_letters.close()
        pipeline.notifier.stop()
        pipeline.store.close()
    print_summary({
        "stats": pipeline.stats, "elapsed": time.monotonic() - worker.status.started,
        "edges_total": int(edges[0]["n"]), "store_description": pipeline.store.description,
        "alerts_out": alerts_out,
    }, Console())


def run_stage(settings: Settings, stage: str, quiet: bool,
              metrics_port: int | None = None) -> None:
    """Run one scale-out stage until SIGTERM/SIGINT (see meshwatch/stages.py)."""
    import logging

    from kafka.errors import KafkaError

    from alerts.notify import Notifier
    from meshwatch import stages
    from meshwatch.kafka_state import ensure_state_topic
    from meshwatch.settings import ConfigError
    from meshwatch.store import Store, StoreError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        check_topic_formats(settings)
        store = Store.open(settings.store)
    except (ConfigError, StoreError) as exc:
        fail(str(exc))
    closers: list[Any] = []  # callables run at exit
    try:
        ensure_state_topic(settings.kafka, settings.kafka.state_topic)
        worker: stages.StageWorker
        if stage == "normalize":
            worker = stages.NormalizeWorker(settings, store)
        elif stage == "detect":
            sink = stages.AlertChangeProducer(settings.kafka)
            closers.append(sink.close)
            worker = stages.DetectWorker(settings, store, alert_sink=sink)
        else:
            notifier = Notifier(settings, store)
            notifier.start()
            closers.append(notifier.stop)
            worker = stages.NotifyWorker(settings, store, notifier)
        worker.install_signal_handlers()
        health = _health(settings, metrics_port, worker)
        if health is not None:
            closers.append(health.stop)
        err_console.print(f"stage {stage}: group {settings.kafka.group_id}-{stage}, brokers "
                          f"{', '.join(settings.kafka.bootstrap_servers)}; Ctrl-C to stop")
        worker.run()
    except KafkaError as exc:
        fail(f"Kafka: {exc}")
    finally:
        for close in closers:
            close()
        store.close()
    if not quiet:
        err_console.print(f"stage {stage}: {worker.records:,} records, {worker.commits} commits")


def _api_thread(settings: Settings, store: Any, pipeline: Any = None) -> Any:
    import threading

    import uvicorn

    from alerts.api import create_app

    # The pipeline in this process: analyst actions and feedback reach it at once, and the
    # live feed (SSE) hears of its alert writes without polling.
    app = create_app(store, settings, pipeline=pipeline)
    bootstrap_token(store, f"http://{settings.api.host}:{settings.api.port}")
    if pipeline is not None:
        pipeline.alert_listeners.append(app.state.feed.publish)
    config = uvicorn.Config(app, host=settings.api.host,
                            port=settings.api.port, log_level="warning",
                            timeout_graceful_shutdown=3)  # open SSE streams: cut after 3 s
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="api", daemon=True).start()
    err_console.print(f"alert feed on http://{settings.api.host}:{settings.api.port}")
    return server


def serve_api(settings: Settings, store: Any, notifier: Any = None) -> None:
    """Serve the feed over an already-open store until interrupted (delivery goes on)."""
    import uvicorn

    from alerts.api import create_app

    app = create_app(store, settings)
    url = f"http://{settings.api.host}:{settings.api.port}"
    bootstrap_token(store, url)
    err_console.print(f"serving the alert feed on {url}/ui/ (Ctrl-C to stop)")
    try:
        # Open SSE streams (the live feed) would hold shutdown forever: cut them after 3 s.
        uvicorn.run(app, host=settings.api.host, port=settings.api.port, log_level="warning",
                    timeout_graceful_shutdown=3)
    finally:
        if notifier is not None:
            notifier.stop()
        store.close()


def bootstrap_token(store: Any, url: str) -> str | None:
    """With no active API token, create an admin token and print it once (the embedded
    store cannot be opened by `meshwatch token create` while this process serves it)."""
    from alerts.tokens import TokenStore

    tokens = TokenStore(store)
    if any(t.to_dict()["state"] == "active" for t in tokens.list("api")):
        return None
    _, secret = tokens.create("bootstrap-admin", "admin", created_by="serve")
    err_console.print("no API token existed: created admin token [bold]bootstrap-admin[/] "
                      f"(shown once; revoke it once you have your own):\n  {secret}\n"
                      f"log in at {url}/ui/login", markup=True)
    return secret
