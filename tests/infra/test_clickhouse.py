"""infra/clickhouse: the cluster DDL is generated from the migrations and works in ClickHouse.

What runs here (no ClickHouse server, no Keeper on this machine):
* the committed cluster.sql is exactly what the generator derives from the current migrations;
* the generator's rules: every table placed, sharding keys inside ORDER BY, views that write
  locally keep the sharding column, unknown statements and tables refused;
* chdb (child processes, see chdb_cluster_check.py) accepts every statement with only
  ``ON CLUSTER`` removed (Replicated engines and Distributed tables as written), and, with the
  engines mapped back to local ones, meshwatch's own Store and Pipeline produce the same data on
  the cluster layout as on the plain migrations, which also apply to chdb via the Store.
What does not run here: ``ON CLUSTER`` distribution, real replication and multi-shard routing.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshwatch.store.schema import Migration, available_migrations
from tests.infra.common import INFRA, REPO

GENERATOR_PATH = INFRA / "clickhouse" / "generate_cluster_ddl.py"
CLUSTER_SQL = INFRA / "clickhouse" / "cluster.sql"
CHECKER = Path(__file__).with_name("chdb_cluster_check.py")
TABLES = ["edge_events", "edge_windows", "edges", "nodes", "alerts", "alert_actions",
          "dead_letters", "checkpoints"]


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_cluster_ddl", GENERATOR_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _migration_tables() -> dict[str, int]:
    tables = {}
    for migration in available_migrations():
        for statement in migration.statements("{db}"):
            match = re.match(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", statement)
            if match:
                tables[match.group(1)] = migration.version
    return tables


def test_committed_cluster_ddl_matches_the_migrations():
    assert CLUSTER_SQL.read_text(encoding="utf-8") == gen.generate(), (
        "infra/clickhouse/cluster.sql is stale: run "
        "`.venv/bin/python infra/clickhouse/generate_cluster_ddl.py` after changing a migration")
    assert gen.main(["--check"]) == 0


def test_generator_doctests():
    result = doctest.testmod(gen, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_every_migration_table_is_placed_and_replicated():
    sql = CLUSTER_SQL.read_text(encoding="utf-8")
    tables = _migration_tables()
    assert set(TABLES) <= set(tables)
    for table in tables:
        if table in gen.SHARDED:
            assert re.search(
                rf"CREATE TABLE IF NOT EXISTS meshwatch_local\.{table} ON CLUSTER "
                rf"'\{{cluster\}}'\n\(.*?ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/"
                rf"\{{shard\}}/", sql, re.S), table
            assert (f"CREATE TABLE IF NOT EXISTS meshwatch.{table} ON CLUSTER '{{cluster}}'\n"
                    f"AS meshwatch_local.{table}\nENGINE = Distributed('{{cluster}}', "
                    f"'meshwatch_local', '{table}', {gen.SHARDED[table]})") in sql
        else:
            assert table in gen.EVERYWHERE, f"{table} is not placed"
            assert re.search(
                rf"CREATE TABLE IF NOT EXISTS meshwatch\.{table} ON CLUSTER '\{{cluster\}}'\n"
                rf"\(.*?ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/all/", sql, re.S)
    # Every statement is distributed DDL (except the bookkeeping INSERT).
    for statement in re.split(r";\n", sql):
        body = "\n".join(x for x in statement.splitlines() if not x.startswith("--")).strip()
        if body.startswith(("CREATE", "ALTER")):
            assert "ON CLUSTER '{cluster}'" in body, body[:80]
        else:
            assert not body or body.startswith("INSERT INTO meshwatch.schema_migrations"), body
    versions = [m.version for m in available_migrations()]
    assert re.search(r"INSERT INTO meshwatch\.schema_migrations .* VALUES "
                     + r", ".join(rf"\({v}, '\w+', now64\(3\)\)" for v in versions) + ";", sql)


def test_every_statement_of_every_migration_is_transformed():
    layout = gen.Layout()
    for migration in available_migrations():
        source = migration.statements("{db}")
        out = gen.transform(migration, layout)
        creates = [s for s in source if s.startswith("CREATE TABLE")]
        sharded = [s for s in creates if re.search(r"\.(\w+)", s).group(1) in gen.SHARDED]
        views = [s for s in source if s.startswith("CREATE MATERIALIZED VIEW")]
        alters = [s for s in source if s.startswith("ALTER TABLE")]
        assert len(creates) + len(views) + len(alters) == len(source), (
            f"migration {migration.version}: a statement kind this test does not count")
        column_alters_sharded = [
            s for s in alters if re.search(r"\.(\w+)", s).group(1) in gen.SHARDED
            and re.search(r"^ALTER TABLE \S+\s+(ADD|DROP|MODIFY|COMMENT) COLUMN", s)]
        # Sharded tables become local + Distributed, the others one replicated table each;
        # an ALTER goes to the table holding the rows (column changes: to both of a sharded
        # table's tables).
        assert len(out) == (len(creates) + len(sharded) + len(views) + len(alters)
                            + len(column_alters_sharded))
        assert not any("{db}" in s for s in out)


def test_alter_statements_go_where_the_rows_are():
    layout = gen.Layout()
    assert gen.alter_statements(
        "ALTER TABLE {db}.alerts ADD PROJECTION IF NOT EXISTS p (SELECT id ORDER BY id)",
        layout) == ["ALTER TABLE meshwatch.alerts ON CLUSTER '{cluster}' ADD PROJECTION IF NOT "
                    "EXISTS p (SELECT id ORDER BY id)"]
    # A projection or setting of a sharded table belongs to its local tables only...
    assert gen.alter_statements("ALTER TABLE {db}.edge_events MATERIALIZE PROJECTION p",
                                layout) == [
        "ALTER TABLE meshwatch_local.edge_events ON CLUSTER '{cluster}' MATERIALIZE PROJECTION p"]
    # ...a new column to the Distributed table as well, after the local tables.
    assert [s.split(" ON ")[0] for s in gen.alter_statements(
        "ALTER TABLE {db}.edge_windows ADD COLUMN IF NOT EXISTS x String", layout)] == [
        "ALTER TABLE meshwatch_local.edge_windows", "ALTER TABLE meshwatch.edge_windows"]
    with pytest.raises(gen.DDLError, match="neither in SHARDED nor in EVERYWHERE"):
        gen.alter_statements("ALTER TABLE {db}.brand_new MODIFY SETTING a = 1", layout)


def test_views_read_local_tables():
    sql = CLUSTER_SQL.read_text(encoding="utf-8")
    for name, target in gen.VIEW_TARGETS.items():
        db = "meshwatch_local" if target == "local" else "meshwatch"
        assert re.search(rf"VIEW IF NOT EXISTS meshwatch_local\.{name} ON CLUSTER "
                         rf"'\{{cluster\}}'\nTO {db}\.\w+ AS\n.*?FROM meshwatch_local\.\w+",
                         sql, re.S), name


def _migration(sql: str) -> Migration:
    return Migration(99, "test", sql)


def test_sharding_key_outside_order_by_is_refused(monkeypatch):
    monkeypatch.setitem(gen.SHARDED, "edge_windows", "cityHash64(src_namespace)")
    with pytest.raises(gen.DDLError, match="not in ORDER BY"):
        gen.generate()


def test_local_view_that_reshards_is_refused(monkeypatch):
    monkeypatch.setitem(gen.VIEW_TARGETS, "nodes_dst_mv", "local")
    with pytest.raises(gen.DDLError, match="nodes_dst_mv"):
        gen.generate()


def test_unknown_table_is_refused():
    migration = _migration("CREATE TABLE IF NOT EXISTS {db}.brand_new (a String) "
                           "ENGINE = MergeTree ORDER BY a;")
    with pytest.raises(gen.DDLError, match="brand_new"):
        gen.transform(migration, gen.Layout())


@pytest.mark.parametrize("statement", [
    # A mutation rewrites data: on a cluster it needs a decision (which replicas, which shards).
    "ALTER TABLE {db}.alerts DELETE WHERE status = 'resolved'",
    "ALTER TABLE {db}.alerts UPDATE status = 'x' WHERE 1",
    "RENAME TABLE {db}.alerts TO {db}.alerts_old",
    "INSERT INTO {db}.alerts (id) VALUES ('x')",
])
def test_unknown_statement_is_refused(statement):
    with pytest.raises(gen.DDLError, match="cannot place this statement"):
        gen.transform(_migration(statement + ";"), gen.Layout())


def test_ttl_override_and_database_name():
    layout = gen.Layout("mw", (("edge_events", 14),))
    sql = gen.generate(layout)
    assert "CREATE DATABASE IF NOT EXISTS mw_local ON CLUSTER" in sql
    local = re.search(r"CREATE TABLE IF NOT EXISTS mw_local\.edge_events .*?;", sql, re.S)
    assert "TTL ingested_at + INTERVAL 14 DAY" in local.group(0)
    with pytest.raises(gen.DDLError):
        gen.generate(gen.Layout("mw", (("edges", 3),)))  # no TTL to change


def test_cli_rejects_a_bad_database_name(capsys):
    with pytest.raises(SystemExit):
        gen.main(["--stdout", "--database", "bad-name"])
    assert "identifier" in capsys.readouterr().err


# -- chdb ------------------------------------------------------------------------------------


def _run_checker(spec: dict[str, Any], tmp_path: Path, timeout: float = 120) -> dict[str, Any]:
    spec_file = tmp_path / f"{spec['mode']}.json"
    spec = {**spec, "work": str(tmp_path)}
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(CHECKER), str(spec_file)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"checker printed no result (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], result.get("error")
    return result


def test_cluster_ddl_engines_are_accepted_by_clickhouse(tmp_path):
    sql = CLUSTER_SQL.read_text(encoding="utf-8")
    result = _run_checker({"mode": "engines", "cluster_sql": sql}, tmp_path)
    assert result["parsed"] == sql.count("\nALTER TABLE ")  # applied in the functional check
    engines = {(t["database"], t["name"]): t for t in result["tables"]}
    tables = _migration_tables()
    for table in tables:
        if table in gen.SHARDED:
            local = engines[("meshwatch_local", table)]
            assert local["engine"].startswith("Replicated"), table
            assert "/clickhouse/tables/{shard}/meshwatch_local/" + table in local["engine_full"]
            dist = engines[("meshwatch", table)]
            assert dist["engine"] == "Distributed"
            assert gen.SHARDED[table] in dist["engine_full"]
        else:
            assert engines[("meshwatch", table)]["engine"].startswith("Replicated"), table
    for view in gen.VIEW_TARGETS:
        assert engines[("meshwatch_local", view)]["engine"] == "MaterializedView"
    assert engines[("meshwatch", "schema_migrations")]["engine"].startswith("Replicated")


@pytest.fixture(scope="module")
def simulated_traffic(tmp_path_factory) -> Path:
    """A small labelled mesh (with attacks) from `meshwatch simulate`, plus unparseable lines."""
    out = tmp_path_factory.mktemp("sim")
    subprocess.run([sys.executable, "-m", "meshwatch.cli.main", "simulate", "-d", "20m",
                    "--services", "10", "--rps", "2", "--seed", "5", "-o", str(out), "-q"],
                   check=True, cwd=REPO, timeout=120, capture_output=True)
    records = out / "envoy-json.log"
    with records.open("a", encoding="utf-8") as handle:
        handle.write('{"start_time": "not a time", "truncated\nnot json at all\n')
    return records


def dashboard_queries() -> dict[str, str]:
    """The ClickHouse panels' SQL with Grafana's macros expanded as the plugin does."""
    board = json.loads((INFRA / "grafana" / "meshwatch-dashboard.json").read_text("utf-8"))
    queries = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            sql = target.get("rawSql")
            if not sql:
                continue
            sql = re.sub(r"\$__timeFilter\((\w+)\)",
                         r"(\1 >= toDateTime(0) AND \1 <= toDateTime(4102444800))", sql)
            sql = re.sub(r"\$__timeInterval\((\w+)\)",
                         r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
            assert "$__" not in sql, f"unexpanded macro in {panel['title']}"
            queries[panel["title"]] = sql
    return queries


@pytest.fixture(scope="module")
def functional(tmp_path_factory, simulated_traffic) -> dict[str, Any]:
    queries = dashboard_queries()
    return _run_checker({
        "mode": "functional",
        "cluster_sql": CLUSTER_SQL.read_text(encoding="utf-8"),
        "records": str(simulated_traffic),
        "retention_days": {"edge_events": 7, "edge_windows": 90, "dead_letters": 30,
                           "alerts": 365},
        "tables": TABLES,
        "queries": queries,
    }, tmp_path_factory.mktemp("functional"))


def test_plain_migrations_apply_to_chdb_through_the_store(functional):
    assert functional["applied_reference"] == [m.version for m in available_migrations()]


def test_meshwatch_migrates_nothing_on_the_cluster_layout(functional):
    # cluster.sql recorded every migration: meshwatch's start-up migration is a no-op there.
    assert functional["applied_cluster"] == []
    engines = functional["engines"]
    for table in gen.SHARDED:
        assert engines[table] == "Distributed"


def test_cluster_layout_has_the_same_columns(functional):
    reference, cluster = functional["columns_reference"], functional["columns_cluster"]
    views = set(gen.VIEW_TARGETS)
    assert set(reference) - views == set(cluster)
    for table in cluster:
        assert cluster[table] == reference[table], table


def test_meshwatch_writes_the_same_data_through_the_cluster_layout(functional):
    reference, cluster = functional["snapshot_reference"], functional["snapshot_cluster"]
    assert functional["run_reference"] == functional["run_cluster"]
    assert reference["count:edge_events"] > 1000
    assert reference["count:edge_windows"] > 0 and reference["edges"] and reference["nodes"]
    assert reference["count:alerts"] > 0  # the simulation has attacks
    assert reference["count:dead_letters"] > 0  # the two broken lines
    assert cluster == reference


def test_dashboard_queries_run_on_both_layouts(functional):
    results = functional["queries"]
    assert len(results) == 2 * len(dashboard_queries())
    errors = {name: r["error"] for name, r in results.items() if "error" in r}
    assert not errors
    assert results["reference:Top talkers"]["rows"] > 0
    assert results["cluster:Top talkers"] == results["reference:Top talkers"]
