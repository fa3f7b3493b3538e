"""`meshwatch graph ...` end to end over a real store: outputs, exit codes, clear errors."""

from __future__ import annotations

import io
import json

import networkx as nx
import pytest
import yaml
from typer.testing import CliRunner

from meshwatch.cli.main import app
from tests.graph.mesh import CART, INTRUDER, PAY, WEB

runner = CliRunner()
A_END = "2026-03-01T12:10:00Z"


@pytest.fixture(autouse=True)
def _no_config(monkeypatch):
    monkeypatch.delenv("MESHWATCH_CONFIG", raising=False)
    monkeypatch.delenv("MESHWATCH_STORE__URL", raising=False)


def run(mesh_path, *args: str):
    return runner.invoke(app, ["graph", *args, "--store", str(mesh_path)])


def test_snapshot_json_and_exports(mesh_path):
    out = run(mesh_path, "snapshot", "--at", A_END, "--window", "10m")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    edges = {(e["src"], e["dst"]): e for e in data["edges"]}
    assert edges[(WEB, CART)]["requests"] == 202
    assert edges[(INTRUDER, CART)]["mtls_status"] == "plaintext"
    graphml = run(mesh_path, "snapshot", "--at", A_END, "--window", "10m", "-f", "graphml")
    assert set(nx.read_graphml(io.BytesIO(graphml.stdout.encode())).edges) == set(edges)
    dot = run(mesh_path, "snapshot", "--at", A_END, "--window", "10m", "-f", "dot",
              "-n", "pay")
    assert dot.stdout.startswith("digraph") and f'"{WEB}" -> "{PAY}"' in dot.stdout
    assert f'-> "{CART}"' not in dot.stdout  # web -> cart touches neither side of pay


def test_snapshot_latest_and_table(mesh_path, tmp_path):
    target = tmp_path / "g.json"
    out = run(mesh_path, "snapshot", "--at", "latest", "--window", "10m", "-o", str(target))
    assert out.exit_code == 0, out.output
    data = json.loads(target.read_text())
    assert data["range"]["end"] == "2026-03-01T12:30:00.000Z"
    table = run(mesh_path, "snapshot", "--at", "latest", "--window", "10m", "-f", "table")
    assert table.exit_code == 0 and "mTLS share" in table.stdout and "batch" in table.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("snapshot", "--at", "yesterday"), "cannot read time 'yesterday'"),
    (("snapshot", "--window", "0s"), "window must be longer than zero"),
    (("coverage", "--since", "now", "--until", "-1h"), "reversed time range"),
    (("coverage", "--since", A_END, "--until", A_END), "empty time range"),
    (("diff", "--from", "now", "--to", "-1d"), "reversed comparison"),
    (("policy", "--since", "-1d", "--until", "-2d"), "reversed time range"),
])
def test_bad_ranges_are_usage_errors(mesh_path, args, message):
    out = run(mesh_path, *args)
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.stderr.split())


def test_no_data_says_where_the_data_is(mesh_path):
    out = run(mesh_path, "snapshot", "--at", "2027-01-01T00:00:00Z")
    assert out.exit_code == 1
    said = " ".join(out.stderr.split())
    assert "the store holds windows from 2026-03-01T12:00:00.000Z" in said
    assert "--at latest" in said
    ns = run(mesh_path, "snapshot", "--at", A_END, "-n", "nope")
    assert ns.exit_code == 1 and "namespaces there: pay, shop" in " ".join(ns.stderr.split())


def test_missing_store_is_a_clear_error(tmp_path):
    out = runner.invoke(app, ["graph", "snapshot", "--store", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "no store at" in out.stderr


def test_diff_table_and_json(mesh_path):
    table = run(mesh_path, "diff", "--from", A_END, "--to", "2026-03-01T12:30:00Z",
                "--window", "10m")
    assert table.exit_code == 0, table.output
    assert "1 new, 1 vanished" in table.stdout and "Traffic shifts" in table.stdout
    data = json.loads(run(mesh_path, "diff", "--from", A_END, "--to", "2026-03-01T12:30:00Z",
                          "--window", "10m", "-f", "json").stdout)
    assert data["summary"]["new_edges"] == 1 and data["mtls_changes"][0]["after"] == "all-mtls"


def test_plaintext_edges(mesh_path):
    out = run(mesh_path, "edges", "--plaintext", "--at", A_END, "--window", "10m", "-f", "json")
    assert out.exit_code == 0, out.output
    edges = {(e["src"], e["dst"]): e for e in json.loads(out.stdout)["edges"]}
    assert set(edges) == {(INTRUDER, CART), (WEB, PAY)}
    assert edges[(INTRUDER, CART)]["plaintext_share"] == 1.0
    assert edges[(WEB, PAY)]["plaintext_share"] == pytest.approx(0.3)
    clean = run(mesh_path, "edges", "--plaintext", "--at", "latest", "--window", "10m")
    assert clean.exit_code == 0 and "no plaintext edges" in clean.stdout


def test_coverage_json(mesh_path):
    out = run(mesh_path, "coverage", "--since", "2026-03-01T12:00:00Z", "--until", A_END,
              "--bucket", "5m", "-f", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert {r["namespace"] for r in data["totals"]} == {"shop", "pay"}
    assert len(data["buckets"]) == 4
    table = run(mesh_path, "coverage", "--since", "2026-03-01T12:00:00Z", "--until", A_END,
                "--bucket", "5m")
    assert table.exit_code == 0 and "request share" in table.stdout


def test_policy_yaml_on_stdout_dry_run_on_stderr(mesh_path, tmp_path):
    report = tmp_path / "dry.json"
    out = run(mesh_path, "policy", "--since", "2026-03-01T12:00:00Z", "--until", A_END,
              "--report", str(report), "--methods")
    assert out.exit_code == 0, out.output
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["metadata"]["name"] for d in docs} == {"meshwatch-allow-cart",
                                                     "meshwatch-allow-pay"}
    assert "2 would be denied" in out.stderr and "DENY" in out.stderr
    dry = json.loads(report.read_text())
    assert dry["summary"]["deny"] == 2
    strict = run(mesh_path, "policy", "--since", "2026-03-01T12:00:00Z", "--until", A_END,
                 "--fail-on-deny")
    assert strict.exit_code == 3
    shop = run(mesh_path, "policy", "--since", "2026-03-01T12:20:00Z",
               "--until", "2026-03-01T12:30:00Z", "-n", "shop", "--fail-on-deny")
    assert shop.exit_code == 0, shop.output
    kinds = sorted((d["kind"], d["metadata"]["namespace"]) for d in
                   yaml.safe_load_all(shop.stdout) if d)
    assert kinds == [("AuthorizationPolicy", "shop"), ("PeerAuthentication", "shop")]


def test_help_has_examples():
    for command in ("snapshot", "diff", "edges", "coverage", "policy"):
        out = runner.invoke(app, ["graph", command, "--help"])
        assert out.exit_code == 0 and "Examples" in out.stdout and "meshwatch graph" in out.stdout


def test_a_store_held_by_another_process_is_a_clear_error(mesh_path):
    import subprocess
    import sys

    from meshwatch.settings import StoreSettings
    from meshwatch.store import Store

    held = Store.open(StoreSettings(path=mesh_path))  # as a running `meshwatch run` would
    try:
        out = subprocess.run(
            [sys.executable, "-m", "meshwatch.cli.main", "graph", "snapshot", "--at", A_END,
             "--store", str(mesh_path)], capture_output=True, text=True, timeout=120)
    finally:
        held.close()
    assert out.returncode == 1, out.stderr
    assert "another meshwatch process" in " ".join(out.stderr.split())
