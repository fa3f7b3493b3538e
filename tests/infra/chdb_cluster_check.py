"""Run infra/clickhouse/cluster.sql in chdb, in a child process (driven by test_clickhouse.py).

chdb is ClickHouse in-process, without ZooKeeper, a distributed-DDL worker or a network server,
so the cluster DDL cannot run as written. Two checks get as close as that allows:

``engines``
    The DDL with only ``ON CLUSTER`` removed: Replicated* engines exactly as written (their
    Keeper paths, macros and version columns), on ClickHouse's in-memory test Keeper, and the
    Distributed tables over a one-shard cluster named by the ``{cluster}`` macro. Replicated
    tables stay read-only there (the replica is never activated), so only the DDL is checked,
    and ``ALTER TABLE`` statements are only parsed (``EXPLAIN AST``, with ``ON CLUSTER``); the
    functional check applies them for real.
``functional``
    The DDL with Replicated* engines mapped back to local ones, Distributed tables kept (the one
    shard is local, so inserts and reads go through them for real). meshwatch's own Store and
    Pipeline then process the same simulated traffic twice: into a database made by the plain
    migrations and into the cluster layout. The results must be identical.

Run in a child process because a chdb session with replicated tables aborts the process when
it closes, and a config file (macros, clusters) is per process; results go out as JSON on the
last line of stdout, and the process ends with ``os._exit`` to skip chdb's teardown.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

CONFIG = """<clickhouse>
  <!-- the address of this "server" for Distributed's is-local check; nothing listens -->
  <tcp_port>{port}</tcp_port>
  {keeper}
  <macros><cluster>meshwatch_test</cluster><shard>01</shard><replica>chdb-1</replica></macros>
  <remote_servers>
    <meshwatch_test>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>{port}</port></replica>
      </shard>
    </meshwatch_test>
  </remote_servers>
</clickhouse>
"""
KEEPER = "<zookeeper><implementation>testkeeper</implementation></zookeeper>"
# Sessions stay referenced until os._exit: closing one (even by garbage collection) with
# replicated tables on the test keeper hangs or aborts.
_SESSIONS: list[Any] = []

ON_CLUSTER = re.compile(r"\s+ON CLUSTER '\{cluster\}'")
REPLICATED = re.compile(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?")


def statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def single_node(sql: str, keep_replicated: bool) -> list[str]:
    sql = ON_CLUSTER.sub("", sql)
    if not keep_replicated:
        sql = REPLICATED.sub(lambda m: f"{m.group(1)}(", sql)
    return statements(sql)


def session_backend(session: Any) -> Any:
    """meshwatch's own ChdbBackend (same SQL, binding and insert paths as production) over a
    session opened with a config file, which ChdbBackend(path) cannot pass."""
    from meshwatch.store.backend import ChdbBackend

    return ChdbBackend.over_session(session, Path("."), "chdb with a one-shard test cluster")


def open_session(work: Path, keeper: bool) -> Any:
    from chdb import session

    config = work / "config.xml"
    config.write_text(CONFIG.format(port=19000 + os.getpid() % 20000,
                                    keeper=KEEPER if keeper else ""), encoding="utf-8")
    sess = session.Session(f"{work / 'data'}?config-file={config}")
    _SESSIONS.append(sess)
    return sess


def check_engines(spec: dict[str, Any]) -> dict[str, Any]:
    sess = open_session(Path(spec["work"]), keeper=True)
    applied = parsed = 0
    for statement in single_node(spec["cluster_sql"], keep_replicated=True):
        if statement.startswith(("INSERT", "ALTER")):
            continue  # a never-activated replica is read-only
        sess.query(statement, "CSV")
        applied += 1
    # ALTERs modify a table, which a never-activated replica refuses: parse them as written.
    for statement in statements(spec["cluster_sql"]):
        if statement.startswith("ALTER"):
            sess.query(f"EXPLAIN AST {statement}", "CSV")
            parsed += 1
    raw = sess.query(
        "SELECT database, name, engine, engine_full FROM system.tables "
        "WHERE database IN ('meshwatch', 'meshwatch_local') ORDER BY database, name",
        "JSONEachRow").bytes()
    tables = [json.loads(line) for line in raw.splitlines() if line]
    return {"applied": applied, "parsed": parsed, "tables": tables}


def _run_pipeline(store: Any, records_file: str) -> dict[str, Any]:
    from ingest.sources.files import read_records
    from meshwatch.pipeline import Pipeline
    from meshwatch.settings import load_settings

    settings = load_settings(overrides={"store": {"retention_days": {}}})
    pipeline = Pipeline(settings, store, checkpoint_scope="files")
    batch: list[Any] = []
    for record in read_records(records_file, "envoy-json"):
        batch.append(record)
        if len(batch) >= 2000:
            pipeline.process(batch)
            batch = []
    if batch:
        pipeline.process(batch)
    pipeline.finish()
    pipeline.checkpoint()
    return {"records": pipeline.stats.records, "events": pipeline.stats.events}


def _snapshot(store: Any, tables: list[str]) -> dict[str, Any]:
    """What meshwatch wrote, in a form that does not depend on the physical layout."""
    out: dict[str, Any] = {}
    for table in tables:
        out[f"count:{table}"] = store.count(table)
    q = store.query
    out["edges"] = [[r["edge_src"], r["edge_dst"]] for r in q(
        "SELECT edge_src, edge_dst FROM {db}.edges FINAL ORDER BY edge_src, edge_dst")]
    out["nodes"] = [[r["node_id"], r["kind"]] for r in q(
        "SELECT node_id, kind FROM {db}.nodes FINAL ORDER BY node_id, kind")]
    out["windows"] = [list(r.values()) for r in q(
        "SELECT window_start, edge_src, edge_dst, part, requests, mtls_true, mtls_false, "
        "mtls_unknown FROM {db}.edge_windows FINAL "
        "ORDER BY window_start, edge_src, edge_dst, part")]
    out["alerts"] = [[r["detector"], r["fingerprint"], r["status"]] for r in q(
        "SELECT detector, fingerprint, status FROM {db}.alerts FINAL "
        "ORDER BY detector, fingerprint")]
    return out


def _columns(store: Any, database: str) -> dict[str, list[list[str]]]:
    rows = store.query(
        "SELECT table, name, type, default_expression FROM system.columns "
        "WHERE database = {d:String} ORDER BY table, position", {"d": database})
    out: dict[str, list[list[str]]] = {}
    for r in rows:
        out.setdefault(r["table"], []).append([r["name"], r["type"], r["default_expression"]])
    return out


def check_functional(spec: dict[str, Any]) -> dict[str, Any]:
    from meshwatch.store import Store

    sess = open_session(Path(spec["work"]), keeper=False)
    backend = session_backend(sess)
    for statement in single_node(spec["cluster_sql"], keep_replicated=False):
        backend.execute(statement)
    reference = Store(backend, "reference")
    applied_reference = [m.version for m in reference.migrate(spec["retention_days"])]
    cluster = Store(backend, "meshwatch")
    applied_cluster = [m.version for m in cluster.migrate({})]
    engines = {r["name"]: r["engine"] for r in cluster.query(
        "SELECT name, engine FROM system.tables WHERE database = 'meshwatch'")}
    result: dict[str, Any] = {
        "applied_reference": applied_reference,
        "applied_cluster": applied_cluster,
        "engines": engines,
        "columns_reference": _columns(reference, "reference"),
        "columns_cluster": _columns(cluster, "meshwatch"),
    }
    result["run_reference"] = _run_pipeline(reference, spec["records"])
    result["run_cluster"] = _run_pipeline(cluster, spec["records"])
    tables = spec["tables"]
    result["snapshot_reference"] = _snapshot(reference, tables)
    result["snapshot_cluster"] = _snapshot(cluster, tables)
    queries: dict[str, Any] = {}
    for name, sql in spec.get("queries", {}).items():
        for label, store in (("reference", reference), ("cluster", cluster)):
            try:
                rows = store.query(sql.replace("${database}", store.db))
                queries[f"{label}:{name}"] = {"rows": len(rows)}
            except Exception as exc:  # report every failing panel, not just the first
                queries[f"{label}:{name}"] = {"error": str(exc).splitlines()[0][:500]}
    result["queries"] = queries
    return result


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    check = {"engines": check_engines, "functional": check_functional}[spec["mode"]]
    try:
        result = {"ok": True, **check(spec)}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip chdb teardown (it aborts with replicated tables on the test keeper)


if __name__ == "__main__":
    main()
