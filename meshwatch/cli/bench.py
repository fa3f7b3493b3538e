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
    help="Benchmarks with measured numbers: NAB scoring of the anomaly models.",
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
