"""`meshwatch demo`: simulate a mesh with attacks, detect them, and serve the feed."""

from __future__ import annotations

import shutil
import time
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meshwatch.cli.common import err_console, fail, settings_from
from meshwatch.cli.run import print_summary, run_files, serve_api
from meshwatch.settings import parse_duration


def register(app: typer.Typer) -> None:
    app.command(
        "demo",
        help=(
            "See meshwatch work end to end, with nothing but this package: simulate a ~30 "
            "service mesh (Bookinfo + Online Boutique shapes) with injected attacks and benign "
            "look-alikes, run the pipeline on it into an embedded store, print the alerts, and "
            "serve the alert feed on http://127.0.0.1:8080 until Ctrl-C.\n\n"
            "Everything goes to --out (default ./meshwatch-demo), recreated on each run."
        ),
    )(demo)


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Working directory (recreated).")] = (
        Path("meshwatch-demo")),
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="Simulator scenario.")] = (
        "mixed"),
    duration: Annotated[str, typer.Option("--duration", "-d", help="Simulated span.")] = "2h",
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    host: Annotated[str, typer.Option(help="Feed host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Feed port.")] = 8080,
    serve: Annotated[bool, typer.Option("--serve/--no-serve",
                                        help="Serve the feed afterwards.")] = True,
) -> None:
    from meshwatch.simulate import SCENARIOS, SimulationConfig, simulate

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r} (known: {', '.join(sorted(SCENARIOS))})")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(str(exc))
    if out.exists():
        if not (out / ".meshwatch-demo").exists() and any(out.iterdir()):
            fail(f"{out} exists and is not a meshwatch demo directory; choose another --out")
        shutil.rmtree(out)
    (out / "traffic").mkdir(parents=True)
    (out / ".meshwatch-demo").touch()
    now = int(time.time()) // 60 * 60
    start_us = int((now - seconds) * 1_000_000)
    console = Console()
    err_console.print(f"[bold]1/3[/] simulating {duration} of mesh traffic ({scenario})...")
    with Progress(TextColumn("simulate"), BarColumn(), TimeElapsedColumn(),
                  console=err_console) as progress:
        task = progress.add_task("simulate", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = simulate(SimulationConfig(out_dir=out / "traffic", start_us=start_us,
                                            duration_s=seconds, scenario=scenario, seed=seed,
                                            formats=("envoy-json",)), progress=tick)
    attacks = summary.labels.get("attacks", [])
    err_console.print(f"    {summary.calls:,} calls, {len(attacks)} labelled attacks")

    err_console.print("[bold]2/3[/] detecting...")
    settings = settings_from(None, {
        "store": {"path": str(out / "store")},
        "api": {"host": host, "port": port},
        "alerts": {"public_url": f"http://{host}:{port}"},
    })
    result = run_files(settings, [out / "traffic" / "envoy-json.log"], "envoy-json", None,
                       out / "alerts.jsonl", fresh=True)
    print_summary(result, console)

    err_console.print("[bold]3/3[/] alerts")
    store = result["store"]
    alerts = store.list_alerts(limit=200)
    table = Table(show_lines=False)
    for column in ("first seen", "severity", "detector", "count", "title"):
        table.add_column(column, justify="right" if column == "count" else "left")
    room = max(30, console.width - 62)  # one line per alert: shorten long titles
    for alert in sorted(alerts, key=lambda a: a.first_seen):
        title = alert.title if len(alert.title) <= room else alert.title[: room - 1] + "…"
        table.add_row(alert.first_seen.astimezone(UTC).strftime("%H:%M:%S"), alert.severity,
                      alert.detector, str(alert.count), title)
    console.print(table)
    console.print(f"{len(alerts)} alerts; labelled attacks: "
                  + ", ".join(sorted({a['kind'] for a in attacks})))
    console.print(f"ground truth: {out / 'traffic' / 'labels.json'}  "
                  f"alerts: {out / 'alerts.jsonl'}")
    if serve:
        from alerts.tokens import TokenStore

        _, secret = TokenStore(store).create("demo-admin", "admin", created_by="demo")
        console.print(f"[bold]log in:[/] http://{host}:{port}/ui/login   with the admin token "
                      f"(shown once):\n  {secret}")
        console.print(f"[bold]feed:[/] http://{host}:{port}/api/v1/alerts   "
                      f"runbooks: http://{host}:{port}/runbooks   docs: http://{host}:{port}/docs "
                      f"(send Authorization: Bearer <token>)")
        serve_api(settings, store)
    else:
        store.close()
