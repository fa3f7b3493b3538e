"""`meshwatch graph ...`: snapshots, diffs, plaintext edges, mTLS coverage, zero-trust policy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshwatch.cli.common import ConfigOption, err_console, fail, settings_from

if TYPE_CHECKING:
    from meshwatch.graphs.model import EdgeView
    from meshwatch.graphs.timerange import TimeRange
    from meshwatch.store import Store

T = TypeVar("T")

TIMES = ("Times: RFC 3339 (2026-03-01T12:00:00Z), a date, 'now', 'latest' (end of the newest "
         "stored window) or relative to now (-15m, -2h, -7d). Durations: 90s, 15m, 2h, 1d.")
EXIT_CODES = ("Exit status: 0 done; 1 no data in the range (the message says where data is) or "
              "store unavailable; 2 usage error (unreadable time, reversed or empty range).")


def _help(summary: str, *paragraphs: str, examples: tuple[str, ...] = ()) -> str:
    parts = [summary, *paragraphs, TIMES, EXIT_CODES]
    if examples:
        parts.append("[bold]Examples[/bold]")
        parts.extend(f"  {e}" for e in examples)
    return "\n\n".join(parts)


graph_app = typer.Typer(
    help=_help(
        "The service graph from the store: who calls whom, with which identity, over mTLS or "
        "not.",
        "Edges are source identity -> destination service:port, aggregated from the per-edge "
        "windows `meshwatch run` stores. mTLS is judged from destination-side evidence only; "
        "calls without it are 'unknown', never plaintext.",
        examples=("meshwatch graph snapshot --at latest --window 15m --format dot | dot -Tsvg "
                  "> mesh.svg",
                  "meshwatch graph diff --from -1d --to now",
                  "meshwatch graph edges --plaintext --window 1h",
                  "meshwatch graph coverage --since -7d --bucket 1d",
                  "meshwatch graph policy --since -7d --namespace shop > shop-policy.yaml"),
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(graph_app, name="graph")


class SnapshotFormat(StrEnum):
    json = "json"
    cytoscape = "cytoscape"
    graphml = "graphml"
    dot = "dot"
    table = "table"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


class Scope(StrEnum):
    workload = "workload"
    namespace = "namespace"


StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Embedded store directory \\[default: ./meshwatch-data]; "
                                 "ignored when a ClickHouse server URL is configured."),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Only edges from or to this namespace.",
                 show_default=False),
]
WindowOption = Annotated[
    str, typer.Option("--window", "-w", help="How far back from --at the graph reaches.")
]
AtOption = Annotated[
    str, typer.Option("--at", help="End of the snapshot: time travel to any past moment.")
]


# -- plumbing ----------------------------------------------------------------------------


@contextmanager
def _store(config: Path | None, store_path: Path | None) -> Iterator[Store]:
    from meshwatch.store import Store, StoreError

    settings = settings_from(config, {"store": {"path": store_path}})
    if not settings.store.url and not settings.store.path.is_dir():
        fail(f"no store at {settings.store.path} (pass --store DIR, or configure "
             "store.url for a ClickHouse server)", 1)
    try:
        store = Store.open(settings.store)
    except StoreError as exc:
        fail(escape(str(exc)), 1)
    try:
        yield store
    finally:
        store.close()


def _run(fn: Callable[[], T]) -> T:
    """Map the graph layer's errors to operator messages and exit codes."""
    from meshwatch.graphs.service import NoData
    from meshwatch.graphs.timerange import RangeError
    from meshwatch.store import StoreError

    try:
        return fn()
    except RangeError as exc:
        fail(escape(str(exc)))
    except NoData as exc:
        fail(escape(str(exc)), 1)
    except StoreError as exc:
        fail(escape(str(exc)), 1)


def _time(store: Store, value: str, now: datetime, name: str) -> datetime:
    from meshwatch.graphs.service import latest_end
    from meshwatch.graphs.timerange import RangeError, parse_time

    try:
        return parse_time(value, now, latest=lambda: latest_end(store))
    except RangeError as exc:
        raise RangeError(f"{name}: {exc}") from None


def _ending(store: Store, at: str, window: str, now: datetime) -> TimeRange:
    from meshwatch.graphs.timerange import TimeRange, parse_span

    span = parse_span(window, "--window")
    return TimeRange.ending(_time(store, at, now, "--at"), span)


def _between(store: Store, since: str, until: str, now: datetime) -> TimeRange:
    from meshwatch.graphs.timerange import between

    return between(_time(store, since, now, "--since"), _time(store, until, now, "--until"),
                   "--since", "--until")


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", 1)
    err_console.print(f"wrote {escape(str(out))}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _console() -> Console:
    return Console(highlight=False, width=max(Console().width, 160))


def _edges_table(title: str, edges: list[EdgeView], limit: int,
                 plaintext: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("source")
    table.add_column("destination")
    table.add_column("requests", justify="right")
    if plaintext:
        table.add_column("plaintext", justify="right")
        table.add_column("plaintext share", justify="right")
    table.add_column("mTLS", justify="right")
    table.add_column("status")
    table.add_column("5xx", justify="right")
    table.add_column("denied", justify="right")
    table.add_column("p99 ms", justify="right")
    for e in edges[:limit]:
        cells = [escape(e.src), escape(e.dst), f"{e.requests:,}"]
        if plaintext:
            cells += [f"{e.mtls_false:,}", _pct(e.plaintext_share)]
        cells += [_pct(e.mtls_share), e.mtls_status, f"{e.errors_5xx:,}", f"{e.denials:,}",
                  _ms(e.latency_p99)]
        table.add_row(*cells)
    return table


# -- commands ------------------------------------------------------------------------------


@graph_app.command(
    "snapshot",
    help=_help(
        "The graph over a window ending at a moment: nodes, and edges with summed counts, "
        "merged latency quantiles and mTLS status.",
        "A window belongs to the snapshot when it lies entirely inside [--at - --window, --at]. "
        "Counts are summed over windows and late parts; p50/p95/p99 come from merging the "
        "stored t-digest sketches; mTLS share = mtls / (mtls + plaintext), with calls lacking "
        "destination-side evidence reported as unknown. Status: all-mtls, mixed, plaintext or "
        "unknown.",
        "Formats: json (meshwatch's shape), cytoscape (Cytoscape.js elements), graphml "
        "(Gephi, yEd, networkx), dot (Graphviz), table (for people).",
        examples=("meshwatch graph snapshot --at latest",
                  "meshwatch graph snapshot --at 2026-03-01T12:00:00Z --window 1h -n shop "
                  "--format graphml -o shop.graphml",
                  "meshwatch graph snapshot --format dot | dot -Tsvg > mesh.svg"),
    ),
)
def snapshot_cmd(
    at: AtOption = "now",
    window: WindowOption = "15m",
    namespace: NamespaceOption = None,
    fmt: Annotated[SnapshotFormat, typer.Option("--format", "-f", help="Output format.")] = (
        SnapshotFormat.json
    ),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.",
                                             show_default=False)] = None,
    latency: Annotated[bool, typer.Option(
        "--latency/--no-latency", help="Merge latency sketches (slower over long windows).")
    ] = True,
    limit: Annotated[int, typer.Option(min=1, help="Rows in --format table.")] = 50,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.graphs import service
    from meshwatch.graphs.export import render

    now = datetime.now(UTC)
    with _store(config, store_path) as store:
        def build() -> Any:
            time_range = _ending(store, at, window, now)
            snap = service.snapshot(store, time_range, namespace, latency=latency)
            if not snap.edges:
                raise service.NoData(service.hint(store, time_range, namespace))
            return snap

        snap = _run(build)
    if fmt is SnapshotFormat.table:
        totals = snap.totals()
        _console().print(_edges_table(
            f"{totals['edges']:,} edges, {totals['nodes']:,} nodes, {totals['requests']:,} "
            f"requests, mTLS share {_pct(totals['mtls_share'])} over {snap.range}",
            sorted(snap.edges, key=lambda e: -e.requests), limit))
        return
    _write(render(snap, fmt.value), out)


@graph_app.command(
    "diff",
    help=_help(
        "What changed between the graph at --from and the graph at --to (each over --window).",
        "Reports new edges (flagged when never seen before), vanished edges, mTLS status "
        "changes (regressions: less mTLS than before), traffic shifts (request ratio of at "
        "least --min-ratio either way, with --min-requests on the busier side) and changes in "
        "the principals calling an edge.",
        examples=("meshwatch graph diff --from -1d --to now",
                  "meshwatch graph diff --from 2026-03-01T09:00:00Z --to 2026-03-01T10:00:00Z "
                  "--window 1h --format json"),
    ),
)
def diff_cmd(
    since: Annotated[str, typer.Option("--from", help="The earlier moment.",
                                       show_default=False)],
    until: Annotated[str, typer.Option("--to", help="The later moment.")] = "now",
    window: WindowOption = "15m",
    namespace: NamespaceOption = None,
    min_ratio: Annotated[float, typer.Option(help="Traffic-shift ratio (either way).")] = 2.0,
    min_requests: Annotated[int, typer.Option(
        min=0, help="A shift needs this many requests on the busier side.")] = 20,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.graphs import service
    from meshwatch.graphs.timerange import RangeError, TimeRange, parse_span

    now = datetime.now(UTC)
    with _store(config, store_path) as store:
        def build() -> Any:
            span = parse_span(window, "--window")
            t1, t2 = _time(store, since, now, "--from"), _time(store, until, now, "--to")
            if t2 <= t1:
                raise RangeError(f"{'empty' if t1 == t2 else 'reversed'} comparison: --to "
                                 f"({t2.isoformat()}) must be later than --from "
                                 f"({t1.isoformat()})")
            before, after = TimeRange.ending(t1, span), TimeRange.ending(t2, span)
            result = service.diff(store, before, after, namespace, min_ratio, min_requests)
            if not result.before.edges and not result.after.edges:
                raise service.NoData(service.hint(store, after, namespace))
            return result

        result = _run(build)
    if fmt is ReportFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_diff(result)


def _print_diff(result: Any) -> None:
    console = _console()
    s = result.summary()
    console.print(f"{escape(str(result.before.range))} -> {escape(str(result.after.range))}: "
                  f"{s['edges_before']:,} -> {s['edges_after']:,} edges; {s['new_edges']} new, "
                  f"{s['vanished_edges']} vanished, {s['mtls_changes']} mTLS changes "
                  f"({s['mtls_regressions']} regressions), {s['traffic_shifts']} traffic "
                  f"shifts, {s['principal_changes']} principal changes")
    if result.is_empty():
        console.print("no changes")
        return
    data = result.to_dict()
    sections: list[tuple[str, list[str], list[list[str]]]] = [
        ("New edges", ["source", "destination", "requests", "mTLS", "never seen before"],
         [[e["src"], e["dst"], f"{e['requests']:,}", e["mtls_status"],
           "yes" if e["never_seen_before"] else "no"] for e in data["new_edges"]]),
        ("Vanished edges", ["source", "destination", "requests before", "mTLS"],
         [[e["src"], e["dst"], f"{e['requests']:,}", e["mtls_status"]]
          for e in data["vanished_edges"]]),
        ("mTLS changes", ["source", "destination", "before", "after", "regression"],
         [[c["src"], c["dst"], f"{c['before']} ({_pct(c['share_before'])})",
           f"{c['after']} ({_pct(c['share_after'])})", "YES" if c["regression"] else ""]
          for c in data["mtls_changes"]]),
        ("Traffic shifts", ["source", "destination", "before", "after", "ratio"],
         [[t["src"], t["dst"], f"{t['requests_before']:,}", f"{t['requests_after']:,}",
           f"x{t['ratio']:.2f}"] for t in data["traffic_shifts"]]),
        ("Principal changes", ["source", "destination", "added", "removed"],
         [[c["src"], c["dst"], ", ".join(c["added"]), ", ".join(c["removed"])]
          for c in data["principal_changes"]]),
    ]
    for title, columns, rows in sections:
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(str(c)) for c in row))
        console.print(table)


@graph_app.command(
    "edges",
    help=_help(
        "List the edges of a window, busiest first; with --plaintext only the edges with "
        "destination-side plaintext calls, with their plaintext share.",
        "Plaintext is only ever judged from the callee's side (its sidecar or ztunnel saw no "
        "client certificate): a caller-side record alone cannot tell.",
        examples=("meshwatch graph edges --plaintext",
                  "meshwatch graph edges --plaintext --at latest --window 1h --format json"),
    ),
)
def edges_cmd(
    plaintext: Annotated[bool, typer.Option("--plaintext",
                                            help="Only edges with any plaintext call.")] = False,
    at: AtOption = "now",
    window: WindowOption = "15m",
    namespace: NamespaceOption = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    limit: Annotated[int, typer.Option(min=1, help="Rows in the table.")] = 100,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.graphs import service

    now = datetime.now(UTC)
    with _store(config, store_path) as store:
        def build() -> tuple[TimeRange, list[EdgeView]]:
            time_range = _ending(store, at, window, now)
            if plaintext:
                edges = service.plaintext_edges(store, time_range, namespace)
                if not edges and not service.snapshot(store, time_range, namespace,
                                                      latency=False).edges:
                    raise service.NoData(service.hint(store, time_range, namespace))
                return time_range, edges
            snap = service.snapshot(store, time_range, namespace)
            if not snap.edges:
                raise service.NoData(service.hint(store, time_range, namespace))
            return time_range, sorted(snap.edges, key=lambda e: (-e.requests, e.key))

        time_range, edges = _run(build)
    if fmt is ReportFormat.json:
        items = []
        for e in edges:
            item = e.to_dict()
            item["plaintext_share"] = e.plaintext_share
            items.append(item)
        typer.echo(json.dumps({"range": time_range.to_dict(), "plaintext_only": plaintext,
                               "edges": items}, indent=2))
        return
    if plaintext and not edges:
        typer.echo(f"no plaintext edges in {time_range}")
        return
    what = "edges with plaintext calls" if plaintext else "edges"
    _console().print(_edges_table(f"{len(edges):,} {what} in {time_range}", edges, limit,
                                  plaintext=plaintext))


@graph_app.command(
    "coverage",
    help=_help(
        "mTLS coverage per destination namespace over time: the share of edges that were "
        "all-mTLS and the share of requests that used mTLS, per bucket and over the range.",
        "Edges and requests without destination-side evidence are counted as unknown and "
        "left out of the shares.",
        examples=("meshwatch graph coverage --since -7d --bucket 1d",
                  "meshwatch graph coverage --since -24h -n payments --format json"),
    ),
)
def coverage_cmd(
    since: Annotated[str, typer.Option("--since", help="Start of the range.")] = "-24h",
    until: Annotated[str, typer.Option("--until", help="End of the range.")] = "now",
    bucket: Annotated[str, typer.Option("--bucket", "-b", help="Bucket length.")] = "1h",
    namespace: NamespaceOption = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.graphs import service
    from meshwatch.graphs.timerange import parse_span

    now = datetime.now(UTC)
    with _store(config, store_path) as store:
        def build() -> Any:
            time_range = _between(store, since, until, now)
            report = service.coverage(store, time_range, parse_span(bucket, "--bucket"),
                                      namespace)
            if not report.totals:
                raise service.NoData(service.hint(store, time_range, namespace))
            return report

        report = _run(build)
    if fmt is ReportFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = _console()
    for title, rows, first in (("Over the whole range", report.totals, False),
                               (f"Per {report.bucket_seconds}s bucket", report.buckets, True)):
        table = Table(title=f"mTLS coverage {escape(str(report.range))}: {title}",
                      title_justify="left")
        if first:
            table.add_column("bucket start")
        for column in ("namespace", "edges", "all-mTLS", "mixed", "plaintext", "unknown",
                       "edge share", "requests", "request share", "unknown req"):
            table.add_column(column, justify="left" if column == "namespace" else "right")
        for r in rows:
            cells = [r.namespace or "(none)", f"{r.edges:,}", f"{r.edges_all_mtls:,}",
                     f"{r.edges_mixed:,}", f"{r.edges_plaintext:,}", f"{r.edges_unknown:,}",
                     _pct(r.edge_share), f"{r.requests:,}", _pct(r.request_share),
                     f"{r.requests_unknown:,}"]
            if first:
                cells.insert(0, r.start.strftime("%Y-%m-%d %H:%M:%S"))
            table.add_row(*(escape(c) for c in cells))
        console.print(table)


@graph_app.command(
    "policy",
    help=_help(
        "Write Istio zero-trust policy from observed traffic, with a dry run of what it would "
        "deny.",
        "For each destination workload (or namespace with --scope namespace): an "
        "AuthorizationPolicy (security.istio.io/v1, ALLOW) listing exactly the principals its "
        "callee-side records verified over the period (never caller-side claims), optionally "
        "narrowed to the --methods, --paths and --ports used (needs stored raw events); and a "
        "PeerAuthentication STRICT where all inbound traffic was mTLS.",
        "The YAML goes to stdout (or --out) with comments saying what each policy was derived "
        "from. The dry run checks every observed edge (or those of --check-since .. --until) "
        "against the policies and prints, on stderr, the edges they would DENY (typically "
        "plaintext callers, which carry no principal) and those it cannot verify. Exit status "
        "3 with --fail-on-deny when any edge would be denied.",
        examples=("meshwatch graph policy --since -7d > policy.yaml",
                  "meshwatch graph policy -n shop --since -7d --methods --paths --report "
                  "dry-run.json -o shop.yaml",
                  "meshwatch graph policy --since -7d --check-since -1h --fail-on-deny"),
    ),
)
def policy_cmd(
    since: Annotated[str, typer.Option("--since", help="Learn from traffic since.")] = "-7d",
    until: Annotated[str, typer.Option("--until", help="... until.")] = "now",
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Only policies for workloads in this namespace.",
        show_default=False)] = None,
    scope: Annotated[Scope, typer.Option(help="One policy per workload or per namespace.")] = (
        Scope.workload
    ),
    methods: Annotated[bool, typer.Option("--methods", help="Restrict to observed methods.")
                       ] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Restrict to observed paths.")
                     ] = False,
    ports: Annotated[bool, typer.Option("--ports", help="Restrict to observed ports.")
                     ] = False,
    max_paths: Annotated[int, typer.Option(
        min=1, help="Above this many distinct paths per caller, paths are not restricted.")
    ] = 20,
    check_since: Annotated[str | None, typer.Option(
        "--check-since", help="Dry-run against edges from this time to --until instead of the "
                              "learning period.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the YAML here.",
                                             show_default=False)] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the dry run as JSON.",
                                                show_default=False)] = None,
    fail_on_deny: Annotated[bool, typer.Option(
        "--fail-on-deny", help="Exit 3 if any observed edge would be denied.")] = False,
    store_path: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    from meshwatch.graphs import service
    from meshwatch.policy import PolicyOptions, plan_policies, render_yaml
    from meshwatch.store import graph_queries as q

    options = PolicyOptions(scope=scope.value, methods=methods, paths=paths, ports=ports,
                            max_paths=max_paths)
    now = datetime.now(UTC)
    with _store(config, store_path) as store:
        def build() -> Any:
            learn = _between(store, since, until, now)
            learned = _destination_snapshot(service.snapshot(store, learn, None, latency=False),
                                            namespace)
            if not learned.edges:
                raise service.NoData(service.hint(store, learn, namespace))
            ops = q.observed_operations(store, learn.start, learn.end) \
                if options.operations else None
            checked = check_ops = None
            if check_since is not None:
                check = _between(store, check_since, until, now)
                checked = _destination_snapshot(
                    service.snapshot(store, check, None, latency=False), namespace)
                if options.operations:
                    check_ops = q.observed_operations(store, check.start, check.end)
            return plan_policies(learned, options, ops, checked, check_ops)

        plan = _run(build)
    _write(render_yaml(plan), out)
    if report is not None:
        _write(json.dumps(plan.to_dict(), indent=2) + "\n", report)
    _print_dry_run(plan)
    if fail_on_deny and plan.verdict_counts()["deny"]:
        raise typer.Exit(3)


def _destination_snapshot(snap: Any, namespace: str | None) -> Any:
    """Policies protect destinations: keep the edges *into* ``namespace``."""
    if namespace is None:
        return snap
    from meshwatch.graphs.snapshot import nodes_of

    snap.edges = [e for e in snap.edges if e.dst_namespace == namespace]
    snap.nodes = nodes_of(snap.edges)
    snap.namespace = namespace
    return snap


def _print_dry_run(plan: Any) -> None:
    counts = plan.verdict_counts()
    checked = plan.checked or plan.learned
    policies = sum(t.has_policy for t in plan.targets)
    strict = sum(t.strict for t in plan.targets)
    err_console.print(
        f"dry run against {escape(str(checked.range))}: {policies} AuthorizationPolicies, "
        f"{strict} PeerAuthentication STRICT; edges: {counts['allow']} allowed, "
        f"[bold red]{counts['deny']} would be denied[/], {counts['unverified']} unverified, "
        f"{counts['uncovered']} not covered", markup=True)
    flagged = [v for v in plan.verdicts if v.verdict in ("deny", "unverified")]
    if not flagged:
        return
    table = Table(title="Edges the policies would break or cannot verify", title_justify="left")
    for column in ("verdict", "source", "destination", "requests", "denied", "why", "policy"):
        table.add_column(column, justify="right" if column in ("requests", "denied") else "left")
    for v in flagged:
        table.add_row(v.verdict.upper(), escape(v.src), escape(v.dst), f"{v.requests:,}",
                      f"{v.denied_requests:,}", escape("; ".join(v.reasons)),
                      escape(v.policy or "-"))
    Console(stderr=True, highlight=False, width=max(Console().width, 160)).print(table)
