"""`meshwatch eval`: run the real pipeline over labelled traffic and score its alerts.

The input is what `meshwatch simulate` writes (a directory with the log files, labels.json and
mesh.json). Each directory is processed by its own `Pipeline` on one temporary embedded store
(chdb opens one data directory per process), every finding is recorded as it reaches the alert
book, and `detectors.evaluation.labelled` does the scoring (pure functions, importable from
notebooks).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meshwatch.cli.common import ConfigOption, fail, settings_from
from meshwatch.settings import ConfigError

# Preferred input when a run wrote several formats (all describe the same calls).
FORMAT_PREFERENCE = ("envoy-json", "envoy-text", "otlp-json", "otlp-proto")
BATCH_RECORDS = 5000
FLUSH_EVERY = 20  # batches between store flushes (keeps buffers small on long runs)


def register(app: typer.Typer) -> None:
    app.command(
        "eval",
        help=(
            "Evaluate the detectors on labelled traffic (`meshwatch simulate` output): runs the "
            "pipeline and reports, per detector and per attack kind, the detection rate, false "
            "alerts per day per 100 services, average precision and time to detect.\n\n"
            "Examples:\n\n"
            "  meshwatch eval --input sim                        # sim/labels.json\n\n"
            "  meshwatch eval -i s1 -i s2 -i s3 --json > eval.json   # pooled over seeds\n\n"
            "  meshwatch eval -i sim --config meshwatch.yaml     # with your detector config"
        ),
    )(eval_command)


def choose_file(directory: Path, labels: dict[str, Any], format_name: str | None
                ) -> tuple[Path, str]:
    """The log file to replay and its format, from labels.json's ``files``."""
    files: dict[str, str] = labels.get("files") or {}
    if format_name:
        if format_name not in files:
            raise ValueError(f"{directory}: no {format_name} file (has: {', '.join(files)})")
        return directory / files[format_name], format_name
    for name in FORMAT_PREFERENCE:
        if name in files:
            return directory / files[name], name
    raise ValueError(f"{directory}: labels.json lists no replayable file")


def replay(settings: Any, store: Any, path: Path, format_name: str, scope: str) -> list[Any]:
    """Run one file through a fresh `Pipeline`; returns its alerts with every finding."""
    from detectors.evaluation.labelled import EvalAlert, Sighting
    from ingest.sources.files import read_records
    from meshwatch.pipeline import Pipeline

    pipeline = Pipeline(settings, store, checkpoint_scope=scope)
    alerts: dict[str, EvalAlert] = {}
    apply = pipeline.alert_book.apply

    def recording_apply(finding: Any) -> Any:
        change = apply(finding)
        alert = change.alert
        entry = alerts.get(alert.id)
        if entry is None:
            entry = alerts[alert.id] = EvalAlert(alert.id, alert.detector, alert.severity,
                                                 alert.title)
        entry.severity = alert.severity
        entry.findings.append(Sighting(finding.ts, finding.detector, float(finding.score),
                                       finding.source.to_dict(), finding.destination.to_dict()))
        return change

    pipeline.alert_book.apply = recording_apply  # type: ignore[method-assign]
    batch: list[Any] = []
    batches = 0
    try:
        for record in read_records(path, format_name):
            batch.append(record)
            if len(batch) >= BATCH_RECORDS:
                pipeline.process(batch)
                batch = []
                batches += 1
                if batches % FLUSH_EVERY == 0:
                    pipeline.flush()
        if batch:
            pipeline.process(batch)
        pipeline.finish()
        pipeline.flush()
    finally:
        pipeline.close()
    return list(alerts.values())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def evaluate_dirs(directories: list[Path], labels_path: Path | None, settings: Any,
                  format_name: str | None = None, before: float = 60.0, after: float = 600.0,
                  progress: Any = None, declare: bool = False) -> Any:
    """Evaluate each directory and pool the results (`labelled.combine`).

    With ``declare`` each run's mesh.json is turned into the declarations an operator would
    configure (Istio policy files, crown jewels, service accounts; see
    `detectors.evaluation.declarations`) and merged over the configured detectors.
    """
    from detectors.evaluation.declarations import write_declarations
    from detectors.evaluation.labelled import combine, evaluate, load_labels
    from meshwatch.store import Store

    reports = []
    with tempfile.TemporaryDirectory(prefix="meshwatch-eval-") as tmp:
        store_settings = settings.store.model_copy(update={"path": Path(tmp) / "store",
                                                           "url": None, "store_events": False})
        store = Store.open(store_settings)
        try:
            for n, directory in enumerate(directories):
                label_file = labels_path or directory / "labels.json"
                data = json.loads(label_file.read_text("utf-8"))
                path, fmt = choose_file(directory, data, format_name)
                run_settings = settings
                if declare:
                    overrides = write_declarations(directory / "mesh.json",
                                                   Path(tmp) / f"declarations-{n}")
                    run_settings = settings.model_copy(update={
                        "detectors": _merge(dict(settings.detectors), overrides)})
                started = time.process_time()
                alerts = replay(run_settings, store, path, fmt, scope=f"eval-{n}")
                if progress is not None:
                    progress(directory, len(alerts), time.process_time() - started)
                reports.append(evaluate(alerts, load_labels(data), before=before, after=after,
                                        run=directory.name))
        finally:
            store.close()
    return combine(reports)


def eval_command(
    input_dirs: Annotated[
        list[Path],
        typer.Option("--input", "-i", help="Simulator output directory. Repeatable (pooled).",
                     show_default=False),
    ],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", "-l",
                     help="labels.json (default: DIR/labels.json); only with one --input."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    format_name: Annotated[
        str | None,
        typer.Option("--format", "-f",
                     help="Which of the run's files to replay (default: envoy-json when present)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON report here.")
    ] = None,
    before: Annotated[float, typer.Option(help="Seconds a finding may precede an attack.")] = 60.0,
    after: Annotated[float, typer.Option(help="Seconds a finding may follow an attack.")] = 600.0,
    declare_from_mesh: Annotated[bool, typer.Option(
        "--declare-from-mesh",
        help="Configure policy files, crown jewels and service accounts from DIR/mesh.json, "
             "as an operator would declare them.")] = False,
    config: ConfigOption = None,
) -> None:
    if labels is not None and len(input_dirs) != 1:
        fail("--labels goes with exactly one --input")
    for directory in input_dirs:
        if not directory.is_dir():
            fail(f"{directory}: not a directory")
        if labels is None and not (directory / "labels.json").is_file():
            fail(f"{directory}: no labels.json (pass --labels)")
        if declare_from_mesh and not (directory / "mesh.json").is_file():
            fail(f"{directory}: no mesh.json for --declare-from-mesh")
    settings = settings_from(config, {"alerts": {"series_windows": 0}})
    console = Console(stderr=True, highlight=False)

    def progress(directory: Path, n_alerts: int, cpu: float) -> None:
        console.print(f"{directory}: {n_alerts} alerts ({cpu:.1f} s CPU)")

    try:
        report = evaluate_dirs(list(input_dirs), labels, settings, format_name, before, after,
                               progress=None if as_json else progress,
                               declare=declare_from_mesh)
    except (ValueError, OSError, ConfigError) as exc:
        fail(str(exc))
    data = report.as_dict()
    if output is not None:
        output.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    print_report(data, Console(width=None if sys.stdout.isatty() else 130))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _group_table(title: str, rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left",
                  caption="detected: share of labelled instances (per detector: those expecting "
                          "it); matched: attack instances any of its findings matched; FA: false "
                          "alerts; TTD: time to detect", caption_justify="left")
    table.add_column("", no_wrap=True)
    for column in ("instances", "detected", "matched", "alerts", "FA", "FA/day/100 svc", "AP",
                   "TTD mean s", "TTD max s"):
        table.add_column(column, justify="right")
    for name, g in rows.items():
        table.add_row(name, str(g["instances"]), _pct(g["detection_rate"]),
                      str(g["attack_instances_matched"]), str(g["alerts"]),
                      str(g["false_alerts"]), _num(g["false_alerts_per_day_per_100_services"]),
                      _num(g["average_precision"]), _num(g["mean_time_to_detect_s"], 0),
                      _num(g["max_time_to_detect_s"], 0))
    return table


def print_report(data: dict[str, Any], console: Console) -> None:
    o = data["overall"]
    console.print(f"runs: {', '.join(data['runs'])}  ({data['simulated_days']:.3f} simulated "
                  f"days, {data['services']:.0f} services)")
    console.print(_group_table("Per attack kind", {**data["by_attack_kind"], "ALL": o}))
    console.print(_group_table("Per detector", data["by_detector"]))
    if o["missed"]:
        console.print(f"[bold red]missed:[/] {', '.join(o['missed'])}")
    for name, g in data["by_detector"].items():
        if g["missed"]:
            console.print(f"{name} did not fire on (expected by the labels): "
                          f"{', '.join(g['missed'])}")
    if data["false_alerts"]:
        table = Table(title="False alerts", title_justify="left")
        for column in ("run", "detector", "severity", "first seen", "benign look-alike",
                       "title"):
            table.add_column(column)
        for a in data["false_alerts"]:
            table.add_row(a["run"], a["detector"], a["severity"], a["first_seen"][:19],
                          a["benign_lookalike"] or "-", a["title"])
        console.print(table)
    console.print(f"detection rate {_pct(o['detection_rate'])}, false alerts "
                  f"{_num(o['false_alerts_per_day_per_100_services'])}/day/100 services, "
                  f"AP {_num(o['average_precision'])}")
