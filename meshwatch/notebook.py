"""The Python API for notebooks: read the store into pandas, replay traffic through a detector
configuration, score it against labels or analyst verdicts, and write the tuned YAML back.

Three kinds of work, three groups of functions:

* **Explore** what the store holds: `open_store`, then `load_events`, `load_windows`,
  `load_graph`, `load_coverage`, `load_edges`, `load_alerts` (with analyst verdicts).
* **Replay** traffic through a detector configuration without touching live state: `prepare`
  runs parse -> identity -> graph once (files, a simulator run, or stored edge events) and keeps
  what the detectors would see; `replay` runs a configuration over it and returns scores,
  findings and alerts as DataFrames; `sweep` does that over a parameter grid.
* **Judge and promote**: `pr_curve` and `operating_point` (detection rate at an alert budget)
  on labelled traffic via `detectors.evaluation.labelled` (the rules `meshwatch eval` uses),
  `feedback_curve` with analyst verdicts as ground truth, and `save_detector_config` to write
  the YAML the pipeline reads (``detectors_file``).

Replays never open a store: chdb serves one data directory per process, so a replay that
needed its own embedded store could not run while the notebook holds one. The pipeline's
ingest half runs with a sink that discards writes, its detection half with a recorder; the
detectors then run on the recorded inputs as often as a sweep needs.

A session, in short::

    import meshwatch.notebook as mw
    sim = mw.simulate_traffic("work/sim", duration="2h")
    inputs = mw.prepare(sim)                       # parse once
    result = mw.replay(inputs, only=["first_seen_edge"], score_floor=0.05)
    curve = mw.pr_curve(result, detector="first_seen_edge")
    best = mw.operating_point(curve, max_alerts_per_day=5)
    mw.save_detector_config({"first_seen_edge": {"threshold": best.threshold}}, "tuned.yaml")
    with mw.open_store("meshwatch-data"):
        windows = mw.load_windows(since="-2h", until="latest")
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec
import numpy as np
import pandas as pd
import yaml

from detectors.config import default_config, load_detectors
from detectors.engine import DetectionEngine
from detectors.evaluation.labelled import (
    EvalAlert,
    Labels,
    Report,
    Sighting,
    average_precision,
    evaluate,
    load_labels,
)
from meshwatch.records import EDGE_EVENT_FIELDS, EdgeEvent, Finding, Origin, RawRecord
from meshwatch.settings import ConfigError, Settings, StoreSettings, load_settings, parse_duration

if TYPE_CHECKING:
    import networkx as nx

    from detectors.evaluation.nab_data import NabSeries
    from detectors.evaluation.nab_runner import NabReport
    from meshwatch.graphs.model import Snapshot
    from meshwatch.store import Store

BATCH_RECORDS = 5000  # records per pipeline batch, as `meshwatch run` and `meshwatch eval`
DEFAULT_EVENT_LIMIT = 1_000_000

# -- the store ---------------------------------------------------------------------------------

_current: OpenStore | None = None


class OpenStore:
    """A store opened for a notebook: the default store of the ``load_*`` functions until it is
    closed. Use it in a ``with`` block (which yields the `Store`) or call `close` yourself."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.closed = False

    def close(self) -> None:
        """Close the store (an embedded one can then be opened by another process)."""
        global _current
        if not self.closed:
            self.store.close()
            self.closed = True
        if _current is self:
            _current = None

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<OpenStore {self.store.description} ({state})>"


def open_store(path_or_settings: str | Path | Settings | StoreSettings | None = None, *,
               migrate: bool = False) -> OpenStore:
    """Open a store for reading and make it the default of the ``load_*`` functions.

    ``path_or_settings`` is an embedded store directory, a ClickHouse server URL
    (``http[s]://host:8123``; credentials from ``MESHWATCH_STORE__*`` as usual), `Settings` /
    `StoreSettings`, or None for the configured store (``MESHWATCH_CONFIG``, environment).
    The schema is left as it is unless ``migrate``. An embedded store can be open in one
    process only, so the store opened before this one is closed first; a store the pipeline
    is writing to cannot be opened here (copy its directory, or use a ClickHouse server).
    """
    from meshwatch.store import Store

    global _current
    if isinstance(path_or_settings, Settings):
        store_settings = path_or_settings.store
    elif isinstance(path_or_settings, StoreSettings):
        store_settings = path_or_settings
    elif path_or_settings is None:
        store_settings = load_settings().store
    elif str(path_or_settings).startswith(("http://", "https://")):
        store_settings = load_settings(overrides={"store": {"url": str(path_or_settings)}}).store
    else:
        path = Path(path_or_settings).expanduser()
        if not path.is_dir() and not migrate:
            raise FileNotFoundError(f"no store at {path} (build one with build_store, or pass "
                                    "migrate=True to create an empty one)")
        store_settings = load_settings().store.model_copy(update={"path": path, "url": None})
    if _current is not None:
        _current.close()
    _current = OpenStore(Store.open(store_settings, migrate=migrate))
    return _current


def current_store(store: Store | None = None) -> Store:
    """``store`` if given, else the store `open_store` opened last."""
    if store is not None:
        return store
    if _current is None or _current.closed:
        raise RuntimeError("no store open: call meshwatch.notebook.open_store(path) first")
    return _current.store


TimeLike = str | datetime | pd.Timestamp | None


def _range(store: Store, since: TimeLike, until: TimeLike) -> tuple[datetime, datetime]:
    """[since, until) as aware UTC datetimes; None means the first/last stored window."""
    from meshwatch.graphs.service import latest_end
    from meshwatch.graphs.timerange import between, parse_time
    from meshwatch.store import graph_queries as q

    now = datetime.now(UTC)
    held = None
    if since is None or until is None:
        held = q.data_range(store)
        if held is None:
            raise LookupError("the store holds no edge windows yet (run the pipeline first)")
    start = held["first"] if since is None else parse_time(since, now, lambda: latest_end(store))
    end = held["last"] if until is None else parse_time(until, now, lambda: latest_end(store))
    rng = between(start, end)
    return rng.start, rng.end


def _ch(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


# The destination namespace when a window lacks it: `name.NS.svc...` service FQDNs. Output
# aliases repeat column names, so the query reads columns first (prefer_column_name_to_alias).
_DST_NS = ("coalesce(any(dst_namespace), nullIf(extract(ifNull(any(dst_service), ''),"
           " '^[^.:]+\\\\.([^.:]+)\\\\.svc(?:\\\\.|:|$)'), ''))")
_WINDOW_SQL = """
SELECT window_start, any(window_seconds) AS window_seconds, edge_src, edge_dst,
    count() AS parts,
    any(src_kind) AS src_kind, any(src_workload) AS src_workload,
    any(src_namespace) AS src_namespace, any(src_principal) AS src_principal,
    any(src_address) AS src_address, any(dst_kind) AS dst_kind,
    any(dst_service) AS dst_service, any(dst_port) AS dst_port,
    any(dst_workload) AS dst_workload, {dst_ns} AS dst_namespace,
    any(dst_principal) AS dst_principal,
    sum(requests) AS requests, sum(errors_4xx) AS errors_4xx, sum(errors_5xx) AS errors_5xx,
    sum(denials) AS denials, sum(conn_failures) AS conn_failures,
    sum(bytes_sent) AS bytes_sent, sum(bytes_received) AS bytes_received,
    sum(latency_count) AS latency_count,
    argMin(latency_p50, part) AS latency_p50, argMin(latency_p95, part) AS latency_p95,
    argMin(latency_p99, part) AS latency_p99,
    sum(mtls_true) AS mtls_true, sum(mtls_false) AS mtls_false,
    sum(mtls_unknown) AS mtls_unknown,
    arraySort(groupUniqArrayArray(tls_versions)) AS tls_versions,
    arraySort(groupUniqArrayArray(peer_principals)) AS peer_principals,
    arraySort(groupUniqArrayArray(source_addresses)) AS source_addresses,
    min(first_seen) AS first_seen, max(last_seen) AS last_seen,
    min(min_cert_not_after) AS min_cert_not_after
FROM {{db}}.edge_windows FINAL
WHERE window_start >= {{since:DateTime('UTC')}} AND window_start < {{until:DateTime('UTC')}}
GROUP BY window_start, edge_src, edge_dst
{having}
ORDER BY window_start, edge_src, edge_dst
SETTINGS prefer_column_name_to_alias = 1
"""


def load_windows(since: TimeLike = None, until: TimeLike = None, namespace: str | None = None,
                 *, store: Store | None = None) -> pd.DataFrame:
    """Per-edge windows starting in [since, until), one row per window and edge.

    A window's late parts (``part`` > 0) are summed into it; latency quantiles are the first
    part's. ``mtls_share`` is mTLS calls over calls with destination-side evidence (NaN
    without any). ``namespace`` keeps edges with that source or destination namespace. Times
    take datetimes, RFC 3339, ``now``, ``latest`` or ``-2h``; None means the store's first /
    last window.
    """
    store = current_store(store)
    start, end = _range(store, since, until)
    having = ""
    params: dict[str, Any] = {"since": start.strftime("%Y-%m-%d %H:%M:%S"),
                              "until": end.strftime("%Y-%m-%d %H:%M:%S")}
    if namespace is not None:
        having = f"HAVING any(src_namespace) = {{ns:String}} OR {_DST_NS} = {{ns:String}}"
        params["ns"] = namespace
    df = store.query_df(_WINDOW_SQL.format(dst_ns=_DST_NS, having=having), params)
    df = _utc(df, ("window_start", "first_seen", "last_seen", "min_cert_not_after"))
    known = df["mtls_true"].astype("float64") + df["mtls_false"].astype("float64")
    df["mtls_share"] = (df["mtls_true"].astype("float64") / known).where(known > 0)
    return df


def load_events(since: TimeLike = None, until: TimeLike = None, namespace: str | None = None,
                *, limit: int = DEFAULT_EVENT_LIMIT, store: Store | None = None) -> pd.DataFrame:
    """Raw edge events in [since, until), oldest first, at most ``limit`` rows.

    Columns are the EdgeEvent contract plus ``event_id``, ``edge_src`` and ``edge_dst``. Events
    are optional in the store (``store.store_events``) and expire sooner than windows.
    ``namespace`` keeps events with that source or destination namespace.
    """
    store = current_store(store)
    start, end = _range(store, since, until)
    where = ""
    params: dict[str, Any] = {"since": _ch(start), "until": _ch(end), "limit": int(limit)}
    if namespace is not None:
        where = ("AND (source_namespace = {ns:String} OR destination_namespace = {ns:String})")
        params["ns"] = namespace
    columns = ", ".join(("event_id", *EDGE_EVENT_FIELDS, "edge_src", "edge_dst"))
    # Column names from the EdgeEvent contract; every value is a bound parameter.
    sql = ("SELECT " + columns + " FROM {db}.edge_events FINAL"  # noqa: S608
           " WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} "
           + where + " ORDER BY ts, event_id LIMIT {limit:UInt64}")
    return _utc(store.query_df(sql, params), ("ts", "peer_cert_not_after"))


@dataclass
class Graph:
    """The service graph over one window: the snapshot the CLI and API serve, as DataFrames."""

    snapshot: Snapshot

    @property
    def nodes(self) -> pd.DataFrame:
        return pd.DataFrame([n.to_dict() for n in self.snapshot.nodes])

    @property
    def edges(self) -> pd.DataFrame:
        df = pd.DataFrame([e.to_dict() for e in self.snapshot.edges])
        return _utc(df, ("first_seen", "last_seen"))

    @property
    def totals(self) -> dict[str, Any]:
        return self.snapshot.totals()

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph with every node and edge attribute (for layouts, centrality)."""
        from meshwatch.graphs.export import to_networkx

        return to_networkx(self.snapshot)


def load_graph(at: TimeLike = "latest", window: str | float = "1h",
               namespace: str | None = None, *, store: Store | None = None) -> Graph:
    """The graph over the ``window`` ending at ``at`` (what `meshwatch graph snapshot` shows)."""
    from meshwatch.graphs.service import latest_end
    from meshwatch.graphs.service import snapshot as graph_snapshot
    from meshwatch.graphs.timerange import TimeRange, parse_span, parse_time

    store = current_store(store)
    end = parse_time(at if at is not None else "latest", datetime.now(UTC),
                     lambda: latest_end(store))
    return Graph(graph_snapshot(store, TimeRange.ending(end, parse_span(window)), namespace))


def load_coverage(since: TimeLike = None, until: TimeLike = None, bucket: str | float = "1h",
                  namespace: str | None = None, *, store: Store | None = None) -> pd.DataFrame:
    """mTLS coverage per destination namespace and time bucket (`meshwatch graph coverage`).

    ``edge_share``: all-mTLS edges among edges with destination-side evidence; ``request_share``:
    mTLS requests among requests with that evidence (NaN where there is none).
    """
    from meshwatch.graphs.service import coverage
    from meshwatch.graphs.timerange import TimeRange, parse_span

    store = current_store(store)
    start, end = _range(store, since, until)
    report = coverage(store, TimeRange(start, end), parse_span(bucket, "bucket"), namespace)
    df = pd.DataFrame([r.to_dict() for r in report.buckets])
    if df.empty:
        return df
    df["namespace"] = df["namespace"].fillna("(unknown)")
    for column in ("edge_share", "request_share"):
        df[column] = df[column].astype("float64")
    return _utc(df, ("start", "end"))


def load_edges(*, store: Store | None = None) -> pd.DataFrame:
    """Every edge ever stored with its first and last sighting and its ends' namespaces (for
    "new edges per day"; windows may have expired, these rows do not)."""
    store = current_store(store)
    df = store.query_df(
        "SELECT e.edge_src AS edge_src, e.edge_dst AS edge_dst, e.first_seen AS first_seen,"
        " e.last_seen AS last_seen, s.ns AS src_namespace, d.ns AS dst_namespace"
        " FROM (SELECT edge_src, edge_dst, min(first_seen) AS first_seen,"
        "       max(last_seen) AS last_seen FROM {db}.edges GROUP BY edge_src, edge_dst) AS e"
        " LEFT JOIN (SELECT node_id, any(namespace) AS ns FROM {db}.nodes GROUP BY node_id)"
        "   AS s ON s.node_id = e.edge_src"
        " LEFT JOIN (SELECT node_id, any(namespace) AS ns FROM {db}.nodes GROUP BY node_id)"
        "   AS d ON d.node_id = e.edge_dst"
        " ORDER BY first_seen, edge_src, edge_dst")
    return _utc(df, ("first_seen", "last_seen"))


VERDICT_LABELS: dict[str, bool] = {"true_positive": True, "false_positive": False,
                                   "benign_by_design": False}


def load_alerts(with_feedback: bool = True, *, since: TimeLike = None, until: TimeLike = None,
                detector: str | Sequence[str] | None = None, evidence: bool = False,
                store: Store | None = None) -> pd.DataFrame:
    """Alerts (latest state), newest first, optionally with the analysts' verdicts.

    ``since``/``until`` select alerts active in the range (last seen at/after ``since``, first
    seen before ``until``). With ``with_feedback`` the columns ``verdict``, ``verdict_comment``,
    ``verdict_actor``, ``verdict_ts`` and ``label`` are added; ``label`` is the verdict as
    ground truth: True for a true positive, False for a false positive or benign-by-design,
    missing (``<NA>``) when no analyst judged the alert. ``source``/``destination`` are dicts.
    """
    store = current_store(store)
    where = []
    params: dict[str, Any] = {}
    if since is not None or until is not None:
        start, end = _range(store, since, until)
        where.append("a.last_seen >= {since:DateTime64(3, 'UTC')}"
                     " AND a.first_seen < {until:DateTime64(3, 'UTC')}")
        params.update(since=_ch(start), until=_ch(end))
    if detector is not None:
        where.append("a.detector IN {detectors:Array(String)}")
        params["detectors"] = [detector] if isinstance(detector, str) else list(detector)
    columns = ("a.id AS id, a.fingerprint AS fingerprint, a.detector AS detector,"
               " a.severity AS severity, a.title AS title, a.summary AS summary,"
               " a.source AS source, a.destination AS destination,"
               " a.src_namespace AS src_namespace, a.src_workload AS src_workload,"
               " a.src_principal AS src_principal, a.dst_namespace AS dst_namespace,"
               " a.dst_service AS dst_service, a.first_seen AS first_seen,"
               " a.last_seen AS last_seen, a.count AS count, a.score AS score,"
               " a.mitre AS mitre, a.status AS status, a.labels AS labels,"
               " a.assignee AS assignee, a.runbook_url AS runbook_url")
    if evidence:
        columns += ", a.evidence AS evidence"
    join = ""
    if with_feedback:
        columns += (", f.verdict AS verdict, f.comment AS verdict_comment,"
                    " f.actor AS verdict_actor, f.ts AS verdict_ts")
        join = (" LEFT JOIN (SELECT alert_id, verdict, comment, actor, ts"
                " FROM {db}.alert_feedback FINAL) AS f ON f.alert_id = a.id")
    # Fixed SQL fragments only; every value is a bound parameter.
    sql = ("SELECT " + columns + " FROM {db}.alerts AS a FINAL" + join  # noqa: S608
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY a.last_seen DESC, a.id SETTINGS join_use_nulls = 1")
    df = _utc(store.query_df(sql, params), ("first_seen", "last_seen", "verdict_ts"))
    for column in ("source", "destination") + (("evidence",) if evidence else ()):
        df[column] = [json.loads(v) if isinstance(v, str) and v else None for v in df[column]]
    if with_feedback:
        df["verdict"] = df["verdict"].replace("", None)
        df["label"] = df["verdict"].map(VERDICT_LABELS).astype("boolean")
    return df


def _utc(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Timestamp columns as tz-aware UTC pandas datetimes, whatever the backend returned."""
    for column in columns:
        if column in df.columns:
            values = df[column]
            if not pd.api.types.is_datetime64_any_dtype(values):
                values = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            elif values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            else:
                values = values.dt.tz_convert("UTC")
            df[column] = values
    return df


# -- example data ------------------------------------------------------------------------------


def simulate_traffic(out_dir: str | Path, *, duration: str | float = "2h", seed: int = 1,
                     scenario: str = "mixed", services: int = 30, rps: float | None = None,
                     start: str | datetime | None = None, learning: float | None = None,
                     formats: Sequence[str] = ("envoy-json",)) -> Path:
    """Labelled traffic from the simulator (`meshwatch simulate`) into ``out_dir``.

    The directory gets the log files, ``labels.json`` (the ground truth) and ``mesh.json``; the
    same arguments give the same bytes. ``start`` defaults to 2026-01-05T00:00Z so notebooks
    are reproducible; ``rps`` is mesh-wide calls per second at the daily mean.
    """
    from meshwatch.simulate import DEFAULT_RPS, SimulationConfig, simulate
    from meshwatch.simulate.engine import LEARNING_FRACTION

    begin = _as_datetime(start) if start is not None else datetime(2026, 1, 5, tzinfo=UTC)
    out = Path(out_dir)
    simulate(SimulationConfig(
        out_dir=out, start_us=int(begin.timestamp() * 1_000_000),
        duration_s=parse_duration(duration), scenario=scenario, formats=tuple(formats),
        seed=seed, services=services, rps=DEFAULT_RPS if rps is None else rps,
        learning_fraction=LEARNING_FRACTION if learning is None else learning))
    return out


def build_store(traffic: str | Path | Sequence[str | Path], store_path: str | Path, *,
                format: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Run the real pipeline over files into an embedded store at ``store_path`` (like
    ``meshwatch run --input ... --fresh``); returns the run's counts. The store is closed
    afterwards: open it with `open_store`. ``traffic`` is a simulator run directory or files.
    """
    from meshwatch.pipeline import Pipeline
    from meshwatch.store import Store

    if _current is not None and not _current.closed:
        raise RuntimeError(f"{_current.store.description} is open: close it before building a "
                           "store (embedded ClickHouse serves one directory per process)")
    files, _ = _files(traffic, format)
    base = settings if settings is not None else load_settings()
    settings = base.model_copy(update={
        "store": base.store.model_copy(update={"path": Path(store_path), "url": None})})
    store = Store.open(settings.store)
    try:
        pipeline = Pipeline(settings, store, checkpoint_scope="notebook")
        try:
            for path, fmt in files:
                for batch in _batches(_read(path, fmt)):
                    pipeline.process(batch)
                    pipeline.flush()
            pipeline.finish()
            pipeline.checkpoint()
        finally:
            pipeline.close()
        return pipeline.stats.as_dict()
    finally:
        store.close()


# -- replay ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What one pipeline batch handed to the detection engine."""

    notes: list[dict[str, Any]]  # edge observations, for event detectors
    windows: list[dict[str, Any]]  # complete closed windows, for window detectors
    now: float | None  # event time after the batch (quiet alerts resolve); None at end of input


@dataclass
class ReplayInputs:
    """Traffic after parse -> identity -> graph, batch by batch, ready for any detector config.

    Holds every edge note and closed window in memory (about 1 KB each; a simulated day of a
    30-service mesh is ~300k notes): prepare a day or two, not a month.
    """

    steps: list[Step]
    settings: Settings
    source: str
    records: int
    events: int
    parse_failures: int
    labels: Labels | None = None

    @property
    def notes(self) -> int:
        return sum(len(s.notes) for s in self.steps)

    @property
    def windows(self) -> int:
        return sum(len(s.windows) for s in self.steps)

    @property
    def start(self) -> datetime | None:
        return self.labels.start if self.labels is not None else self._bound(min)

    @property
    def end(self) -> datetime | None:
        return self.labels.end if self.labels is not None else self._bound(max)

    def _bound(self, pick: Any) -> datetime | None:
        times = [w["window_start"] for s in self.steps for w in s.windows[:1] + s.windows[-1:]]
        return pick(times) if times else None

    @property
    def days(self) -> float:
        """Length of the traffic in days (from the labels when known), for per-day rates."""
        if self.labels is not None:
            return self.labels.days
        start, end = self._bound(min), self._bound(max)
        if start is None or end is None:
            return 1.0 / 86400.0
        return max((end - start).total_seconds() + self.settings.graph.window, 1.0) / 86400.0

    def windows_frame(self) -> pd.DataFrame:
        """The complete windows the window detectors saw, as a DataFrame."""
        rows = [w for s in self.steps for w in s.windows]
        return pd.DataFrame([{k: v for k, v in w.items() if k != "latency_sketch"}
                             for w in rows])

    def __repr__(self) -> str:
        return (f"<ReplayInputs {self.source}: {self.records:,} records, {self.events:,} events, "
                f"{self.notes:,} notes, {self.windows:,} windows>")


class _Recorder:
    """Stands in for the detection engine while the pipeline's ingest half runs: keeps what
    the engine would have been given, in order, and finds nothing."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.steps: list[Step] = []
        self._notes: list[dict[str, Any]] = []

    def process_events(self, observations: Iterable[Mapping[str, Any]]) -> list[Finding]:
        self._notes.extend(cast(Iterable[dict[str, Any]], observations))
        return []

    def process_windows(self, windows: Iterable[Mapping[str, Any]]) -> list[Finding]:
        now = self.pipeline.graph.max_ts
        self.steps.append(Step(self._notes, list(cast(Iterable[dict[str, Any]], windows)),
                               now if math.isfinite(now) else None))
        self._notes = []
        return []


class _Discard:
    """The store of a replay: takes the pipeline's writes and keeps nothing but counts."""

    def __init__(self) -> None:
        self.dead_letters = 0

    def insert_events(self, events: Sequence[Any]) -> int:
        return len(events)

    def insert_windows(self, rows: Sequence[Any]) -> int:
        return len(rows)

    def insert_dead_letters(self, failures: Sequence[Any]) -> int:
        self.dead_letters += len(failures)
        return len(failures)

    def alert_states(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    def upsert_alerts(self, alerts: Sequence[Any], version: int | None = None) -> int:
        return len(alerts)


Source = str | Path | Sequence[str | Path] | pd.DataFrame | ReplayInputs


def prepare(source: Source | Store, *, format: str | None = None,
            settings: Settings | None = None, since: TimeLike = None, until: TimeLike = None,
            labels: Labels | Mapping[str, Any] | str | Path | None = None) -> ReplayInputs:
    """Run the pipeline's ingest half (parse, identity, graph) once over ``source``.

    ``source`` is a simulator run directory (its ``labels.json`` becomes ``.labels``), log
    files (``format`` or ``auto``), a DataFrame from `load_events`, or a `Store` whose edge
    events in [since, until) are replayed. Nothing is written anywhere.
    """
    if isinstance(source, ReplayInputs):
        return source
    from alerts.feedback import FeedbackRules
    from meshwatch.pipeline import Pipeline

    base = settings if settings is not None else load_settings()
    run_settings = base.model_copy(update={
        "store": base.store.model_copy(update={"store_events": False}),
        "alerts": base.alerts.model_copy(update={"series_windows": 0}),
    })
    records, name, found_labels = _records(source, format, since, until)
    sink = _Discard()
    pipeline = Pipeline(run_settings, cast("Store", sink), checkpoint_scope="notebook")
    recorder = _Recorder(pipeline)
    pipeline.engine = cast(DetectionEngine, recorder)
    pipeline.feedback_rules = FeedbackRules(None)  # no store: analyst rules are not applied
    try:
        for batch in _batches(records):
            pipeline.process(batch)
            pipeline.flush()
        pipeline.finish()
        pipeline.flush()
    finally:
        pipeline.close()
    steps = recorder.steps
    if steps:  # the pipeline resolves quiet alerts after every batch but not at the end
        last = steps[-1]
        steps[-1] = Step(last.notes, last.windows, None)
    stats = pipeline.stats
    return ReplayInputs(steps, base, name, stats.records, stats.events, stats.parse_failures,
                        _as_labels(labels) if labels is not None else found_labels)


def _records(source: Any, format_name: str | None, since: TimeLike, until: TimeLike
             ) -> tuple[Iterator[RawRecord], str, Labels | None]:
    from meshwatch.store import Store

    if isinstance(source, Store):
        events = load_events(since, until, store=source)
        return _event_records(events), f"{source.description} edge events", None
    if isinstance(source, pd.DataFrame):
        return _event_records(source), f"{len(source):,} edge events", None
    files, found = _files(source, format_name)
    name = ", ".join(str(p) for p, _ in files)
    return itertools.chain.from_iterable(_read(p, f) for p, f in files), name, found


def _files(source: Any, format_name: str | None) -> tuple[list[tuple[Path, str]],
                                                          Labels | None]:
    """(file, format) pairs of a simulator run directory or of log files."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            label_file = path / "labels.json"
            if not label_file.is_file():
                raise FileNotFoundError(f"{path}: a directory without labels.json (pass the "
                                        "log files instead)")
            from meshwatch.cli.eval import choose_file

            data = json.loads(label_file.read_text("utf-8"))
            chosen, fmt = choose_file(path, data, format_name)
            return [(chosen, fmt)], load_labels(data)
        return [(path, format_name or "auto")], None
    return [(Path(p), format_name or "auto") for p in source], None


def _read(path: Path, format_name: str) -> Iterator[RawRecord]:
    from ingest.sources.files import read_records

    return read_records(path, format_name)


def _batches(records: Iterable[RawRecord], size: int = BATCH_RECORDS
             ) -> Iterator[list[RawRecord]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _plain(value: Any) -> Any:
    """A DataFrame cell as msgspec wants it: None for missing, Python scalars, datetimes."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return None if isinstance(value, np.floating) and np.isnan(value) else value.item()
    return value


def _event_records(events: pd.DataFrame) -> Iterator[RawRecord]:
    """Stored edge events as the pipeline's own ``edge-event`` records (MessagePack)."""
    from ingest.parsers.edge_event import encode_event

    fields = [f for f in EDGE_EVENT_FIELDS if f in events.columns]
    ids = events["event_id"].tolist() if "event_id" in events.columns else None
    columns = [events[f].tolist() for f in fields]
    for i, values in enumerate(zip(*columns, strict=True)):
        row = {f: _plain(v) for f, v in zip(fields, values, strict=True)}
        event = msgspec.convert(row, EdgeEvent, strict=False)
        yield RawRecord(encode_event(event), Origin("edge_events", i + 1), "edge-event",
                        key=str(ids[i]) if ids is not None else None)


class _ScoreLog:
    """Wraps a detector to note every score it gives (the engine keeps only findings)."""

    def __init__(self, inner: Any, log: list[tuple[Any, ...]], keep_zero: bool) -> None:
        self.inner = inner
        self.log = log
        self.keep_zero = keep_zero
        self.zero = 0

    @property
    def consumes(self) -> str:
        return str(self.inner.consumes)

    def score_one(self, x: Mapping[str, Any]) -> float:
        score = self.inner.score_one(x)
        if score > 0.0 or self.keep_zero:
            self.log.append((x.get("ts") or x.get("window_start"), self.inner.name, float(score),
                             x.get("edge_src"), x.get("edge_dst")))
        else:
            self.zero += 1
        return score

    def learn_one(self, x: Mapping[str, Any]) -> None:
        self.inner.learn_one(x)

    def explain(self, x: Mapping[str, Any], score: float) -> Finding | None:
        return cast("Finding | None", self.inner.explain(x, score))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


Thresholds = float | Mapping[str, float] | None


@dataclass
class ReplayResult:
    """What a detector configuration did on replayed traffic.

    ``scores``: every positive score (one row per scored input); ``findings``: every finding,
    down to ``score_floor`` when one was given (``alerting`` says whether it reaches the
    configured threshold); ``alerts``: the alerts at the configured thresholds. Re-threshold
    without replaying: `alerts_at`, `evaluate`.
    """

    inputs: ReplayInputs
    config: dict[str, Any]
    thresholds: dict[str, float]
    score_floor: float | None
    scored: dict[str, int]
    _findings: list[tuple[int, Finding]]
    _scores: list[tuple[Any, ...]]
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def detectors(self) -> list[str]:
        return list(self.thresholds)

    @property
    def scores(self) -> pd.DataFrame:
        if "scores" not in self._cache:
            df = pd.DataFrame(self._scores, columns=["ts", "detector", "score", "edge_src",
                                                     "edge_dst"])
            df["ts"] = pd.to_datetime(df["ts"], utc=True)
            df["threshold"] = df["detector"].map(self.thresholds)
            self._cache["scores"] = df
        return cast(pd.DataFrame, self._cache["scores"])

    @property
    def findings(self) -> pd.DataFrame:
        if "findings" not in self._cache:
            rows = []
            for _, f in self._findings:
                rows.append({
                    "ts": f.ts, "detector": f.detector, "score": f.score,
                    "alerting": f.score >= self.thresholds.get(f.detector, math.inf),
                    "severity": f.severity, "entity": f.entity, "fingerprint": f.fingerprint,
                    "title": f.title, **_endpoint("src", f.source.to_dict()),
                    **_endpoint("dst", f.destination.to_dict())})
            df = pd.DataFrame(rows, columns=_FINDING_COLUMNS)
            df["ts"] = pd.to_datetime(df["ts"], utc=True)
            self._cache["findings"] = df
        return cast(pd.DataFrame, self._cache["findings"])

    @property
    def alerts(self) -> pd.DataFrame:
        return self.alerts_at(None)

    def _thresholds(self, threshold: Thresholds) -> dict[str, float]:
        if threshold is None:
            return dict(self.thresholds)
        if isinstance(threshold, Mapping):
            return {**self.thresholds, **{k: float(v) for k, v in threshold.items()}}
        return dict.fromkeys(self.thresholds, float(threshold))

    def _book(self, threshold: Thresholds) -> list[tuple[Any, list[Finding]]]:
        """Feed the findings at/above the thresholds to a fresh alert book, batch by batch,
        as the pipeline does (so alerts resolve after their quiet period the same way)."""
        from alerts.lifecycle import AlertBook
        from alerts.runbooks import RunbookLinks

        limits = self._thresholds(threshold)
        key = ("book", tuple(sorted(limits.items())))
        if key in self._cache:
            return cast(list[tuple[Any, list[Finding]]], self._cache[key])
        a = self.inputs.settings.alerts
        book = AlertBook(RunbookLinks(a.public_url, a.runbook_base_url),
                         max_evidence=a.max_evidence, quiet_periods=a.quiet_periods,
                         default_quiet_period=a.quiet_period)
        by_step: dict[int, list[Finding]] = {}
        for step, f in self._findings:
            if f.score >= limits.get(f.detector, math.inf):
                by_step.setdefault(step, []).append(f)
        alerts: dict[str, tuple[Any, list[Finding]]] = {}
        for i, step in enumerate(self.inputs.steps):
            for f in by_step.get(i, ()):
                change = book.apply(f)
                found = alerts.get(change.alert.id)
                alerts[change.alert.id] = (change.alert, [*(found[1] if found else []), f])
            if step.now is not None:
                for change in book.resolve_quiet(datetime.fromtimestamp(step.now, UTC)):
                    alerts[change.alert.id] = (change.alert, alerts[change.alert.id][1])
        self._cache[key] = list(alerts.values())
        return self._cache[key]

    def alerts_at(self, threshold: Thresholds) -> pd.DataFrame:
        """The alerts had the thresholds been ``threshold`` (a number for every detector, or
        a per-detector mapping; None: the configured ones). Only scores down to the replay's
        ``score_floor`` are known."""
        rows = []
        for alert, _ in self._book(threshold):
            d = alert.to_dict()
            rows.append({
                "id": d["id"], "fingerprint": d["fingerprint"], "detector": d["detector"],
                "severity": d["severity"], "title": d["title"], "first_seen": d["first_seen"],
                "last_seen": d["last_seen"], "count": d["count"], "score": d["score"],
                "status": d["status"], **_endpoint("src", d["source"]),
                **_endpoint("dst", d["destination"])})
        df = pd.DataFrame(rows, columns=_ALERT_COLUMNS)
        return _utc(df, ("first_seen", "last_seen")).sort_values(
            ["first_seen", "id"], ignore_index=True)

    def eval_alerts(self, threshold: Thresholds = None) -> list[EvalAlert]:
        """The alerts with their findings, as `detectors.evaluation.labelled` scores them."""
        out = []
        for alert, findings in self._book(threshold):
            entry = EvalAlert(alert.id, alert.detector, alert.severity, alert.title)
            entry.findings = [Sighting(f.ts, f.detector, float(f.score), f.source.to_dict(),
                                       f.destination.to_dict()) for f in findings]
            out.append(entry)
        return out

    def evaluate(self, labels: Labels | Mapping[str, Any] | str | Path | None = None,
                 threshold: Thresholds = None, *, before: float = 60.0,
                 after: float = 600.0) -> Report:
        """`labelled.evaluate` on these alerts (the report `meshwatch eval` prints)."""
        return evaluate(self.eval_alerts(threshold), self._labels(labels), before=before,
                        after=after, run=self.inputs.source)

    def _labels(self, labels: Labels | Mapping[str, Any] | str | Path | None) -> Labels:
        if labels is not None:
            return _as_labels(labels)
        if self.inputs.labels is None:
            raise ValueError("no labels: pass labels= (a labels.json) or replay a simulator run")
        return self.inputs.labels

    def summary(self) -> pd.DataFrame:
        """Per detector: inputs scored, positive scores, findings, alerts."""
        findings = self.findings
        alerts = self.alerts
        rows = []
        for name, threshold in self.thresholds.items():
            rows.append({"detector": name, "threshold": threshold,
                         "scored": self.scored.get(name, 0),
                         "positive_scores": int((self.scores["detector"] == name).sum()),
                         "findings": int((findings["detector"] == name).sum()),
                         "alerts": int((alerts["detector"] == name).sum())})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"<ReplayResult {', '.join(self.thresholds)}: {len(self._findings):,} findings, "
                f"{len(self._book(None))} alerts>")


_ENDPOINT_KEYS = ("workload", "namespace", "principal", "service", "address")
_FINDING_COLUMNS = ["ts", "detector", "score", "alerting", "severity", "entity", "fingerprint",
                    "title", *(f"src_{k}" for k in _ENDPOINT_KEYS),
                    *(f"dst_{k}" for k in _ENDPOINT_KEYS)]
_ALERT_COLUMNS = ["id", "fingerprint", "detector", "severity", "title", "first_seen",
                  "last_seen", "count", "score", "status", *(f"src_{k}" for k in _ENDPOINT_KEYS),
                  *(f"dst_{k}" for k in _ENDPOINT_KEYS)]


def _endpoint(prefix: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": data.get(k) for k in _ENDPOINT_KEYS}


def _as_labels(labels: Labels | Mapping[str, Any] | str | Path) -> Labels:
    if isinstance(labels, Labels):
        return labels
    if isinstance(labels, str | Path):
        path = Path(labels)
        path = path / "labels.json" if path.is_dir() else path
        return load_labels(json.loads(path.read_text("utf-8")))
    return load_labels(labels)


def detector_config(base: Mapping[str, Any] | None = None, *, only: Iterable[str] | None = None,
                    **entries: Mapping[str, Any]) -> dict[str, Any]:
    """A ``detectors:`` mapping: ``base`` with ``entries`` merged in per detector (``params``
    merged key by key); with ``only``, every other known detector is disabled.

    >>> detector_config(first_seen_edge={"threshold": 0.7, "params": {"learning_period": "1h"}})
    {'first_seen_edge': {'threshold': 0.7, 'params': {'learning_period': '1h'}}}
    >>> cfg = detector_config(only=["fanout_scan"])
    >>> cfg["fanout_scan"], cfg["plaintext_edge"]
    ({}, {'enabled': False})
    """
    out: dict[str, Any] = {k: _copy(v) for k, v in (base or {}).items()}
    for name, entry in entries.items():
        merged = dict(out.get(name) or {})
        for key, value in entry.items():
            if key == "params" and isinstance(value, Mapping):
                merged["params"] = {**(merged.get("params") or {}), **value}
            else:
                merged[key] = value
        out[name] = merged
    if only is not None:
        keep = set(only)
        for name in sorted(set(default_config()) | set(out)):
            if name not in keep:
                out[name] = {**(out.get(name) or {}), "enabled": False}
            else:
                out.setdefault(name, {})
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def replay(source: Source | Store, detectors_config: Mapping[str, Any] | None = None, *,
           only: Iterable[str] | None = None, score_floor: float | None = None,
           settings: Settings | None = None, format: str | None = None,
           since: TimeLike = None, until: TimeLike = None,
           keep_zero_scores: bool = False) -> ReplayResult:
    """Run a detector configuration over traffic; nothing live is read or changed.

    ``source`` is anything `prepare` takes, or its result (parse once, replay many times).
    ``detectors_config`` is the ``detectors:`` mapping (merged over the built-in defaults; None:
    the configured one); ``only`` runs just those detectors. With ``score_floor`` detectors
    report findings down to that score, so `alerts_at` / `pr_curve` can lower the threshold
    after the fact; the configured thresholds still decide ``alerts``.

    >>> events = pd.DataFrame([{
    ...     "ts": "2026-01-05T10:00:00Z", "origin": "envoy_json", "reporter": "destination",
    ...     "source_address": "10.44.3.18", "destination_service":
    ...     "legacy-billing.legacy.svc.cluster.local", "destination_workload": "legacy-billing",
    ...     "destination_namespace": "legacy", "destination_port": 8080, "method": "POST",
    ...     "path": "/invoices", "response_code": 200, "mtls": False}])
    >>> result = replay(events, only=["plaintext_edge"])
    >>> result.alerts[["detector", "dst_service"]].values.tolist()
    [['plaintext_edge', 'legacy-billing.legacy.svc.cluster.local:8080']]
    """
    inputs = prepare(source, format=format, settings=settings, since=since, until=until)
    run_settings = settings if settings is not None else inputs.settings
    config = detector_config(detectors_config if detectors_config is not None
                             else run_settings.detectors, only=only)
    configured = load_detectors(config)
    thresholds = {c.name: c.threshold for c in configured}
    log: list[tuple[Any, ...]] = []
    wrappers = []
    for item in configured:
        if score_floor is not None:
            item.threshold = min(item.threshold, float(score_floor))
        wrapper = _ScoreLog(item.detector, log, keep_zero_scores)
        item.detector = cast(Any, wrapper)
        wrappers.append((item.name, wrapper))
    engine = DetectionEngine(configured)
    findings: list[tuple[int, Finding]] = []
    for i, step in enumerate(inputs.steps):
        found = engine.process_events(step.notes) + engine.process_windows(step.windows)
        findings.extend((i, f) for f in found)
    return ReplayResult(inputs, config, thresholds, score_floor, dict(engine.scored), findings,
                        log)


# -- evaluation --------------------------------------------------------------------------------


def report_frame(report: Report) -> pd.DataFrame:
    """A `labelled.Report` as one row per detector and per attack kind (plus ``all``)."""
    data = report.as_dict()
    rows = [{"group": "detector", **g} for g in data["by_detector"].values()]
    rows += [{"group": "attack_kind", **g} for g in data["by_attack_kind"].values()]
    rows.append({"group": "overall", **data["overall"]})
    return pd.DataFrame(rows).set_index(["group", "name"])


def _curve_row(report: Report, detector: str, days: float) -> dict[str, Any]:
    data = report.as_dict()
    overall = data["overall"]
    g = data["by_detector"].get(detector) or {
        "alerts": 0, "true_alerts": 0, "false_alerts": 0, "detection_rate": None,
        "false_alerts_per_day_per_100_services": 0.0, "mean_time_to_detect_s": None}
    alerts = g["alerts"]
    return {
        "alerts": alerts,
        "true_alerts": g["true_alerts"],
        "false_alerts": g["false_alerts"],
        "precision": g["true_alerts"] / alerts if alerts else math.nan,
        "recall": _num(g["detection_rate"]),
        "attack_recall": _num(overall["detection_rate"]),
        "alerts_per_day": alerts / days,
        "false_alerts_per_day_per_100_services": _num(g["false_alerts_per_day_per_100_services"]),
        "mean_time_to_detect_s": _num(g["mean_time_to_detect_s"]),
    }


def _detector_report(result: ReplayResult, truth: Labels, detector: str,
                     threshold: float) -> Report:
    """The eval report of one detector's alerts alone (others that ran are left out)."""
    alerts = [a for a in result.eval_alerts({detector: threshold}) if a.detector == detector]
    return evaluate(alerts, truth, run=result.inputs.source)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def pr_curve(result: ReplayResult, labels: Labels | Mapping[str, Any] | str | Path | None = None,
             *, detector: str | None = None, thresholds: Sequence[float] | None = None,
             max_points: int = 40) -> pd.DataFrame:
    """Precision and recall of ``detector``'s alerts as its threshold moves, one row per
    threshold (ascending), scored with the rules of `meshwatch eval`.

    ``recall``: share of the attack instances that expect the detector which it detected
    (NaN when none expects it); ``attack_recall``: share of all attack instances its alerts
    matched, expected or not (for detectors no label names, like ``source_behaviour``).
    Candidate thresholds are the detector's finding scores (at most ``max_points``), so
    replay with a ``score_floor`` below the thresholds of interest.
    ``average_precision`` (same on every row) ranks all its alerts down to the floor.
    """
    if detector is None:
        if len(result.thresholds) != 1:
            raise ValueError(f"name the detector: this replay ran {', '.join(result.detectors)}")
        detector = result.detectors[0]
    if detector not in result.thresholds:
        raise ValueError(f"{detector!r} did not run in this replay "
                         f"(ran: {', '.join(result.detectors)})")
    truth = result._labels(labels)
    if thresholds is None:
        scores = sorted({round(f.score, 4) for _, f in result._findings
                         if f.detector == detector})
        if len(scores) > max_points:
            picks = np.unique(np.linspace(0, len(scores) - 1, max_points).round().astype(int))
            scores = [scores[i] for i in picks]
        thresholds = sorted({*scores, result.thresholds[detector]})
    lowest = min(thresholds) if thresholds else result.thresholds[detector]
    group = _detector_report(result, truth, detector, lowest).by_detector.get(detector)
    ap = average_precision(group.ranked) if group is not None else None
    rows = []
    for t in thresholds:
        report = _detector_report(result, truth, detector, float(t))
        rows.append({"detector": detector, "threshold": float(t),
                     **_curve_row(report, detector, truth.days),
                     "average_precision": _num(ap)})
    return pd.DataFrame(rows)


def label_findings(result: ReplayResult,
                   labels: Labels | Mapping[str, Any] | str | Path | None = None, *,
                   before: float = 60.0, after: float = 600.0) -> pd.DataFrame:
    """The replay's findings with the labelled instance each one matches (`meshwatch eval`'s
    matching rule): ``attack`` is the attack instance id, ``lookalike`` the benign look-alike
    id, both None when the finding matches neither."""
    from detectors.evaluation.labelled import matches

    truth = result._labels(labels)
    attacks = [i for i in truth.instances if i.is_attack]
    benign = [i for i in truth.instances if not i.is_attack]
    hit_attack, hit_benign = [], []
    for _, f in result._findings:
        sighting = Sighting(f.ts, f.detector, float(f.score), f.source.to_dict(),
                            f.destination.to_dict())
        hit_attack.append(next((i.id for i in attacks if matches(sighting, i, before, after)),
                               None))
        hit_benign.append(next((i.id for i in benign if matches(sighting, i, before, after)),
                               None))
    return result.findings.assign(attack=hit_attack, lookalike=hit_benign)


def operating_point(curve: pd.DataFrame, *, max_alerts_per_day: float | None = None,
                    max_false_alerts_per_day_per_100_services: float | None = None,
                    recall: str = "recall") -> pd.Series:
    """The row of a `pr_curve` (or `sweep` table) to run at under an alert budget: the highest
    ``recall`` whose alert rate fits the budget; ties go to higher precision, then fewer
    alerts, then faster detection, then the lower threshold (of settings that page alike on
    this traffic, the one with the most margin for attacks it did not contain).

    >>> curve = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "recall": [1.0, 1.0, 0.5],
    ...                       "precision": [0.2, 0.5, 1.0], "alerts_per_day": [40, 8, 2]})
    >>> operating_point(curve, max_alerts_per_day=10).to_dict()
    {'threshold': 0.5, 'recall': 1.0, 'precision': 0.5, 'alerts_per_day': 8.0}
    """
    if max_alerts_per_day is None and max_false_alerts_per_day_per_100_services is None:
        raise ValueError("give a budget: max_alerts_per_day or "
                         "max_false_alerts_per_day_per_100_services")
    fits = pd.Series(True, index=curve.index)
    if max_alerts_per_day is not None:
        fits &= curve["alerts_per_day"] <= max_alerts_per_day
    if max_false_alerts_per_day_per_100_services is not None:
        fits &= (curve["false_alerts_per_day_per_100_services"]
                 <= max_false_alerts_per_day_per_100_services)
    chosen = curve[fits]
    if chosen.empty:
        raise ValueError("no operating point fits the budget (raise it, or sweep higher "
                         "thresholds)")
    order = [(recall, False), ("precision", False), ("alerts_per_day", True),
             ("mean_time_to_detect_s", True), ("threshold", True)]
    order = [(c, asc) for c, asc in order if c in chosen.columns]
    ranked = chosen.assign(**{c: chosen[c].fillna(math.inf if asc else -math.inf)
                              for c, asc in order})
    best = ranked.sort_values([c for c, _ in order], ascending=[a for _, a in order],
                              kind="stable").index[0]
    return curve.loc[best]


def feedback_curve(alerts: pd.DataFrame, *, score: str = "score") -> pd.DataFrame:
    """Precision and recall over alert scores with analyst verdicts as ground truth.

    ``alerts`` is `load_alerts` output (or any frame with ``score`` and a boolean ``label``);
    unjudged alerts are left out. One row per distinct score used as threshold: alerts at or
    above it, their precision, and the share of all true positives they keep.

    >>> df = pd.DataFrame({"score": [0.9, 0.8, 0.6, 0.4], "label": [True, False, True, None],
    ...                    "first_seen": pd.to_datetime(["2026-01-05"] * 4, utc=True)})
    >>> feedback_curve(df)[["threshold", "precision", "recall"]].values.tolist()
    [[0.9, 1.0, 0.5], [0.8, 0.5, 0.5], [0.6, 0.6667, 1.0]]
    """
    judged = alerts[alerts["label"].notna()].copy()
    judged["label"] = judged["label"].astype(bool)
    positives = int(judged["label"].sum())
    rows = []
    for t in sorted(judged[score].unique(), reverse=True):
        kept = judged[judged[score] >= t]
        tp = int(kept["label"].sum())
        rows.append({"threshold": float(t), "alerts": len(kept), "true_positives": tp,
                     "precision": round(tp / len(kept), 4),
                     "recall": round(tp / positives, 4) if positives else math.nan})
    curve = pd.DataFrame(rows, columns=["threshold", "alerts", "true_positives", "precision",
                                        "recall"])
    curve.attrs["average_precision"] = feedback_average_precision(alerts, score=score)
    return curve


def feedback_average_precision(alerts: pd.DataFrame, *, score: str = "score") -> float | None:
    """Average precision of the judged alerts ranked by score (`labelled.average_precision`:
    ties go to the earlier alert); None without a true positive."""
    judged = alerts[alerts["label"].notna()]
    when = (judged["first_seen"].map(lambda t: t.timestamp()) if "first_seen" in judged
            else pd.Series(0.0, index=judged.index))
    return average_precision(list(zip(judged[score].astype(float), when,
                                      judged["label"].astype(bool), strict=True)))


def label_by_feedback(replayed: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Replayed alerts with the verdict analysts gave the stored alert of the same fingerprint
    (detector + entity), so a new configuration can be scored on judged history."""
    verdicts = (stored.dropna(subset=["verdict"])
                .sort_values("last_seen").drop_duplicates("fingerprint", keep="last")
                [["fingerprint", "verdict", "label"]])
    return replayed.merge(verdicts, on="fingerprint", how="left")


# -- sweeps ------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """One row per parameter combination (and threshold), with the replays behind them."""

    detector: str
    table: pd.DataFrame
    results: list[ReplayResult]
    base: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def config(self, row: int | pd.Series) -> dict[str, Any]:
        """The ``detectors:`` mapping of a table row (what `save_detector_config` writes)."""
        r = self.table.loc[row] if isinstance(row, int | np.integer) else row
        entry: dict[str, Any] = {"threshold": float(r["threshold"])}
        params = {}
        for column in self.table.columns:
            if column.startswith("params."):
                name = column[len("params."):]
                # The grid's own value: a row Series may have turned an int into a float.
                params[name] = next((v for v in self.grid.get(name, ()) if v == r[column]),
                                    _plain(r[column]))
        if params:
            entry["params"] = params
        return detector_config(self.base, **{self.detector: entry})

    def result(self, row: int | pd.Series) -> ReplayResult:
        """The replay behind a table row (for its `pr_curve`, alerts, findings)."""
        r = self.table.loc[row] if isinstance(row, int | np.integer) else row
        return self.results[int(r["replay"])]

    def curves(self, labels: Labels | Mapping[str, Any] | str | Path | None = None, *,
               max_points: int = 40) -> pd.DataFrame:
        """`pr_curve` of every parameter set, one frame with the ``params.*`` and ``replay``
        columns: pick a row with `operating_point`, turn it into YAML with `config`."""
        params = [c for c in self.table.columns if c.startswith("params.")]
        first = self.table.drop_duplicates("replay").set_index("replay")
        frames = []
        for i, result in enumerate(self.results):
            curve = pr_curve(result, labels, detector=self.detector, max_points=max_points)
            for column in params:
                curve.insert(1, column, [first.loc[i, column]] * len(curve))
            curve["replay"] = i
            frames.append(curve)
        return pd.concat(frames, ignore_index=True)


def sweep(inputs: ReplayInputs, detector: str, grid: Mapping[str, Sequence[Any]], *,
          labels: Labels | Mapping[str, Any] | str | Path | None = None,
          base_config: Mapping[str, Any] | None = None, only: bool = True,
          score_floor: float | None = None) -> SweepResult:
    """Replay every combination of ``grid`` for one detector and score each.

    Grid keys are the detector's parameters (``learning_period``) or ``threshold``; each
    parameter combination is replayed once and every threshold is read off that replay.
    With ``only`` the other detectors are off (faster, and the metrics are this detector's).
    Metrics come from `meshwatch eval`'s rules when labels are known (``inputs.labels`` or
    ``labels``); otherwise the table has alert counts only.
    """
    grid = dict(grid)
    thresholds = [float(t) for t in grid.pop("threshold", [])]
    names = list(grid)
    base = detector_config(base_config or {})
    truth = (_as_labels(labels) if labels is not None else inputs.labels)
    rows: list[dict[str, Any]] = []
    results: list[ReplayResult] = []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        config = detector_config(base, **{detector: {"params": params}} if params else {})
        floor = min(thresholds) if thresholds else None
        if score_floor is not None:
            floor = score_floor if floor is None else min(floor, score_floor)
        result = replay(inputs, config, only=[detector] if only else None, score_floor=floor)
        results.append(result)
        for t in thresholds or [result.thresholds[detector]]:
            row: dict[str, Any] = {f"params.{n}": v for n, v in params.items()}
            row["threshold"] = t
            row["replay"] = len(results) - 1
            if truth is not None:
                report = _detector_report(result, truth, detector, t)
                row.update(_curve_row(report, detector, truth.days))
                group = report.by_detector.get(detector)
                row["average_precision"] = _num(average_precision(group.ranked)
                                                if group is not None else None)
            else:
                alerts = result.alerts_at({detector: t})
                row["alerts"] = int((alerts["detector"] == detector).sum())
                row["alerts_per_day"] = row["alerts"] / inputs.days
            rows.append(row)
    return SweepResult(detector, pd.DataFrame(rows), results, base,
                       {n: list(grid[n]) for n in names})


# -- configuration -----------------------------------------------------------------------------


def _yaml_ready(value: Any) -> Any:
    """Plain YAML types: numpy scalars and tuples (from DataFrames and grids) converted."""
    if isinstance(value, Mapping):
        return {str(k): _yaml_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_ready(v) for v in value]
    return _plain(value)


def save_detector_config(config: Mapping[str, Any], path: str | Path, *,
                         comment: str | None = None) -> Path:
    """Write a ``detectors:`` mapping as the YAML the pipeline reads (``detectors_file:`` in
    the config, or ``MESHWATCH_DETECTORS_FILE``), after validating it the way start-up does.

    Only what ``config`` says is written; the pipeline merges it over the built-in defaults
    (detectors/defaults.yaml), so give each tuned detector its full entry.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "tuned.yaml"
    >>> _ = save_detector_config({"first_seen_edge": {"threshold": 0.65}}, out)
    >>> yaml.safe_load(out.read_text())
    {'detectors': {'first_seen_edge': {'threshold': 0.65}}}
    >>> try:
    ...     save_detector_config({"first_seen_edge": {"params": {"nope": 1}}}, out)
    ... except ConfigError as exc:
    ...     print(str(exc).split(" (known")[0])
    detectors.first_seen_edge.params: unknown parameter(s) nope
    """
    data = _yaml_ready(dict(config))
    load_detectors(data)  # raises ConfigError naming the key
    header = [f"# Detector configuration written by meshwatch.notebook on "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
              "# Merged over detectors/defaults.yaml; use it as `detectors_file:` in the config."]
    header += [f"# {line}" for line in (comment or "").splitlines()]
    text = "\n".join(header) + "\n" + yaml.safe_dump({"detectors": data}, sort_keys=False)
    loaded = yaml.safe_load(text)["detectors"]
    if loaded != data:  # pragma: no cover - safe_dump/safe_load round-trip plain data exactly
        raise ConfigError("detector configuration does not survive a YAML round trip")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, "utf-8")
    return out


def load_detector_config(path: str | Path) -> dict[str, Any]:
    """The ``detectors:`` mapping the pipeline would take from a ``detectors_file``."""
    settings = load_settings(overrides={"detectors_file": str(path)})
    return dict(settings.detectors)


# -- NAB ---------------------------------------------------------------------------------------


@dataclass
class NabRun:
    """A univariate detector's per-row scores on NAB series, scored the NAB way."""

    detector: str
    corpus: list[NabSeries]
    scores: list[np.ndarray]
    report: NabReport

    def table(self) -> pd.DataFrame:
        """Normalized and raw score per profile, with windows detected and false positives."""
        rows = []
        for profile, r in self.report.results.items():
            rows.append({"profile": profile, "normalized": r.normalized, "raw": r.raw,
                         "threshold": r.threshold,
                         "windows": sum(f.windows for f in r.files),
                         "windows_detected": sum(f.detected for f in r.files),
                         "false_positive_rows": sum(f.fp for f in r.files)})
        return pd.DataFrame(rows).set_index("profile")

    def files(self, profile: str = "standard") -> pd.DataFrame:
        """Per file: rows, windows, windows detected, false-positive rows and raw score."""
        r = self.report.results[profile]
        return pd.DataFrame([{"file": f.key, "rows": f.total, "windows": f.windows,
                              "detected": f.detected, "false_positive_rows": f.fp,
                              "raw_score": f.score} for f in r.files]).set_index("file")

    def series(self, key: str, profile: str = "standard") -> pd.DataFrame:
        """One series: timestamp, value, score, in_window, probation and detection flags."""
        from detectors.evaluation.nab import probationary_length

        i = [s.key for s in self.corpus].index(key)
        s = self.corpus[i]
        threshold = self.report.results[profile].threshold
        in_window = np.zeros(len(s), dtype=bool)
        for left, right in s.windows:
            in_window[left:right + 1] = True
        probation = np.arange(len(s)) < probationary_length(len(s))
        return pd.DataFrame({"timestamp": s.timestamps, "value": s.values,
                             "score": self.scores[i], "in_window": in_window,
                             "probation": probation,
                             "detected": (self.scores[i] >= threshold) & ~probation})


def nab_corpus(data_dir: str | Path, labels_path: str | Path | None = None, *,
               categories: Sequence[str] | None = None,
               max_files_per_category: int | None = None) -> list[NabSeries]:
    """NAB series from ``data_dir`` (``<category>/<file>.csv``), optionally a subset.

    ``labels_path`` defaults to NAB's layout (``data/../labels/combined_windows.json``).
    """
    from detectors.evaluation.nab_data import load_corpus

    data = Path(data_dir)
    labels = Path(labels_path) if labels_path else data.parent / "labels" / "combined_windows.json"
    corpus = load_corpus(data, labels)
    if categories is not None:
        unknown = sorted(set(categories) - {s.category for s in corpus})
        if unknown:
            raise ValueError(f"no NAB category {', '.join(unknown)} under {data}")
        corpus = [s for s in corpus if s.category in categories]
    if max_files_per_category is not None:
        taken: Counter[str] = Counter()
        subset = []
        for s in corpus:
            if taken[s.category] < max_files_per_category:
                taken[s.category] += 1
                subset.append(s)
        corpus = subset
    return corpus


def run_nab(corpus: Sequence[NabSeries], detector: str = "value_anomaly",
            params: Mapping[str, Any] | None = None, *,
            profiles_path: str | Path) -> NabRun:
    """Score ``detector`` on ``corpus`` like `meshwatch bench nab` (fresh detector per series,
    score before learn, threshold optimized per profile over the corpus)."""
    import time

    import detectors.catalog  # noqa: F401 - registers the built-in detectors
    from detectors.evaluation.nab import scoring_frame
    from detectors.evaluation.nab_runner import make_detector, run_series

    scores = []
    started = time.perf_counter()
    for series in corpus:
        probation = scoring_frame(series).probation
        scores.append(run_series(make_detector(detector, series, probation, params), series))
    return score_nab(detector, corpus, scores, profiles_path=profiles_path,
                     seconds=time.perf_counter() - started)


def score_nab(name: str, corpus: Sequence[NabSeries], scores: Sequence[np.ndarray], *,
              profiles_path: str | Path, seconds: float = 0.0) -> NabRun:
    """Score per-row anomaly scores the NAB way (e.g. a published detector's, from
    `published_nab_scores`, to compare with ours on the same files)."""
    from detectors.evaluation.nab_data import load_profiles
    from detectors.evaluation.nab_runner import score_report

    profiles = load_profiles(Path(profiles_path))
    report = score_report(name, list(corpus), list(scores), profiles, seconds)
    return NabRun(name, list(corpus), list(scores), report)


def published_nab_scores(results_dir: str | Path, detector: str,
                         corpus: Sequence[NabSeries]) -> list[np.ndarray]:
    """A published detector's per-row anomaly scores on ``corpus`` from NAB's ``results/``
    folder (``<detector>/<category>/<detector>_<file>.csv``), to score it on the same subset."""
    out = []
    for s in corpus:
        category, name = s.key.split("/", 1)
        path = Path(results_dir) / detector / category / f"{detector}_{name}"
        if not path.is_file():
            raise FileNotFoundError(f"no published scores for {s.key}: {path}")
        scores = pd.read_csv(path)["anomaly_score"].to_numpy(dtype=np.float64)
        if len(scores) != len(s):
            raise ValueError(f"{path}: {len(scores)} rows, the series has {len(s)}")
        out.append(scores)
    return out


def nab_scoreboard(path: str | Path, ours: Mapping[str, NabRun] | None = None
                   ) -> pd.DataFrame:
    """NAB's published scoreboard (``final_results.json``) with our runs added as rows
    (marked ``ours``), best standard score first."""
    from detectors.evaluation.nab_data import load_scoreboard

    board = pd.DataFrame(load_scoreboard(Path(path))).T
    board["ours"] = False
    for name, run in (ours or {}).items():
        board.loc[name] = {**{p: r.normalized for p, r in run.report.results.items()},
                           "ours": True}
    return board.sort_values("standard", ascending=False)


def _as_datetime(value: str | datetime) -> datetime:
    from meshwatch.records import parse_ts

    return parse_ts(value)


__all__ = [
    "Graph", "NabRun", "OpenStore", "ReplayInputs", "ReplayResult", "Step", "SweepResult",
    "build_store", "current_store", "detector_config", "feedback_average_precision",
    "feedback_curve", "label_by_feedback", "label_findings", "load_alerts", "load_coverage",
    "load_detector_config", "load_edges", "load_events", "load_graph", "load_windows",
    "nab_corpus", "nab_scoreboard", "open_store", "operating_point", "pr_curve", "prepare",
    "published_nab_scores", "replay", "report_frame", "run_nab", "save_detector_config",
    "score_nab",
    "simulate_traffic", "sweep",
]
